"""Box (YOLO-style detection) and Region (segmentation) targets: scores equal the chosen
elements, gradients equal torch autograd on the same weights, the IoU match picks the right
box, and saliency, Grad-CAM and occlusion accept both; on the trained ddddocr detector, the
saliency of its most confident box lies mostly inside that box."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from cnnviz.attribution.methods import explain
from cnnviz_core import Box, DetectionLayout, Model, Preprocess, Region, TargetError
from cnnviz_core.backward import gradients
from cnnviz_core.targets import resolve_target, target_scores

torch = pytest.importorskip("torch")

CLASSES = 2  # a box is (x, y, w, h, objectness, class 0, class 1)
SIZE = 8
DDDDOCR = Path(__file__).resolve().parents[3] / "shared/data/models/ddddocr_det.onnx"


def _weights(seed: int, out: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "w1": rng.standard_normal((6, 3, 3, 3)).astype(np.float32) * 0.5,
        "b1": rng.standard_normal(6).astype(np.float32) * 0.1,
        "w2": rng.standard_normal((out, 6, 1, 1)).astype(np.float32) * 0.5,
        "b2": rng.standard_normal(out).astype(np.float32) * 0.1,
    }


def _onnx(weights: dict[str, np.ndarray], out: int, detector: bool) -> bytes:
    """Conv3x3 -> Relu -> Conv1x1 ((N, out, 8, 8)); a detector then reshapes it to
    (N, 64 boxes, out) as YOLOv5 does."""
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["conv1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv1"], ["relu1"]),
        helper.make_node("Conv", ["relu1", "w2", "b2"], ["maps" if detector else "y"]),
    ]
    inits = [numpy_helper.from_array(v, k) for k, v in weights.items()]
    if detector:
        inits.append(numpy_helper.from_array(np.array([0, out, -1], np.int64), "flat"))
        nodes += [
            helper.make_node("Reshape", ["maps", "flat"], ["cells"]),
            helper.make_node("Transpose", ["cells"], ["y"], perm=[0, 2, 1]),
        ]
        shape: list = ["N", SIZE * SIZE, out]
    else:
        shape = ["N", out, SIZE, SIZE]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)],
        inits,
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(proto)
    return proto.SerializeToString()


def _torch_output(weights: dict[str, np.ndarray], x: Any, detector: bool) -> Any:
    t = {k: torch.from_numpy(v) for k, v in weights.items()}
    h = torch.relu(torch.nn.functional.conv2d(x, t["w1"], t["b1"], padding=1))
    y = torch.nn.functional.conv2d(h, t["w2"], t["b2"])
    return y.flatten(2).transpose(1, 2) if detector else y


DET_WEIGHTS = _weights(1, 5 + CLASSES)
SEG_WEIGHTS = _weights(2, 3)


@pytest.fixture(scope="module")
def detector() -> Model:
    return Model(_onnx(DET_WEIGHTS, 5 + CLASSES, True), preprocess=Preprocess(scale=1.0))


@pytest.fixture(scope="module")
def segmenter() -> Model:
    return Model(_onnx(SEG_WEIGHTS, 3, False), preprocess=Preprocess(scale=1.0))


@pytest.fixture(scope="module")
def batch() -> np.ndarray:
    return np.random.default_rng(3).standard_normal((2, 3, SIZE, SIZE)).astype(np.float32)


def _autograd(weights, batch: np.ndarray, detector: bool, pick) -> tuple[np.ndarray, np.ndarray]:
    """Per image, the picked scalar of the torch output and its input gradient."""
    x = torch.from_numpy(batch.astype(np.float64)).requires_grad_(True)
    w64 = {k: v.astype(np.float64) for k, v in weights.items()}
    values = pick(_torch_output(w64, x, detector))  # (N,)
    values.sum().backward()
    return values.detach().numpy(), x.grad.numpy()


# ------------------------------------------------------------------------------------ Box


@pytest.mark.parametrize(
    ("box", "offset"),
    [(Box(17, "class", 1), 6), (Box(40, "objectness"), 4), (Box(3, "class", 0), 5)],
    ids=["class1", "objectness", "class0"],
)
def test_box_score_and_gradient_match_torch(detector: Model, batch, box: Box, offset) -> None:
    output = detector.run(batch)["y"]
    resolved = resolve_target(detector, box, batch)
    assert (resolved.tensor, resolved.index, resolved.kind) == ("y", (box.index, offset), "box")
    _, scores = target_scores(detector, batch, box)
    np.testing.assert_allclose(scores, output[:, box.index, offset], rtol=1e-6)
    expected, grad = _autograd(DET_WEIGHTS, batch, True, lambda y: y[:, box.index, offset])
    result = gradients(detector, batch, box)
    np.testing.assert_allclose(result.scores, expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(result.grads["x"], grad, rtol=1e-4, atol=1e-5)


def test_box_on_a_boxes_last_layout(detector: Model) -> None:
    """box_axis=1 (YOLOv8's (5 + C, boxes)) indexes (offset, box)."""
    layout = DetectionLayout(box_axis=1)
    resolved = Box(2, "class", 0, layout).resolve(detector, lambda _: (7, 64))
    assert resolved.index == (5, 2)


def test_best_match_picks_the_highest_iou_box(detector: Model, batch) -> None:
    boxes = detector.run(batch[:1])["y"][0].astype(np.float64)
    corners = [(x - w / 2, y - h / 2, x + w / 2, y + h / 2) for x, y, w, h in boxes[:, :4]]

    def iou(a, b) -> float:
        iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
        ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
        inter = iw * ih
        union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
        return inter / union if union > 0 else 0.0

    query = np.array(corners[29]) + 0.01
    expected = max(range(len(corners)), key=lambda i: iou(corners[i], query))
    match = Box.best_match(detector, batch, query, class_index=1)
    assert match == Box(expected, "class", 1, DetectionLayout())


@pytest.mark.parametrize(
    ("box", "message"),
    [
        (Box(64, "class", 0), "box 64 is out of range"),
        (Box(0, "class"), "needs class_index"),
        (Box(0, "class", 2), "class 2 is out of range"),
        (Box(0, "area"), "'class' or 'objectness'"),
        (Box(0, "objectness", layout=DetectionLayout(objectness=None)), "no objectness"),
    ],
)
def test_bad_boxes_raise(detector: Model, box: Box, message: str) -> None:
    with pytest.raises(TargetError, match=message):
        resolve_target(detector, box)


# --------------------------------------------------------------------------------- Region


def _mask() -> np.ndarray:
    mask = np.zeros((SIZE, SIZE), bool)
    mask[2:5, 1:7] = True
    mask[6, 6] = True
    return mask


def test_region_score_is_the_masked_sum_and_gradient_matches_torch(segmenter, batch) -> None:
    mask = _mask()
    region = Region(mask, class_index=2)
    output = segmenter.run(batch)["y"]
    _, scores = target_scores(segmenter, batch, region)
    np.testing.assert_allclose(scores, output[:, 2][:, mask].sum(axis=1), rtol=1e-5)
    torch_mask = torch.from_numpy(mask)
    expected, grad = _autograd(SEG_WEIGHTS, batch, False, lambda y: y[:, 2][:, torch_mask].sum(1))
    result = gradients(segmenter, batch, region)
    np.testing.assert_allclose(result.scores, expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(result.grads["x"], grad, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    ("region", "message"),
    [
        (Region(np.ones((4, 4), bool), 0), r"resize the mask"),
        (Region(np.ones((SIZE, SIZE), bool)), "needs class_index"),
        (Region(np.ones((SIZE, SIZE), bool), 3), "channel 3 is out of range"),
    ],
)
def test_bad_regions_raise(segmenter: Model, region: Region, message: str) -> None:
    with pytest.raises(TargetError, match=message):
        resolve_target(segmenter, region)


# ------------------------------------------------------------------------------- methods


@pytest.mark.parametrize("method", ["saliency", "gradcam", "occlusion"])
def test_methods_accept_box_and_region_targets(detector, segmenter, batch, method) -> None:
    options: dict[str, Any] = {"layer": "relu1"} if method == "gradcam" else {}
    if method == "occlusion":
        options = {"window": 3, "stride": 2}
    for model, target in ((detector, Box(17, "class", 1)), (segmenter, Region(_mask(), 2))):
        result = explain(model, batch, method, target, **options)
        maps = np.asarray(result.maps)
        assert maps.shape == (2, SIZE, SIZE)
        assert np.isfinite(maps).all() and maps.any()


# ------------------------------------------------------------------------- trained model


def _ddddocr_box(index: int, raw: np.ndarray) -> tuple[float, float, float, float]:
    """Decode one raw ddddocr (YOLOX-style) box: centre = (offset + cell) x stride, size =
    exp(raw) x stride, over the 52x52, 26x26 and 13x13 grids (strides 8, 16, 32)."""
    for side, stride in ((52, 8), (26, 16), (13, 32)):
        if index < side * side:
            gy, gx = divmod(index, side)
            cx, cy = (raw[0] + gx) * stride, (raw[1] + gy) * stride
            w, h = np.exp(raw[2]) * stride, np.exp(raw[3]) * stride
            return cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2
        index -= side * side
    raise AssertionError("box index beyond the three grids")


@pytest.mark.skipif(not DDDDOCR.exists(), reason="ddddocr_det.onnx is not in ../shared")
def test_ddddocr_saliency_energy_lies_in_the_most_confident_box() -> None:
    """Two characters drawn on white (0-255 pixels, as ddddocr feeds them): the saliency of
    the most confident box's objectness has well above the box's area fraction inside it
    (measured: 0.32 of the energy in 1.3 % of the image)."""
    from PIL import Image, ImageDraw, ImageFont

    model = Model(DDDDOCR.read_bytes(), preprocess=Preprocess(scale=1.0))
    image = Image.new("RGB", (416, 416), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=60)
    draw.text((40, 60), "A 7", fill="black", font=font)
    draw.text((200, 250), "K", fill="black", font=font)
    batch = np.asarray(image).transpose(2, 0, 1)[None].astype(np.float32)
    output = model.run(batch)["output"][0]
    best = int(output[:, 4].argmax())
    assert output[best, 4] > 0.9
    x0, y0, x1, y1 = _ddddocr_box(best, output[best])
    left, top = int(max(0, x0)), int(max(0, y0))
    right, bottom = int(min(416, np.ceil(x1))), int(min(416, np.ceil(y1)))
    maps = np.abs(np.asarray(explain(model, batch, "saliency", Box(best, "objectness")).maps)[0])
    energy = maps[top:bottom, left:right].sum() / maps.sum()
    area = (bottom - top) * (right - left) / 416**2
    assert energy > 10 * area, (energy, area)
