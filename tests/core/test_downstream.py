"""Downstream: the graph after a layer, run on changed copies of its activations. Shape
computations and computed weights after the cut have no batch axis: they are computed in the
cut graph for each run's batch, never repeated per row (a Paddle export reshapes its pooled
features to ``Concat(Shape(pool)[0:1], [-1])``)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import make_graph_model
from onnx import TensorProto, helper

from cnnviz.attribution import ablationcam
from cnnviz_core import Model, Preprocess
from cnnviz_core.downstream import Downstream
from cnnviz_core.errors import InputError

RNG = np.random.default_rng(0)
WEIGHTS = {
    "conv_w": RNG.standard_normal((4, 3, 3, 3)).astype(np.float32),
    "v": RNG.standard_normal((4, 2)).astype(np.float32),  # the head weight is 2 * v
    "two": np.array(2.0, np.float32),
    "skip_w": RNG.standard_normal((3, 2)).astype(np.float32),
    "zero": np.array([0], np.int64),
    "one": np.array([1], np.int64),
    "minus_one": np.array([-1], np.int64),
}


def batch_first(source: str, out: str) -> list:
    """``out = Concat(Shape(source)[0:1], [-1])``: the target of a flattening Reshape."""
    return [
        helper.make_node("Shape", [source], [f"{out}_shape"]),
        helper.make_node("Slice", [f"{out}_shape", "zero", "one"], [f"{out}_n"]),
        helper.make_node("Concat", [f"{out}_n", "minus_one"], [out], axis=0),
    ]


def paddle_head_model() -> Model:
    """x -> Conv ``a`` (the layer) -> Relu -> GlobalAveragePool -> Reshape to
    Shape(pool)[0:1] x -1 -> MatMul with a computed weight (2 * v); plus a skip from before
    the layer (the input's channel means @ skip_w); the logits reshaped to Shape(x)[0:1] x -1."""
    nodes = [
        helper.make_node("Conv", ["x", "conv_w"], ["a"], "conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["a"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["pool"]),
        *batch_first("pool", "pool_target"),
        helper.make_node("Reshape", ["pool", "pool_target"], ["flat"]),
        helper.make_node("Mul", ["v", "two"], ["w"], "computed_weight"),
        helper.make_node("MatMul", ["flat", "w"], ["head"]),
        helper.make_node("GlobalAveragePool", ["x"], ["x_pool"]),
        helper.make_node("Flatten", ["x_pool"], ["x_flat"]),
        helper.make_node("MatMul", ["x_flat", "skip_w"], ["skip"]),
        helper.make_node("Add", ["head", "skip"], ["sum"]),
        *batch_first("x", "out_target"),
        helper.make_node("Reshape", ["sum", "out_target"], ["logits"]),
    ]
    proto = make_graph_model(nodes, WEIGHTS, ["N", 3, 6, 6], "logits")
    proto.graph.output[0].CopyFrom(
        helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 2])
    )  # a reshape to a computed shape: the class count is declared
    return Model(proto.SerializeToString(), preprocess=Preprocess(scale=1.0))


def reference_logits(activations: np.ndarray, image: np.ndarray) -> np.ndarray:
    """NumPy: the head on (B, 4, 6, 6) activations, the skip from one (1, 3, 6, 6) image."""
    pooled = np.maximum(activations, 0).mean(axis=(2, 3))
    return pooled @ (2 * WEIGHTS["v"]) + image.mean(axis=(2, 3)) @ WEIGHTS["skip_w"]


@pytest.fixture(scope="module")
def model() -> Model:
    return paddle_head_model()


@pytest.fixture(scope="module")
def batch() -> np.ndarray:
    return np.random.default_rng(1).standard_normal((2, 3, 6, 6)).astype(np.float32)


def test_shape_plumbing_and_computed_weights_are_computed_in_the_cut_graph(model, batch):
    rest = Downstream(model, "a", ["logits"])
    assert rest.outputs == ["logits"]
    # fed: only image-path tensors from before the cut, never the shape vectors or the weight
    assert set(rest.side) <= {"x", "skip"} and "skip" in rest.side
    computed = {node.op_type for node in rest.proto.graph.node}
    assert {"Shape", "Concat", "Mul", "Reshape"} <= computed


@pytest.mark.parametrize("max_batch", [5, 2])
def test_ablated_copies_match_numpy_and_the_model(model, batch, max_batch):
    rest = Downstream(model, "a", ["logits"])
    rest.max_batch = max_batch  # 2: runs of 2, 2 and 1 rows, each with its own batch size
    base = rest.base(batch)
    for i in range(len(batch)):
        mine = {name: value[i : i + 1] for name, value in base.items()}
        ablated = np.repeat(mine["a"], 5, axis=0)
        ablated[np.arange(4), np.arange(4)] = 0  # rows 0-3: one channel zeroed; row 4: none
        out = rest.run(ablated, mine)["logits"]
        assert out.shape == (5, 2)
        np.testing.assert_allclose(out, reference_logits(ablated, batch[i : i + 1]), atol=1e-5)
        np.testing.assert_allclose(out[4], model.scores(batch[i : i + 1])[0], atol=1e-5)


def test_base_keeps_batch_independent_tensors_whole(model, batch):
    """The whole model's forward in chunks concatenates only the image-path tensors."""
    small = Model(model.proto.SerializeToString(), preprocess=Preprocess(scale=1.0))
    small.max_batch = 1
    rest = Downstream(small, "a", ["logits"])
    base = rest.base(batch)
    assert base["a"].shape == (2, 4, 6, 6) and base["skip"].shape == (2, 2)
    np.testing.assert_allclose(base["logits"], model.scores(batch), atol=1e-5)


def test_run_needs_one_image_of_each_side_tensor(model, batch):
    rest = Downstream(model, "a", ["logits"])
    base = rest.base(batch)
    with pytest.raises(InputError, match="skip"):
        rest.run(base["a"][:1], base)  # two images' skip values


def test_ablationcam_on_a_paddle_style_head(model, batch):
    result = ablationcam(model, batch, [0, 1], layer="a", relu=False, normalize=False)
    assert result.maps.shape == (2, 6, 6) and np.isfinite(result.maps).all()
    # weight of channel k: (y - y_k) / y with y_k from the NumPy head
    a = Downstream(model, "a", ["logits"]).base(batch)["a"]
    for i, target in enumerate([0, 1]):
        ablated = np.repeat(a[i : i + 1], 4, axis=0)
        ablated[np.arange(4), np.arange(4)] = 0
        y = reference_logits(a[i : i + 1], batch[i : i + 1])[0, target]
        y_k = reference_logits(ablated, batch[i : i + 1])[:, target]
        cam = np.einsum("k,khw->hw", (y - y_k) / y, a[i])
        np.testing.assert_allclose(result.maps[i], cam, rtol=1e-4, atol=1e-5)
