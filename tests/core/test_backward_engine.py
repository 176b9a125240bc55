"""The backward engine: planning (unsupported ops named before work), fan-in, gradients w.r.t.
intermediate tensors and cotangents at intermediate layers, the backward modes, the NumPy
forward against onnxruntime, batching, and input checks."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import make_graph_model, tiny_classifier
from onnx import helper

from cnnviz_core import Model, Preprocess
from cnnviz_core.backward import forward_values, gradients, plan_backward
from cnnviz_core.errors import InputError, UnsupportedOpError

RNG_SEED = 7


def _model(proto) -> Model:
    return Model(proto.SerializeToString(), preprocess=Preprocess(scale=1.0))


def _batch(n: int = 2, size: int = 16, seed: int = RNG_SEED) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 3, size, size))


def _mixed_model() -> Model:
    """Conv -> BatchNormalization -> Clip (ReLU6) -> MaxPool | AveragePool -> Concat -> Resize
    -> Sigmoid -> Mul -> GlobalAveragePool -> Flatten -> Gemm -> Softmax (opset 13)."""
    rng = np.random.default_rng(3)
    w = {
        "w1": rng.standard_normal((4, 3, 3, 3)).astype(np.float32) * 0.5,
        "scale": rng.uniform(0.5, 1.5, 4).astype(np.float32),
        "shift": rng.standard_normal(4).astype(np.float32) * 0.1,
        "mean": rng.standard_normal(4).astype(np.float32) * 0.1,
        "var": rng.uniform(0.5, 1.5, 4).astype(np.float32),
        "lo": np.array(0.0, np.float32),
        "hi": np.array(6.0, np.float32),
        "scales": np.array([1, 1, 2, 2], np.float32),
        "gain": rng.standard_normal((1, 8, 1, 1)).astype(np.float32),
        "fc_w": rng.standard_normal((5, 8)).astype(np.float32),
        "fc_b": rng.standard_normal(5).astype(np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["conv"], "conv", pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["conv", "scale", "shift", "mean", "var"],
                         ["bn"], "bn"),
        helper.make_node("Clip", ["bn", "lo", "hi"], ["relu6"], "relu6"),
        helper.make_node("MaxPool", ["relu6"], ["maxp"], "maxp", kernel_shape=[2, 2],
                         strides=[2, 2]),
        helper.make_node("AveragePool", ["relu6"], ["avgp"], "avgp", kernel_shape=[2, 2],
                         strides=[2, 2]),
        helper.make_node("Concat", ["maxp", "avgp"], ["cat"], "cat", axis=1),
        helper.make_node("Resize", ["cat", "", "scales"], ["up"], "up", mode="linear"),
        helper.make_node("Sigmoid", ["up"], ["sig"], "sig"),
        helper.make_node("Mul", ["sig", "gain"], ["scaled"], "scaled"),
        helper.make_node("GlobalAveragePool", ["scaled"], ["gap"], "gap"),
        helper.make_node("Flatten", ["gap"], ["flat"], "flat"),
        helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["logits"], "fc", transB=1),
        helper.make_node("Softmax", ["logits"], ["prob"], "prob", axis=1),
    ]  # fmt: skip
    return _model(make_graph_model(nodes, w, ["N", 3, 8, 8], "prob", opset=13))


def _fan_in_model() -> Model:
    """x used twice (x * x + x) and a residual Add: per-class logits = mean(x^2 + x)."""
    nodes = [
        helper.make_node("Mul", ["x", "x"], ["sq"], "sq"),
        helper.make_node("Add", ["sq", "x"], ["res"], "res"),
        helper.make_node("GlobalAveragePool", ["res"], ["gap"], "gap"),
        helper.make_node("Flatten", ["gap"], ["logits"], "flat"),
    ]
    return _model(make_graph_model(nodes, {}, ["N", 3, 4, 4], "logits"))


def _directional_check(model: Model, batch: np.ndarray, seed_name: str, cot: np.ndarray) -> None:
    """The input gradient of sum(cot * tensor) against float64 central differences."""
    grad = gradients(model, batch, {seed_name: cot}, forward="numpy").grads[model.input_name]
    plan = plan_backward(model, [seed_name])
    tensor = model.tensor_name(seed_name)

    def objective(x: np.ndarray) -> float:
        return float(np.sum(cot * forward_values(model, x, plan, "numpy")[tensor]))

    rng = np.random.default_rng(11)
    eps = 1e-6
    for _ in range(3):
        d = rng.standard_normal(batch.shape)
        numeric = (objective(batch + eps * d) - objective(batch - eps * d)) / (2 * eps)
        analytic = float(np.sum(grad * d))
        assert abs(numeric - analytic) <= 1e-6 * abs(analytic) + 1e-8, (numeric, analytic)


# ----------------------------------------------------------------------------------- planning


def test_unsupported_op_is_named_before_any_work(monkeypatch):
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["conv"], "conv", pads=[1, 1, 1, 1]),
        helper.make_node("Hardmax", ["conv"], ["erf"], "my_hardmax"),
        helper.make_node("GlobalAveragePool", ["erf"], ["gap"], "gap"),
        helper.make_node("Flatten", ["gap"], ["logits"], "flat"),
    ]
    w = {"w": np.ones((2, 3, 3, 3), np.float32)}
    model = _model(make_graph_model(nodes, w, ["N", 3, 8, 8], "logits"))

    def no_forward(*args, **kwargs):
        raise AssertionError("the forward ran before the plan was checked")

    monkeypatch.setattr(model, "run", no_forward)
    with pytest.raises(UnsupportedOpError, match=r"'Hardmax'.*'my_hardmax'"):
        plan_backward(model, ["logits"])
    with pytest.raises(UnsupportedOpError, match="Hardmax"):
        gradients(model, _batch(1, 8), {"logits": np.ones((1, 2))})


def test_plan_keeps_only_nodes_between_source_and_seed():
    model = _model(tiny_classifier())
    plan = plan_backward(model, ["relu1"])
    assert [n.name for n, _ in plan.nodes] == ["conv1", "relu1"]


# ----------------------------------------------------------------------------------- values


def test_fan_in_sums():
    model = _fan_in_model()
    x = _batch(2, 4)
    cot = np.random.default_rng(1).standard_normal((2, 3))
    grad = gradients(model, x, {"logits": cot}, forward="numpy").grads["x"]
    expected = cot[:, :, None, None] / 16 * (2 * x + 1)
    np.testing.assert_allclose(grad, expected, rtol=1e-12, atol=1e-14)


def test_fan_in_residual_against_finite_differences():
    model = _mixed_model()
    cot = np.random.default_rng(2).standard_normal((2, 5))
    _directional_check(model, _batch(2, 8), "prob", cot)


def test_gradient_wrt_intermediate_tensors_chains():
    model = _model(tiny_classifier())
    x = _batch(2)
    cot = np.random.default_rng(3).standard_normal((2, 4))
    out = gradients(model, x, {"logits": cot}, wrt=["conv1", "relu1"], forward="numpy").grads
    values = forward_values(model, x, plan_backward(model, ["logits"]), "numpy")
    assert np.abs(out["relu1"]).sum() > 0
    np.testing.assert_array_equal(out["conv1"], out["relu1"] * (values["conv1"] > 0))
    # the input gradient is the Conv VJP of the conv1 gradient
    from cnnviz_core.backward.registry import make_call, rule_for

    node = next(n for n in model.runnable.graph.node if n.name == "conv1")
    call = make_call(node, [x, model.constants["w1"], model.constants["b1"]])
    call.needs = [True, False, False]
    np.testing.assert_allclose(
        rule_for("Conv", 13).vjp(call, [out["conv1"]])[0], out["x"], rtol=1e-12, atol=1e-14
    )


def test_cotangent_at_an_intermediate_layer_channel_mean():
    model = _model(tiny_classifier())
    x = _batch(2)
    shape = forward_values(model, x, plan_backward(model, ["conv2"]), "numpy")["conv2"].shape
    cot = np.zeros(shape)
    cot[:, 3] = 1 / (shape[2] * shape[3])
    _directional_check(model, x, "conv2", cot)


def _conv_same(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """3x3 convolution, pads 1, by explicit taps (hand reference)."""
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    h, wd = x.shape[2:]
    y = sum(
        np.einsum("nchw,oc->nohw", padded[:, :, i : i + h, j : j + wd], w[:, :, i, j])
        for i in range(3)
        for j in range(3)
    )
    return y + b[None, :, None, None]


def _conv_same_backward(dy: np.ndarray, w: np.ndarray, shape: tuple) -> np.ndarray:
    h, wd = shape[2:]
    dx = np.zeros((shape[0], shape[1], h + 2, wd + 2))
    for i in range(3):
        for j in range(3):
            dx[:, :, i : i + h, j : j + wd] += np.einsum("nohw,oc->nchw", dy, w[:, :, i, j])
    return dx[:, :, 1:-1, 1:-1]


def _relu_back(x: np.ndarray, g: np.ndarray, mode: str) -> np.ndarray:
    if mode == "gradient":
        return g * (x > 0)
    if mode == "guided":
        return g * (x > 0) * (g > 0)
    return g * (g > 0)


def _two_conv_model() -> tuple[Model, dict]:
    rng = np.random.default_rng(5)
    w = {
        "w1": rng.standard_normal((4, 3, 3, 3)).astype(np.float32),
        "b1": rng.standard_normal(4).astype(np.float32) * 0.1,
        "w2": rng.standard_normal((5, 4, 3, 3)).astype(np.float32) * 0.5,
        "b2": rng.standard_normal(5).astype(np.float32) * 0.1,
        "fc": rng.standard_normal((3, 5)).astype(np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], "c1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], "r1"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], "c2", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"], "r2"),
        helper.make_node("GlobalAveragePool", ["r2"], ["gap"], "gap"),
        helper.make_node("Flatten", ["gap"], ["flat"], "flat"),
        helper.make_node("Gemm", ["flat", "fc"], ["logits"], "fc", transB=1),
    ]
    proto = make_graph_model(nodes, w, ["N", 3, 6, 6], "logits")
    return _model(proto), {k: v.astype(np.float64) for k, v in w.items()}


@pytest.mark.parametrize("mode", ["gradient", "guided", "deconvnet"])
def test_modes_differ_only_at_relu_against_a_hand_reference(mode: str):
    model, w = _two_conv_model()
    x = _batch(2, 6)
    cot = np.random.default_rng(4).standard_normal((2, 3))
    c1 = _conv_same(x, w["w1"], w["b1"])
    r1 = np.maximum(c1, 0)
    c2 = _conv_same(r1, w["w2"], w["b2"])
    d_flat = cot @ w["fc"]
    d_r2 = np.broadcast_to(d_flat[:, :, None, None] / 36, c2.shape)
    d_c2 = _relu_back(c2, d_r2, mode)
    d_r1 = _conv_same_backward(d_c2, w["w2"], r1.shape)
    d_c1 = _relu_back(c1, d_r1, mode)
    expected = _conv_same_backward(d_c1, w["w1"], x.shape)
    got = gradients(model, x, {"logits": cot}, mode=mode, forward="numpy").grads["x"]
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-12)


def test_guided_is_gradient_gated_per_relu():
    """One ReLU: guided = gradient * [g > 0] at that ReLU, deconvnet = [g > 0] * g."""
    model = _model(tiny_classifier())
    x = _batch(2)
    g = np.random.default_rng(6).standard_normal((2, 6, 16, 16))
    grads = {
        m: gradients(model, x, {"relu1": g}, wrt=["conv1"], mode=m, forward="numpy").grads["conv1"]
        for m in ("gradient", "guided", "deconvnet")
    }
    np.testing.assert_array_equal(grads["guided"], grads["gradient"] * (g > 0))
    np.testing.assert_array_equal(grads["deconvnet"], g * (g > 0))


def test_numpy_forward_equals_onnxruntime():
    for model, size in ((_model(tiny_classifier()), 16), (_mixed_model(), 8)):
        x = _batch(3, size).astype(np.float32)
        plan = plan_backward(model, [model.output_names[0]])
        ours = forward_values(model, x.astype(np.float64), plan, "numpy")
        theirs = forward_values(model, x, plan, "onnxruntime")
        read, shapes_only = plan.reads()
        for name in read:
            np.testing.assert_allclose(ours[name], theirs[name], rtol=1e-4, atol=1e-5, err_msg=name)
        for name in shapes_only:  # onnxruntime's side only holds shape placeholders there
            assert ours[name].shape == theirs[name].shape, name


@pytest.mark.parametrize("forward", ["onnxruntime", "numpy"])
def test_batch_equals_single_runs(forward: str):
    model = _mixed_model()
    x = _batch(4, 8)
    cot = np.random.default_rng(8).standard_normal((4, 5))
    together = gradients(model, x, {"prob": cot}, forward=forward).grads["x"]
    for i in range(4):
        alone = gradients(model, x[i : i + 1], {"prob": cot[i : i + 1]}, forward=forward).grads["x"]
        np.testing.assert_allclose(together[i : i + 1], alone, rtol=1e-5, atol=1e-7)


def test_bad_cotangent_shape_raises():
    model = _model(tiny_classifier())
    with pytest.raises(InputError, match="shape"):
        gradients(model, _batch(2), {"logits": np.ones((2, 5))})


def test_unknown_mode_raises():
    model = _model(tiny_classifier())
    with pytest.raises(InputError, match="mode"):
        gradients(model, _batch(1), {"logits": np.ones((1, 4))}, mode="smooth")


def test_shape_only_tensors_are_placeholders_unless_kept():
    model = _model(tiny_classifier())
    x = _batch(2, 16).astype(np.float32)
    plan = plan_backward(model, [model.output_names[0]])
    read, shapes_only = plan.reads()
    assert "conv1" in shapes_only and "relu1" in read  # the ReLU gate reads its output
    lean = forward_values(model, x, plan)
    assert lean["conv1"].strides == (0, 0, 0, 0)  # a broadcast zero, not fetched
    kept = forward_values(model, x, plan, keep=["conv1"])
    np.testing.assert_array_equal(kept["conv1"], model.run(x, taps=["conv1"])["conv1"])


def test_every_session_of_a_backward_pass_comes_from_the_model_factory(monkeypatch):
    """The float32 adjoints (Conv, Gemm) run in sessions of the model's factory: same
    providers and options (threads here) as the model's own runs."""
    import onnxruntime as ort

    made: list[tuple[list[str], int]] = []
    real = ort.InferenceSession

    def recording(data, options=None, providers=None, **kwargs):
        made.append((list(providers or []), options.intra_op_num_threads if options else -1))
        return real(data, options, providers=providers, **kwargs)

    monkeypatch.setattr(ort, "InferenceSession", recording)
    model = _mixed_model()
    model = Model(model.proto.SerializeToString(), preprocess=Preprocess(scale=1.0), threads=1)
    plan = plan_backward(model, ["logits"])
    assert plan.sessions is model.session_factory
    before = len(made)
    seed = np.zeros((2, 5), np.float32)
    seed[:, 1] = 1
    gradients(model, _batch(size=8).astype(np.float32), {"logits": seed})
    assert len(made) > before + 1  # the model's tapped run and at least one adjoint
    assert all(entry == (model.session_factory.providers, 1) for entry in made)


