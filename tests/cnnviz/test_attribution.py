"""Attribution techniques: the common contract over every method, peers as oracles
(Captum's Saliency / GuidedBackprop / Deconvolution, an independent torch Grad-CAM) on a
torch twin of the shipped shapes model, known identities (CAM = Grad-CAM for GAP + linear,
IG completeness, SmoothGrad with no noise), and a run with torch blocked."""

from __future__ import annotations

import functools
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from onnx import helper

from cnnviz import load_model
from cnnviz.attribution import (
    METHODS,
    Attribution,
    Channel,
    Class,
    Neuron,
    cam,
    deconvnet,
    default_layer,
    gradcam,
    guided_backprop,
    guided_gradcam,
    integrated_gradients,
    saliency,
    score_tensor,
    smooth,
)
from cnnviz.attribution.base import bilinear_resize
from cnnviz.data import make_shapes
from cnnviz.render import apply_colormap, build_report, overlay
from cnnviz_core import InputError, Model, TargetError, UnsupportedOpError
from cnnviz_core.backward.compile import CompiledPass
from tests.conftest import make_graph_model

N = 3
SIZE = 64
LAYER = "relu_3"


@pytest.fixture(scope="module")
def model() -> Model:
    return load_model("shapes")


@pytest.fixture(scope="module")
def sample():  # three images of the shapes data set (seeded)
    return make_shapes(N, seed=7)


@pytest.fixture(scope="module")
def batch(model: Model, sample) -> np.ndarray:
    return model.prepare(sample.images)


def relative_error(ours: np.ndarray, reference: np.ndarray) -> float:
    """max over images of ||ours - ref||_2 / ||ref||_2."""
    ours, reference = ours.reshape(len(ours), -1), reference.reshape(len(reference), -1)
    return float(
        (np.linalg.norm(ours - reference, axis=1) / np.linalg.norm(reference, axis=1)).max()
    )


# ------------------------------------------------------------------------------ contract

TARGETS = {
    "int": 3,
    "label": "star",
    "none": None,
    "list": [0, "square", Class(7)],
    "channel": Channel(LAYER, 5),
    "neuron": Neuron(LAYER, 5, 3, 4),
}


@pytest.mark.parametrize("form", list(TARGETS))
@pytest.mark.parametrize("name", list(METHODS))
def test_contract(model: Model, batch: np.ndarray, name: str, form: str) -> None:
    method, target = METHODS[name], TARGETS[form]
    if name == "cam" and form in ("channel", "neuron"):
        with pytest.raises(TargetError, match="CAM explains class scores only"):
            method(model, batch, target)
        return
    result = method(model, batch, target)
    assert isinstance(result, Attribution)
    assert result.maps.dtype == np.float32
    assert result.maps.shape in ((N, SIZE, SIZE), (N, 3, SIZE, SIZE))
    assert result.heatmap.shape == (N, SIZE, SIZE)
    assert np.isfinite(result.maps).all()
    assert result.images.shape == (N, SIZE, SIZE, 3) and result.images.dtype == np.uint8
    assert len(result.targets) == N
    predicted = model.scores(batch).argmax(axis=1)
    expected = {
        "int": [3] * N,
        "label": [3] * N,
        "none": list(predicted),
        "list": [0, 1, 7],
        "channel": [None] * N,
        "neuron": [None] * N,
    }[form]
    assert [t.class_index for t in result.targets] == expected
    if form in ("int", "none", "list"):  # a class score always reaches some pixels
        assert (np.abs(result.heatmap).reshape(N, -1).max(axis=1) > 0).all()
    normalized = result.normalized()
    assert normalized.shape == result.maps.shape
    assert np.abs(normalized).max() <= 1 + 1e-6
    picture = result.render(1)
    assert picture.shape == (SIZE, SIZE, 3) and picture.dtype == np.uint8


