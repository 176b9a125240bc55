"""Conformance: 32 architecture families (``conformance_families.py``) x both torch exporters
(dynamo at its default opset; the legacy TorchScript exporter at opsets 13 and 17).

Each case, exported with a dynamic batch, is checked: onnxruntime forward = torch; input
gradient = torch autograd (the float32 engine within 3x torch's own float32-vs-float64 error,
the float64 ``forward="numpy"`` path within 1e-6 of torch float64); Grad-CAM (default layer)
and guided backprop run; occlusion ``auto`` = ``naive``.

The default run covers every family with the legacy exporter at opset 17 and a
representative subset with dynamo (~2 s per export here) and with opset 13 (see ``DEFAULT``);
``CNNVIZ_CONFORMANCE=full`` runs the whole grid (96 cases, ~4 minutes on 2 cores).
``CNNVIZ_CONFORMANCE_TABLE=FILE`` writes the figures (per case: float32 and float64 gradient
errors, torch's own float32 error) as JSON, the source of the README table.
"""

from __future__ import annotations

import json
import os
import warnings

import numpy as np
import pytest

from cnnviz.attribution import gradcam, guided_backprop, occlusion
from cnnviz_core import Model, Preprocess, UnsupportedOpError
from cnnviz_core.backward import gradients

torch = pytest.importorskip("torch")
pytest.importorskip("onnxscript")
from conformance_families import CLASSES, FAMILIES  # noqa: E402  (needs torch)

nn = torch.nn
EXPORTERS = ("dynamo", "legacy13", "legacy17")
#: the default run: every family with the legacy exporter at opset 17, and a representative
#: subset with dynamo (residual CNN, 'same' pads, channels-last LayerNorm, attention) and
#: with legacy opset 13 (older op forms: Pad, Clip, Reduce* axes as attributes, HardSwish
#: decomposed, GroupNorm through InstanceNormalization)
DEFAULT = {
    "dynamo": frozenset({"resnet", "efficientnet-same", "convnext", "mobilevit"}),
    "legacy13": frozenset({"mobilenetv3", "bit-resnetv2-gn-ws", "cbam", "efficientformer",
                           "yolo-head", "alexnet-lrn"}),
}  # fmt: skip
FULL = os.environ.get("CNNVIZ_CONFORMANCE") == "full"
#: (family, exporter) -> what the backward pass refuses, by name, before any work: the legacy
#: exporter writes LocalResponseNorm with an If whose branch reads the pooled map
REFUSED = {
    ("alexnet-lrn", "legacy13"): r"ONNX op 'If' .*dynamo exporter",
    ("alexnet-lrn", "legacy17"): r"ONNX op 'If' .*dynamo exporter",
}
FIGURES: dict[str, dict[str, float]] = {}


def cases() -> list:
    out = []
    for family in sorted(FAMILIES):
        for exporter in EXPORTERS:
            heavy = exporter in DEFAULT and family not in DEFAULT[exporter]
            marks = [pytest.mark.skipif(heavy and not FULL, reason="CNNVIZ_CONFORMANCE=full")]
            out.append(pytest.param(family, exporter, marks=marks, id=f"{family}-{exporter}"))
    return out


@pytest.fixture(scope="module", autouse=True)
def figures_table():
    yield
    path = os.environ.get("CNNVIZ_CONFORMANCE_TABLE")
    if path and FIGURES:
        with open(path, "w") as f:
            json.dump(FIGURES, f, indent=1, sort_keys=True)


def randomize_norms(net: nn.Module, generator) -> None:
    """Non-trivial statistics and affine parameters: no norm layer is an identity."""
    for module in net.modules():
        if isinstance(module, (nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm)):
            c = module.weight.shape[0]
            module.weight.data.copy_(torch.rand(c, generator=generator) + 0.5)
            module.bias.data.copy_(torch.randn(c, generator=generator) * 0.1)
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.copy_(torch.randn(module.num_features, generator=generator) * 0.1)
            module.running_var.copy_(torch.rand(module.num_features, generator=generator) + 0.5)


