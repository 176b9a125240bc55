"""Detection layouts and box targets: grid decoding against a NumPy reference written here,
NMS and picking a box by where it is, following a box back to its grid and the feature map
that feeds its head (the default CAM layer of a box), on a tiny two-grid YOLOX-style graph
and, when ../shared is present, on ddddocr's trained character detector."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from cnnviz.attribution.cam import default_layer
from cnnviz.attribution.methods import explain
from cnnviz_core import Box, DetectionLayout, Model, Preprocess, TargetError, list_boxes
from cnnviz_core.detection import (
    LAYOUTS,
    box_feature_map,
    box_position,
    decode_boxes,
    dominators,
    layout_named,
    trace_element,
)
from cnnviz_core.targets import resolve_target

DDDDOCR = Path(__file__).resolve().parents[3] / "shared/data/models/ddddocr_det.onnx"


# ------------------------------------------------------------------------------- decoding


def _reference_xyxy(raw: np.ndarray, strides, height: int, width: int) -> np.ndarray:
    """YOLOX decoding, one box at a time: grids row by row, finest stride first."""
    rows = []
    k = 0
    for s in strides:
        for gy in range(math.ceil(height / s)):
            for gx in range(math.ceil(width / s)):
                x, y, w, h = (float(v) for v in raw[k, :4])
                cx, cy = (x + gx) * s, (y + gy) * s
                bw, bh = math.exp(w) * s, math.exp(h) * s
                rows.append((cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2))
                k += 1
    assert k == len(raw)
    return np.array(rows)


@pytest.mark.parametrize("size", [(64, 96), (40, 72)], ids=["64x96", "40x72-ragged"])
def test_grid_decoding_matches_the_reference(size: tuple[int, int]) -> None:
    strides = (8, 16, 32)
    count = sum(math.ceil(size[0] / s) * math.ceil(size[1] / s) for s in strides)
    raw = np.random.default_rng(0).normal(size=(count, 7)).astype(np.float32)
    layout = DetectionLayout(strides=strides, logits=True)
    np.testing.assert_allclose(layout.xyxy(raw, size), _reference_xyxy(raw, strides, *size))
    score, best, objectness = layout.scores(raw)
    sigmoid = 1 / (1 + np.exp(-raw.astype(np.float64)))
    assert objectness is not None
    np.testing.assert_allclose(objectness, sigmoid[:, 4])
    np.testing.assert_array_equal(best, sigmoid[:, 5:].argmax(axis=1))
    np.testing.assert_allclose(score, sigmoid[:, 4] * sigmoid[:, 5:].max(axis=1))


def test_decoded_layouts_keep_their_meaning() -> None:
    """YOLOv5: rows of (cx, cy, w, h, obj, classes); YOLOv8: columns, no objectness."""
    v5 = np.array([[10, 20, 4, 6, 0.5, 0.2, 0.8]], np.float32)
    np.testing.assert_allclose(LAYOUTS["yolov5"].xyxy(v5), [[8, 17, 12, 23]])
    score, best, _ = LAYOUTS["yolov5"].scores(v5)
    np.testing.assert_allclose(score, [0.4])
    assert best.tolist() == [1]
    v8 = np.array([[10, 30], [20, 40], [4, 2], [6, 2], [0.1, 0.7], [0.9, 0.2]], np.float32)
    np.testing.assert_allclose(LAYOUTS["yolov8"].xyxy(v8), [[8, 17, 12, 23], [29, 39, 31, 41]])
    score, best, objectness = LAYOUTS["yolov8"].scores(v8)
    np.testing.assert_allclose(score, [0.9, 0.7], rtol=1e-6)
    assert best.tolist() == [1, 0] and objectness is None


def test_grid_layout_errors_name_what_to_set() -> None:
    raw = np.zeros((10, 6), np.float32)
    with pytest.raises(TargetError, match=r"strides \(8, 16, 32\).*have 42"):
        LAYOUTS["yolox"].xyxy(raw, (64, 32))
    with pytest.raises(TargetError, match="needs the input size"):
        LAYOUTS["yolox"].xyxy(raw)
    with pytest.raises(TargetError, match="known: yolov5, yolov8, yolox"):
        layout_named("yolov9")


def test_nms_keeps_the_best_of_overlapping_boxes_per_class() -> None:
    boxes = np.array(
        [
            [10, 10, 10, 10, 0.9, 1.0, 0.0],  # kept
            [11, 10, 10, 10, 0.8, 1.0, 0.0],  # overlaps the first, same class: dropped
            [11, 10, 10, 10, 0.7, 0.0, 1.0],  # overlaps, other class: kept
            [50, 50, 10, 10, 0.6, 1.0, 0.0],  # elsewhere: kept
            [80, 80, 10, 10, 0.1, 1.0, 0.0],  # below min_score
        ],
        np.float32,
    )
    found = decode_boxes(boxes, DetectionLayout(), (100, 100))
    assert [(b.index, b.class_index) for b in found] == [(0, 0), (2, 1), (3, 0)]
    assert found[0].xyxy == (5.0, 5.0, 15.0, 15.0)
    assert found[0].score == pytest.approx(0.9) and found[0].objectness == pytest.approx(0.9)
    assert [b.index for b in decode_boxes(boxes, DetectionLayout(), (100, 100), top=2)] == [0, 2]
    everything = decode_boxes(boxes, DetectionLayout(), (100, 100), min_score=0, nms_iou=None)
    assert [b.index for b in everything] == [0, 1, 2, 3, 4]


# ------------------------------------------------------------------ a two-grid detector

SIZE = 32  # input 32x32: grids of strides 8 (4x4) and 16 (2x2), 20 boxes of 7 values


def _silu(nodes: list, x: str, name: str) -> str:
    nodes += [
        helper.make_node("Sigmoid", [x], [name + "_sig"]),
        helper.make_node("Mul", [x, name + "_sig"], [name]),
    ]
    return name


def _two_grid_detector() -> Model:
    """YOLOX-style: backbone maps f8 (stride 8) and f16 (stride 16); per grid a stem
    (1x1 conv + SiLU, ``stem8``/``stem16``) feeding reg (4), obj (1, sigmoid) and cls (2,
    sigmoid) 1x1 convs, concatenated (7, h, w), flattened, the grids concatenated and
    transposed to (boxes, 7)."""
    rng = np.random.default_rng(5)
    inits: list = []

    def weight(name: str, *shape: int) -> str:
        inits.append(numpy_helper.from_array(rng.normal(0, 0.5, shape).astype(np.float32), name))
        return name

    nodes: list = [
        helper.make_node(
            "Conv", ["x", weight("wb8", 8, 3, 8, 8), weight("bb8", 8)], ["b8"], strides=[8, 8]
        )
    ]
    f8 = _silu(nodes, "b8", "f8")
    nodes.append(
        helper.make_node(
            "Conv", [f8, weight("wb16", 8, 8, 2, 2), weight("bb16", 8)], ["b16"], strides=[2, 2]
        )
    )
    f16 = _silu(nodes, "b16", "f16")
    flat = []
    for level, feature in (("8", f8), ("16", f16)):
        nodes.append(
            helper.make_node(
                "Conv", [feature, weight(f"ws{level}", 8, 8, 1, 1)], [f"stem{level}_pre"]
            )
        )
        stem = _silu(nodes, f"stem{level}_pre", f"stem{level}")
        parts = []
        for part, channels in (("reg", 4), ("obj", 1), ("cls", 2)):
            w = weight(f"w{part}{level}", channels, 8, 1, 1)
            b = weight(f"b{part}{level}", channels)
            nodes.append(helper.make_node("Conv", [stem, w, b], [f"{part}{level}"]))
            if part != "reg":
                nodes.append(helper.make_node("Sigmoid", [f"{part}{level}"], [f"p{part}{level}"]))
            parts.append(f"{part}{level}" if part == "reg" else f"p{part}{level}")
        nodes.append(helper.make_node("Concat", parts, [f"head{level}"], axis=1))
        inits.append(numpy_helper.from_array(np.array([1, 7, -1], np.int64), f"shape{level}"))
        nodes.append(
            helper.make_node("Reshape", [f"head{level}", f"shape{level}"], [f"flat{level}"])
        )
        flat.append(f"flat{level}")
    nodes += [
        helper.make_node("Concat", flat, ["grids"], axis=2),
        helper.make_node("Transpose", ["grids"], ["y"], perm=[0, 2, 1]),
    ]
    graph = helper.make_graph(
        nodes,
        "two_grids",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 20, 7])],
        inits,
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(proto)
    return Model(proto.SerializeToString(), preprocess=Preprocess(scale=1.0))


@pytest.fixture(scope="module")
def detector() -> Model:
    return _two_grid_detector()


@pytest.fixture(scope="module")
def batch() -> np.ndarray:
    return np.random.default_rng(6).normal(size=(1, 3, SIZE, SIZE)).astype(np.float32)


GRID = DetectionLayout(output="y", strides=(8, 16))


@pytest.mark.parametrize(
    ("box", "grid", "index"),
    [
        (Box(5, "objectness", layout=GRID), "obj8", (0, 1, 1)),  # stride 8: cell (1, 1)
        (Box(18, "class", 1, GRID), "cls16", (1, 1, 0)),  # stride 16: box 2 = cell (1, 0)
        (Box(19, "objectness", layout=GRID), "obj16", (0, 1, 1)),
    ],
)
def test_a_box_is_followed_back_to_its_grid(detector, batch, box, grid, index) -> None:
    """Through the Transpose, the grids' Concat, the Reshape, the head's Concat and the
    sigmoid, to the logit the box's score comes from: same value after the sigmoid."""
    resolved = resolve_target(detector, box)
    assert trace_element(detector, resolved.tensor, resolved.index) == (grid, index)
    values = detector.run(batch, taps=[grid])
    element = values[grid][0][index]
    assert 1 / (1 + np.exp(-element)) == pytest.approx(values["y"][0][resolved.index], rel=1e-5)