@pytest.mark.parametrize("name", list(METHODS))
def test_batch_equals_singles_and_is_deterministic(
    model: Model, batch: np.ndarray, name: str
) -> None:
    method = METHODS[name]
    targets = [2, None, Class("circle")]
    together = method(model, batch, targets)
    again = method(model, batch, targets)
    np.testing.assert_array_equal(together.maps, again.maps)
    singles = np.concatenate([method(model, batch[i : i + 1], targets[i]).maps for i in range(N)])
    scale = np.abs(singles).reshape(N, -1).max(axis=1)
    diff = np.abs(together.maps - singles).reshape(N, -1).max(axis=1)
    assert (diff <= 1e-4 * scale + 1e-7).all(), diff / scale


def test_images_as_files_and_arrays(model: Model, sample, tmp_path: Path) -> None:
    from PIL import Image

    path = tmp_path / "one.png"
    Image.fromarray(sample.images[0]).save(path)
    from_file = saliency(model, [path], 1)
    from_array = saliency(model, sample.images[:1], 1)
    np.testing.assert_array_equal(from_file.maps, from_array.maps)


@pytest.mark.parametrize(
    ("target", "message"),
    [
        (8, "out of range"),
        (-1, "out of range"),
        ("nope", "unknown class label"),
        (Channel(LAYER, 96), "channel 96 is out of range"),
        (Neuron(LAYER, 0, 8, 0), "out of range"),
        (Neuron(LAYER, 0), "needs 2 spatial indices"),
        ([0, 1], "2 targets given for a batch of 3"),
        (2.5, "a target must be"),
    ],
)
def test_bad_targets_raise(model: Model, batch: np.ndarray, target, message: str) -> None:
    with pytest.raises(TargetError, match=message):
        saliency(model, batch, target)


@pytest.mark.parametrize(
    ("method", "runs"),
    [
        (saliency, 1),
        (guided_backprop, 1),
        (deconvnet, 1),
        (gradcam, 1),
        (cam, 1),
        (guided_gradcam, 2),  # two backward passes, one forward each
        (functools.partial(integrated_gradients, steps=4), 3),  # f(x), f(baseline), the path
    ],
    ids=["saliency", "guided", "deconvnet", "gradcam", "cam", "guided-gradcam", "ig"],
)
def test_predicted_class_costs_no_extra_forward(
    model: Model, batch: np.ndarray, monkeypatch: pytest.MonkeyPatch, method, runs: int
) -> None:
    """target=None reads the predicted class from the technique's own forward runs (the
    model's, or a compiled forward + backward pass's)."""
    predicted = model.scores(batch).argmax(axis=1).tolist()
    method(model, batch, None)  # compiled passes built (their probe forward is one-off)
    calls = []
    run, compiled_run = model.run, CompiledPass.run

    def counted(*args, **kwargs):
        calls.append(args)
        return run(*args, **kwargs)

    def counted_pass(self, *args, **kwargs):
        calls.append(args)
        return compiled_run(self, *args, **kwargs)

    monkeypatch.setattr(model, "run", counted)
    monkeypatch.setattr(CompiledPass, "run", counted_pass)
    result = method(model, batch, None)
    assert len(calls) == runs
    assert [t.class_index for t in result.targets] == predicted


def test_unknown_layer_and_misplaced_layer(model: Model, batch: np.ndarray) -> None:
    with pytest.raises(KeyError, match="unknown layer"):
        gradcam(model, batch, 0, layer="relu_9")
    with pytest.raises(InputError, match="CAM is defined at the layer"):
        cam(model, batch, 0, layer="relu_2")


def test_neuron_on_logits_is_the_class(model: Model, batch: np.ndarray) -> None:
    by_neuron = saliency(model, batch, Neuron("logits", 4))
    by_class = saliency(model, batch, 4)
    np.testing.assert_array_equal(by_neuron.maps, by_class.maps)


