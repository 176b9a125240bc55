"""The rule table's second face: every registered rule's ONNX emission equals its NumPy VJP
to float32 rounding, on the one-node cases of :mod:`test_backward_rules` (one case list for
both faces), and a registered rule without an emission fails here."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from cnnviz_core import UnsupportedOpError
from cnnviz_core.backward.compile import emit_rule
from cnnviz_core.backward.emitter import MIN_OPSET, Emitter
from cnnviz_core.backward.registry import RULES, OpRule, registered_rules, rule_for
from tests.core.test_backward_rules import CASES, RELU_LIKE, Case, _as32, _call, _inputs


def test_every_registered_rule_has_an_emission():
    missing = [
        f"{op} (opset {since}): {type(RULES.get(op, since)).__name__}"
        for op, since in registered_rules()
        if type(RULES.get(op, since)).emit is OpRule.emit
    ]
    assert not missing, f"registered rules without an ONNX emission: {missing}"


def _elem_type(value: np.ndarray) -> int:
    return helper.np_dtype_to_tensor_dtype(np.asarray(value).dtype)


#: ops whose one-node cases declare no data input (their forward is checked there): the
#: straight-through cotangent of the quantized tensor is checked here
STRAIGHT_THROUGH = ("QuantizeLinear", "DequantizeLinear")


def emitted_vjp(
    case: Case, mode: str = "gradient", seed: int = 1, numpy: bool = True, portable: bool = True
):
    """(NumPy float32 VJP, the emitted nodes' VJP run by onnxruntime, the emitted names) for
    one case."""
    values = _as32(_inputs(case))
    rule = rule_for(case.op, case.opset)
    call = _call(case, values, mode)
    data = case.data
    if case.op in STRAIGHT_THROUGH:
        data = (0,)
        call.needs[0] = True
    outs = rule.forward(call)
    call.outputs = outs
    rng = np.random.default_rng(seed)
    weights = [
        rng.standard_normal(np.shape(o)).astype(np.float32)
        if np.asarray(o).dtype.kind == "f" or case.op in STRAIGHT_THROUGH
        else None
        for o in outs
    ]
    expected = rule.vjp(call, weights) if numpy else [None] * len(values)
    constants = [f"in{i}" for i, v in enumerate(values) if v is not None and i not in data]
    emitter = Emitter(max(MIN_OPSET, case.opset), prefix="test", constants=constants)
    emitter.portable = portable
    grads = [f"dy{k}" if w is not None else None for k, w in enumerate(weights)]
    names = emit_rule(rule, call, grads, emitter)
    feeds: dict[str, np.ndarray] = {}
    inputs = []
    for i, v in enumerate(values):
        if v is not None:
            feeds[f"in{i}"] = np.asarray(v)
    for k, o in enumerate(outs):
        feeds[f"out{k}"] = np.asarray(o)
        if weights[k] is not None:
            feeds[f"dy{k}"] = weights[k]
    inputs = [
        helper.make_tensor_value_info(name, _elem_type(v), np.shape(v)) for name, v in feeds.items()
    ]
    wanted = [i for i in data if names[i] is not None]
    if not wanted:
        return expected, {}, names
    outputs = [helper.make_tensor_value_info(f"grad{i}", TensorProto.FLOAT, None) for i in wanted]
    nodes = list(emitter.nodes) + [
        helper.make_node("Identity", [names[i]], [f"grad{i}"]) for i in wanted
    ]
    graph = helper.make_graph(nodes, "vjp", inputs, outputs, emitter.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", emitter.opset)])
    model.ir_version = 10
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    got = dict(zip(wanted, session.run(None, feeds)))
    return expected, got, names


def _assert_float32_equal(got: np.ndarray, expected: np.ndarray) -> None:
    expected = np.asarray(expected)
    assert got.shape == expected.shape
    scale = max(float(np.abs(expected).max(initial=0.0)), 1e-30)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=2e-6 * scale)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_emission_matches_numpy_vjp(case: Case):
    expected, got, names = emitted_vjp(case)
    data = (0,) if case.op in STRAIGHT_THROUGH else case.data
    for i in data:
        if expected[i] is None:
            assert names[i] is None
            continue
        assert i in got, f"input {i} has a NumPy cotangent but no emitted one"
        _assert_float32_equal(got[i], expected[i])


@pytest.mark.parametrize("mode", ["guided", "deconvnet"])
@pytest.mark.parametrize("case", RELU_LIKE, ids=lambda c: c.id)
def test_emission_modes_match_numpy(case: Case, mode: str):
    expected, got, _ = emitted_vjp(case, mode)
    _assert_float32_equal(got[0], expected[0])


@pytest.mark.parametrize("case", [c for c in CASES if c.op == "MaxPool"], ids=lambda c: c.id)
def test_onnxruntime_only_emission_matches_numpy(case: Case):
    """Graphs run by onnxruntime alone (the engine's compiled pass) may use MaxUnpool."""
    expected, got, _ = emitted_vjp(case, portable=False)
    _assert_float32_equal(got[0], expected[0])


def test_unknown_mode_has_no_emission():
    case = next(c for c in CASES if c.op == "Relu")
    with pytest.raises(UnsupportedOpError, match=r"lrp.*gradient, guided, deconvnet"):
        emitted_vjp(case, "lrp", numpy=False)


def test_a_rule_without_emission_names_the_op():
    class Bare(OpRule):
        pass

    node = helper.make_node("Softsign", ["x"], ["y"], name="soft")
    call = _call(CASES[0], _as32(_inputs(CASES[0])))
    call.node = node
    call.inputs = [np.ones(2, np.float32)]
    with pytest.raises(UnsupportedOpError, match=r"'Softsign'.*'soft'.*no ONNX emission"):
        emit_rule(Bare(), call, ["dy"], Emitter(MIN_OPSET))


def test_emitter_shares_small_constants():
    emitter = Emitter(MIN_OPSET)
    assert emitter.scalar(0.5) == emitter.scalar(0.5)
    assert emitter.ints([1, 2]) != emitter.scalar(1.0)
    depth = emitter.const(5, np.int64, "depth")  # a scalar stays 0-d (OneHot's depth)
    assert numpy_helper.to_array(next(t for t in emitter.initializers if t.name == depth)).ndim == 0
    assert {numpy_helper.to_array(t).dtype for t in emitter.initializers} == {
        np.dtype(np.float32),
        np.dtype(np.int64),
    }


# ------------------------------------------------------- the engine's compiled fast path


@pytest.fixture(scope="module")
def tiny_model():
    from cnnviz_core import Model, Preprocess
    from tests.conftest import tiny_classifier

    return Model(tiny_classifier().SerializeToString(), preprocess=Preprocess(size=(16, 16)))


@pytest.mark.parametrize("mode", ["gradient", "guided", "deconvnet"])
@pytest.mark.parametrize(
    "target", [None, 2, [1, None, 3], "channel", "cotangent"], ids=lambda t: repr(t)
)
def test_compiled_forward_equals_the_engine(tiny_model, target, mode):
    from cnnviz_core.backward import gradients
    from cnnviz_core.targets import Channel

    batch = np.random.default_rng(4).standard_normal((3, 3, 16, 16)).astype(np.float32)
    if target == "channel":
        target = Channel("relu2", 5)
    elif target == "cotangent":
        target = {"logits": np.random.default_rng(5).standard_normal((3, 4)).astype(np.float32)}
    engine = gradients(tiny_model, batch, target, wrt=["relu1"], mode=mode)
    compiled = gradients(tiny_model, batch, target, wrt=["relu1"], mode=mode, forward="compiled")
    for name in (tiny_model.input_name, "relu1"):
        _assert_float32_equal(compiled.grads[name], engine.grads[name])
    np.testing.assert_allclose(compiled.scores, engine.scores, rtol=1e-6, atol=1e-6)
    assert [t.label for t in compiled.targets] == [t.label for t in engine.targets]
    _assert_float32_equal(compiled.values["relu1"], engine.values["relu1"])


def test_compiled_passes_are_cached_and_chunked(tiny_model, monkeypatch):
    from cnnviz_core.backward import gradients
    from cnnviz_core.backward.compile import compiled_pass

    batch = np.random.default_rng(6).standard_normal((5, 3, 16, 16)).astype(np.float32)
    first = compiled_pass(tiny_model, None, (tiny_model.input_name,), "guided", (3, 16, 16))
    assert compiled_pass(tiny_model, None, (tiny_model.input_name,), "guided", (3, 16, 16)) is first
    whole = gradients(tiny_model, batch, mode="guided", forward="compiled")
    monkeypatch.setattr(tiny_model, "max_batch", 2)
    chunked = gradients(tiny_model, batch, mode="guided", forward="compiled")
    np.testing.assert_array_equal(
        chunked.grads[tiny_model.input_name], whole.grads[tiny_model.input_name]
    )
    assert [t.label for t in chunked.targets] == [t.label for t in whole.targets]


def test_compiled_forward_refuses_modes_without_emission(tiny_model):
    from cnnviz_core.backward.compile import compiled_pass

    with pytest.raises(UnsupportedOpError, match=r"mode 'lrp' has no ONNX emission"):
        compiled_pass(tiny_model, None, (tiny_model.input_name,), "lrp")
