"""The CAM variants against independent references on one tiny torch CNN exported to ONNX
(a skip connection crosses the explained layer, so Ablation-CAM's downstream run needs a
side input): torch-cam 0.5 for XGrad-CAM, LayerCAM and Score-CAM (the torch module itself
given to torch-cam), float64 NumPy versions of the papers' formulas on torch autograd's
activations and gradients for Grad-CAM++, HiResCAM, Eigen-CAM and Ablation-CAM (torch
forwards with a channel zeroed by a hook). Maps are compared at the layer's resolution,
after the ReLU and a min-max normalisation (torch-cam's order: it normalises before any
upsampling)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from cnnviz import load_model
from cnnviz.attribution import METHODS, REGISTRY, Channel
from cnnviz.attribution.cam_variants import (
    ablationcam,
    eigencam,
    fullgrad,
    gradcam_pp,
    hirescam,
    layercam,
    scorecam,
    xgradcam,
)
from cnnviz.data import make_shapes
from cnnviz_core import Model, Preprocess
from cnnviz_core.downstream import Downstream

pytest.importorskip("torch")
pytest.importorskip("onnxscript")  # the dynamo exporter
import torch

pytestmark = pytest.mark.torch

SIZE = 20
CLASSES = [0, 3, 2]  # one class per image
VARIANTS = ("gradcam++", "xgradcam", "layercam", "hirescam", "eigencam", "scorecam", "ablationcam")


class Net(torch.nn.Module):
    """conv 3->6, ReLU, max-pool 2, conv 6->10, ReLU (the explained layer ``explained``),
    conv 10->6 plus the pooled features (a skip across the layer), ReLU, mean, linear -> 5."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, 6, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(6, 10, 3, padding=1)
        self.conv3 = torch.nn.Conv2d(10, 6, 3, padding=1)
        self.explained = torch.nn.ReLU()
        self.fc = torch.nn.Linear(6, 5)

    def forward(self, x):
        f = torch.nn.functional
        pooled = f.max_pool2d(f.relu(self.conv1(x)), 2)
        layer = self.explained(self.conv2(pooled))
        return self.fc(f.relu(self.conv3(layer) + pooled).mean(dim=(2, 3)))


@pytest.fixture(scope="module")
def net() -> torch.nn.Module:
    torch.manual_seed(0)
    return Net().eval()


@pytest.fixture(scope="module")
def model(net, tmp_path_factory) -> Model:
    path = Path(tmp_path_factory.mktemp("cams")) / "net.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's own notices
        torch.onnx.export(
            net, (torch.zeros(2, 3, SIZE, SIZE),), str(path), dynamo=True, verbose=False,
            dynamic_shapes=({0: torch.export.Dim("batch")},),
        )  # fmt: skip
    return Model(path, preprocess=Preprocess(scale=1.0))


@pytest.fixture(scope="module")
def batch() -> np.ndarray:
    return np.random.default_rng(3).standard_normal((3, 3, SIZE, SIZE)).astype(np.float32)


def layer_name(model: Model) -> str:
    return next(layer.name for layer in model.layers if "explained" in layer.aliases)


def normalized(maps: np.ndarray) -> np.ndarray:
    flat = maps.reshape(len(maps), -1)
    low, high = flat.min(axis=1), flat.max(axis=1)
    return ((flat - low[:, None]) / (high - low)[:, None]).reshape(maps.shape)


def ours_at_layer(function, model: Model, batch: np.ndarray) -> np.ndarray:
    result = function(model, batch, CLASSES, layer=layer_name(model))
    assert result.maps.shape == (3, SIZE, SIZE) and result.maps.dtype == np.float32
    return normalized(result.extras["layer_maps"].astype(np.float64))


