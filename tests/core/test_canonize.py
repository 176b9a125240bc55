"""BatchNormalization folded into the preceding Conv (LRP's canonization): the folded model
computes the same outputs, the folded BatchNormalization nodes are gone, downstream tensor
names are kept, and a Conv whose output is read elsewhere too is left alone."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper

from cnnviz_core import Model
from cnnviz_core.backward import LRP, gradients
from cnnviz_core.canonize import canonized, fold_batchnorm
from tests.conftest import make_graph_model


def _bn_params(rng: np.random.Generator, prefix: str, c: int) -> dict[str, np.ndarray]:
    return {
        f"{prefix}_scale": rng.uniform(0.5, 2.0, c).astype(np.float32),
        f"{prefix}_shift": rng.standard_normal(c).astype(np.float32),
        f"{prefix}_mean": rng.standard_normal(c).astype(np.float32),
        f"{prefix}_var": rng.uniform(0.2, 3.0, c).astype(np.float32),
    }


def _bn(prefix: str, x: str, y: str, epsilon: float = 1e-5) -> onnx.NodeProto:
    names = [f"{prefix}_{p}" for p in ("scale", "shift", "mean", "var")]
    return helper.make_node("BatchNormalization", [x, *names], [y], prefix, epsilon=epsilon)


@pytest.fixture(scope="module")
def model() -> Model:
    """Conv(bias) -> BN -> Relu -> Conv(no bias) -> BN -> Relu -> GAP -> Flatten -> Gemm,
    plus a Conv -> BN pair whose Conv output also feeds an Add (not foldable)."""
    rng = np.random.default_rng(0)
    weights = {
        "w1": rng.standard_normal((4, 3, 3, 3)).astype(np.float32),
        "b1": rng.standard_normal(4).astype(np.float32),
        "w2": rng.standard_normal((5, 4, 3, 3)).astype(np.float32),
        "w3": rng.standard_normal((5, 5, 1, 1)).astype(np.float32),
        "fc": rng.standard_normal((2, 5)).astype(np.float32),
        **_bn_params(rng, "bn1", 4),
        **_bn_params(rng, "bn2", 5),
        **_bn_params(rng, "bn3", 5),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], "conv1", pads=[1] * 4),
        _bn("bn1", "c1", "n1", epsilon=1e-3),
        helper.make_node("Relu", ["n1"], ["r1"], "relu1"),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], "conv2", pads=[1] * 4),
        _bn("bn2", "c2", "n2"),
        helper.make_node("Relu", ["n2"], ["r2"], "relu2"),
        helper.make_node("Conv", ["r2", "w3"], ["c3"], "conv3"),
        _bn("bn3", "c3", "n3"),
        helper.make_node("Add", ["n3", "c3"], ["sum"], "skip"),  # c3 read twice: kept
        helper.make_node("GlobalAveragePool", ["sum"], ["gap"], "gap"),
        helper.make_node("Flatten", ["gap"], ["flat"], "flat"),
        helper.make_node("Gemm", ["flat", "fc"], ["logits"], "fc", transB=1),
    ]
    proto = make_graph_model(nodes, weights, ["N", 3, 8, 8], "logits")
    return Model(proto.SerializeToString(), preprocess="rgb01", labels=["a", "b"])


def test_folding_keeps_the_outputs_and_the_names(model: Model) -> None:
    folded, names = fold_batchnorm(model.proto)
    assert names == ["n1", "n2"]
    ops = [node.op_type for node in folded.graph.node]
    assert ops.count("BatchNormalization") == 1  # bn3: its Conv's output is read twice
    assert {"n1", "n2"} <= {o for node in folded.graph.node for o in node.output}
    assert not {"c1", "c2"} & {o for node in folded.graph.node for o in node.output}
    twin = Model(folded.SerializeToString())
    batch = np.random.default_rng(1).standard_normal((3, 3, 8, 8)).astype(np.float32)
    taps = ["n1", "n2", "logits"]
    ours = twin.run(batch, taps=taps, outputs=False)
    theirs = model.run(batch, taps=taps, outputs=False)
    for name in taps:
        np.testing.assert_allclose(ours[name], theirs[name], rtol=1e-5, atol=1e-5)


def test_canonized_model_keeps_settings_and_is_cached(model: Model) -> None:
    twin = canonized(model)
    assert twin is not model and canonized(model) is twin
    assert twin.labels == model.labels and twin.preprocess == model.preprocess
    plain = Model(make_graph_model(
        [helper.make_node("Relu", ["x"], ["y"], "relu")], {}, ["N", 3, 4, 4], "y"
    ).SerializeToString())  # fmt: skip
    assert canonized(plain) is plain  # nothing to fold


def test_lrp_on_the_folded_model_runs_where_the_unfolded_has_batchnorm(model: Model) -> None:
    """The unfolded BatchNormalization gets the z-rule; the folded Conv the weighted rule:
    both explain the same score."""
    batch = np.random.default_rng(2).standard_normal((2, 3, 8, 8))
    mode = LRP("gamma", 1e-9)
    folded = gradients(canonized(model), batch, 1, mode=mode, forward="numpy")
    unfolded = gradients(model, batch, 1, mode=mode, forward="numpy")
    np.testing.assert_allclose(folded.scores, unfolded.scores, rtol=1e-6)  # float32 weights
    assert np.isfinite(folded.grads[model.input_name]).all()
    assert not np.allclose(folded.grads[model.input_name], unfolded.grads[model.input_name])
