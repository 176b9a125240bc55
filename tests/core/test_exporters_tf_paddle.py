"""Real Keras (tf2onnx) and Paddle (paddle2onnx) exports, checked against their frameworks.

tensorflow-cpu, tf2onnx, paddlepaddle and paddle2onnx pin versions (paddle2onnx: onnx<=1.17)
that would break this environment, so they live in a separate virtual environment that
``scripts/test.sh`` creates (``$CNNVIZ_EXPORTERS_PYTHON``, by default
``~/.cache/cnnviz/exporters-venv/bin/python``). The scripts in ``tests/core/exporters/`` run
there, in a subprocess: they build small models with seeded weights (non-trivial BatchNorm
statistics), export them, and record the framework's own logits and input gradient
(TensorFlow's GradientTape, Paddle's autograd) in float32 and float64. This module checks
cnnviz on the exported files against those answers. Skipped when the interpreter is absent,
unless ``CNNVIZ_REQUIRE_EXPORTERS=1`` (CI), where that is a failure.

Keras models: a Conv/BatchNorm/ReLU/MaxPool CNN with a GlobalAveragePooling head (also with 1
and 4 input channels), a MobileNet-style depthwise block (ReLU6), a residual block with a
Flatten head, and ``keras.applications.MobileNetV2`` (alpha 0.35, weights=None); all with an
NHWC input (tf2onnx's Transpose, or for one channel its Reshape) and H != W. Paddle: a CNN
with BatchNorm, a depthwise conv, Hardswish, a squeeze-excite gate and adaptive pooling.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from cnnviz.attribution import gradcam, occlusion, saliency
from cnnviz.attribution.cam import default_layer
from cnnviz_core import Model, Preprocess
from cnnviz_core.backward import gradients

SCRIPTS = Path(__file__).parent / "exporters"
KERAS = ("keras_cnn", "keras_depthwise", "keras_residual", "keras_mobilenet_v2")
KERAS_CHANNELS = ("keras_cnn_gray", "keras_cnn_rgba")
PADDLE = ("paddle_cnn",)
ALL = KERAS + KERAS_CHANNELS + PADDLE
#: the export scripts' timeout (TensorFlow's and Paddle's imports take most of it)
EXPORT_TIMEOUT_S = 600


def exporters_python() -> Path:
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return Path(
        os.environ.get(
            "CNNVIZ_EXPORTERS_PYTHON", default / "cnnviz" / "exporters-venv" / "bin" / "python"
        )
    )


@pytest.fixture(scope="module")
def exports(tmp_path_factory) -> Path:
    """The folder with every model's .onnx and .npz (the scripts run once per session)."""
    python = exporters_python()
    if not python.exists():
        message = (
            f"exporters environment {python} absent: run scripts/test.sh, or set "
            "CNNVIZ_EXPORTERS_PYTHON to a Python with tensorflow-cpu, tf2onnx, paddlepaddle "
            "and paddle2onnx"
        )
        if os.environ.get("CNNVIZ_REQUIRE_EXPORTERS") == "1":
            pytest.fail(message)
        pytest.skip(message)
    out = tmp_path_factory.mktemp("exporters")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    for script in ("export_keras.py", "export_paddle.py"):
        done = subprocess.run(
            [str(python), str(SCRIPTS / script), str(out)],
            capture_output=True,
            text=True,
            env=env,
            timeout=EXPORT_TIMEOUT_S,
            check=False,
        )
        assert done.returncode == 0, f"{script} failed:\n{done.stderr[-4000:]}"
    return out


def load(exports: Path, name: str) -> tuple[Model, dict[str, np.ndarray]]:
    """The cnnviz model (identity preprocessing) and the framework's answers, with the input
    batch and gradients in (N, C, H, W) whatever the export's layout."""
    reference = dict(np.load(exports / f"{name}.npz"))
    if name.startswith("keras"):  # NHWC in TensorFlow
        for key in ("x", "grad", "grad64"):
            reference[key] = reference[key].transpose(0, 3, 1, 2)
    channels = reference["x"].shape[1]
    preprocess = Preprocess.for_channels(channels, scale=1.0)
    model = Model(exports / f"{name}.onnx", preprocess=preprocess)
    return model, reference