def test_default_layer_is_last_spatial(model: Model) -> None:
    assert default_layer(model) == LAYER
    assert model.tensor_name("features.relu4") == LAYER
    assert score_tensor(model) == "logits"


# ------------------------------------------------------------------------ known answers


def test_cam_equals_gradcam_for_gap_linear_head(model: Model, batch: np.ndarray) -> None:
    a = cam(model, batch, [0, 3, 5])
    b = gradcam(model, batch, [0, 3, 5], layer=LAYER)
    # Grad-CAM weights = W[c] / (h w): the same map up to a positive factor
    ratio = b.extras["weights"] / a.extras["weights"]
    np.testing.assert_allclose(ratio, 1 / 64, rtol=1e-4)
    np.testing.assert_allclose(a.maps, b.maps, atol=1e-5)


def test_ig_records_its_blur_sigma_and_refuses_it_without_blur(
    model: Model, batch: np.ndarray
) -> None:
    default = integrated_gradients(model, batch[:1], baseline="blur", steps=2)
    assert default.options["blur_sigma"] == max(batch.shape[2:]) / 16
    assert (
        integrated_gradients(model, batch[:1], baseline="blur", steps=2, blur_sigma=1.5).options[
            "blur_sigma"
        ]
        == 1.5
    )
    with pytest.raises(InputError, match="blur_sigma= applies to baseline='blur'"):
        integrated_gradients(model, batch[:1], baseline="zeros", blur_sigma=2.0)


@pytest.mark.parametrize("rule", ["middle", "trapezoid"])
@pytest.mark.parametrize("baseline", ["zeros", "black", "blur"])
def test_ig_completeness(model: Model, batch: np.ndarray, baseline: str, rule: str) -> None:
    result = integrated_gradients(model, batch, None, baseline=baseline, steps=64, rule=rule)
    metrics = result.metrics
    if rule == "middle":  # the default: within 1% at 64 steps
        assert metrics["completeness_max"] <= 0.01, metrics
    else:
        assert metrics["completeness_max"] <= 0.02, metrics
    expected = np.abs(np.array(metrics["sum"]) - metrics["delta"]) / np.abs(metrics["delta"])
    np.testing.assert_allclose(metrics["completeness"], expected)
    # more steps converge
    finer = integrated_gradients(model, batch, None, baseline=baseline, steps=256, rule=rule)
    assert finer.metrics["completeness_max"] < max(metrics["completeness_max"], 1e-3)
    assert np.allclose(result.extras["attributions"].sum(axis=1), result.maps, atol=1e-5)


def test_ig_black_baseline_is_black(model: Model, batch: np.ndarray) -> None:
    result = integrated_gradients(model, batch[:1], 0, baseline="black", steps=4)
    np.testing.assert_allclose(result.extras["baseline"], -1.0)  # (0 - 0.5) / 0.5


def test_smoothgrad_without_noise_is_saliency(model: Model, batch: np.ndarray) -> None:
    plain = saliency(model, batch, None)
    smoothed = smooth(saliency, n=1, sigma=0.0)(model, batch, None)
    np.testing.assert_array_equal(smoothed.maps, plain.maps)
    assert smoothed.method == "smoothgrad(saliency)"


def test_saliency_variants(model: Model, batch: np.ndarray) -> None:
    base = saliency(model, batch, 2)
    grad = base.extras["gradient"]
    np.testing.assert_allclose(base.maps, np.abs(grad).max(axis=1))
    signed = saliency(model, batch, 2, variant="signed")
    np.testing.assert_allclose(signed.maps, grad.sum(axis=1), rtol=1e-6, atol=1e-9)
    gxi = saliency(model, batch, 2, variant="grad_x_input")
    np.testing.assert_allclose(gxi.maps, (grad * batch).sum(axis=1), rtol=1e-5, atol=1e-8)
    assert signed.signed and gxi.signed and not base.signed
    with pytest.raises(InputError, match="unknown saliency variant"):
        saliency(model, batch, 2, variant="nope")