def export(net: nn.Module, size: int, exporter: str, path) -> None:
    x = torch.randn(2, 3, size, size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporters' own deprecation notices
        if exporter == "dynamo":
            torch.onnx.export(
                net, (x,), str(path), dynamo=True, verbose=False,
                dynamic_shapes=({0: torch.export.Dim("batch")},),
            )  # fmt: skip
        else:
            torch.onnx.export(
                net, (x,), str(path), dynamo=False, opset_version=int(exporter[-2:]),
                input_names=["x"], dynamic_axes={"x": {0: "N"}},
            )  # fmt: skip


def torch_input_grad(net: nn.Module, batch: np.ndarray, seed: np.ndarray, dtype) -> np.ndarray:
    net = net.to(dtype)
    x = torch.from_numpy(batch).to(dtype).requires_grad_()
    (net(x) * torch.from_numpy(seed).to(dtype)).sum().backward()
    net.float()
    return x.grad.double().numpy()


def relative(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.mark.torch
@pytest.mark.parametrize(("family", "exporter"), cases())
def test_family_conforms(tmp_path, family, exporter):
    make, size = FAMILIES[family]
    torch.manual_seed(0)
    net = make().eval()
    randomize_norms(net, torch.Generator().manual_seed(0))
    path = tmp_path / f"{family}-{exporter}.onnx"
    try:
        export(net, size, exporter, path)
    except torch.onnx.errors.UnsupportedOperatorError as exc:  # the exporter's own limit
        pytest.skip(f"torch cannot export {family} with {exporter}: {str(exc)[:120]}")
    model = Model(path, preprocess=Preprocess(scale=1.0))
    rng = np.random.default_rng(1)
    batch = rng.standard_normal((2, 3, size, size)).astype(np.float32)
    seed = rng.standard_normal((2, CLASSES)).astype(np.float32)
    output = model.output_names[0]

    with torch.no_grad():
        expected = net(torch.from_numpy(batch)).numpy()
    np.testing.assert_allclose(model.run(batch)[output], expected, rtol=1e-4, atol=1e-5)

    if (family, exporter) in REFUSED:
        with pytest.raises(UnsupportedOpError, match=REFUSED[family, exporter]):
            gradients(model, batch, {output: seed})
        FIGURES[f"{family}/{exporter}"] = {"refused": 1.0}
        return

    reference = torch_input_grad(net, batch, seed, torch.float64)
    torch32 = torch_input_grad(net, batch, seed, torch.float32)
    ours32 = gradients(model, batch, {output: seed}).grads[model.input_name]
    ours64 = gradients(
        model, batch.astype(np.float64), {output: seed.astype(np.float64)}, forward="numpy"
    ).grads[model.input_name]
    errors32 = [relative(ours32[i], reference[i]) for i in range(len(batch))]
    own = [relative(torch32[i], reference[i]) for i in range(len(batch))]
    errors64 = [relative(ours64[i], reference[i]) for i in range(len(batch))]
    FIGURES[f"{family}/{exporter}"] = {
        "float32": max(errors32),
        "torch_float32": max(own),
        "ratio": max(e / max(o, 1e-12) for e, o in zip(errors32, own)),
        "float64": max(errors64),
    }
    for i in range(len(batch)):
        assert errors32[i] <= 3 * own[i] + 1e-6, (i, errors32[i], own[i])
        assert errors64[i] <= 1e-6, (i, errors64[i])

    cam = gradcam(model, batch)
    guided = guided_backprop(model, batch)
    assert cam.maps.shape == (2, size, size) and np.isfinite(cam.maps).all()
    assert np.isfinite(guided.maps).all() and np.abs(guided.maps).sum() > 0

    window, stride = size // 3, size // 4
    auto = occlusion(model, batch[:1], 0, window=window, stride=stride)
    naive = occlusion(model, batch[:1], 0, window=window, stride=stride, engine="naive")
    np.testing.assert_allclose(auto.maps, naive.maps, rtol=1e-4, atol=1e-5)
