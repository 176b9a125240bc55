"""ddddocr's trained YOLO-style detector (``../shared``: fixed batch 1, 0-255 input, raw
output (N, 3549, 6)) with Neuron and Channel targets on its output: it runs batched (the
fixed batch made symbolic), every gradient-family method and every CAM method that weighs
by gradients or scores of the target gives finite, non-constant maps, and the input
gradient of one neuron equals float64 central differences. Box targets and decoding are in
``test_detection.py``."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from cnnviz.attribution import gradcam
from cnnviz.attribution.cam import default_layer
from cnnviz.attribution.methods import SPECS, explain
from cnnviz_core import Channel, Model, Neuron, Preprocess, UnsupportedOpError
from cnnviz_core.backward import forward_values, gradients, plan_backward

DDDDOCR = Path(__file__).resolve().parents[3] / "shared/data/models/ddddocr_det.onnx"
#: a cell of the stride-32 grid (cells 3380..3548: 13x13 after 52x52 and 26x26), which the
#: default CAM layer (the last spatial map, the stride-32 head's input) feeds
CELL = 3450
OBJECTNESS = 4
TARGETS = [Neuron("output", CELL, OBJECTNESS), Channel("output", CELL)]
#: the sampling methods with as few samples as they take: the maps only need to exist
FEW = {"smoothgrad": {"samples": 1}, "ig": {"steps": 1}, "gradientshap": {"n_samples": 1}}
#: relevance modes refuse SiLU (x * sigmoid(x): a Mul of two image-dependent operands) by
#: name, before any work; CAM needs a classifier head (GAP + linear) the detector lacks
REFUSED = {
    "deeplift": r"'Mul'.*Mul_43",
    "lrp-epsilon": r"'Mul'.*Mul_43",
    "lrp-gamma": r"'Mul'.*Mul_43",
    "lrp-alphabeta": r"'Mul'.*Mul_43",
    "cam": r"global average pooling",
}
METHODS = [s.name for s in SPECS if s.family in ("gradient", "cam")]

pytestmark = [
    pytest.mark.shared,
    pytest.mark.skipif(not DDDDOCR.exists(), reason="ddddocr_det.onnx is not in ../shared"),
]


@pytest.fixture(scope="module")
def detector() -> tuple[Model, np.ndarray]:
    """The detector (0-255 pixels, as ddddocr feeds them) and two noise images."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the fixed batch is made symbolic: no fallback warning
        model = Model(DDDDOCR.read_bytes(), preprocess=Preprocess(scale=1.0))
    batch = np.random.default_rng(0).uniform(0, 255, (3, 3, 416, 416)).astype(np.float32)
    return model, batch


def test_runs_batched(detector) -> None:
    """A batch of 3 in one call equals three batch-1 runs."""
    model, batch = detector
    assert model.batched
    together = model.run(batch)["output"]
    assert together.shape == (3, 3549, 6)
    for i in range(3):
        np.testing.assert_allclose(
            together[i], model.run(batch[i : i + 1])["output"][0], rtol=1e-5, atol=1e-4
        )


@pytest.mark.parametrize("method", METHODS)
def test_every_gradient_and_cam_method_takes_neuron_and_channel_targets(detector, method):
    """Image 0 explains a Neuron (objectness of one cell), image 1 a Channel (the mean of
    that cell's six values): finite maps, not constant."""
    model, batch = detector
    if method in REFUSED:
        with pytest.raises(UnsupportedOpError, match=REFUSED[method]):
            explain(model, batch[:2], method, TARGETS, **FEW.get(method, {}))
        return
    maps = np.asarray(explain(model, batch[:2], method, TARGETS, **FEW.get(method, {})).maps)
    assert maps.shape[0] == 2 and maps.shape[-2:] == (416, 416)
    assert np.isfinite(maps).all()
    for i in range(2):
        assert np.ptp(maps[i]) > 0, (method, TARGETS[i])


def test_neuron_saliency_equals_central_differences(detector) -> None:
    """The saliency map is max |gradient| over channels, and the gradient of the objectness
    of the most confident stride-8 cell (off the default CAM layer's grid) along two random
    unit-RMS directions equals float64 central differences of the rules' float64 forward:
    float32 within 1e-3, float64 within 1e-6 (relative to |gradient|, the typical size of
    a directional derivative along such a direction)."""
    model, batch = detector
    x = batch[:1]
    cell = int(np.argmax(model.run(x)["output"][0, :2704, OBJECTNESS]))
    target = Neuron("output", cell, OBJECTNESS)
    attribution = explain(model, x, "saliency", target)
    grad32 = np.asarray(attribution.extras["gradient"], dtype=np.float64)
    np.testing.assert_array_equal(np.asarray(attribution.maps), np.abs(grad32).max(axis=1))
    x64 = x.astype(np.float64)
    grad64 = gradients(model, x64, target, forward="numpy").grads[model.input_name]
    plan = plan_backward(model, ["output"])

    def objectness(image: np.ndarray) -> float:
        return float(forward_values(model, image, plan, "numpy")["output"][0, cell, OBJECTNESS])

    rng = np.random.default_rng(cell)
    step = 1e-6 * float(np.sqrt(np.mean(x64**2)))
    scale = float(np.linalg.norm(grad64))
    assert scale > 0
    for _ in range(2):
        d = rng.standard_normal(x64.shape)
        d /= np.sqrt(np.mean(d**2))
        fd = (objectness(x64 + step * d) - objectness(x64 - step * d)) / (2 * step)
        assert abs(float((grad64 * d).sum()) - fd) / max(scale, abs(fd)) < 1e-6, (cell, fd)
        assert abs(float((grad32 * d).sum()) - fd) / max(scale, abs(fd)) < 1e-3, (cell, fd)


def test_the_doctor_finds_the_three_grids(detector) -> None:
    """``check``: the output is (cells, values), not 21294 classes; rows of the stride-8,
    16 and 32 grids; the default CAM layer feeds the stride-32 rows only (where ``CELL``
    lies), and the doctor says so."""
    from cnnviz.attribution.cam import default_layer
    from cnnviz_core.check import check

    model, _ = detector
    report = check(model, gradient_test=False)
    assert report.output_shape == (3549, 6) and not report.classifies
    assert [(g.start, g.stop) for g in report.output_grids] == [
        (0, 2704),
        (2704, 3380),
        (3380, 3549),
    ]
    assert report.output_grids[2].start <= CELL < report.output_grids[2].stop
    assert report.layer_note(default_layer(model), model).startswith(
        " (feeds output rows 3380-3548 only"
    )


@pytest.mark.parametrize("row", [100, 2800])
def test_a_neuron_off_the_last_grid_gets_its_own_grids_map(detector, row: int) -> None:
    """Rows of the stride-8 and stride-16 grids do not depend on the last spatial map (the
    stride-32 head's: their gradient there is exactly zero, so Grad-CAM was all zero): their
    default CAM layer is the map feeding their own head, where the gradient is not zero; a
    channel (a whole row) keeps the last map without error."""
    model, batch = detector
    neuron, last = Neuron("output", row, 4), default_layer(model)
    layer = default_layer(model, neuron)
    assert layer != last
    grads = gradients(model, batch[:1], neuron, wrt=[layer, last]).grads
    assert np.abs(grads[last]).max() == 0 and np.abs(grads[layer]).max() > 0
    assert gradcam(model, batch[:1], neuron).options["layer"] == layer
    assert default_layer(model, Channel("output", row)) == last