def test_guided_gradcam_is_the_product(model: Model, batch: np.ndarray) -> None:
    result = guided_gradcam(model, batch, 1)
    expected = guided_backprop(model, batch, 1).maps * gradcam(model, batch, 1).maps[:, None]
    np.testing.assert_allclose(result.maps, expected, rtol=1e-6, atol=1e-9)


def test_bilinear_resize_known_values() -> None:
    small = np.array([[[0.0, 1.0], [2.0, 3.0]]], np.float32)
    big = bilinear_resize(small, (4, 4))
    # half-pixel centres: outputs at 0.25-steps of the input, edges clamped
    np.testing.assert_allclose(big[0, 0], [0, 0.25, 0.75, 1.0])
    np.testing.assert_allclose(big[0, :, 0], [0, 0.5, 1.5, 2.0])
    np.testing.assert_array_equal(bilinear_resize(small, (2, 2)), small)


# ------------------------------------------------------------------- small ONNX heads


def _per_class_head(softmax: bool) -> Model:
    """SqueezeNet-like: conv with one channel per class -> ReLU -> GAP -> Flatten
    [-> Softmax] on a 3x12x12 input, 4 classes."""
    rng = np.random.default_rng(3)
    weights = {
        "w": rng.standard_normal((4, 3, 3, 3)).astype(np.float32),
        "b": rng.standard_normal(4).astype(np.float32) * 0.1,
    }
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["conv"], "conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv"], ["relu"], "relu"),
        helper.make_node("GlobalAveragePool", ["relu"], ["pool"], "pool"),
        helper.make_node("Flatten", ["pool"], ["flat"], "flat"),
    ]
    output = "flat"
    if softmax:
        nodes.append(helper.make_node("Softmax", ["flat"], ["prob"], "prob", axis=1))
        output = "prob"
    proto = make_graph_model(nodes, weights, ["N", 3, 12, 12], output)
    return Model(proto.SerializeToString(), name="perclass")


@pytest.mark.parametrize("softmax", [False, True])
def test_cam_per_class_channel_head(softmax: bool) -> None:
    model = _per_class_head(softmax)
    assert score_tensor(model) == "flat"
    rng = np.random.default_rng(4)
    batch = rng.standard_normal((2, 3, 12, 12)).astype(np.float32)
    result = cam(model, batch, [1, 3])
    relu = model.run(batch, taps=["relu"], outputs=False)["relu"]
    expected = np.stack([relu[0, 1], relu[1, 3]])
    np.testing.assert_allclose(result.extras["layer_maps"], expected, rtol=1e-6)
    # and Grad-CAM there agrees (gradient of the class score is 1/(hw) on its channel)
    np.testing.assert_allclose(gradcam(model, batch, [1, 3]).maps, result.maps, atol=1e-5)


def test_cam_without_gap_head_says_why() -> None:
    rng = np.random.default_rng(5)
    weights = {
        "w": rng.standard_normal((2, 3, 3, 3)).astype(np.float32),
        "fc": rng.standard_normal((4, 2 * 8 * 8)).astype(np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["conv"], "conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv"], ["relu"], "relu"),
        helper.make_node("Flatten", ["relu"], ["flat"], "flat"),
        helper.make_node("Gemm", ["flat", "fc"], ["logits"], "fc", transB=1),
    ]
    model = Model(make_graph_model(nodes, weights, ["N", 3, 8, 8], "logits").SerializeToString())
    batch = rng.standard_normal((1, 3, 8, 8)).astype(np.float32)
    with pytest.raises(UnsupportedOpError, match=r"global average pooling.*Relu node"):
        cam(model, batch, 0)
    assert gradcam(model, batch, 0).maps.shape == (1, 8, 8)  # Grad-CAM still works


# ------------------------------------------------------------------ torch / Captum oracles