def torch_float64(net, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(activations, gradients of each image's class score, scores) at the explained layer,
    float64 autograd."""
    double = Net().double().eval()
    double.load_state_dict(net.state_dict())
    kept: dict[str, torch.Tensor] = {}
    hook = double.explained.register_forward_hook(lambda m, i, o: kept.setdefault("a", o))
    try:
        scores = double(torch.from_numpy(batch).double())
    finally:
        hook.remove()
    chosen = scores[torch.arange(3), torch.tensor(CLASSES)]
    (grads,) = torch.autograd.grad(chosen.sum(), kept["a"])
    return kept["a"].detach().numpy(), grads.numpy(), chosen.detach().numpy()


def reference_map(weights: np.ndarray, activations: np.ndarray) -> np.ndarray:
    """ReLU(sum_k w_k A_k), weights (N, K) or element-wise (N, K, h, w), normalised."""
    if weights.ndim == 2:
        weights = weights[:, :, None, None]
    return normalized(np.maximum((weights * activations).sum(axis=1), 0))


# ------------------------------------------------------------------------- torch-cam


@pytest.mark.parametrize(
    ("ours", "peer"),
    [(xgradcam, "XGradCAM"), (layercam, "LayerCAM"), (scorecam, "ScoreCAM")],
    ids=["xgradcam", "layercam", "scorecam"],
)
def test_against_torchcam(net, model: Model, batch: np.ndarray, ours, peer: str) -> None:
    methods = pytest.importorskip("torchcam.methods")
    x = torch.from_numpy(batch.copy())
    with getattr(methods, peer)(net, "explained", input_shape=(3, SIZE, SIZE)) as extractor:
        if peer == "ScoreCAM":
            with torch.no_grad():
                net(x)
            maps = extractor(class_idx=CLASSES, normalized=False)[0]
        else:
            maps = extractor(class_idx=CLASSES, scores=net(x), normalized=False)[0]
    theirs = normalized(maps.detach().numpy().astype(np.float64))  # theirs adds 1e-8 to the span
    np.testing.assert_allclose(ours_at_layer(ours, model, batch), theirs, atol=1e-5)


# ----------------------------------------------------------------- papers in NumPy


def test_gradcam_pp_is_the_papers_formula(net, model: Model, batch: np.ndarray) -> None:
    """Chattopadhyay et al. 2018, eq. 19 with exp(S): alpha = g^2 / (2 g^2 + sum_ab A g^3).
    (torch-cam 0.5's GradCAMpp drops that division: ``alpha[mask].div_`` writes to a copy.)"""
    a, g, _ = torch_float64(net, batch)
    weights = np.zeros(a.shape[:2])
    for n in range(a.shape[0]):
        for k in range(a.shape[1]):
            total = a[n, k].sum()
            for i, j in np.ndindex(*a.shape[2:]):
                d = g[n, k, i, j]
                if d != 0:
                    alpha = d**2 / (2 * d**2 + total * d**3)
                    weights[n, k] += alpha * max(d, 0.0)
    expected = reference_map(weights, a)
    np.testing.assert_allclose(ours_at_layer(gradcam_pp, model, batch), expected, atol=1e-5)


def test_hirescam_is_gradient_times_activation(net, model: Model, batch: np.ndarray) -> None:
    a, g, _ = torch_float64(net, batch)
    expected = normalized(np.maximum(np.einsum("nkhw,nkhw->nhw", g, a), 0))
    np.testing.assert_allclose(ours_at_layer(hirescam, model, batch), expected, atol=1e-5)


def test_eigencam_is_the_first_principal_direction(net, model: Model, batch: np.ndarray) -> None:
    """The dominant eigenvector of A^T A (K x K, uncentred as in the paper), signed to sum
    >= 0; the projection of the (h w, K) activations on it."""
    a, _, _ = torch_float64(net, batch)
    n, k = a.shape[:2]
    expected = []
    for i in range(n):
        matrix = a[i].reshape(k, -1).T
        values, vectors = np.linalg.eigh(matrix.T @ matrix)
        v = vectors[:, np.argmax(values)]
        v = v if v.sum() >= 0 else -v
        expected.append(np.maximum((matrix @ v).reshape(a.shape[2:]), 0))
    result = ours_at_layer(eigencam, model, batch)
    np.testing.assert_allclose(result, normalized(np.stack(expected)), atol=1e-5)
    # class-agnostic: another target gives the same map
    layer = layer_name(model)
    other = eigencam(model, batch, [1, 1, 1], layer=layer).extras["layer_maps"]
    np.testing.assert_array_equal(other, eigencam(model, batch, layer=layer).extras["layer_maps"])


def test_ablationcam_is_the_score_drop(net, model: Model, batch: np.ndarray) -> None:
    """w_k = (y - y_k) / y with y_k the class score when torch zeroes channel k."""
    a, _, y = torch_float64(net, batch)
    double = Net().double().eval()
    double.load_state_dict(net.state_dict())
    x = torch.from_numpy(batch).double()
    weights = np.zeros(a.shape[:2])
    for k in range(a.shape[1]):

        def zero(module, inputs, output, k=k):
            output = output.clone()
            output[:, k] = 0
            return output

        hook = double.explained.register_forward_hook(zero)
        try:
            with torch.no_grad():
                ablated = double(x)[torch.arange(3), torch.tensor(CLASSES)].numpy()
        finally:
            hook.remove()
        weights[:, k] = (y - ablated) / y
    expected = reference_map(weights, a)
    np.testing.assert_allclose(ours_at_layer(ablationcam, model, batch), expected, atol=1e-5)


def test_fullgrad_is_input_and_bias_gradients(net, model: Model, batch: np.ndarray) -> None:
    """Srinivas & Fleuret 2019: psi(grad_x * x) + sum over convs of psi(grad_z * b), psi =
    |.|, min-max per image over (C, h, w), bilinear upsampling (torch's, half-pixel),
    channel sum; the total min-max normalised."""
    double = Net().double().eval()
    double.load_state_dict(net.state_dict())
    convs = [double.conv1, double.conv2, double.conv3]
    outputs: list[torch.Tensor] = []
    hooks = [c.register_forward_hook(lambda m, i, o: outputs.append(o)) for c in convs]
    x = torch.from_numpy(batch).double().requires_grad_(True)
    try:
        chosen = double(x)[torch.arange(3), torch.tensor(CLASSES)]
    finally:
        for hook in hooks:
            hook.remove()
    grads = torch.autograd.grad(chosen.sum(), [x, *outputs])

    def psi(term: torch.Tensor) -> torch.Tensor:
        flat = term.abs().flatten(1)
        flat = flat - flat.min(dim=1, keepdim=True).values
        flat = flat / flat.max(dim=1, keepdim=True).values
        return flat.view_as(term)

    total = psi(grads[0] * x).sum(dim=1)
    for conv, grad in zip(convs, grads[1:]):
        bias = conv.state_dict()["bias"]
        part = psi(grad * bias[None, :, None, None]).sum(dim=1, keepdim=True)
        up = torch.nn.functional.interpolate(part, (SIZE, SIZE), mode="bilinear")
        total = total + up[:, 0]
    expected = normalized(total.detach().numpy())
    result = fullgrad(model, batch, CLASSES)
    assert result.options["conv_layers"] == 3
    np.testing.assert_allclose(result.maps, expected, atol=1e-5)


# ------------------------------------------------------------------- the engine part


def test_downstream_reads_the_skip_and_reproduces_the_model(model: Model, batch) -> None:
    rest = Downstream(model, layer_name(model), [model.score_tensor])
    assert rest.side  # the pooled features the skip connection adds after the layer
    base = rest.base(batch)
    for i in range(len(batch)):
        mine = {name: value[i : i + 1] for name, value in base.items()}
        copies = np.repeat(mine[rest.start], 4, axis=0)
        out = rest.run(copies, mine)[model.score_tensor]
        np.testing.assert_allclose(out, np.repeat(model.scores(batch[i : i + 1]), 4, 0), atol=1e-5)


def test_ablated_runs_are_chunked_to_the_memory_budget(model: Model, batch) -> None:
    small = Model(model.proto.SerializeToString(), preprocess=Preprocess(scale=1.0))
    small.memory_budget = 1  # one row per run
    whole = ablationcam(model, batch, CLASSES, layer=layer_name(model))
    chunked = ablationcam(small, batch, CLASSES, layer=layer_name(small))
    assert Downstream.of(small, layer_name(small), [small.score_tensor]).max_batch == 1
    np.testing.assert_allclose(chunked.maps, whole.maps, atol=1e-6)
    small.max_batch = 2  # Score-CAM's masked copies in chunks of 2
    np.testing.assert_allclose(
        scorecam(small, batch, CLASSES, layer=layer_name(small)).maps,
        scorecam(model, batch, CLASSES, layer=layer_name(model)).maps,
        atol=1e-6,
    )


def test_ablationcam_without_side_tensors_runs_one_whole_forward(monkeypatch) -> None:
    """When the rest of the graph reads only the explained layer (the shapes model's GAP
    head), the unablated score comes from the rest on the layer's activations: no second
    whole forward, and the weights are still (y - y_k) / y with y the model's own score."""
    shapes = load_model("shapes")
    images = shapes.prepare(make_shapes(2, 2).images)
    layer = "relu_3"
    rest = Downstream.of(shapes, layer, [shapes.score_tensor])
    assert not rest.side

    def no_second_forward(self, batch):
        raise AssertionError("Downstream.base ran a second whole forward")

    monkeypatch.setattr(Downstream, "base", no_second_forward)
    result = ablationcam(shapes, images, layer=layer)
    monkeypatch.undo()
    activations = shapes.run(images, taps=[layer], outputs=False)[layer]
    scores = shapes.scores(images)
    for i, target in enumerate(result.targets):
        y = scores[i, target.index]
        k = activations.shape[1]
        ablated = np.repeat(activations[i : i + 1], k, axis=0)
        ablated[np.arange(k), np.arange(k)] = 0
        y_k = rest.run(ablated, {})[shapes.score_tensor][:, target.index].ravel()
        expected = (y - y_k) / y
        np.testing.assert_allclose(result.extras["weights"][i], expected, rtol=1e-4, atol=1e-6)


def test_target_the_layer_does_not_reach(model: Model, batch) -> None:
    """A channel of an earlier layer: ablating the explained layer changes nothing."""
    early = model.layers[0].name
    result = ablationcam(model, batch, Channel(early, 1), layer=layer_name(model))
    assert not result.maps.any()


@pytest.mark.parametrize("name", VARIANTS)
def test_registered(name: str) -> None:
    spec = REGISTRY[name]
    assert spec.family == "cam" and spec.options == {"layer"} and METHODS[name] is spec.function
