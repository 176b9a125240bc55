"""Shared fixtures: the ../shared/data folder (skipped when absent) and tiny ONNX graphs."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

#: the shared data folder: $CNNVIZ_SHARED_DATA, else ../shared/data beside the checkout
SHARED_DATA = Path(
    os.environ.get("CNNVIZ_SHARED_DATA")
    or Path(__file__).resolve().parents[1].parent / "shared" / "data"
)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared data folder ($CNNVIZ_SHARED_DATA or ../shared/data beside the project);
    tests that need it skip when it is absent."""
    if not (SHARED_DATA / "models").is_dir():
        pytest.skip(f"{SHARED_DATA} is not present (set CNNVIZ_SHARED_DATA to its location)")
    return SHARED_DATA


def make_graph_model(
    nodes: list[onnx.NodeProto],
    weights: dict[str, np.ndarray],
    input_shape: list,
    output: str,
    *,
    extra_outputs: tuple[str, ...] = (),
    opset: int = 18,
) -> onnx.ModelProto:
    """A model with input ``x`` of ``input_shape`` and the given outputs (onnxruntime
    validates it on load)."""
    inits = [numpy_helper.from_array(np.asarray(v), k) for k, v in weights.items()]
    outputs = [
        helper.make_tensor_value_info(name, TensorProto.FLOAT, None)
        for name in (output, *extra_outputs)
    ]
    graph = helper.make_graph(
        nodes,
        "test",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, input_shape)],
        outputs,
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def tiny_classifier(batch: int | str = "N", classes: int = 4, seed: int = 0) -> onnx.ModelProto:
    """Conv -> Relu -> MaxPool -> Conv -> Relu -> GlobalAveragePool -> Flatten -> Gemm on
    a 3x16x16 input."""
    rng = np.random.default_rng(seed)
    w = {
        "w1": rng.standard_normal((6, 3, 3, 3)).astype(np.float32) * 0.5,
        "b1": rng.standard_normal(6).astype(np.float32) * 0.1,
        "w2": rng.standard_normal((8, 6, 3, 3)).astype(np.float32) * 0.3,
        "b2": rng.standard_normal(8).astype(np.float32) * 0.1,
        "fc_w": rng.standard_normal((classes, 8)).astype(np.float32),
        "fc_b": rng.standard_normal(classes).astype(np.float32) * 0.1,
    }
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["conv1"], "conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv1"], ["relu1"], "relu1"),
        helper.make_node(
            "MaxPool", ["relu1"], ["pool1"], "pool1", kernel_shape=[2, 2], strides=[2, 2]
        ),
        helper.make_node("Conv", ["pool1", "w2", "b2"], ["conv2"], "conv2", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv2"], ["relu2"], "relu2"),
        helper.make_node("GlobalAveragePool", ["relu2"], ["gap"], "gap"),
        helper.make_node("Flatten", ["gap"], ["flat"], "flat"),
        helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["logits"], "fc", transB=1),
    ]
    return make_graph_model(nodes, w, [batch, 3, 16, 16], "logits")