def _torch_twin(model: Model, guided_relus: bool = True):
    """The shapes model in torch, from the ONNX file's weights: 4 x (3x3 conv pad 1, ReLU)
    with 2x2 max-pools after blocks 1-3, mean over H, W, linear. ReLUs are nn.ReLU modules
    (Captum's GuidedBackprop and Deconvolution hook them)."""
    torch = pytest.importorskip("torch")
    from torch import nn

    f = torch.nn.functional
    c = model.constants

    class Twin(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.relus = nn.ModuleList([nn.ReLU() for _ in range(4)])
            self.w = [torch.from_numpy(c[f"features.conv{k}.weight"].copy()) for k in range(1, 5)]
            self.b = [torch.from_numpy(c[f"features.conv{k}.bias"].copy()) for k in range(1, 5)]
            self.fc_w = torch.from_numpy(c["classifier.weight"].copy())
            self.fc_b = torch.from_numpy(c["classifier.bias"].copy())
            self.features = None

        def forward(self, x):
            for k in range(4):
                x = self.relus[k](f.conv2d(x, self.w[k], self.b[k], padding=1))
                if k < 3:
                    x = f.max_pool2d(x, 2)
            self.features = x
            return f.linear(x.mean(dim=(2, 3)), self.fc_w, self.fc_b)

    return torch, Twin().eval()


def test_torch_twin_matches_model(model: Model, batch: np.ndarray) -> None:
    torch, twin = _torch_twin(model)
    with torch.no_grad():
        logits = twin(torch.from_numpy(batch)).numpy()
    np.testing.assert_allclose(logits, model.scores(batch), rtol=1e-4, atol=1e-4)


@pytest.mark.torch
@pytest.mark.filterwarnings("ignore:Setting backward hooks on ReLU:UserWarning")
@pytest.mark.parametrize(
    ("ours", "peer"),
    [(saliency, "Saliency"), (guided_backprop, "GuidedBackprop"), (deconvnet, "Deconvolution")],
)
def test_against_captum(model: Model, batch: np.ndarray, ours, peer: str) -> None:
    torch, twin = _torch_twin(model)
    attr = pytest.importorskip("captum.attr")
    targets = [int(t) for t in model.scores(batch).argmax(axis=1)]
    x = torch.from_numpy(batch.copy()).requires_grad_(True)
    explainer = getattr(attr, peer)(twin)
    kwargs = {"abs": True} if peer == "Saliency" else {}
    reference = explainer.attribute(x, target=targets, **kwargs).detach().numpy()
    result = ours(model, batch, targets)
    if peer == "Saliency":
        reference = reference.max(axis=1)  # Simonyan: max over channels of |grad|
    assert result.maps.shape == reference.shape
    error = relative_error(result.maps, reference)
    assert error <= 1e-4, error


@pytest.mark.torch
@pytest.mark.parametrize("target", [None, 5, Channel(LAYER, 11)])
def test_gradcam_against_torch(model: Model, batch: np.ndarray, target) -> None:
    """Independent Grad-CAM: autograd on the twin, F.interpolate, min-max."""
    torch, twin = _torch_twin(model)
    f = torch.nn.functional
    x = torch.from_numpy(batch.copy()).requires_grad_(True)
    logits = twin(x)
    features = twin.features
    features.retain_grad()
    if isinstance(target, Channel):
        objective = features[:, target.channel].mean(dim=(1, 2)).sum()
    else:
        classes = logits.argmax(dim=1) if target is None else torch.full((N,), target)
        objective = logits.gather(1, classes[:, None]).sum()
    objective.backward()
    weights = features.grad.mean(dim=(2, 3), keepdim=True)
    low = torch.relu((weights * features).sum(dim=1, keepdim=True))
    up = f.interpolate(low, size=(SIZE, SIZE), mode="bilinear", align_corners=False)[:, 0]
    flat = up.reshape(N, -1)
    lo, hi = flat.min(dim=1).values[:, None, None], flat.max(dim=1).values[:, None, None]
    reference = ((up - lo) / (hi - lo)).detach().numpy()
    result = gradcam(model, batch, target)
    np.testing.assert_allclose(
        result.extras["layer_maps"], low[:, 0].detach().numpy(), rtol=1e-4, atol=1e-5
    )
    assert np.abs(result.maps - reference).max() <= 1e-4


# --------------------------------------------------------------------- render, report


def test_colormap_and_overlay() -> None:
    ramp = np.linspace(0, 1, 5)
    inferno = apply_colormap(ramp, "inferno")
    assert inferno.shape == (5, 3) and inferno.dtype == np.uint8
    np.testing.assert_array_equal(inferno[0], [0, 0, 4])
    np.testing.assert_array_equal(inferno[-1], [252, 255, 164])
    assert (np.diff(apply_colormap(ramp, "gray")[:, 0].astype(int)) > 0).all()
    jet = apply_colormap(np.array([0.0, 0.5, 1.0]), "jet")
    np.testing.assert_array_equal(jet, [[0, 0, 128], [128, 255, 128], [128, 0, 0]])
    image = np.full((8, 8, 3), 200, np.uint8)
    blended = overlay(image, np.zeros((4, 4)), "gray", alpha=0.5, gamma=None)  # constant blend
    np.testing.assert_array_equal(blended, 100)
    ramped = overlay(image, np.zeros((4, 4)), "gray", alpha=0.5)  # opacity ramps with the value
    np.testing.assert_array_equal(ramped, 200)
    with pytest.raises(ValueError, match="unknown colormap"):
        apply_colormap(ramp, "viridis2")


def test_report_sections(model: Model, sample, tmp_path: Path) -> None:
    predicted = model.scores(model.prepare(sample.images)).argmax(axis=1)
    true = [int(predicted[0]), int((predicted[1] + 1) % 8), None]  # image 1 "misclassified"
    page = build_report(
        model,
        list(sample.images),
        tmp_path,
        sections=["attribution", "attribution-true-class"],
        options={"true_labels": true},
        assets=True,
    ).read_text(encoding="utf-8")
    assert '<section id="attribution">' in page
    assert '<section id="attribution-true-class">' in page
    for name in ("saliency-0", "guided-2", "gradcam-1", "gradcam-predicted-1", "gradcam-true-1"):
        assert any((tmp_path / "images").rglob(f"{name}.png")), name
    assert "in-0.png" not in page and "not available" not in page
    # all predictions right: no side-by-side section
    page = build_report(
        model,
        list(sample.images),
        tmp_path / "b",
        sections=["attribution-true-class"],
        options={"attribution": {"true_labels": list(predicted)}},
    ).read_text(encoding="utf-8")
    assert "attribution-true-class" not in page


# ------------------------------------------------------------------------ without torch


def test_techniques_run_without_torch() -> None:
    script = textwrap.dedent(
        """
        import importlib.abc
        import sys

        class NoTorch(importlib.abc.MetaPathFinder):
            # as if torch were not installed: importing it raises ImportError
            def find_spec(self, name, path, target=None):
                if name.split(".")[0] in ("torch", "captum"):
                    raise ImportError(f"No module named {name!r}")
                return None

        sys.meta_path.insert(0, NoTorch())
        import numpy as np
        from cnnviz import load_model
        from cnnviz.attribution import METHODS
        from cnnviz.data import make_shapes

        model = load_model("shapes")
        images = make_shapes(2, seed=1).images
        for name, method in METHODS.items():
            result = method(model, images, None)
            assert result.heatmap.shape == (2, 64, 64), name
            assert np.isfinite(result.maps).all(), name
        assert "torch" not in sys.modules and "captum" not in sys.modules
        print("ok", len(METHODS))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"ok {len(METHODS)}" in done.stdout