@pytest.mark.parametrize("returned", [0, 2])
def test_a_rule_returning_the_wrong_number_of_gradients_is_named(returned):
    """The walker checks each rule's arity; the wrong rule lives in a registry of its own."""
    from cnnviz_core.backward import backward
    from cnnviz_core.backward.registry import OpRule, rule_for
    from cnnviz_core.registry import VersionedRegistry

    class WrongRelu(OpRule):
        def vjp(self, call, grads):
            return [grads[0]] * returned

    rules: VersionedRegistry[OpRule] = VersionedRegistry("backward rule")
    rules.add("Relu", 1, WrongRelu())
    nodes = [helper.make_node("Relu", ["x"], ["y"], "the_relu")]
    model = _model(make_graph_model(nodes, {}, ["N", 3, 4, 4], "y"))
    plan = plan_backward(model, ["y"], rules=rules)
    batch = _batch(1, 4)
    values = forward_values(model, batch, plan)
    with pytest.raises(TypeError, match=r"'Relu' \(node 'the_relu' making 'y'\).*1 inputs"):
        backward(plan, values, {"y": np.ones_like(values["y"])}, [plan.source])
    assert not isinstance(rule_for("Relu", 18), WrongRelu)  # the global table is untouched


def test_a_reduce_flag_other_than_0_or_1_is_refused_by_name():
    """keepdims=17: onnxruntime keeps the axes only for 1; a truth test would disagree (a
    fuzzed model made the compiled pass's Expand fail inside onnxruntime)."""
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["conv"], "conv"),
        helper.make_node("ReduceMean", ["conv"], ["logits"], "mean", axes=[2, 3], keepdims=17),
    ]
    model = _model(make_graph_model(nodes, {"w": np.ones((2, 3, 3, 3), np.float32)},
                                    ["N", 3, 8, 8], "logits"))  # fmt: skip
    with pytest.raises(UnsupportedOpError, match=r"ReduceMean node 'mean': keepdims=17 is not 0"):
        gradients(model, _batch(1, 8).astype(np.float32), None)
