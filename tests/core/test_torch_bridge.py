"""The torch bridge: outputs against onnxruntime (one-node graphs, the shapes model, the test
architectures, the models of ../shared/data), gradients against the engine's backward pass in
every ReLU mode, the shared op list, and importing cnnviz_core without torch."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import onnx
import pytest
from conftest import make_graph_model
from onnx import TensorProto, helper

import cnnviz
from cnnviz_core import InputError, Model, Preprocess, UnsupportedOpError
from cnnviz_core.backward import gradients
from cnnviz_core.backward.registry import make_call, registered_rules, rule_for, supported_ops
from cnnviz_core.torch_bridge import SHAPE_OPS, STYLE_OPS, bridge_rules, relu_mode, to_torch

torch = pytest.importorskip("torch")

SEED = 20
F32 = np.float32


def relative_error(ours: np.ndarray, reference: np.ndarray) -> float:
    return float(np.linalg.norm(ours - reference) / max(np.linalg.norm(reference), 1e-30))


def bridge_outputs(model: Model, batch: np.ndarray) -> dict[str, np.ndarray]:
    net = to_torch(model)
    with torch.no_grad():
        out = net(torch.from_numpy(batch), taps=[])
    return {k: v.numpy() for k, v in out.items()}


def assert_matches_onnxruntime(model: Model, batch: np.ndarray, tol: float) -> float:
    reference = model.run(batch)
    ours = bridge_outputs(model, batch)
    worst = 0.0
    for name, value in reference.items():
        assert ours[name].shape == value.shape, name
        worst = max(worst, relative_error(ours[name].astype(np.float64), value))
    assert worst <= tol, worst
    return worst


def _model(proto: onnx.ModelProto) -> Model:
    return Model(proto.SerializeToString(), preprocess=Preprocess(scale=1.0))


# --------------------------------------------------------------------------- op list


def test_op_table_shares_the_backward_registry_op_list():
    bridge = set(bridge_rules())
    backward = set(registered_rules())
    assert {key for key in bridge if key[0] in supported_ops()} == backward
    assert {op for op, _ in bridge} == set(supported_ops()) | set(STYLE_OPS) | set(SHAPE_OPS)


def test_import_without_torch_and_the_install_hint(tmp_path):
    code = textwrap.dedent(
        """
        import sys
        sys.modules["torch"] = None
        import cnnviz_core
        import cnnviz_core.backward
        import cnnviz_core.torch_bridge as bridge
        assert sys.modules["torch"] is None
        model = cnnviz_core.Model(sys.argv[1])
        try:
            bridge.to_torch(model)
        except ImportError as error:
            assert "pip install 'cnnviz[torch]'" in str(error), error
        else:
            raise SystemExit("to_torch worked without torch")
        """
    )
    proto = make_graph_model(
        [helper.make_node("Relu", ["x"], ["y"])], {}, ["N", 3, 4, 4], "y", opset=13
    )
    file = tmp_path / "relu.onnx"
    onnx.save(proto, str(file))
    done = subprocess.run(
        [sys.executable, "-c", code, str(file)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr


def test_unsupported_op_is_named_at_conversion():
    nodes = [
        helper.make_node("Relu", ["x"], ["r"], name="act"),
        helper.make_node("Hardmax", ["r"], ["y"], name="the_hardmax"),
    ]
    model = _model(make_graph_model(nodes, {}, ["N", 3, 4, 4], "y", opset=13))
    with pytest.raises(UnsupportedOpError, match=r"'Hardmax'.*the_hardmax"):
        to_torch(model)
    # a tap short of the unsupported node still converts and runs
    net = to_torch(model, outputs=["r"])
    x = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(SEED))
    assert torch.equal(net(x), torch.relu(x))


def test_tap_that_does_not_depend_on_the_input_is_refused():
    """A tensor folded at conversion (here a Constant, named with quotes) is no tap: the
    forward says so by name (the generated code never embeds the name)."""
    weird = "k'\"q"
    nodes = [
        helper.make_node(
            "Constant", [], [weird], name="c", value=helper.make_tensor("v", 1, [1], [2.0])
        ),
        helper.make_node("Relu", ["x"], ["r"], name="act"),
        helper.make_node("Add", ["r", weird], ["y"], name="add"),
    ]
    net = to_torch(_model(make_graph_model(nodes, {}, ["N", 3, 4, 4], "y", opset=13)))
    x = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(SEED))
    assert torch.equal(net(x), torch.relu(x) + 2)
    with pytest.raises(InputError, match="do not depend on the model input"):
        net(x, taps=[weird])


# ------------------------------------------------------------------- one-node graphs


def _w(rng: np.random.Generator, *shape: int, scale: float = 0.5) -> np.ndarray:
    return (rng.standard_normal(shape) * scale).astype(F32)


def _case(name: str, rng: np.random.Generator) -> tuple[list, dict, list, int]:
    """(nodes, weights, input shape, opset) of one small graph ending in tensor ``y``."""
    n = helper.make_node
    i64 = np.int64
    if name == "conv_transpose_pads":
        w = {"w": _w(rng, 3, 4, 3, 3), "b": _w(rng, 4)}
        node = n("ConvTranspose", ["x", "w", "b"], ["y"], strides=[2, 2], pads=[1, 0, 0, 1],
                 output_padding=[1, 0], dilations=[1, 2])  # fmt: skip
        return [node], w, [2, 3, 5, 6], 13
    if name == "conv_transpose_output_shape":
        w = {"w": _w(rng, 3, 2, 3, 3)}
        node = n("ConvTranspose", ["x", "w"], ["y"], strides=[2, 2], output_shape=[10, 9])
        return [node], w, [2, 3, 5, 5], 13
    if name == "conv_transpose_same_upper_groups":
        w = {"w": _w(rng, 3, 1, 3, 3), "b": _w(rng, 3)}
        node = n("ConvTranspose", ["x", "w", "b"], ["y"], strides=[2, 2], auto_pad="SAME_UPPER",
                 group=3)  # fmt: skip
        return [node], w, [2, 3, 5, 5], 13
    if name == "conv_same_lower_strided":
        w = {"w": _w(rng, 4, 3, 4, 3), "b": _w(rng, 4)}
        node = n("Conv", ["x", "w", "b"], ["y"], strides=[2, 3], auto_pad="SAME_LOWER")
        return [node], w, [2, 3, 9, 10], 13
    if name == "instance_norm":
        w = {"s": _w(rng, 3) + 1, "b": _w(rng, 3)}
        return (
            [n("InstanceNormalization", ["x", "s", "b"], ["y"], epsilon=1e-3)],
            w,
            [2, 3, 6, 5],
            13,
        )
    if name == "resize_linear_half_pixel":
        w = {"scales": np.array([1, 1, 2, 1.5], F32)}
        node = n("Resize", ["x", "", "scales"], ["y"], mode="linear")
        return [node], w, [2, 3, 5, 6], 18
    if name == "resize_cubic_align_corners_sizes":
        w = {"sizes": np.array([2, 3, 9, 4], i64)}
        node = n("Resize", ["x", "", "", "sizes"], ["y"], mode="cubic",
                 coordinate_transformation_mode="align_corners")  # fmt: skip
        return [node], w, [2, 3, 5, 6], 18
    if name == "upsample_nearest":
        w = {"scales": np.array([1, 1, 2, 3], F32)}
        return [n("Upsample", ["x", "scales"], ["y"], mode="nearest")], w, [2, 3, 3, 4], 9
    if name == "pad_reflect_edge":
        w = {
            "p1": np.array([0, 0, 2, 1, 0, 0, 1, 3], i64),
            "p2": np.array([0, 1, 1, 0, 0, 0, 2, -1], i64),
        }
        nodes = [
            n("Pad", ["x", "p1"], ["t"], mode="reflect"),
            n("Pad", ["t", "p2"], ["y"], mode="edge"),
        ]
        return nodes, w, [2, 3, 5, 6], 18
    if name == "pad_constant_opset2":
        node = n("Pad", ["x"], ["y"], pads=[0, 0, 1, 2, 0, 1, 3, 0], value=0.5)
        return [node], {}, [2, 3, 4, 4], 7
    if name == "slice_negative_steps":
        w = {"st": np.array([-1, 1], i64), "en": np.array([-100, 6], i64),
             "ax": np.array([2, 3], i64), "sp": np.array([-2, 2], i64)}  # fmt: skip
        return [n("Slice", ["x", "st", "en", "ax", "sp"], ["y"])], w, [2, 3, 7, 7], 13
    if name == "average_pool_ceil_exclude_pad":
        node = n("AveragePool", ["x"], ["y"], kernel_shape=[3, 3], strides=[2, 2],
                 pads=[1, 0, 1, 1], ceil_mode=1)  # fmt: skip
        return [node], {}, [2, 3, 8, 7], 13
    if name == "average_pool_include_pad":
        node = n("AveragePool", ["x"], ["y"], kernel_shape=[3, 2], pads=[1, 1, 1, 0],
                 count_include_pad=1)  # fmt: skip
        return [node], {}, [2, 3, 6, 7], 13
    if name == "max_pool_same_upper":
        node = n("MaxPool", ["x"], ["y"], kernel_shape=[2, 3], strides=[2, 1],
                 auto_pad="SAME_UPPER")  # fmt: skip
        return [node], {}, [2, 3, 7, 6], 13
    if name == "max_pool_dilated_pads":
        node = n("MaxPool", ["x"], ["y"], kernel_shape=[2, 3], strides=[2, 1],
                 pads=[1, 0, 0, 2], dilations=[2, 1])  # fmt: skip
        return [node], {}, [2, 3, 7, 6], 13
    if name == "max_pool_ceil":
        node = n("MaxPool", ["x"], ["y"], kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1)
        return [node], {}, [2, 3, 8, 8], 13
    if name == "lrn":
        return [n("LRN", ["x"], ["y"], size=3, alpha=0.1, beta=0.6, bias=1.5)], {}, [2, 3, 4, 4], 13
    if name == "softmax_opset11_flattens":
        return [n("Softmax", ["x"], ["y"], axis=2)], {}, [2, 3, 4, 5], 11
    if name == "activations":
        w = {"lo": np.array(-0.5, F32), "hi": np.array(0.7, F32), "slope": _w(rng, 3, 1, 1)}
        nodes = [
            n("Clip", ["x", "lo", "hi"], ["a"]),
            n("LeakyRelu", ["x"], ["b"], alpha=0.2),
            n("PRelu", ["x", "slope"], ["c"]),
            n("HardSwish", ["x"], ["d"]),
            n("HardSigmoid", ["x"], ["e"], alpha=0.3, beta=0.4),
            n("Sum", ["a", "b", "c", "d", "e"], ["y"]),
        ]
        return nodes, w, [2, 3, 5, 5], 14
    if name == "split_gather_concat":
        w = {"idx": np.array([[2, 0], [1, -1]], i64)}
        nodes = [
            n("Split", ["x"], ["s1", "s2"], axis=3, num_outputs=2),
            n("Gather", ["s1", "idx"], ["g"], axis=1),
            n("ReduceSum", ["g"], ["r"], keepdims=0, noop_with_empty_axes=0),
            n("Concat", ["s2", "s1"], ["c"], axis=3),
            n("Mul", ["c", "r"], ["y"]),
        ]
        return nodes, w, [2, 3, 4, 7], 18
    if name == "dynamic_shape_subgraph":
        w = {"zero": np.array([0], i64), "minus": np.array([-1], i64)}
        nodes = [
            n("Shape", ["x"], ["shape"]),
            n("Gather", ["shape", "zero"], ["batch"], axis=0),
            n("Concat", ["batch", "minus"], ["target"], axis=0),
            n("Reshape", ["x", "target"], ["flat"]),
            n("Shape", ["flat"], ["fshape"]),
            n("ConstantOfShape", ["fshape"], ["ones"],
              value=helper.make_tensor("v", TensorProto.FLOAT, [1], [2.0])),
            n("Mul", ["flat", "ones"], ["scaled"]),
            n("Constant", [], ["half"], value_float=0.5),
            n("Pow", ["scaled", "half"], ["p"]),
            n("Unsqueeze", ["p", "zero"], ["y"]),
        ]  # fmt: skip
        return nodes, w, [2, 3, 4, 4], 13
    if name == "layer_norm_channels_last":  # ConvNeXt: Transpose -> LayerNorm -> Transpose
        w = {"s": _w(rng, 3) + 1, "b": _w(rng, 3)}
        nodes = [
            n("Transpose", ["x"], ["t"], perm=[0, 2, 3, 1]),
            n("LayerNormalization", ["t", "s", "b"], ["ln"], epsilon=1e-6),
            n("Transpose", ["ln"], ["y"], perm=[0, 3, 1, 2]),
        ]
        return nodes, w, [2, 3, 5, 6], 17
    if name == "layer_norm_stats":
        w = {"s": _w(rng, 5, 6) + 1}
        nodes = [
            n("LayerNormalization", ["x", "s"], ["ln", "mean", "inv"], axis=2),
            n("Mul", ["ln", "mean"], ["a"]),
            n("Add", ["a", "inv"], ["y"]),
        ]
        return nodes, w, [2, 3, 5, 6], 18
    if name == "group_norm_18":
        w = {"s": _w(rng, 3) + 1, "b": _w(rng, 3)}
        nodes = [
            n("Concat", ["x", "x", "x"], ["x9"], axis=1),
            n("GroupNormalization", ["x9", "s", "b"], ["y"], num_groups=3),
        ]
        return nodes, w, [2, 3, 3, 5], 18
    if name == "group_norm_21":
        w = {"s": _w(rng, 6) + 1, "b": _w(rng, 6)}
        nodes = [
            n("Concat", ["x", "x"], ["x6"], axis=1),
            n("GroupNormalization", ["x6", "s", "b"], ["y"], num_groups=2, epsilon=1e-3),
        ]
        return nodes, w, [2, 3, 3, 5], 21
    if name == "smooth_activations":
        nodes = [
            n("Erf", ["x"], ["a"]),
            n("Gelu", ["x"], ["b"]),
            n("Gelu", ["x"], ["c"], approximate="tanh"),
            n("Softplus", ["x"], ["d"]),
            n("Mish", ["x"], ["e"]),
            n("Sum", ["a", "b", "c", "d", "e"], ["y"]),
        ]
        return nodes, {}, [2, 3, 5, 5], 20
    if name == "gather_scatter_nd":
        w = {
            "gi": np.array([[0, 1], [1, -1], [0, 1]], i64),
            "si": np.array([[1, 0], [0, 1]], i64),
            "bi": np.array([[[1], [0]], [[2], [2]]], i64),
        }
        nodes = [
            n("GatherND", ["x", "gi"], ["g"]),  # (N=2, 3, 4, 4) -> (3, 4, 4)
            n("Slice", ["g", "zero", "two", "zero"], ["g2"]),
            n("ScatterND", ["x", "si", "g2"], ["s"]),
            n("GatherND", ["s", "bi"], ["b"], batch_dims=1),  # (2, 2, 4, 4)
            n("ScatterND", ["b", "si", "g2"], ["y"], reduction="add"),
        ]
        w |= {"zero": np.array([0], i64), "two": np.array([2], i64)}
        return nodes, w, [2, 3, 4, 4], 18
    if name == "where_expand_tile":
        w = {
            "cond": rng.random((1, 3, 1, 4)) > 0.5,
            "other": _w(rng, 4),
            "shape": np.array([3, 1, 1, 1], i64),
            "reps": np.array([1, 2, 1, 3], i64),
        }
        nodes = [
            n("Where", ["cond", "x", "other"], ["a"]),
            n("Expand", ["a", "shape"], ["b"]),  # batch 2 against 3: broadcast both ways
            n("Tile", ["b", "reps"], ["y"]),
        ]
        return nodes, w, [1, 3, 4, 4], 16
    if name == "einsum_attention":
        w = {"wq": _w(rng, 4, 4), "wk": _w(rng, 4, 4), "axes": np.array([1], i64)}
        nodes = [
            n("Reshape", ["x", "tokens"], ["t"]),  # (N, 3, 4, 4) -> (N, 12, 4): tokens
            n("Einsum", ["t", "wq"], ["q"], equation="btc,cd->btd"),
            n("Einsum", ["t", "wk"], ["k"], equation="...c, cd"),
            n("Einsum", ["q", "k"], ["scores"], equation="bid,bjd->bij"),
            n("Softmax", ["scores"], ["attn"], axis=-1),
            n("Einsum", ["attn", "t"], ["y"], equation="bij,bjc->bic"),
        ]
        w["tokens"] = np.array([0, 12, 4], i64)
        return nodes, w, [2, 3, 4, 4], 13
    if name == "where_from_the_image":  # a custom leaky activation: the mask is data
        w = {"zero": np.array(0.0, F32), "slope": np.array(0.2, F32), "one": np.array(1.0, F32)}
        nodes = [
            n("Greater", ["x", "zero"], ["pos"]),
            n("LessOrEqual", ["x", "one"], ["small"]),
            n("And", ["pos", "small"], ["inside"]),
            n("Not", ["inside"], ["outside"]),
            n("Less", ["x", "one"], ["below"]),
            n("GreaterOrEqual", ["x", "zero"], ["above"]),
            n("Equal", ["below", "above"], ["middle"]),
            n("Or", ["outside", "middle"], ["keep"]),
            n("Mul", ["x", "slope"], ["leak"]),
            n("Where", ["keep", "x", "leak"], ["y"]),
        ]
        return nodes, w, [2, 3, 4, 4], 16
    raise KeyError(name)


CASES = [
    "conv_transpose_pads", "conv_transpose_output_shape", "conv_transpose_same_upper_groups",
    "conv_same_lower_strided", "instance_norm", "resize_linear_half_pixel",
    "resize_cubic_align_corners_sizes", "upsample_nearest", "pad_reflect_edge",
    "pad_constant_opset2", "slice_negative_steps", "average_pool_ceil_exclude_pad",
    "average_pool_include_pad", "max_pool_same_upper", "max_pool_dilated_pads", "max_pool_ceil",
    "lrn", "softmax_opset11_flattens", "activations", "split_gather_concat",
    "dynamic_shape_subgraph", "layer_norm_channels_last", "layer_norm_stats", "group_norm_18",
    "group_norm_21", "smooth_activations", "gather_scatter_nd", "where_expand_tile",
    "einsum_attention", "where_from_the_image",
]  # fmt: skip


@pytest.mark.parametrize("name", CASES)
def test_one_node_graphs_match_onnxruntime(name):
    rng = np.random.default_rng(SEED)
    nodes, weights, shape, opset = _case(name, rng)
    model = _model(make_graph_model(nodes, weights, ["N", *shape[1:]], "y", opset=opset))
    batch = rng.standard_normal(shape).astype(F32)
    if name == "dynamic_shape_subgraph":
        batch = np.abs(batch)
    assert_matches_onnxruntime(model, batch, 1e-5)


def test_lrn_even_size_matches_the_backward_rule():
    """onnxruntime runs odd sizes only; an even window is placed as the spec (and the backward
    rule's NumPy forward) says, not as torch's own LRN."""
    node = helper.make_node("LRN", ["x"], ["y"], size=4, alpha=0.1, beta=0.6, bias=1.5)
    model = _model(make_graph_model([node], {}, ["N", 3, 4, 4], "y", opset=13))
    batch = np.random.default_rng(SEED).standard_normal((2, 3, 4, 4))
    rule = rule_for("LRN", 13)
    assert rule is not None
    expected = rule.forward(make_call(node, [batch]))[0]
    with torch.no_grad():
        ours = to_torch(model).double()(torch.from_numpy(batch)).numpy()
    assert relative_error(ours, expected) <= 1e-12


def test_max_pool_indices_match_onnxruntime():
    node = helper.make_node(
        "MaxPool", ["x"], ["y", "i"], kernel_shape=[3, 2], strides=[2, 2], pads=[1, 0, 1, 1],
        storage_order=1,
    )  # fmt: skip
    graph = helper.make_graph(
        [node],
        "pool",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 7, 6])],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, None),
            helper.make_tensor_value_info("i", TensorProto.INT64, None),
        ],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    proto.ir_version = 8
    model = _model(proto)
    batch = np.random.default_rng(SEED).standard_normal((2, 3, 7, 6)).astype(F32)
    import onnxruntime as ort

    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    y, i = session.run(None, {"x": batch})
    ours = to_torch(model)(torch.from_numpy(batch))
    np.testing.assert_array_equal(ours[0].numpy(), y)
    np.testing.assert_array_equal(ours[1].numpy(), i)


# --------------------------------------------------------------------- whole models


@pytest.fixture(scope="module")
def shapes_model() -> Model:
    return cnnviz.load_model("shapes")


def _shapes_batch(model: Model, n: int = 3) -> np.ndarray:
    return np.random.default_rng(SEED).random((n, *model.input_shape), dtype=F32)


def test_shapes_model_outputs_and_taps_match_onnxruntime(shapes_model):
    batch = _shapes_batch(shapes_model)
    layers = [layer.name for layer in shapes_model.layers]
    reference = shapes_model.run(batch, taps=layers)
    net = to_torch(shapes_model)
    with torch.no_grad():
        ours = net(torch.from_numpy(batch), taps=layers)
        only = net.tensors(torch.from_numpy(batch), layers[:1])
    for name, value in reference.items():
        assert relative_error(ours[name].numpy(), value) <= 1e-5, name
    assert list(only) == layers[:1]
    assert relative_error(only[layers[0]].numpy(), reference[layers[0]]) <= 1e-5


def test_outputs_argument_picks_layers_by_alias(shapes_model):
    layer = next(la for la in shapes_model.layers if la.aliases)
    net = to_torch(shapes_model, outputs=[layer.aliases[0]])
    batch = _shapes_batch(shapes_model, 2)
    with torch.no_grad():
        ours = net(torch.from_numpy(batch)).numpy()
    reference = shapes_model.run(batch, taps=[layer.name], outputs=False)[layer.name]
    assert relative_error(ours, reference) <= 1e-5


@pytest.mark.parametrize("mode", ["gradient", "guided", "deconvnet"])
def test_gradients_equal_the_backward_engine(shapes_model, mode):
    batch = _shapes_batch(shapes_model)
    out_name = shapes_model.output_names[0]
    seed = (
        np.random.default_rng(SEED + 1)
        .standard_normal((len(batch), shapes_model.num_classes))
        .astype(F32)
    )
    tap = next(la.name for la in shapes_model.layers if la.op_type == "Relu")
    theirs = gradients(shapes_model, batch, {out_name: seed}, wrt=[tap], mode=mode).grads
    net = to_torch(shapes_model)
    x = torch.from_numpy(batch).requires_grad_()
    with relu_mode(net, mode):
        values = net(x, taps=[tap])
        values[tap].retain_grad()
        (values[out_name] * torch.from_numpy(seed)).sum().backward()
    assert net.relu_mode == "gradient"
    assert relative_error(x.grad.numpy(), theirs[shapes_model.input_name]) <= 1e-4
    assert relative_error(values[tap].grad.numpy(), theirs[tap]) <= 1e-4


def test_guided_and_deconvnet_differ_from_the_gradient(shapes_model):
    batch = _shapes_batch(shapes_model, 1)
    net = to_torch(shapes_model)
    grads = {}
    for mode in ("gradient", "guided", "deconvnet"):
        x = torch.from_numpy(batch).requires_grad_()
        net.relu_mode = mode
        net(x)[0, 0].backward()
        grads[mode] = x.grad.numpy()
    net.relu_mode = "gradient"
    assert not np.allclose(grads["gradient"], grads["guided"])
    assert not np.allclose(grads["guided"], grads["deconvnet"])
    with pytest.raises(InputError):
        net.relu_mode = "nonsense"


def test_double_precision_module(shapes_model):
    batch = _shapes_batch(shapes_model, 2).astype(np.float64)
    net = to_torch(shapes_model).double()
    with torch.no_grad():
        ours = net(torch.from_numpy(batch))
    assert ours.dtype == torch.float64
    reference = shapes_model.run(batch.astype(F32))[shapes_model.output_names[0]]
    assert relative_error(ours.numpy(), reference) <= 1e-5


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu(shapes_model):
    batch = torch.from_numpy(_shapes_batch(shapes_model))
    net = to_torch(shapes_model)
    with torch.no_grad():
        cpu = net(batch).numpy()
        gpu = net.to("cuda")(batch.to("cuda")).cpu().numpy()
    assert relative_error(gpu, cpu) <= 1e-4


# ------------------------------------------------------------------ exported architectures

from test_backward_models import ARCHITECTURES, exported  # noqa: E402, F401


@pytest.mark.torch
@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_exported_architectures_match_onnxruntime(exported, name):  # noqa: F811
    _, model, size = exported(name)
    batch = np.random.default_rng(SEED).standard_normal((3, 3, size, size)).astype(F32)
    assert_matches_onnxruntime(model, batch, 1e-5)


# ---------------------------------------------------------------------- ../shared/data

SHARED = [
    ("squeezenet1.1_fp32.onnx", 2, 1e-5),
    ("mnist_cntk.onnx", 3, 1e-5),
    ("cifar10_tutorial_cnn.onnx", 3, 1e-5),
    ("squeezenet1.1_fp16.onnx", 2, 1e-2),
]


@pytest.mark.shared
@pytest.mark.parametrize(("file", "n", "tol"), SHARED)
def test_shared_models_match_onnxruntime(shared_data, file, n, tol):
    model = Model(shared_data / "models" / file)
    scale = 1.0 if "mnist" in file else 255.0
    batch = np.random.default_rng(SEED).random((n, *model.input_shape), dtype=F32) * scale
    assert_matches_onnxruntime(model, batch, tol)


@pytest.mark.shared
def test_fast_neural_style_matches_onnxruntime(shared_data):
    """fns_candy: ImageScaler, reflection Pad, InstanceNormalization, Crop, ConvTranspose with
    output_shape, Affine (fixed 720 x 720 input: one image)."""
    model = Model(shared_data / "models" / "fns_candy.onnx")
    batch = np.random.default_rng(SEED).random((1, *model.input_shape), dtype=F32) * 255
    assert_matches_onnxruntime(model, batch, 1e-5)