def test_the_feature_map_of_a_box_is_its_grids_stem(detector) -> None:
    """The maps every path to the box passes through, nearest first; the nearest feeding a
    Conv is the grid's stem (the old default, the last spatial map, is the stride-16
    head: a stride-8 box does not depend on it)."""
    assert dominators(detector, "obj8")[:4] == ["stem8", "stem8_pre", "f8", "b8"]
    for index, stem in ((5, "stem8"), (18, "stem16")):
        resolved = resolve_target(detector, Box(index, "objectness", layout=GRID))
        assert box_feature_map(detector, resolved) == stem
        assert default_layer(detector, Box(index, "objectness", layout=GRID)) == stem
    assert default_layer(detector) == "head16"
    assert box_position(
        detector, resolve_target(detector, Box(5, "objectness", layout=GRID)), (8, 8)
    ) == (3, 3)


def test_gradcam_of_a_fine_box_is_zero_on_the_coarse_head_and_not_on_its_stem(
    detector, batch
) -> None:
    """The root cause of the all-zero Grad-CAM on ddddocr, in miniature."""
    box = Box(5, "objectness", layout=GRID)
    coarse = np.asarray(explain(detector, batch, "gradcam", box, layer="head16").maps)
    assert not coarse.any()
    fine = explain(detector, batch, "gradcam", box)
    assert fine.options["layer"] == "stem8" and np.asarray(fine.maps).any()


