"""Detection targets: where a YOLO-style detector keeps its boxes, decoding them to image
coordinates, listing them, picking one by index or by where it is, and the feature map that
feeds a box's head (the layer a class activation map of that box should read).

Layouts (:class:`DetectionLayout`, presets in :data:`LAYOUTS`):

- ``yolov5``: (N, boxes, 5 + C), boxes already decoded: centre x, y, width, height in
  input pixels, objectness, class scores;
- ``yolov8``: (N, 4 + C, boxes), decoded, no objectness;
- ``yolox``: (N, boxes, 5 + C) of **raw grid values** over anchor-free grids of strides 8,
  16, 32 (YOLOX exported with ``decode_in_inference=False``, e.g. ddddocr's detector):
  centre = (raw offset + cell index) x stride, size = exp(raw) x stride, cells row by row,
  grids concatenated from the finest stride.

A box's score is objectness x class score where the layout has an objectness, else the
class score (after a sigmoid when the layout says its scores are logits).

Coordinates are pixels of the model's input (the preprocessed image, e.g. 416 x 416), the
frame the attribution maps are drawn in. Shape convention: (N, C, H, W).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from . import graph as onnx_graph
from .errors import TargetError
from .model import Model
from .preprocess import ImageLike
from .targets import ResolvedTarget, ShapeOf, tensor_shape


@dataclass(frozen=True)
class DetectionLayout:
    """Where a YOLO-style detector keeps its boxes (defaults: YOLOv5's (N, boxes, 5 + C)
    with centre x, y, width, height, objectness, then the class scores).

    Attributes:
        output: the output tensor (layer name or alias); None: the model's first output.
        box_axis: the boxes' axis in one image's (2-D) tensor: 0 for (boxes, 5 + C),
            1 for (5 + C, boxes) (YOLOv8-style).
        x, y, w, h: offsets of the box centre and size within a box's vector.
        objectness: offset of the objectness score (None: the detector has none).
        first_class: offset of the first class score.
        strides: empty: the boxes are decoded (input pixels); else the strides of the
            anchor-free grids whose raw values the output holds, finest first (YOLOX:
            ``(8, 16, 32)``): centre = (raw + cell) x stride, size = exp(raw) x stride.
        logits: the objectness and class scores are pre-sigmoid (a sigmoid gives the
            probabilities the listing reports).
    """

    output: str | None = None
    box_axis: int = 0
    x: int = 0
    y: int = 1
    w: int = 2
    h: int = 3
    objectness: int | None = 4
    first_class: int = 5
    strides: tuple[int, ...] = field(default=())
    logits: bool = False

    def tensor(self, model: Model) -> str:
        """The output tensor's graph name."""
        return model.tensor_name(self.output) if self.output else model.output_names[0]

    def boxes(self, values: np.ndarray) -> np.ndarray:
        """(boxes, 5 + C) view of one image's output (boxes first)."""
        if values.ndim != 2 or self.box_axis not in (0, 1):
            raise TargetError(
                f"a detection output must be 2-D per image with box_axis 0 or 1; got shape "
                f"{values.shape}, box_axis={self.box_axis}"
            )
        return values if self.box_axis == 0 else values.T

    def cells(self, input_size: tuple[int, int]) -> np.ndarray:
        """(boxes, 3) float64 ``(cell x, cell y, stride)`` of every box of the grids over an
        input of ``input_size`` (H, W): each grid row by row, finest stride first."""
        height, width = input_size
        rows = []
        for stride in self.strides:
            gh, gw = -(-height // stride), -(-width // stride)
            gy, gx = np.mgrid[0:gh, 0:gw]
            rows.append(np.stack([gx.ravel(), gy.ravel(), np.full(gh * gw, stride)], axis=1))
        return np.concatenate(rows).astype(np.float64) if rows else np.zeros((0, 3))

    def xyxy(self, values: np.ndarray, input_size: tuple[int, int] | None = None) -> np.ndarray:
        """(boxes, 4) float64 corners (x0, y0, x1, y1) of one image's boxes in input
        pixels; ``input_size`` (H, W) is needed for grid layouts."""
        b = self.boxes(values).astype(np.float64)
        cx, cy, w, h = b[:, self.x], b[:, self.y], b[:, self.w], b[:, self.h]
        if self.strides:
            if input_size is None:
                raise TargetError("a grid layout (strides=...) needs the input size to decode")
            cells = self.cells(input_size)
            if len(cells) != len(b):
                raise TargetError(
                    f"the output has {len(b)} boxes; grids of strides {self.strides} over a "
                    f"{input_size[0]}x{input_size[1]} input have {len(cells)}: set "
                    "DetectionLayout(strides=...) to the detector's"
                )
            stride = cells[:, 2]
            cx, cy = (cx + cells[:, 0]) * stride, (cy + cells[:, 1]) * stride
            w, h = np.exp(np.minimum(w, 50.0)) * stride, np.exp(np.minimum(h, 50.0)) * stride
        return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)

    def probabilities(self, column: np.ndarray) -> np.ndarray:
        """Scores as probabilities (float64): a sigmoid when the layout holds logits."""
        column = column.astype(np.float64)
        return 1.0 / (1.0 + np.exp(-column)) if self.logits else column

    def scores(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """One image's (score (boxes,), best class (boxes,), objectness (boxes,) or None):
        score = objectness x best class score, or the best class score without objectness."""
        b = self.boxes(values)
        if b.shape[1] <= self.first_class:
            raise TargetError(
                f"a box has {b.shape[1]} values; the layout's first class is at offset "
                f"{self.first_class}: set DetectionLayout(first_class=...)"
            )
        classes = self.probabilities(b[:, self.first_class :])
        best = classes.argmax(axis=1)
        score = classes[np.arange(len(b)), best]
        objectness = None
        if self.objectness is not None:
            objectness = self.probabilities(b[:, self.objectness])
            score = score * objectness
        return score, best, objectness


#: layout presets by name (``--layout`` on the command line)
LAYOUTS: dict[str, DetectionLayout] = {
    "yolov5": DetectionLayout(),
    "yolov8": DetectionLayout(box_axis=1, objectness=None, first_class=4),
    "yolox": DetectionLayout(strides=(8, 16, 32)),
}


def layout_named(name: str) -> DetectionLayout:
    """The preset layout ``name`` (a key of :data:`LAYOUTS`)."""
    try:
        return LAYOUTS[name]
    except KeyError:
        raise TargetError(
            f"layout= {name!r} is not a detection layout; known: {', '.join(LAYOUTS)}"
        ) from None


@dataclass(frozen=True)
class DetectedBox:
    """One decoded box of one image (pre-NMS index, so it can be a :class:`Box` target).

    Attributes:
        index: the box's position along the layout's box axis.
        xyxy: corners (x0, y0, x1, y1) in input pixels.
        score: objectness x class score (or the class score without objectness).
        class_index: the best class.
        objectness: the objectness, None when the layout has none.
    """

    index: int
    xyxy: tuple[float, float, float, float]
    score: float
    class_index: int
    objectness: float | None


def iou(corners: np.ndarray, xyxy: Sequence[float] | np.ndarray) -> np.ndarray:
    """(boxes,) intersection over union of each (x0, y0, x1, y1) row with ``xyxy``."""
    x0, y0, x1, y1 = (float(v) for v in xyxy)
    iw = np.clip(np.minimum(corners[:, 2], x1) - np.maximum(corners[:, 0], x0), 0, None)
    ih = np.clip(np.minimum(corners[:, 3], y1) - np.maximum(corners[:, 1], y0), 0, None)
    inter = iw * ih
    areas = (corners[:, 2] - corners[:, 0]) * (corners[:, 3] - corners[:, 1])
    union = areas + (x1 - x0) * (y1 - y0) - inter
    return np.asarray(inter / np.maximum(union, 1e-12))


def decode_boxes(
    values: np.ndarray,
    layout: DetectionLayout,
    input_size: tuple[int, int],
    *,
    min_score: float = 0.25,
    nms_iou: float | None = 0.45,
    top: int | None = None,
) -> list[DetectedBox]:
    """One image's boxes, best first: score at least ``min_score``, greedy non-maximum
    suppression per class at IoU ``nms_iou`` (None: none), at most ``top``.

    Args:
        values: one image's output (2-D, see :class:`DetectionLayout`).
        layout: the output's layout.
        input_size: (H, W) of the model's input.
    """
    corners = layout.xyxy(values, input_size)
    score, best, objectness = layout.scores(values)
    order = [int(i) for i in np.argsort(-score, kind="stable") if score[i] >= min_score]
    kept: list[int] = []
    for i in order:
        if top is not None and len(kept) >= top:
            break
        if nms_iou is not None and kept:
            same = [k for k in kept if best[k] == best[i]]
            if same and iou(corners[same], corners[i]).max() > nms_iou:
                continue
        kept.append(i)
    return [
        DetectedBox(
            i,
            (
                float(corners[i, 0]),
                float(corners[i, 1]),
                float(corners[i, 2]),
                float(corners[i, 3]),
            ),
            float(score[i]),
            int(best[i]),
            None if objectness is None else float(objectness[i]),
        )
        for i in kept
    ]


def _first_output(model: Model, batch: np.ndarray, layout: DetectionLayout) -> np.ndarray:
    tensor = layout.tensor(model)
    return model.run(batch[:1], taps=[tensor], outputs=False)[tensor][0]


def list_boxes(
    model: Model,
    image: ImageLike | Sequence[ImageLike] | np.ndarray,
    layout: DetectionLayout | None = None,
    *,
    min_score: float = 0.25,
    nms_iou: float | None = 0.45,
    top: int | None = None,
) -> list[DetectedBox]:
    """The boxes a detector finds in one image (the first of a batch), best first, in
    input pixels (see :func:`decode_boxes` for the options).

    Args:
        model: a YOLO-style detector.
        image: an image, a file name, or a preprocessed (N, C, H, W) batch.
        layout: the output's layout (default: YOLOv5's; ``LAYOUTS["yolox"]`` for raw grids).
    """
    batch = model.prepare(image)
    layout = layout or DetectionLayout()
    values = _first_output(model, batch, layout)
    return decode_boxes(
        values,
        layout,
        (batch.shape[2], batch.shape[3]),
        min_score=min_score,
        nms_iou=nms_iou,
        top=top,
    )


@dataclass(frozen=True)
class Box:
    """One box of a YOLO-style detector: its class score or its objectness (pre-NMS).

    Attributes:
        index: the box's position along the layout's box axis.
        score: ``"class"`` (the score of ``class_index``) or ``"objectness"``.
        class_index: the class for ``score="class"``; None only for a one-class detector.
        layout: where the boxes are (:class:`DetectionLayout`).
    """

    index: int
    score: str = "class"
    class_index: int | None = None
    layout: DetectionLayout = DetectionLayout()

    def resolve(self, model: Model, shape_of: ShapeOf) -> ResolvedTarget:
        layout = self.layout
        tensor = layout.tensor(model)
        shape = shape_of(tensor)
        if len(shape) != 2 or layout.box_axis not in (0, 1):
            raise TargetError(
                f"a Box needs a 2-D detection output per image; {tensor!r} is {shape} "
                f"(box_axis={layout.box_axis}): set DetectionLayout(output=..., box_axis=...)"
            )
        boxes, width = shape[layout.box_axis], shape[1 - layout.box_axis]
        if not 0 <= self.index < boxes:
            raise TargetError(f"box {self.index} is out of range: {tensor!r} has {boxes} boxes")
        if self.score == "objectness":
            if layout.objectness is None:
                raise TargetError("Box score='objectness': the layout has no objectness")
            offset, what = layout.objectness, "objectness"
        elif self.score == "class":
            classes = width - layout.first_class
            if self.class_index is None and classes != 1:
                raise TargetError(f"Box needs class_index: {tensor!r} has {classes} classes")
            c = 0 if self.class_index is None else self.class_index
            if not 0 <= c < classes:
                raise TargetError(f"class {c} is out of range: {tensor!r} has {classes} classes")
            offset, what = layout.first_class + c, f"class {c}"
        else:
            raise TargetError(f"Box score must be 'class' or 'objectness'; got {self.score!r}")
        if offset >= width:
            raise TargetError(f"offset {offset} is out of range: a box has {width} values")
        index = (self.index, offset) if layout.box_axis == 0 else (offset, self.index)
        return ResolvedTarget(tensor, index, "box", None, f"box {self.index} {what}")

    @classmethod
    def best_match(
        cls,
        model: Model,
        batch: np.ndarray,
        xyxy: Sequence[float] | np.ndarray,
        layout: DetectionLayout | None = None,
        score: str = "class",
        class_index: int | None = None,
    ) -> Box:
        """The box of the first image of ``batch`` with the highest IoU with ``xyxy``
        (x0, y0, x1, y1, in input pixels), from one forward run."""
        layout = layout or DetectionLayout()
        values = _first_output(model, batch, layout)
        corners = layout.xyxy(values, (batch.shape[2], batch.shape[3]))
        return cls(int(iou(corners, xyxy).argmax()), score, class_index, layout)

    @classmethod
    def at(
        cls,
        model: Model,
        batch: np.ndarray,
        xyxy: Sequence[float] | np.ndarray,
        layout: DetectionLayout | None = None,
        score: str = "class",
        class_index: int | None = None,
        min_iou: float = 0.3,
    ) -> Box:
        """The highest-scoring box of the first image of ``batch`` among those whose IoU
        with the rectangle ``xyxy`` (x0, y0, x1, y1, input pixels) is at least
        ``min_iou``; with ``score="class"`` and no ``class_index``, that box's best class.

        Raises:
            TargetError: no box overlaps the rectangle that much (the message gives the
                best IoU found).
        """
        layout = layout or DetectionLayout()
        values = _first_output(model, batch, layout)
        corners = layout.xyxy(values, (batch.shape[2], batch.shape[3]))
        overlap = iou(corners, xyxy)
        ranked, best, _ = layout.scores(values)
        if class_index is not None:
            ranked = layout.probabilities(layout.boxes(values)[:, layout.first_class + class_index])
        candidates = np.flatnonzero(overlap >= min_iou)
        if not len(candidates):
            x0, y0, x1, y1 = (round(float(v), 1) for v in xyxy)
            raise TargetError(
                f"no box overlaps ({x0}, {y0}, {x1}, {y1}) with IoU >= {min_iou} (best "
                f"{overlap.max():.2f}, box {int(overlap.argmax())}): give a rectangle around "
                "an object in input pixels"
            )
        chosen = int(candidates[np.argmax(ranked[candidates])])
        if score == "class" and class_index is None:
            class_index = int(best[chosen])
        return cls(chosen, score, class_index, layout)


# -------------------------------------------------------------------- the box's feature map

#: ops a box's element can be followed through back to its grid (values only move)
_UNARY_OPS = frozenset(
    {"Identity", "Cast", "Dropout", "Sigmoid", "Relu", "LeakyRelu", "Tanh", "HardSigmoid"}
)
_FLAT_OPS = frozenset({"Reshape", "Flatten", "Squeeze", "Unsqueeze"})


def trace_element(
    model: Model,
    tensor: str,
    index: tuple[int, ...],
    batch: np.ndarray | None = None,
    passed: list[str] | None = None,
) -> tuple[str, tuple[int, ...]]:
    """Follow one element of one image's ``tensor`` back through ops that only move values
    (Transpose, Reshape-like, Concat, element-wise unary ops such as Sigmoid) to the tensor
    that computes it, e.g. a box's objectness back to its grid's head map (C, h, w).

    Returns:
        (tensor, index) where the walk stopped (the arguments when it cannot start, e.g. for
        an index that names several elements); ``passed``, when given, receives the tensors
        walked through, which only moved the element.
    """
    nodes = model.runnable.graph.node
    producers = {o: n for n in nodes for o in n.output}
    data = {model.input_name} | {
        o for n in onnx_graph.data_nodes(model.runnable, model.input_name) for o in n.output
    }

    def shape(name: str) -> tuple[int, ...]:
        return tensor_shape(model, name, batch)

    while (node := producers.get(tensor)) is not None:
        if passed is not None:
            passed.append(tensor)
        if len(index) != len(shape(tensor)):  # a partial index (a channel): no one element
            break
        inputs = [i for i in node.input if i in data]
        attrs = onnx_graph.attributes(node)
        if node.op_type in _UNARY_OPS and len(inputs) == 1:
            tensor = inputs[0]
        elif node.op_type in _FLAT_OPS and node.input[0] in data:
            flat = int(np.ravel_multi_index(index, shape(tensor)))
            tensor = node.input[0]
            index = tuple(int(i) for i in np.unravel_index(flat, shape(tensor)))
        elif node.op_type == "Transpose" and len(inputs) == 1:
            perm = attrs.get("perm")
            if perm is None or perm[0] != 0:
                break
            source = [0] * len(index)
            for axis, p in enumerate(perm[1:]):
                source[p - 1] = index[axis]
            tensor, index = inputs[0], tuple(source)
        elif node.op_type == "Concat" and len(inputs) == len(node.input):
            rank = len(index) + 1
            axis = int(attrs.get("axis", 0)) % rank - 1
            if axis < 0:
                break
            position = index[axis]
            for name in node.input:
                size = shape(name)[axis]
                if position < size:
                    tensor = name
                    index = (*index[:axis], position, *index[axis + 1 :])
                    break
                position -= size
        else:
            break
    return tensor, index


def dominators(model: Model, tensor: str) -> list[str]:
    """The data tensors every path from the input to ``tensor`` passes through, nearest
    first (``tensor`` and the input excluded): the layers that fully explain it."""
    nodes = [n for n in onnx_graph.data_nodes(model.runnable, model.input_name)]
    data = {model.input_name} | {o for n in nodes for o in n.output}
    pending = {tensor}
    found: list[str] = []
    for node in reversed(nodes):
        if not pending.intersection(node.output):
            continue
        pending.difference_update(node.output)
        pending.update(i for i in node.input if i in data)
        if len(pending) == 1 and model.input_name not in pending:
            found.append(next(iter(pending)))
    return found


def box_feature_map(
    model: Model, target: ResolvedTarget, batch: np.ndarray | None = None
) -> str | None:
    """The feature map that feeds a box (or single-element neuron) target's head: follow its
    element back to
    its grid (:func:`trace_element`), then take the nearest map above it that every path
    passes through (:func:`dominators`), has spatial extent and feeds a Conv (the head's
    input, or the stem shared by its branches). None when the walk finds none.

    On a multi-scale detector the default CAM layer (the last spatial map) belongs to one
    grid only; a box on another grid does not depend on it, so its gradient there is zero.
    """
    grid, index = trace_element(model, target.tensor, target.index, batch)
    if len(index) < 3:  # not an element of a spatial grid: e.g. a classifier's logit
        return None
    conv_inputs = {n.input[0] for n in model.runnable.graph.node if n.op_type == "Conv"}
    for name in dominators(model, grid):
        if name not in conv_inputs:
            continue
        shape = tensor_shape(model, name, batch)
        if len(shape) == 3 and shape[1] * shape[2] > 1:
            return name
    return None


def depends_on_map(
    model: Model, target: ResolvedTarget, layer: str, batch: np.ndarray | None = None
) -> bool:
    """Whether a single-element target is computed from ``layer``'s tensor: its element's
    walk back to its grid (:func:`trace_element`) passes that tensor, or the grid has it among
    its :func:`dominators`; True when the element cannot be followed (nothing to say)."""
    tensor = model.tensor_name(layer)
    passed: list[str] = []
    grid, index = trace_element(model, target.tensor, target.index, batch, passed)
    if len(index) < 3:
        return True
    return tensor in (grid, *passed) or tensor in dominators(model, grid)


def box_position(
    model: Model, target: ResolvedTarget, size: tuple[int, int], batch: np.ndarray | None = None
) -> tuple[int, int] | None:
    """Where a box target's grid cell lies on a map of ``size`` (h, w): its cell (y, x)
    when the box's grid (:func:`trace_element`) has that size, else the cell centre scaled
    to it; None when the box cannot be followed back to a spatial grid."""
    grid, index = trace_element(model, target.tensor, target.index, batch)
    shape = tensor_shape(model, grid, batch)
    if len(shape) != 3 or len(index) != 3:
        return None
    gy, gx = index[1], index[2]
    return (
        min(size[0] - 1, int((gy + 0.5) * size[0] / shape[1])),
        min(size[1] - 1, int((gx + 0.5) * size[1] / shape[2])),
    )


__all__ = [
    "LAYOUTS",
    "Box",
    "DetectedBox",
    "DetectionLayout",
    "box_feature_map",
    "box_position",
    "decode_boxes",
    "depends_on_map",
    "dominators",
    "iou",
    "layout_named",
    "list_boxes",
    "trace_element",
]
