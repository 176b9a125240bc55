"""The planner refuses, before any work, a node whose rule does not cover its attribute form
(``OpRule.check``): an Einsum with a diagonal or trace, naming the node and the equation."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from conftest import make_graph_model
from onnx import helper

from cnnviz_core import Model, Preprocess, UnsupportedOpError
from cnnviz_core.backward import gradients, plan_backward


def einsum_model(tmp_path, equation: str, shape: list) -> Model:
    nodes = [
        helper.make_node("Relu", ["x"], ["r"]),
        helper.make_node("Einsum", ["r"], ["trace"], equation=equation, name="trace_node"),
        helper.make_node("Flatten", ["trace"], ["scores"]),
    ]
    path = tmp_path / "einsum.onnx"
    onnx.save(make_graph_model(nodes, {}, shape, "scores"), str(path))
    return Model(path, preprocess=Preprocess(scale=1.0))


@pytest.mark.parametrize(
    ("equation", "shape", "why"),
    [
        ("ncii->nc", ["N", 3, 4, 4], "repeated index"),  # a trace over H = W
        ("...ii->...", ["N", 3, 4, 4], "repeated index"),
        ("ncij->ncjj", ["N", 3, 4, 4], "output"),
    ],
)
def test_unsupported_einsum_is_refused_at_planning(tmp_path, monkeypatch, equation, shape, why):
    model = einsum_model(tmp_path, equation, shape)
    with pytest.raises(UnsupportedOpError, match=rf"'trace_node'.*{equation}.*{why}"):
        plan_backward(model, ["scores"])
    ran = []
    monkeypatch.setattr(model, "run", lambda *a, **k: ran.append(1))
    batch = np.random.default_rng(0).standard_normal((1, 3, 4, 4)).astype(np.float32)
    with pytest.raises(UnsupportedOpError, match="trace_node"):
        gradients(model, batch, {"scores": np.ones((1, 3), np.float32)})
    assert not ran  # refused before any forward run


def test_supported_einsum_plans_and_differentiates(tmp_path):
    model = einsum_model(tmp_path, "ncij->nc", ["N", 3, 4, 4])
    plan_backward(model, ["scores"])
    batch = np.random.default_rng(0).standard_normal((2, 3, 4, 4)).astype(np.float32)
    grads = gradients(model, batch, {"scores": np.ones((2, 3), np.float32)}).grads["x"]
    np.testing.assert_allclose(grads, (batch > 0).astype(np.float32))
