"""OpenVINO runs the explainers of the test architectures (AlexNet / VGG / ResNet / SqueezeNet /
MobileNetV2 / DenseNet / Inception-style, exported by torch's dynamo exporter as in
tests/core/test_backward_models.py) as onnxruntime does: the same map to 1e-4 of its scale
and the same class, in float32. Needs the deploy extra (openvino) and the torch extra."""

from __future__ import annotations

import numpy as np
import pytest
from deploy_standin import assert_same_map, onnxruntime_outputs

import cnnviz

ov = pytest.importorskip("openvino", reason="needs the deploy extra (pip install openvino)")
pytest.importorskip("torch")
pytest.importorskip("onnxscript")

from tests.core.test_backward_models import ARCHITECTURES, exported  # noqa: E402, F401

METHODS = ["saliency", "guided", "deconvnet", "gradcam", "hirescam"]


@pytest.mark.torch
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_openvino_equals_onnxruntime(exported, name: str, method: str, tmp_path) -> None:  # noqa: F811
    _, model, size = exported(name)
    proto = cnnviz.export_explainer(model, method)
    pixels = np.random.default_rng(3).integers(0, 256, (2, size, size, 3)).astype(np.float32)
    feeds = {proto.graph.input[0].name: pixels}
    want = onnxruntime_outputs(proto, feeds)
    path = tmp_path / "explainer.onnx"
    path.write_bytes(proto.SerializeToString())
    compiled = ov.Core().compile_model(path, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    got = compiled(feeds)
    assert_same_map(got["map"], want["map"])
    np.testing.assert_array_equal(got["target"], want["target"])
