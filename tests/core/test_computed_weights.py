"""Weights computed in the graph (weight standardization, weight norm): values fetched once per
call with no batch axis, gradients equal to torch autograd at any batch size, adjoint sessions
reused across calls."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from conftest import make_graph_model
from onnx import helper

from cnnviz_core import Model, Preprocess
from cnnviz_core.backward import adjoint, gradients

torch = pytest.importorskip("torch")
pytest.importorskip("onnxscript")
nn = torch.nn
F = torch.nn.functional


class StandardizedConv(nn.Module):
    """Weight standardization (BiT / NFNet style): the (64, 3, 7, 7) weight is normalized per
    output channel by a training-mode batch norm before the convolution."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(64, 3, 7, 7))
        self.head = nn.Linear(64, 5)

    def forward(self, x):
        w = F.batch_norm(self.weight.reshape(1, 64, -1), None, None, training=True)
        y = F.relu(F.conv2d(x, w.reshape(64, 3, 7, 7), stride=2, padding=3))
        return self.head(y.mean(dim=(2, 3)))


class WeightNormConv(nn.Module):
    """Weight norm (Salimans & Kingma 2016): w = g * v / ||v|| per output channel, and a dense
    layer whose weight is computed too."""

    def __init__(self) -> None:
        super().__init__()
        self.v = nn.Parameter(torch.randn(8, 3, 3, 3))
        self.g = nn.Parameter(torch.rand(8, 1, 1, 1) + 0.5)
        self.fc_v = nn.Parameter(torch.randn(5, 8))

    def forward(self, x):
        w = self.g * self.v / self.v.flatten(1).norm(dim=1).reshape(8, 1, 1, 1)
        y = torch.tanh(F.conv2d(x, w, padding=1)).mean(dim=(2, 3))
        return y @ (self.fc_v / self.fc_v.norm()).t()


def export(net: nn.Module, size: int, path, dynamo: bool = True) -> Model:
    """Exported with a dynamic batch; the legacy exporter without constant folding keeps a
    weight computation that dynamo folds (weight norm) in the graph."""
    torch.manual_seed(0)
    x = torch.randn(2, 3, size, size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporters' own notices
        if dynamo:
            torch.onnx.export(
                net, (x,), str(path), dynamo=True, verbose=False,
                dynamic_shapes=({0: torch.export.Dim("batch")},),
            )  # fmt: skip
        else:
            torch.onnx.export(
                net, (x,), str(path), dynamo=False, do_constant_folding=False, opset_version=17,
                input_names=["x"], dynamic_axes={"x": {0: "batch"}},
            )  # fmt: skip
    return Model(path, preprocess=Preprocess(scale=1.0))


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("computed")
    torch.manual_seed(0)
    standardized, weightnorm = StandardizedConv().eval(), WeightNormConv().eval()
    models = {
        "standardized": (standardized, export(standardized, 16, folder / "standardized.onnx")),
        "weightnorm": (weightnorm, export(weightnorm, 16, folder / "wn.onnx", dynamo=False)),
    }
    for _, model in models.values():  # the weights are computed in the graph, not folded
        layers = [n for n in model.runnable.graph.node if n.op_type in ("Conv", "MatMul")]
        assert layers and all(n.input[1] not in model.constants for n in layers)
    return models


def torch_input_grad(net: nn.Module, batch: np.ndarray, seed: np.ndarray) -> np.ndarray:
    x = torch.from_numpy(batch).requires_grad_()
    (net(x) * torch.from_numpy(seed)).sum().backward()
    return x.grad.numpy()


@pytest.mark.torch
@pytest.mark.parametrize("name", ["standardized", "weightnorm"])
@pytest.mark.parametrize("n", [1, 2, 8, 64])  # batch = output channels (64 and 8)
def test_input_gradient_equals_torch_autograd(models, name, n):
    net, model = models[name]
    rng = np.random.default_rng(n)
    batch = rng.standard_normal((n, 3, 16, 16)).astype(np.float32)
    seed = rng.standard_normal((n, 5)).astype(np.float32)
    ours = gradients(model, batch, {model.output_names[0]: seed}).grads[model.input_name]
    theirs = torch_input_grad(net, batch, seed)
    for i in range(n):
        error = np.linalg.norm(ours[i] - theirs[i]) / np.linalg.norm(theirs[i])
        assert error <= 1e-4, (i, error)


@pytest.mark.torch
def test_float64_path_reads_the_computed_weights(models):
    net, model = models["standardized"]
    rng = np.random.default_rng(3)
    batch = rng.standard_normal((2, 3, 16, 16))
    seed = rng.standard_normal((2, 5))
    ours = gradients(model, batch, {model.output_names[0]: seed}, forward="numpy")
    theirs = torch_input_grad(net.double(), batch, seed)
    net.float()
    np.testing.assert_allclose(ours.grads[model.input_name], theirs, rtol=1e-5, atol=1e-6)


@pytest.mark.torch
def test_adjoint_sessions_are_reused_across_calls(models):
    _, model = models["standardized"]
    rng = np.random.default_rng(4)
    batch = rng.standard_normal((3, 3, 16, 16)).astype(np.float32)
    seed = {model.output_names[0]: rng.standard_normal((3, 5)).astype(np.float32)}
    first = gradients(model, batch, seed).grads[model.input_name]
    before = adjoint.cached_sessions()
    for _ in range(3):
        again = gradients(model, batch, seed).grads[model.input_name]
        np.testing.assert_array_equal(again, first)
    assert adjoint.cached_sessions() == before


def _computed_weight_model() -> Model:
    """Conv whose weight is ``v * 2`` (computed in the graph), then a flatten: a tiny graph."""
    rng = np.random.default_rng(5)
    weights = {
        "v": rng.standard_normal((4, 3, 3, 3)).astype(np.float32),
        "two": np.array(2.0, np.float32),
    }
    nodes = [
        helper.make_node("Mul", ["v", "two"], ["w"], "scale_weight"),
        helper.make_node("Conv", ["x", "w"], ["y"], "conv", pads=[1, 1, 1, 1]),
    ]
    proto = make_graph_model(nodes, weights, ["N", 3, 6, 6], "y")
    return Model(proto.SerializeToString(), preprocess=Preprocess(scale=1.0), memory_budget=2000)


def test_split_batches_return_batch_independent_taps_once():
    model = _computed_weight_model()
    assert model.max_batch < 5
    batch = np.random.default_rng(6).standard_normal((5, 3, 6, 6)).astype(np.float32)
    out = model.run(batch, taps=["w", "y"], outputs=False)
    np.testing.assert_array_equal(out["w"], model.constants["v"] * 2)
    assert out["y"].shape == (5, 4, 6, 6)
    assert not model.depends_on_input("w") and model.depends_on_input("y")
    assert model.tensor_shape("w", 5) == (4, 3, 3, 3)
    assert model.tensor_shape("y", 5) == (5, 4, 6, 6)


def test_split_batch_gradient_through_a_computed_weight():
    model = _computed_weight_model()
    rng = np.random.default_rng(7)
    batch = rng.standard_normal((5, 3, 6, 6)).astype(np.float32)
    seed = rng.standard_normal((5, 4, 6, 6)).astype(np.float32)
    ours = gradients(model, batch, {"y": seed}).grads["x"]
    reference = gradients(model, batch.astype(np.float64), {"y": seed}, forward="numpy")
    np.testing.assert_allclose(ours, reference.grads["x"], rtol=1e-4, atol=1e-5)