@pytest.mark.parametrize(
    ("index", "layer", "flipped"),
    [(5, "stem8_pre", True), (16, "stem16_pre", True), (18, "stem16_pre", False)],
)
def test_eigencam_of_a_box_is_positive_at_its_cell(
    detector, batch, index: int, layer: str, flipped: bool
) -> None:
    """Eigen-CAM's singular vector is defined up to its sign; for a box, the sign puts the
    box's cell on the positive side of the projection (on the stems' signed pre-activations
    that differs from "sums to >= 0" for some boxes)."""
    from cnnviz.attribution.cam_variants import eigencam_weights

    box = Box(index, "objectness", layout=GRID)
    result = explain(detector, batch, "eigencam", box, layer=layer)
    activations = detector.run(batch, taps=[layer])[layer]
    unsigned = eigencam_weights(activations, None, [])
    weights = result.extras["weights"]
    np.testing.assert_allclose(weights, -unsigned if flipped else unsigned, rtol=1e-6)
    cell = box_position(detector, resolve_target(detector, box), activations.shape[2:])
    assert cell is not None
    assert activations[0][:, cell[0], cell[1]] @ weights[0] >= 0


def test_boxes_of_different_grids_in_one_batch_need_a_layer(detector, batch) -> None:
    two = np.concatenate([batch, batch])
    boxes = [Box(5, "objectness", layout=GRID), Box(19, "objectness", layout=GRID)]
    with pytest.raises(Exception, match="fed by different feature maps"):
        explain(detector, two, "gradcam", boxes)


