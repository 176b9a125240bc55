"""The doctor: what the engine can do with a model, and a gradient self-test on the model itself.

    report = model.check()                  # or check(model, image="page.png")
    report.ok                               # False: report.problems says why, one line each
    report.to_dict()                        # plain JSON-able data

The report covers the input layout and batching, where preprocessing and labels came from,
each op type with its backward rule / torch bridge op / incremental-occlusion support, and a
gradient self-test: the engine's float32 input gradient (onnxruntime forward) against a float64
directional derivative (central differences through the rules' float64 forward,
``forward="numpy"``) on a few directions at one input of the preprocessing size. Near-tie gate
flips (a ReLU input or a max-pool pick that changes between the ``+h`` and ``-h`` evaluations,
or between the float32 and float64 forwards) make a direction unjudgeable: they are reported as
flips, not failures.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import json
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx

from . import graph, kernels
from .backward import forward_values, gradients, plan_backward, rule_for
from .errors import CnnvizError
from .geometry import Window
from .incremental import plan as incremental_plan
from .labels import parse_names
from .model import CARD_KEY
from .preprocess import ImageLike
from .targets import Neuron, resolve_target, tensor_shape

if TYPE_CHECKING:  # pragma: no cover
    from .model import Model

#: a float64 directional derivative of the engine's float64 gradient may differ from the
#: central difference by this much (relative): above it, a backward rule is wrong
TOLERANCE_FLOAT64 = 1e-5
#: the float32 gradient (onnxruntime forward) against the same central difference
TOLERANCE_FLOAT32 = 1e-3
#: the rules' float64 forward against onnxruntime's float32 scores (relative to their scale)
TOLERANCE_FORWARD = 1e-3

#: gradient self-test verdicts per direction
PASS, FAIL, FLIP = "pass", "fail", "flip"


@dataclass(frozen=True)
class Layout:
    """The image input as the graph declares it.

    Attributes:
        input_name: the input tensor's name.
        shape: its declared shape; symbolic dims as their names (``?`` when unnamed).
        layout: ``NCHW``, or ``NHWC (input transpose removed)`` (the engine runs NCHW).
        symbolic: names of the axes whose size the graph leaves open (``N``, ``H``...).
        size: (C, H, W) of one preprocessed image.
    """

    input_name: str
    shape: tuple[int | str, ...]
    layout: str
    symbolic: tuple[str, ...]
    size: tuple[int, int, int]


@dataclass(frozen=True)
class OpSupport:
    """One op type of the graph and what each part of the engine does with it.

    Attributes:
        op_type: the ONNX operator.
        count: nodes of that type in the graph.
        on_image_path: nodes of that type compute from the image (else constants / shapes).
        on_gradient_path: nodes between the input and the class scores (gradients flow
            through them).
        backward: the backward pass has a rule for it at the model's opset.
        bridge: the torch bridge converts it; None when torch is not installed.
        incremental: what incremental occlusion does with it: ``crop`` (computed on crops),
            ``mean`` (a running spatial mean), ``full`` (a classifier head: the rest of the
            network runs in full from there), ``blocks`` (cannot be cropped: the network runs
            in full from there, slower but exact), ``-`` (not on the image path).
    """

    op_type: str
    count: int
    on_image_path: bool
    on_gradient_path: bool
    backward: bool
    bridge: bool | None
    incremental: str


@dataclass(frozen=True)
class Flip:
    """A near-tie: a gate of one node that decides differently at two evaluations.

    Attributes:
        node: the node's name (its first output when unnamed).
        op_type: its operator.
        elements: how many gate decisions differ.
        between: ``+h/-h`` (the two central-difference evaluations) or ``float32/float64``
            (the onnxruntime forward and the rules' float64 forward at the same input).
    """

    node: str
    op_type: str
    elements: int
    between: str


@dataclass(frozen=True)
class Direction:
    """One direction of the gradient self-test.

    Attributes:
        kind: ``gradient`` (along the float64 gradient) or ``random``.
        step: the central-difference step h (times the unit-RMS direction).
        finite_difference: (f(x + h d) - f(x - h d)) / 2h, float64.
        float32: <engine float32 gradient, d>.
        float64: <engine float64 gradient, d>.
        error32, error64: relative errors of those against the finite difference.
        status: ``pass``, ``fail`` or ``flip`` (a near-tie made the direction unjudgeable).
        flips: the gates that flipped.
    """

    kind: str
    step: float
    finite_difference: float
    float32: float
    float64: float
    error32: float
    error64: float
    status: str
    flips: tuple[Flip, ...] = ()


@dataclass(frozen=True)
class GradientTest:
    """The gradient self-test on the model.

    Attributes:
        status: ``pass`` (every judged direction agrees), ``fail`` (a rule or the float32 path
            is wrong: see ``reason``), ``flip`` (every direction hit a near-tie), ``skipped``
            (cannot run: see ``reason``).
        reason: one line on a failure or a skip.
        input: ``random`` (noise through the preprocessing) or ``given``.
        seed: the seed of the input, the cotangent and the directions.
        target: the tensor the random cotangent seeds (the class scores).
        forward_error: the rules' float64 forward against onnxruntime's float32 scores
            (max abs difference over the scores' max abs value).
        tolerance32, tolerance64: the relative errors allowed.
        directions: one entry per direction tried.
    """

    status: str
    reason: str = ""
    input: str = "random"
    seed: int = 0
    target: str = ""
    forward_error: float | None = None
    tolerance32: float = TOLERANCE_FLOAT32
    tolerance64: float = TOLERANCE_FLOAT64
    directions: tuple[Direction, ...] = ()


@dataclass(frozen=True)
class CheckReport:
    """What :func:`check` found (plain data: :meth:`to_dict` for JSON).

    Attributes:
        model: the model's name.
        opset: its default-domain opset.
        layout: the input layout.
        batching: ``symbolic`` (the export's batch is open), ``rewritten`` (a fixed batch made
            symbolic), ``loop`` (one image at a time).
        batch_dim: the declared batch dimension.
        preprocess: the preprocessing's fields.
        preprocess_source: ``model card``, ``preset 'NAME'``, ``default``, or ``given``.
        labels_source: ``model card``, ``metadata key 'KEY'``, ``given``, or ``none``.
        num_classes: scores in the first output.
        unused_label_keys: metadata keys holding one name per class that the labels did not
            come from.
        ops: one entry per op type, graph order of first appearance.
        missing_rules: ``op (node)`` of each node on the gradient path without a backward rule.
        missing_ops: their op types, once each.
        incremental: incremental occlusion at the preprocessing size: where it switches to a
            full computation and why (None: it runs on crops to the end).
        gradient_test: the self-test (None when not run).
        problems: one line per thing that cannot work (a missing rule, a failed self-test).
        output_shape: per-image shape of the first output ((4,) for 4 classes; (3549, 6)
            for a detector's raw boxes).
        output_grids: for a (rows, values) output, the rows each grid's head computes
            (:func:`output_grids`); () otherwise.
    """

    model: str
    opset: int
    layout: Layout
    batching: str
    batch_dim: int | str
    preprocess: dict[str, Any]
    preprocess_source: str
    labels_source: str
    num_classes: int
    unused_label_keys: tuple[str, ...]
    ops: tuple[OpSupport, ...]
    missing_rules: tuple[str, ...]
    missing_ops: tuple[str, ...]
    incremental: str | None
    gradient_test: GradientTest | None
    problems: tuple[str, ...] = field(default=())
    output_shape: tuple[int, ...] = ()
    output_grids: tuple[OutputGrid, ...] = ()

    @property
    def classifies(self) -> bool:
        """The first output is one score per class (a vector per image), not a map or a
        detector's (cells, values) rows."""
        return len(self.output_shape) <= 1

    @property
    def scores(self) -> str:
        """What the first output holds, in words: ``4 classes``, or its per-image shape and
        what to explain when it is not a class vector."""
        if self.classifies:
            return f"{self.num_classes} classes"
        shape = "x".join(map(str, self.output_shape))
        return (
            f"output {shape} per image, not a class vector: explain a Neuron, Channel or Box of it"
        )

    def layer_note(self, layer: str, model: Model) -> str:
        """What a CAM layer covers of a multi-grid output, in words ('' when it feeds every
        row): Grad-CAM of a row off its grid is all zero."""
        if len(self.output_grids) < 2:
            return ""
        upstream = _ancestors(model, layer)  # the heads it is computed from
        fed = [
            g for g in self.output_grids if g.head in upstream or layer in _ancestors(model, g.head)
        ]
        if len(fed) == len(self.output_grids):
            return ""
        rows = ", ".join(f"{g.start}-{g.stop - 1}" for g in fed) or "none"
        maps = ", ".join(
            f"rows {g.start}-{g.stop - 1}: {g.feature_map or g.head}" for g in self.output_grids
        )
        return (
            f" (feeds output rows {rows} only: a Box or Neuron target of another row gets "
            f"its grid's map by default, a Channel of another row an all-zero map: name the "
            f"map of its grid with --layer, {maps})"
        )

    @property
    def ok(self) -> bool:
        """Nothing found that cannot work."""
        return not self.problems

    @property
    def gradients_supported(self) -> bool:
        """Every node on the gradient path has a backward rule."""
        return not self.missing_rules

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-able plain data."""
        data = dataclasses.asdict(self)
        data["ok"] = self.ok
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)


def check(
    model: Model,
    *,
    image: ImageLike | np.ndarray | None = None,
    directions: int = 3,
    seed: int = 0,
    gradient_test: bool = True,
) -> CheckReport:
    """Examine ``model``: layout, batching, sources of preprocessing and labels, op support,
    and (``gradient_test``) a gradient self-test.

    Args:
        model: the loaded model.
        image: the self-test's input (a file, a picture or a preprocessed (1, C, H, W)
            batch); None for seeded noise through the model's preprocessing.
        directions: directions of the self-test (the first along the gradient, the others
            random).
        seed: seed of the noise input, the cotangent and the random directions.
        gradient_test: run the self-test.

    Returns:
        a :class:`CheckReport`; ``report.problems`` lists what cannot work.
    """
    opset = _opset(model.proto)
    image_path = graph.data_nodes(model.runnable, model.input_name)
    gradient_path = _gradient_path(model, image_path)
    unsupported = [node for node in gradient_path if rule_for(node.op_type, opset) is None]
    missing = tuple(f"{node.op_type} ({node.name or node.output[0]})" for node in unsupported)
    ops = _op_table(model, opset, image_path, gradient_path)
    problems: list[str] = []
    if missing:
        problems.append(
            f"no backward rule for {_by_op(unsupported)}: gradient methods cannot run "
            "(perturbation methods can)"
        )
    test: GradientTest | None = None
    if gradient_test:
        if missing:
            test = GradientTest("skipped", f"no backward rule for {_by_op(unsupported)}")
        else:
            test = gradient_self_test(model, image=image, directions=directions, seed=seed)
            if test.status == FAIL:
                problems.append(f"gradient self-test failed: {test.reason}")
    output_shape = tensor_shape(model, model.output_names[0])
    labels_source, unused = _labels_source(model, classifies=len(output_shape) <= 1)
    grids = output_grids(model) if len(output_shape) == 2 else ()
    return CheckReport(
        model=model.name,
        opset=opset,
        layout=_layout(model),
        batching=_batching(model),
        batch_dim=_declared_shape(model)[0],
        preprocess=model.preprocess.to_dict(),
        preprocess_source=model.preprocess_source,
        labels_source=labels_source,
        num_classes=model.num_classes,
        unused_label_keys=unused,
        ops=ops,
        missing_rules=missing,
        missing_ops=tuple(dict.fromkeys(node.op_type for node in unsupported)),
        incremental=_incremental_summary(model),
        gradient_test=test,
        problems=tuple(problems),
        output_shape=output_shape,
        output_grids=grids,
    )


@dataclass(frozen=True)
class OutputGrid:
    """Rows ``start`` to ``stop - 1`` of a (rows, values) output (a detector's cells) are
    computed by the grid map ``head`` (:func:`~.detection.trace_element`), whose input
    feature map is ``feature_map`` (:func:`~.detection.box_feature_map`; None when the walk
    finds none, and the head itself is the map to name)."""

    start: int
    stop: int
    head: str
    feature_map: str | None


def output_grids(model: Model) -> tuple[OutputGrid, ...]:
    """The row ranges of the first output, (N, rows, values), that each grid computes, in
    row order (one per grid of a multi-scale detector: YOLO's strides 8, 16, 32); found by
    following rows back to their grid (binary search on the rows, which a detector's Concat
    keeps contiguous per grid)."""
    from .detection import box_feature_map, trace_element  # detection builds on targets

    output = model.output_names[0]
    rows = tensor_shape(model, output)[0]

    def grid(row: int) -> str:
        return trace_element(model, output, (row, 0))[0]

    found: list[OutputGrid] = []
    start = 0
    while start < rows:
        head = grid(start)
        low, high = start, rows - 1  # the last row of this grid lies in [low, high]
        while low < high:
            middle = (low + high + 1) // 2
            low, high = (middle, high) if grid(middle) == head else (low, middle - 1)
        target = resolve_target(model, Neuron(output, start, 0))
        found.append(OutputGrid(start, low + 1, head, box_feature_map(model, target)))
        start = low + 1
    return tuple(found)


def _ancestors(model: Model, tensor: str) -> set[str]:
    """Every tensor ``tensor`` is computed from (itself included)."""
    producers = {o: n for n in model.runnable.graph.node for o in n.output}
    seen, stack = {tensor}, [tensor]
    while stack:
        node = producers.get(stack.pop())
        for name in node.input if node is not None else ():
            if name and name not in seen:
                seen.add(name)
                stack.append(name)
    return seen


# ------------------------------------------------------------------------ gradient test


def gradient_self_test(
    model: Model,
    *,
    image: ImageLike | np.ndarray | None = None,
    directions: int = 3,
    seed: int = 0,
) -> GradientTest:
    """The engine's float32 input gradient of <c, scores> (c a seeded random cotangent on the
    class scores) against float64 central differences through the rules' forward, on
    ``directions`` directions (see :func:`check`).

    Per direction: a near-tie between the ``+h`` and ``-h`` evaluations is retried with a
    step 100 times smaller (twice), then reported as a flip; the engine's float64 gradient
    must match within :data:`TOLERANCE_FLOAT64` (else a rule is wrong); the float32 one within
    :data:`TOLERANCE_FLOAT32`, unless a gate decides differently in float32 and float64 (a
    flip).
    """
    rng = np.random.default_rng(seed)
    given = image is not None
    x32 = _test_input(model, image, rng)
    target = model.score_tensor
    plan = plan_backward(model, [target])
    gates = _gate_nodes(plan)
    made = {o for node, _ in plan.nodes for o in node.output}
    # the gates' data inputs, kept in both forwards' values (constants are there anyway)
    gate_tensors = list(dict.fromkeys(i for node in gates for i in node.input if i in made))
    try:
        scores32 = model.run(x32, taps=[target], outputs=False)[target].astype(np.float64)
        cotangent = rng.standard_normal(scores32.shape)
        x64 = x32.astype(np.float64)
        result32 = gradients(model, x32, {target: cotangent}, wrt=gate_tensors)
        result64 = gradients(model, x64, {target: cotangent}, wrt=gate_tensors, forward="numpy")
    except CnnvizError as exc:
        return GradientTest(FAIL, f"the backward pass raised: {exc}", _input_kind(given), seed)
    values32, values64 = result32.values, result64.values
    forward_error = _scaled_error(values64[target], scores32)
    grad32 = result32.grads[model.input_name].astype(np.float64)
    grad64 = result64.grads[model.input_name]

    def report(status: str, reason: str, tried: tuple[Direction, ...] = ()) -> GradientTest:
        return GradientTest(
            status, reason, _input_kind(given), seed, target, forward_error, directions=tried
        )

    if forward_error > TOLERANCE_FORWARD:
        return report(
            FAIL,
            f"the rules' float64 forward differs from onnxruntime by {forward_error:.2g} "
            f"(relative) on {target!r}: a rule's forward is wrong",
        )
    precision_flips = _flips(gates, values32, values64, plan.opset, "float32/float64")

    def objective(x: np.ndarray) -> tuple[float, dict[str, np.ndarray]]:
        values = forward_values(model, x, plan, "numpy")
        return float((values[target] * cotangent).sum()), values

    norm = float(np.linalg.norm(grad64))
    rms_x = float(np.sqrt(np.mean(x64**2))) or 1.0
    results = []
    for k in range(max(1, directions)):
        if k == 0 and norm > 0:
            d, kind = grad64 / norm, "gradient"
        else:
            d, kind = rng.standard_normal(x64.shape), "random"
        d = d / np.sqrt(np.mean(d**2))  # unit RMS: the step is h per pixel on average
        floor = norm * float(np.linalg.norm(d)) / np.sqrt(d.size)  # a typical |<g, d>|
        step = 1e-6 * rms_x
        for _retry in range(3):  # a near-tie crossed: retry closer, then call it a flip
            f_plus, v_plus = objective(x64 + step * d)
            f_minus, v_minus = objective(x64 - step * d)
            fd_flips = _flips(gates, v_plus, v_minus, plan.opset, "+h/-h")
            if not fd_flips:
                break
            step /= 100
        fd = (f_plus - f_minus) / (2 * step)
        a32, a64 = float((grad32 * d).sum()), float((grad64 * d).sum())
        scale = max(abs(fd), abs(a64), floor, float(np.finfo(np.float64).tiny))
        err32, err64 = float(abs(a32 - fd) / scale), float(abs(a64 - fd) / scale)
        flips: list[Flip] = []
        if fd_flips:
            status, flips = FLIP, fd_flips
        elif err64 > TOLERANCE_FLOAT64:
            status = FAIL
        elif err32 > TOLERANCE_FLOAT32:
            status, flips = (FLIP, precision_flips) if precision_flips else (FAIL, [])
        else:
            status = PASS
        results.append(Direction(kind, step, fd, a32, a64, err32, err64, status, tuple(flips)))
    return report(*_verdict(results), tuple(results))


def _verdict(results: list[Direction]) -> tuple[str, str]:
    """The test's status and one-line reason from its directions."""
    failed = [(k, d) for k, d in enumerate(results) if d.status == FAIL]
    if failed:
        k, d = failed[0]
        if d.error64 > TOLERANCE_FLOAT64:
            return FAIL, (
                f"direction {k} ({d.kind}): the float64 gradient is off by {d.error64:.2g} "
                f"(relative; allowed {TOLERANCE_FLOAT64:g}): a backward rule is wrong"
            )
        return FAIL, (
            f"direction {k} ({d.kind}): the float32 gradient is off by {d.error32:.2g} "
            f"(relative; allowed {TOLERANCE_FLOAT32:g}) with no near-tie to explain it"
        )
    if all(d.status == FLIP for d in results):
        return FLIP, "every direction crossed a near-tie gate: try another seed or image"
    return PASS, ""


def _test_input(
    model: Model, image: ImageLike | np.ndarray | None, rng: np.random.Generator
) -> np.ndarray:
    """A float32 (1, C, H, W) batch: the given image, or seeded noise pixels preprocessed."""
    if image is None:
        height, width = model.input_shape[1:]
        pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        batch = model.prepare(pixels)
    else:
        batch = model.prepare(image)
    return np.ascontiguousarray(batch[:1], dtype=np.float32)


def _input_kind(given: bool) -> str:
    return "given" if given else "random"


def _scaled_error(ours: np.ndarray, reference: np.ndarray) -> float:
    """max |ours - reference| over max |reference| (0 when both are zero)."""
    scale = float(np.abs(reference).max()) if reference.size else 0.0
    diff = float(np.abs(np.asarray(ours, np.float64) - reference).max()) if reference.size else 0.0
    return diff / scale if scale > 0 else diff


# --------------------------------------------------------------------------------- gates

GateFn = Callable[[list[Any], dict, int], np.ndarray]


def _sign_gate(inputs: list[Any], attrs: dict, opset: int) -> np.ndarray:
    """ReLU-like: the slope changes at 0 (the rules pass x > 0)."""
    return np.asarray(inputs[0]) > 0


def _clip_gate(inputs: list[Any], attrs: dict, opset: int) -> np.ndarray:
    x = np.asarray(inputs[0])
    if opset >= 11:
        lo = float(np.asarray(inputs[1])) if len(inputs) > 1 and inputs[1] is not None else -np.inf
        hi = float(np.asarray(inputs[2])) if len(inputs) > 2 and inputs[2] is not None else np.inf
    else:
        lo, hi = float(attrs.get("min", -np.inf)), float(attrs.get("max", np.inf))
    return np.where(x <= lo, 0, np.where(x >= hi, 2, 1))


def _hard_sigmoid_gate(inputs: list[Any], attrs: dict, opset: int) -> np.ndarray:
    z = attrs.get("alpha", 0.2) * np.asarray(inputs[0]) + attrs.get("beta", 0.5)
    return np.where(z <= 0, 0, np.where(z >= 1, 2, 1))


def _hard_swish_gate(inputs: list[Any], attrs: dict, opset: int) -> np.ndarray:
    x = np.asarray(inputs[0])
    return np.where(x < -3, 0, np.where(x > 3, 2, 1))


def _extremum_gate(pick: Callable) -> GateFn:
    def gate(inputs: list[Any], attrs: dict, opset: int) -> np.ndarray:
        arrays = np.broadcast_arrays(*[np.asarray(x) for x in inputs if x is not None])
        return pick(np.stack(arrays), axis=0)

    return gate


def _max_pool_gate(inputs: list[Any], attrs: dict, opset: int) -> np.ndarray:
    x = np.asarray(inputs[0])
    win = Window.from_onnx(attrs, attrs["kernel_shape"], x.shape[2:])
    return kernels.max_pool2d(x, win.kernel, win.stride, win.pads, win.dilation, win.ceil_mode)[1]


def _global_max_gate(inputs: list[Any], attrs: dict, opset: int) -> np.ndarray:
    x = np.asarray(inputs[0])
    return x.reshape(*x.shape[:2], -1).argmax(axis=2)


#: op -> its discrete decisions (the pieces of a piecewise definition the backward picks)
GATES: dict[str, GateFn] = {
    "Relu": _sign_gate,
    "LeakyRelu": _sign_gate,
    "PRelu": _sign_gate,
    "Clip": _clip_gate,
    "HardSigmoid": _hard_sigmoid_gate,
    "HardSwish": _hard_swish_gate,
    "Max": _extremum_gate(np.argmax),
    "Min": _extremum_gate(np.argmin),
    "MaxPool": _max_pool_gate,
    "GlobalMaxPool": _global_max_gate,
}


def _gate_nodes(plan: Any) -> list[onnx.NodeProto]:
    return [node for node, _ in plan.nodes if node.op_type in GATES]


def _flips(
    nodes: list[onnx.NodeProto],
    first: Mapping[str, np.ndarray],
    second: Mapping[str, np.ndarray],
    opset: int,
    between: str,
) -> list[Flip]:
    """The gates of ``nodes`` that decide differently on two sets of forward values."""
    flips = []
    for node in nodes:
        attrs = graph.attributes(node)
        gate = GATES[node.op_type]
        a = gate([first.get(i) if i else None for i in node.input], attrs, opset)
        b = gate([second.get(i) if i else None for i in node.input], attrs, opset)
        changed = int(np.count_nonzero(a != b)) if a.shape == b.shape else int(a.size)
        if changed:
            flips.append(Flip(node.name or node.output[0], node.op_type, changed, between))
    return flips


# ----------------------------------------------------------------------------- the graph


def _opset(proto: onnx.ModelProto) -> int:
    return next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 13)


def _by_op(nodes: list[onnx.NodeProto]) -> str:
    """``Op (node 'a')``, ``Op (node 'a' and 3 more)``, ... one entry per op type."""
    names: dict[str, list[str]] = {}
    for node in nodes:
        names.setdefault(node.op_type, []).append(node.name or node.output[0])
    return ", ".join(
        f"{op} (node {first[0]!r}" + (f" and {len(first) - 1} more)" if len(first) > 1 else ")")
        for op, first in names.items()
    )


def _gradient_path(model: Model, image_path: list[onnx.NodeProto]) -> list[onnx.NodeProto]:
    """Nodes that depend on the input and lead to the class scores (graph order)."""
    needed = {model.score_tensor}
    path = []
    for node in reversed(image_path):
        if any(o in needed for o in node.output):
            path.append(node)
            needed.update(i for i in node.input if i)
    return path[::-1]


def _op_table(
    model: Model,
    opset: int,
    image_path: list[onnx.NodeProto],
    gradient_path: list[onnx.NodeProto],
) -> tuple[OpSupport, ...]:
    counts = Counter(node.op_type for node in model.runnable.graph.node)
    on_image = {node.op_type for node in image_path}
    on_gradient = {node.op_type for node in gradient_path}
    bridge = _bridge_lookup()
    return tuple(
        OpSupport(
            op,
            count,
            op in on_image,
            op in on_gradient,
            rule_for(op, opset) is not None,
            None if bridge is None else bridge(op, opset),
            incremental_support(op) if op in on_image else "-",
        )
        for op, count in counts.items()
    )


def _bridge_lookup() -> Callable[[str, int], bool] | None:
    """Whether the torch bridge converts an op (at an opset); None without torch (never
    imported when absent)."""
    if importlib.util.find_spec("torch") is None:
        return None
    from .torch_bridge import SHAPE_OPS
    from .torch_bridge.ops import op_for

    return lambda op, opset: op in SHAPE_OPS or op_for(op, opset) is not None


def incremental_support(op_type: str) -> str:
    """What incremental occlusion (:mod:`.incremental.plan`) does with an op on the image path:
    ``crop``, ``mean``, ``full`` (a head) or ``blocks`` (see :class:`OpSupport`)."""
    if op_type in incremental_plan.WINDOW_OPS:
        return "crop"
    if op_type in incremental_plan.UNARY_OPS or op_type in incremental_plan.MERGE_OPS:
        return "crop"
    if op_type in ("GlobalAveragePool", "ReduceMean"):
        return "mean"
    if op_type in incremental_plan.HEAD_OPS:
        return "full"
    return "blocks"


def _incremental_summary(model: Model) -> str | None:
    """Where incremental occlusion stops cropping, at the preprocessing size with windows of
    an eighth of the image side (None: never)."""
    chw = model.input_shape
    window = (max(1, chw[1] // 8), max(1, chw[2] // 8))
    plan = incremental_plan.build_plan(
        model.runnable, model.input_name, chw, window, [model.score_tensor]
    )
    if plan.switch is None:
        return None
    blocked = f"; blocked by {plan.blocked[0]} ({plan.blocked[1]})" if plan.blocked else ""
    return (
        f"{window[0]}x{window[1]} windows: {len(plan.steps)} steps on crops, then full from "
        f"{plan.switch!r}: {plan.switch_reason}{blocked}"
    )


# ---------------------------------------------------------------------- input and sources


def _declared_shape(model: Model) -> tuple[int | str, ...]:
    info = next(i for i in model.proto.graph.input if i.name == model.input_name)
    dims: list[int | str] = []
    for d in info.type.tensor_type.shape.dim:
        if d.HasField("dim_value") and d.dim_value > 0:
            dims.append(int(d.dim_value))
        else:
            dims.append(d.dim_param or "?")
    return tuple(dims)


def _layout(model: Model) -> Layout:
    shape = _declared_shape(model)
    symbolic = tuple(
        f"{'NCHW'[axis]}={dim}" for axis, dim in enumerate(shape[:4]) if isinstance(dim, str)
    )
    return Layout(model.input_name, shape, model.layout, symbolic, model.input_shape)


def _batching(model: Model) -> str:
    if not model.batched:
        return "loop"
    return "symbolic" if isinstance(_declared_shape(model)[0], str) else "rewritten"


def _labels_source(model: Model, classifies: bool = True) -> tuple[str, tuple[str, ...]]:
    """Where the labels came from (as the model recorded it), and metadata keys that hold one
    name per class but were not used; ``classifies``: the first output is a class vector
    (else no class names are expected)."""
    source = model.labels_source or ("none (classes show as 'class N')" if classifies else "none")
    unused = tuple(
        prop.key
        for prop in model.proto.metadata_props
        if prop.key != CARD_KEY
        and (names := parse_names(prop.value)) is not None
        and len(names) == model.num_classes
        and names != model.labels
    )
    return source, unused


__all__ = [
    "FAIL",
    "FLIP",
    "GATES",
    "PASS",
    "TOLERANCE_FLOAT32",
    "TOLERANCE_FLOAT64",
    "TOLERANCE_FORWARD",
    "CheckReport",
    "Direction",
    "Flip",
    "GradientTest",
    "Layout",
    "OpSupport",
    "OutputGrid",
    "check",
    "gradient_self_test",
    "incremental_support",
    "output_grids",
]