def relative(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.mark.parametrize("name", KERAS + KERAS_CHANNELS)
def test_keras_export_loads_channels_first(exports, name):
    model, reference = load(exports, name)
    assert model.layout.startswith("NHWC"), model.layout
    assert model.input_shape == reference["x"].shape[1:]
    assert model.channels == reference["x"].shape[1]


@pytest.mark.parametrize("name", ALL)
def test_forward_equals_the_framework(exports, name):
    model, reference = load(exports, name)
    got = model.run(reference["x"])[model.output_names[0]]
    np.testing.assert_allclose(got, reference["logits"], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ALL)
def test_input_gradient_equals_the_frameworks_autograd(exports, name):
    """float32: within 3x the framework's own float32-vs-float64 error (float32 rounding);
    the engine's float64 path: within 1e-6 of the framework's float64 gradient (the exported
    weights are float32, BatchNorm folded into the convs in float32, hence not 1e-12)."""
    model, reference = load(exports, name)
    x, seed = reference["x"], reference["seed"]
    output = model.output_names[0]
    ours32 = gradients(model, x, {output: seed}).grads[model.input_name]
    ours64 = gradients(
        model, x.astype(np.float64), {output: seed.astype(np.float64)}, forward="numpy"
    ).grads[model.input_name]
    assert ours32.shape == x.shape
    for i in range(len(x)):
        own = relative(reference["grad"][i], reference["grad64"][i])
        assert relative(ours32[i], reference["grad64"][i]) <= 3 * own + 1e-6, (i, own)
        assert relative(ours64[i], reference["grad64"][i]) <= 1e-6, i


@pytest.mark.parametrize("name", ALL)
def test_saliency_is_the_frameworks_gradient_in_image_coordinates(exports, name):
    """Saliency for class 1 = max over channels of |d logit_1 / dx| from the framework's own
    gradient (seed one-hot): built from its float64 gradient, (N, H, W) with H != W."""
    model, reference = load(exports, name)
    x = reference["x"]
    result = saliency(model, x, 1)
    seed = np.zeros_like(reference["seed"])
    seed[:, 1] = 1
    ours = gradients(
        model, x.astype(np.float64), {model.output_names[0]: seed}, forward="numpy"
    ).grads[model.input_name]
    assert result.maps.shape == (len(x), *x.shape[2:])
    np.testing.assert_allclose(result.maps, np.abs(ours).max(axis=1), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", ALL)
def test_occlusion_equals_brute_force_on_the_original_graph(exports, name):
    """Windows tile the image (window = stride = 8): each pixel's value is the logit drop of
    its window, recomputed here by onnxruntime on the exported file as it is (NHWC for Keras)
    with the window zeroed; both engines."""
    model, reference = load(exports, name)
    x = reference["x"][:2]
    target = [2, 3]
    session = ort.InferenceSession(
        str(exports / f"{name}.onnx"), providers=["CPUExecutionProvider"]
    )
    feed_name = session.get_inputs()[0].name
    nhwc = name.startswith("keras")

    def scores(batch: np.ndarray) -> np.ndarray:
        feed = batch.transpose(0, 2, 3, 1) if nhwc else batch
        return session.run(None, {feed_name: np.ascontiguousarray(feed)})[0]

    _, _, h, w = x.shape
    expected = np.zeros((len(x), h, w), np.float64)
    for i, cls in enumerate(target):
        base = scores(x[i : i + 1])[0, cls]
        for top in range(0, h, 8):
            for left in range(0, w, 8):
                occluded = x[i : i + 1].copy()
                occluded[:, :, top : top + 8, left : left + 8] = 0
                expected[i, top : top + 8, left : left + 8] = base - scores(occluded)[0, cls]
    for engine in ("auto", "naive"):
        got = occlusion(model, x, target, window=8, stride=8, fill="zeros", engine=engine)
        np.testing.assert_allclose(got.maps, expected, rtol=1e-4, atol=1e-5, err_msg=engine)


#: the layer Grad-CAM picks by default: the last spatial map before global pooling
DEFAULT_CAM_OP = {
    "keras_cnn": "MaxPool",
    "keras_cnn_gray": "MaxPool",
    "keras_cnn_rgba": "MaxPool",
    "keras_depthwise": "Relu",
    "keras_residual": "AveragePool",  # not the NHWC Transpose before the Flatten
    "keras_mobilenet_v2": "Clip",  # ReLU6 as Clip(0, 6)
    "paddle_cnn": "Relu",
}


@pytest.mark.parametrize("name", ALL)
def test_default_gradcam_layer_is_found_and_runs(exports, name):
    model, reference = load(exports, name)
    layer = default_layer(model)
    assert model.layer(layer).op_type == DEFAULT_CAM_OP[name], layer
    cam = gradcam(model, reference["x"])
    assert cam.options["layer"] == model.tensor_name(layer)
    assert cam.maps.shape == (len(reference["x"]), *reference["x"].shape[2:])
    assert np.isfinite(cam.maps).all() and cam.maps.max() > 0


def test_exporters_script_runs_from_any_directory():
    """The export scripts import nothing of cnnviz (they run in the other environment)."""
    for script in SCRIPTS.glob("export_*.py"):
        text = script.read_text()
        assert "import cnnviz" not in text and "from cnnviz" not in text, script
    assert sys.executable  # the test process itself runs cnnviz only