def _yolov5_style_detector() -> Model:
    """YOLOv5-style decoded export over the same backbone: per grid a 1x1 conv (3 anchors x
    7) reshaped to (3, h, w, 7), a sigmoid, the centre, size and scores sliced, decoded
    (Mul/Add/Pow) and concatenated back, flattened to (3 h w, 7); grids concatenated."""
    rng = np.random.default_rng(8)
    inits: list = []

    def const(name: str, value: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(value, name))
        return name

    def weight(name: str, *shape: int) -> str:
        return const(name, rng.normal(0, 0.5, shape).astype(np.float32))

    nodes: list = [
        helper.make_node(
            "Conv", ["x", weight("wb8", 8, 3, 8, 8), weight("bb8", 8)], ["b8"], strides=[8, 8]
        )
    ]
    f8 = _silu(nodes, "b8", "f8")
    nodes.append(
        helper.make_node(
            "Conv", [f8, weight("wb16", 8, 8, 2, 2), weight("bb16", 8)], ["b16"], strides=[2, 2]
        )
    )
    f16 = _silu(nodes, "b16", "f16")
    flat = []
    for level, feature, side in (("8", f8, 4), ("16", f16, 2)):
        p = f"l{level}_"
        nodes += [
            helper.make_node(
                "Conv", [feature, weight(p + "w", 21, 8, 1, 1), weight(p + "b", 21)], [p + "conv"]
            ),
            helper.make_node(
                "Reshape",
                [p + "conv", const(p + "s5", np.array([1, 3, 7, side, side], np.int64))],
                [p + "r5"],
            ),
            helper.make_node("Transpose", [p + "r5"], [p + "t5"], perm=[0, 1, 3, 4, 2]),
            helper.make_node("Sigmoid", [p + "t5"], [p + "sig"]),
        ]
        for part, (start, end) in (("xy", (0, 2)), ("wh", (2, 4)), ("conf", (4, 7))):
            nodes.append(
                helper.make_node(
                    "Slice",
                    [
                        p + "sig",
                        const(p + part + "0", np.array([start], np.int64)),
                        const(p + part + "1", np.array([end], np.int64)),
                        const(p + part + "a", np.array([4], np.int64)),
                    ],
                    [p + part],
                )
            )
        nodes += [
            helper.make_node(
                "Mul", [p + "xy", const(p + "k", np.float32(2.0 * int(level)))], [p + "xyd"]
            ),
            helper.make_node("Pow", [p + "wh", const(p + "e", np.float32(2.0))], [p + "whd"]),
            helper.make_node("Concat", [p + "xyd", p + "whd", p + "conf"], [p + "dec"], axis=4),
            helper.make_node(
                "Reshape",
                [p + "dec", const(p + "s3", np.array([1, -1, 7], np.int64))],
                [p + "flat"],
            ),
        ]
        flat.append(p + "flat")
    nodes.append(helper.make_node("Concat", flat, ["y"], axis=1))
    graph = helper.make_graph(
        nodes,
        "yolov5_style",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 60, 7])],
        inits,
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(proto)
    return Model(proto.SerializeToString(), preprocess=Preprocess(scale=1.0))


@pytest.mark.parametrize(("index", "feature"), [(7, "f8"), (47, "f8"), (50, "f16")])
def test_a_decoded_yolov5_box_gets_the_map_of_its_grid(batch, index: int, feature: str) -> None:
    """Boxes 0-47 come from the stride-8 grid (3 anchors x 16 cells), 48-59 from the
    stride-16 one: each box's CAM layer is the map its grid's head conv reads, and its
    Grad-CAM there is not zero."""
    model = _yolov5_style_detector()
    box = Box(index, "objectness")
    assert default_layer(model, box) == feature
    assert np.asarray(explain(model, batch, "gradcam", box).maps).any()


def test_box_at_picks_the_best_score_among_overlapping_boxes(detector, batch) -> None:
    values = detector.run(batch)["y"][0]
    corners = GRID.xyxy(values, (SIZE, SIZE))
    score, best, _ = GRID.scores(values)
    rect = corners[7]
    x0, y0, x1, y1 = rect
    iw = np.clip(np.minimum(corners[:, 2], x1) - np.maximum(corners[:, 0], x0), 0, None)
    ih = np.clip(np.minimum(corners[:, 3], y1) - np.maximum(corners[:, 1], y0), 0, None)
    area = (corners[:, 2] - corners[:, 0]) * (corners[:, 3] - corners[:, 1])
    overlap = iw * ih / (area + (x1 - x0) * (y1 - y0) - iw * ih)
    expected = max(np.flatnonzero(overlap >= 0.3), key=lambda i: score[i])
    chosen = Box.at(detector, batch, rect, GRID)
    assert chosen == Box(int(expected), "class", int(best[expected]), GRID)
    assert Box.at(detector, batch, rect, GRID, "objectness").score == "objectness"
    with pytest.raises(TargetError, match="no box overlaps"):
        Box.at(detector, batch, (200, 200, 210, 210), GRID)


