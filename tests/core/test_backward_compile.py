"""The rule table's second face: every registered rule's ONNX emission equals its NumPy VJP
to float32 rounding, on the one-node cases of :mod:`test_backward_rules` (one case list for
both faces), and a registered rule without an emission fails here."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from cnnviz_core import UnsupportedOpError
from cnnviz_core.backward.compile import MIN_OPSET, Emitter, emit_rule
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


def emitted_vjp(case: Case, mode: str = "gradient", seed: int = 1, numpy: bool = True):
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
    emitter = Emitter(max(MIN_OPSET, case.opset), prefix="test")
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


def test_unknown_mode_has_no_emission():
    case = next(c for c in CASES if c.op == "Relu")
    with pytest.raises(UnsupportedOpError, match="lrp.*gradient, guided, deconvnet"):
        emitted_vjp(case, "lrp", numpy=False)


def test_a_rule_without_emission_names_the_op():
    class Bare(OpRule):
        pass

    node = helper.make_node("Softsign", ["x"], ["y"], name="soft")
    call = _call(CASES[0], _as32(_inputs(CASES[0])))
    call.node = node
    call.inputs = [np.ones(2, np.float32)]
    with pytest.raises(UnsupportedOpError, match="'Softsign'.*'soft'.*no ONNX emission"):
        emit_rule(Bare(), call, ["dy"], Emitter(MIN_OPSET))


def test_emitter_shares_small_constants():
    emitter = Emitter(MIN_OPSET)
    assert emitter.scalar(0.5) == emitter.scalar(0.5)
    assert emitter.ints([1, 2]) != emitter.scalar(1.0)
    assert {numpy_helper.to_array(t).dtype for t in emitter.initializers} == {
        np.dtype(np.float32),
        np.dtype(np.int64),
    }
