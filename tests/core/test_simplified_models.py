"""Models simplified by onnxslim (constant folding, Conv+BatchNorm fusion, shape subgraphs
folded, Identity and dead nodes dropped), as users often ship them: a small torch CNN
exported by the legacy exporter without constant folding (BatchNormalization and Identity
nodes kept for onnxslim to fuse and drop), and PaddleOCR's classifier from ``../shared``
(weights as ``Constant`` nodes, symbolic height and width). The simplified model must
explain like the original: same forward, same input gradient (and, for the torch net, torch
autograd), a default Grad-CAM layer, occlusion ``auto`` = ``naive``."""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import pytest

from cnnviz.attribution import gradcam, occlusion
from cnnviz.attribution.cam import default_layer
from cnnviz_core import Model, Preprocess
from cnnviz_core.backward import gradients

onnxslim = pytest.importorskip("onnxslim")


def slimmed(original: onnx.ModelProto) -> onnx.ModelProto:
    """onnxslim's default simplification of a model."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # onnxslim's own notices
        return onnxslim.slim(original)


def assert_explains_alike(
    original: Model, simple: Model, batch: np.ndarray, seed: np.ndarray
) -> np.ndarray:
    """Forward, input gradient (float32 and the float64 path), default CAM layer and
    occlusion of the simplified model equal the original's; returns the float64 gradient."""
    output, simple_output = original.output_names[0], simple.output_names[0]
    np.testing.assert_allclose(
        simple.run(batch)[simple_output], original.run(batch)[output], rtol=1e-5, atol=1e-5
    )
    grad = gradients(original, batch, {output: seed}).grads[original.input_name]
    simple_grad = gradients(simple, batch, {simple_output: seed}).grads[simple.input_name]
    np.testing.assert_allclose(simple_grad, grad, rtol=1e-4, atol=1e-5 * np.abs(grad).max())
    batch64, seed64 = batch.astype(np.float64), seed.astype(np.float64)
    grad64 = gradients(original, batch64, {output: seed64}, forward="numpy").grads
    simple64 = gradients(simple, batch64, {simple_output: seed64}, forward="numpy").grads
    # fused weights are rounded to float32 once: the float64 paths agree to that rounding
    difference = simple64[simple.input_name] - grad64[original.input_name]
    relative64 = np.linalg.norm(difference) / np.linalg.norm(grad64[original.input_name])
    assert relative64 < 1e-6, relative64

    simple_shape = simple.layer_shape(default_layer(simple))  # found without naming one
    original_shape = original.layer_shape(default_layer(original))
    assert simple_shape is not None and original_shape is not None
    assert simple_shape[1:] == original_shape[1:]
    cam = gradcam(simple, batch)
    assert cam.maps.shape == (len(batch), *batch.shape[2:]) and np.isfinite(cam.maps).all()
    assert np.ptp(cam.maps) > 0

    height, width = batch.shape[2:]
    window, stride = height // 3, height // 4
    auto = occlusion(simple, batch[:1], 0, window=window, stride=stride)
    naive = occlusion(simple, batch[:1], 0, window=window, stride=stride, engine="naive")
    np.testing.assert_allclose(auto.maps, naive.maps, rtol=1e-4, atol=1e-5)
    assert auto.maps.shape == (1, height, width)
    return np.asarray(simple64[simple.input_name])


@pytest.mark.torch
def test_slimmed_torch_cnn_explains_like_the_export_and_torch(tmp_path):
    """A residual CNN with BatchNorm (legacy export at opset 13, dynamic batch): onnxslim
    fuses the 9 BatchNormalizations into their Convs (33 nodes -> 24); the float64
    gradient of the simplified model equals torch's float64 autograd within 1e-6 (relative;
    measured 6.6e-8, the float32 one 1.3e-7 against torch's own float32 1.6e-7)."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnxscript")
    from conformance_families import CLASSES, FAMILIES
    from test_conformance import randomize_norms, torch_input_grad

    make, size = FAMILIES["resnet"]
    torch.manual_seed(0)
    net = make().eval()
    randomize_norms(net, torch.Generator().manual_seed(0))
    path = tmp_path / "resnet.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's own deprecation notices
        torch.onnx.export(
            net, (torch.randn(2, 3, size, size),), str(path), dynamo=False, opset_version=13,
            do_constant_folding=False, input_names=["x"], dynamic_axes={"x": {0: "N"}},
        )  # fmt: skip
    original_proto = onnx.load(str(path))
    simple_proto = slimmed(original_proto)
    ops = [n.op_type for n in simple_proto.graph.node]
    assert len(ops) < len(original_proto.graph.node)
    assert "BatchNormalization" not in ops and "Identity" not in ops

    original = Model(original_proto.SerializeToString(), preprocess=Preprocess(scale=1.0))
    simple = Model(simple_proto.SerializeToString(), preprocess=Preprocess(scale=1.0))
    rng = np.random.default_rng(2)
    batch = rng.standard_normal((2, 3, size, size)).astype(np.float32)
    seed = rng.standard_normal((2, CLASSES)).astype(np.float32)
    ours64 = assert_explains_alike(original, simple, batch, seed)
    reference = torch_input_grad(net, batch, seed, torch.float64)
    error = np.linalg.norm(ours64 - reference) / np.linalg.norm(reference)
    assert error < 1e-6, error


@pytest.mark.shared
def test_slimmed_paddle_classifier_explains_like_the_original(shared_data):
    """PaddleOCR's text-direction classifier (Constant-node weights, Shape ops, symbolic H
    and W) before and after onnxslim (566 nodes -> 179: 308 Constants folded, 35
    BatchNormalizations fused, the Shape subgraph folded), at PaddleOCR's 48x192."""
    original_proto = onnx.load(str(shared_data / "models" / "ppocr_mobile_v2_cls.onnx"))
    simple_proto = slimmed(original_proto)
    assert len(simple_proto.graph.node) < len(original_proto.graph.node)
    preprocess = Preprocess(size=(48, 192), mean=(0.5,), std=(0.5,))
    with warnings.catch_warnings():  # a batch of -1 may run one image at a time
        warnings.simplefilter("ignore", RuntimeWarning)
        original = Model(original_proto.SerializeToString(), preprocess=preprocess)
        simple = Model(simple_proto.SerializeToString(), preprocess=preprocess)
    rng = np.random.default_rng(3)
    batch = rng.uniform(-1, 1, (2, 3, 48, 192)).astype(np.float32)
    seed = rng.standard_normal((2, 2)).astype(np.float32)
    assert_explains_alike(original, simple, batch, seed)