# ------------------------------------------------------------------------------ ddddocr


@pytest.fixture(scope="module")
def ddddocr() -> tuple[Model, np.ndarray, list]:
    """ddddocr's detector on "A 7" and "K" drawn on white (0-255 pixels, as ddddocr feeds
    them), with each character's ink box (A, 7, K)."""
    if not DDDDOCR.exists():
        pytest.skip("ddddocr_det.onnx is not in ../shared")
    from PIL import Image, ImageDraw, ImageFont

    image = Image.new("RGB", (416, 416), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=60)
    draw.text((40, 60), "A 7", fill="black", font=font)
    draw.text((200, 250), "K", fill="black", font=font)
    seven = (40 + font.getlength("A "), 60)
    ink = [
        draw.textbbox((40, 60), "A", font=font),
        draw.textbbox(seven, "7", font=font),
        draw.textbbox((200, 250), "K", font=font),
    ]
    model = Model(DDDDOCR.read_bytes(), preprocess=Preprocess(scale=1.0))
    return model, np.asarray(image).transpose(2, 0, 1)[None].astype(np.float32), ink


def test_ddddocr_boxes_fall_on_the_characters(ddddocr) -> None:
    """Decoded with the yolox layout, after NMS: one confident box per character, each
    with IoU > 0.5 with that character's ink box."""
    model, batch, ink = ddddocr
    found = list_boxes(model, batch, LAYOUTS["yolox"])
    assert len(found) == len(ink) and all(b.score > 0.5 for b in found)
    for character in ink:
        best = max(found, key=lambda b: _iou(b.xyxy, character))
        assert _iou(best.xyxy, character) > 0.5, (best, character)


def _iou(a, b) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - iw * ih
    return iw * ih / union


def _energy(model: Model, batch: np.ndarray, method: str, box: Box) -> tuple[float, float, float]:
    """(energy in the decoded box, in the box grown by its size on every side, the box's
    area fraction) of the absolute map."""
    decoded = LAYOUTS["yolox"].xyxy(model.run(batch)["output"][0], (416, 416))[box.index]
    maps = np.abs(np.asarray(explain(model, batch, method, box).maps)[0])
    x0, y0, x1, y1 = (round(float(v)) for v in decoded)
    w, h = x1 - x0, y1 - y0
    total = maps.sum()
    near = maps[max(0, y0 - h) : y1 + h, max(0, x0 - w) : x1 + w].sum() / total
    return maps[y0:y1, x0:x1].sum() / total, near, w * h / maps.size


@pytest.mark.parametrize(
    ("method", "character"),
    [("saliency", 2), *((m, c) for m in ("gradcam", "eigencam") for c in (0, 1, 2))],
    ids=[
        "saliency-K",
        "gradcam-A",
        "gradcam-7",
        "gradcam-K",
        "eigencam-A",
        "eigencam-7",
        "eigencam-K",
    ],
)
def test_ddddocr_maps_put_their_energy_in_the_box(ddddocr, method: str, character: int) -> None:
    """The objectness of each character's box (A and K on the stride-16 grid, 7 on the
    stride-8 one; the old default layer, the stride-32 head, gave Grad-CAM all-zero maps):
    energy in the box above 10 times its area fraction (about 1.2 %). Measured, A / 7 / K:
    saliency 0.17 / 0.31 / 0.29, Grad-CAM 0.38 / 0.38 / 0.56, Eigen-CAM 0.39 / 0.38 / 0.54.
    Grad-CAM and Eigen-CAM weigh channels over the whole map, so the other character of a
    grid lights up too: for K (the box of the first figure) more than half of the energy
    lies within one box size around it, for A K takes a large share."""
    model, batch, ink = ddddocr
    box = Box.at(model, batch, ink[character], LAYOUTS["yolox"], "objectness")
    inside, near, area = _energy(model, batch, method, box)
    assert inside > 10 * area, (inside, area)
    if character == 2:
        assert near > 0.5, near
