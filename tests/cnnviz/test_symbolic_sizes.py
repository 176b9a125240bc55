"""Models that accept any image size (symbolic H and W): the default CAM layer is found by a
probe forward at the preprocessing size."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import make_graph_model
from onnx import helper

from cnnviz.attribution import gradcam
from cnnviz.attribution.cam import default_layer
from cnnviz_core import Model, Preprocess


def any_size_model() -> bytes:
    """Conv -> Relu -> Conv (stride 2) -> Relu -> GlobalAveragePool -> Flatten -> Gemm on an
    (N, 3, H, W) input."""
    rng = np.random.default_rng(0)
    weights = {
        "w1": rng.standard_normal((4, 3, 3, 3)).astype(np.float32),
        "w2": rng.standard_normal((5, 4, 3, 3)).astype(np.float32),
        "fc": rng.standard_normal((3, 5)).astype(np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["conv1"], "conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv1"], ["relu1"], "relu1"),
        helper.make_node("Conv", ["relu1", "w2"], ["conv2"], "conv2", pads=[1, 1, 1, 1],
                         strides=[2, 2]),
        helper.make_node("Relu", ["conv2"], ["relu2"], "relu2"),
        helper.make_node("GlobalAveragePool", ["relu2"], ["gap"], "gap"),
        helper.make_node("Flatten", ["gap"], ["flat"], "flat"),
        helper.make_node("Gemm", ["flat", "fc"], ["logits"], "fc", transB=1),
    ]  # fmt: skip
    return make_graph_model(nodes, weights, ["N", 3, "H", "W"], "logits").SerializeToString()


def test_default_layer_of_an_any_size_model_is_probed():
    model = Model(any_size_model(), preprocess=Preprocess(size=(16, 24)))
    assert default_layer(model) == "relu2"
    batch = np.random.default_rng(1).random((2, 3, 16, 24)).astype(np.float32)
    result = gradcam(model, batch)
    assert result.options["layer"] == "relu2" and result.maps.shape == (2, 16, 24)


@pytest.mark.shared
def test_paddle_classifier_gets_a_default_cam_layer_at_48x192(shared_data):
    model = Model(
        shared_data / "models" / "ppocr_mobile_v2_cls.onnx", preprocess=Preprocess(size=(48, 192))
    )
    layer = default_layer(model)
    shape = model.layer_shape(layer)
    assert shape is not None and len(shape) == 4 and shape[2] * shape[3] > 1
    batch = np.random.default_rng(2).random((2, 3, 48, 192)).astype(np.float32)
    result = gradcam(model, batch)
    assert result.maps.shape == (2, 48, 192) and np.isfinite(result.maps).all()
