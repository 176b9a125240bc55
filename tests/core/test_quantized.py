"""QDQ-quantized models: gradients through Quantize/DequantizeLinear by the straight-through
estimator (close to the float model's gradient), stated in the results; QOperator models
refused with one clear error."""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import pytest
from conftest import make_graph_model
from onnx import TensorProto, helper

from cnnviz_core import Model, Preprocess, UnsupportedOpError
from cnnviz_core.backward import forward_values, gradients, plan_backward
from cnnviz_core.backward.registry import make_call, rule_for

torch = pytest.importorskip("torch")
pytest.importorskip("onnxscript")
quantization = pytest.importorskip("onnxruntime.quantization")


class SmallNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1 = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.c2 = torch.nn.Conv2d(8, 8, 3, padding=1)
        self.fc = torch.nn.Linear(8, 4)

    def forward(self, x):
        y = torch.nn.functional.max_pool2d(torch.relu(self.c1(x)), 2)
        return self.fc(torch.relu(self.c2(y)).mean(dim=(2, 3)))


class Calibration(quantization.CalibrationDataReader):
    """A few random images: enough to set the activation ranges of a tiny net."""

    def __init__(self, name: str) -> None:
        rng = np.random.default_rng(0)
        images = [rng.standard_normal((1, 3, 16, 16)).astype(np.float32) for _ in range(16)]
        self.feeds = iter([{name: image} for image in images])

    def get_next(self):
        return next(self.feeds, None)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(torch net, float model path, QDQ model path, QOperator model path)."""
    folder = tmp_path_factory.mktemp("quantized")
    torch.manual_seed(0)
    net = SmallNet().eval()
    path = folder / "float.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's and the quantizer's notices
        torch.onnx.export(
            net, (torch.randn(2, 3, 16, 16),), str(path), dynamo=True, verbose=False,
            dynamic_shapes=({0: torch.export.Dim("batch")},),
        )  # fmt: skip
        name = onnx.load(str(path)).graph.input[0].name
        paths = {}
        for fmt in ("QDQ", "QOperator"):
            paths[fmt] = folder / f"{fmt}.onnx"
            quantization.quantize_static(
                str(path), str(paths[fmt]), Calibration(name),
                quant_format=getattr(quantization.QuantFormat, fmt), per_channel=True,
                activation_type=quantization.QuantType.QInt8,
                weight_type=quantization.QuantType.QInt8,
            )  # fmt: skip
    return net, path, paths["QDQ"], paths["QOperator"]


def load(path) -> Model:
    return Model(path, preprocess=Preprocess(scale=1.0, size=(16, 16)))


@pytest.mark.torch
def test_qdq_gradient_is_close_to_the_float_models(exported):
    """The straight-through gradient of the quantized model against central differences of
    the float model (float64 forward): int8 activations move the gradient by a few percent,
    so the stated tolerance is cosine >= 0.98 and relative error <= 0.2 per image."""
    _, float_path, qdq_path, _ = exported
    quantized, reference = load(qdq_path), load(float_path)
    assert quantized.quantization == "qdq" and reference.quantization is None
    rng = np.random.default_rng(1)
    batch = rng.standard_normal((2, 3, 16, 16)).astype(np.float32)
    seed = {quantized.output_names[0]: rng.standard_normal((2, 4)).astype(np.float32)}
    ours = gradients(quantized, batch, seed).grads[quantized.input_name]

    plan = plan_backward(reference, [reference.output_names[0]])
    eps = 1e-5
    numeric = np.zeros(batch.shape)
    for i in range(len(batch)):  # every coordinate at once: one float64 batch of 2 x 768
        steps = eps * np.eye(batch[i].size).reshape(-1, *batch.shape[1:])
        x = np.concatenate([batch[i] + steps, batch[i] - steps]).astype(np.float64)
        out = forward_values(reference, x, plan, "numpy")[plan.seeds[0]]
        scores = out @ seed[reference.output_names[0]][i].astype(np.float64)
        half = len(steps)
        numeric[i] = ((scores[:half] - scores[half:]) / (2 * eps)).reshape(batch.shape[1:])
    for i in range(2):
        a, b = ours[i].ravel(), numeric[i].ravel()
        cosine = a @ b / (np.linalg.norm(a) * np.linalg.norm(b))
        error = np.linalg.norm(a - b) / np.linalg.norm(b)
        assert cosine >= 0.98 and error <= 0.2, (i, cosine, error)


@pytest.mark.torch
def test_saliency_on_a_qdq_model_states_the_straight_through_estimate(exported):
    from cnnviz.attribution import saliency

    _, float_path, qdq_path, _ = exported
    batch = np.random.default_rng(2).standard_normal((2, 3, 16, 16)).astype(np.float32)
    result = saliency(load(qdq_path), batch)
    assert result.maps.shape == (2, 16, 16) and np.abs(result.maps).max() > 0
    assert result.metrics["straight_through"] is True
    assert "straight_through" not in saliency(load(float_path), batch).metrics


#: the methods whose maps come from the backward pass (the rest only run forwards)
GRADIENT_BASED = {
    "saliency", "guided", "deconvnet", "gradcam", "guided-gradcam", "gradcam++", "xgradcam",
    "layercam", "hirescam", "fullgrad", "smoothgrad", "ig", "gradientshap",
}  # fmt: skip


@pytest.mark.torch
def test_only_gradient_results_state_the_straight_through_estimate(exported):
    """Perturbation and activation-only methods are exact on a QDQ model: no flag."""
    from cnnviz.attribution.methods import SPECS

    _, _, qdq_path, _ = exported
    model = load(qdq_path)
    batch = np.random.default_rng(2).standard_normal((1, 3, 16, 16)).astype(np.float32)
    small = {"window": 8, "stride": 8, "samples": 4, "n": 2, "steps": 4, "masks": 8}
    ran = set()
    for spec in SPECS:
        if spec.name == "cam":  # the QDQ head (DequantizeLinear) is no GAP + linear layer
            continue
        kwargs = {k: v for k, v in small.items() if k in spec.parameter_names}
        result = spec.function(model, batch, 0, **kwargs)
        flagged = result.metrics.get("straight_through", False)
        assert flagged is (spec.name in GRADIENT_BASED), spec.name
        ran.add(spec.name)
    assert GRADIENT_BASED <= ran


@pytest.mark.torch
def test_qdq_torch_bridge_matches_the_engine(exported):
    from cnnviz_core.torch_bridge import to_torch

    _, _, qdq_path, _ = exported
    model = load(qdq_path)
    rng = np.random.default_rng(3)
    batch = rng.standard_normal((2, 3, 16, 16)).astype(np.float32)
    seed = rng.standard_normal((2, 4)).astype(np.float32)
    ours = gradients(model, batch, {model.output_names[0]: seed}).grads[model.input_name]
    module = to_torch(model)
    x = torch.from_numpy(batch).requires_grad_()
    out = module(x)
    out = out[0] if isinstance(out, (list, tuple)) else out
    np.testing.assert_allclose(out.detach().numpy(), model.scores(batch), rtol=1e-4, atol=1e-4)
    (out * torch.from_numpy(seed)).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), ours, rtol=1e-3, atol=1e-4)


@pytest.mark.torch
def test_qoperator_model_gets_one_error_naming_op_node_and_qdq(exported):
    _, _, _, qoperator_path = exported
    model = load(qoperator_path)
    assert model.quantization == "qoperator"
    with pytest.raises(UnsupportedOpError, match=r"'QLinearConv' \(node .*QuantFormat\.QDQ"):
        plan_backward(model, [model.output_names[0]])


# ------------------------------------------------------------------------- one-node rules


def _call(op: str, inputs: list, **attrs):
    node = helper.make_node(op, ["x", "s", "z"][: len(inputs)], ["y"], f"{op}_node", **attrs)
    call = make_call(node, inputs, opset=19)
    call.needs = [True, False, False][: len(inputs)]
    return call


@pytest.mark.parametrize(("zero_type", "zero"), [(np.int8, -3), (np.uint8, 128)])
def test_quantize_then_dequantize_passes_the_gradient_straight_through_inside_the_range(
    zero_type, zero
):
    """d dequant(quant(x)) / dx = 1 where x is representable, 0 where it is clipped."""
    scale = np.float32(0.05)
    zp = np.array(zero, zero_type)
    info = np.iinfo(zero_type)
    low, high = (info.min - zero) * scale, (info.max - zero) * scale
    x = np.array([low - 1.0, low + 0.3, -0.2, 0.0, 0.7, high - 0.3, high + 2.0])
    quantize, dequantize = rule_for("QuantizeLinear", 19), rule_for("DequantizeLinear", 19)
    q_call = _call("QuantizeLinear", [x, scale, zp])
    (q,) = quantize.forward(q_call)
    d_call = _call("DequantizeLinear", [q, scale, zp])
    (y,) = dequantize.forward(d_call)
    np.testing.assert_allclose(y[1:-1], x[1:-1], atol=scale / 2 + 1e-9)
    dy = np.linspace(1.0, 2.0, x.size)
    (dq, _, _) = dequantize.vjp(d_call, [dy])
    (dx, _, _) = quantize.vjp(q_call, [dq])
    np.testing.assert_allclose(dx, np.r_[0.0, dy[1:-1], 0.0], rtol=1e-6)


def test_per_channel_rules_match_onnxruntime():
    import onnxruntime as ort

    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 3, 4, 4)).astype(np.float32) * 3
    scale = np.array([0.02, 0.05, 0.1], np.float32)
    zp = np.array([0, -5, 7], np.int8)
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], axis=1),
        helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"], axis=1),
    ]
    proto = make_graph_model(nodes, {"s": scale, "z": zp}, [2, 3, 4, 4], "y", opset=19)
    proto.graph.output.append(helper.make_tensor_value_info("q", TensorProto.INT8, None))
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    y_ort, q_ort = session.run(["y", "q"], {"x": x})
    (q,) = rule_for("QuantizeLinear", 19).forward(_call("QuantizeLinear", [x, scale, zp], axis=1))
    (y,) = rule_for("DequantizeLinear", 19).forward(
        _call("DequantizeLinear", [q, scale, zp], axis=1)
    )
    np.testing.assert_array_equal(q, q_ort)
    np.testing.assert_allclose(y, y_ort, rtol=1e-6)
    dy = rng.standard_normal(x.shape)
    (dq, _, _) = rule_for("DequantizeLinear", 19).vjp(
        _call("DequantizeLinear", [q, scale, zp], axis=1), [dy]
    )
    np.testing.assert_allclose(dq, dy * scale.reshape(1, 3, 1, 1), rtol=1e-6)


@pytest.mark.torch
def test_dequantized_weights_are_fetched_values_and_reuse_adjoint_sessions(exported):
    from cnnviz_core.backward import adjoint

    _, _, qdq_path, _ = exported
    model = load(qdq_path)
    conv = next(n for n in model.runnable.graph.node if n.op_type == "Conv")
    assert conv.input[1] not in model.constants and not model.depends_on_input(conv.input[1])
    batch = np.random.default_rng(5).standard_normal((3, 3, 16, 16)).astype(np.float32)
    first = gradients(model, batch).grads[model.input_name]
    before = adjoint.cached_sessions()
    again = gradients(model, batch).grads[model.input_name]
    np.testing.assert_array_equal(again, first)
    assert adjoint.cached_sessions() == before
