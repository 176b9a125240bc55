"""The relevance modes of the backward pass (DeepLIFT-Rescale, LRP epsilon / gamma /
alpha1-beta0 / z-box) against independent references:

- Captum 0.9's ``DeepLift`` and ``LRP`` (``EpsilonRule``, ``GammaRule``,
  ``Alpha1_Beta0_Rule``) on a torch CNN exported to ONNX, float64 and float32. The net pools
  with AvgPool: Captum 0.9's DeepLift misses summation-to-delta when a ReLU feeds a MaxPool
  (its hooks since 0.6, captum issues #1104 and #1276), so max-pooling is checked against
- a float64 NumPy version of the rules written here (Conv -> Relu -> MaxPool -> Gemm):
  DeepLIFT with Captum's max-pool rule, LRP-epsilon above a z^B first layer;
- completeness: DeepLIFT sums to f(x) - f(x0); LRP conserves the score layer by layer on a
  bias-free net (epsilon and z-box), and what the biases absorb is reported;
- the per-op table and its errors (an op without a rule names the op and the node).
"""

from __future__ import annotations

import io
import warnings
from typing import Literal

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view
from onnx import helper

from cnnviz_core import InputError, Model, UnsupportedOpError
from cnnviz_core.backward import LRP, RELEVANCE_MODES, DeepLift, gradients, supported_ops
from cnnviz_core.backward.relevance import OP_KINDS, UNSUPPORTED, LRPRule, stabilize
from tests.conftest import make_graph_model

# ------------------------------------------------------------------------------ the op table


def test_every_registered_op_has_a_relevance_convention_or_is_listed_unsupported() -> None:
    ops = set(supported_ops())
    assert not set(OP_KINDS) & UNSUPPORTED
    assert ops - set(OP_KINDS) - UNSUPPORTED == set()
    assert set(OP_KINDS) | UNSUPPORTED <= ops


def test_stabilizer_moves_away_from_zero() -> None:
    z = np.array([-2.0, 0.0, 3.0])
    np.testing.assert_array_equal(stabilize(z, 0.5), [-2.5, 0.5, 3.5])


# ------------------------------------------------------- a small graph and its NumPy twin

C_IN, SIDE, C_MID, CLASSES = 3, 6, 3, 4


def _weights(seed: int, bias: bool = True) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    weights = {
        "w1": rng.standard_normal((C_MID, C_IN, 3, 3)).astype(np.float32) * 0.6,
        "w2": rng.standard_normal((CLASSES, C_MID * (SIDE // 2) ** 2)).astype(np.float32) * 0.5,
    }
    if bias:
        weights["b1"] = rng.standard_normal(C_MID).astype(np.float32) * 0.2
        weights["b2"] = rng.standard_normal(CLASSES).astype(np.float32) * 0.2
    return weights


def _graph(weights: dict[str, np.ndarray]) -> Model:
    """x -> Conv(3x3, pad 1) -> Relu -> MaxPool(2) -> Flatten -> Gemm(transB)."""
    bias = "b1" in weights
    nodes = [
        helper.make_node(
            "Conv", ["x", "w1", *(["b1"] if bias else [])], ["conv"], "conv", pads=[1] * 4
        ),
        helper.make_node("Relu", ["conv"], ["relu"], "relu"),
        helper.make_node(
            "MaxPool", ["relu"], ["pool"], "pool", kernel_shape=[2, 2], strides=[2, 2]
        ),
        helper.make_node("Flatten", ["pool"], ["flat"], "flat"),
        helper.make_node(
            "Gemm", ["flat", "w2", *(["b2"] if bias else [])], ["logits"], "fc", transB=1
        ),
    ]
    proto = make_graph_model(nodes, weights, ["N", C_IN, SIDE, SIDE], "logits")
    return Model(proto.SerializeToString())


def _conv(x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
    """3x3 convolution with zero padding 1, float64."""
    patches = sliding_window_view(np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1))), (3, 3), (2, 3))
    y = np.einsum("nchwij,ocij->nohw", patches, w)
    return y if b is None else y + b[None, :, None, None]


def _conv_transposed(s: np.ndarray, w: np.ndarray) -> np.ndarray:
    """The input-side sum of :func:`_conv`'s weights times ``s`` (its adjoint)."""
    n, _, h, wd = s.shape
    padded = np.zeros((n, w.shape[1], h + 2, wd + 2))
    for i in range(3):
        for j in range(3):
            padded[:, :, i : i + h, j : j + wd] += np.einsum("nohw,oc->nchw", s, w[:, :, i, j])
    return padded[:, :, 1:-1, 1:-1]


def _pool(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """2x2 max-pool: (values, one-hot of each window's first argmax, shaped like ``a``)."""
    n, c, h, w = a.shape
    windows = a.reshape(n, c, h // 2, 2, w // 2, 2).transpose(0, 1, 2, 4, 3, 5)
    flat = windows.reshape(n, c, h // 2, w // 2, 4)
    onehot = np.zeros_like(flat)
    np.put_along_axis(onehot, flat.argmax(axis=-1)[..., None], 1.0, axis=-1)
    mask = onehot.reshape(n, c, h // 2, w // 2, 2, 2).transpose(0, 1, 2, 4, 3, 5)
    return flat.max(axis=-1), mask.reshape(n, c, h, w)


def _unpool(g: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return np.repeat(np.repeat(g, 2, axis=2), 2, axis=3) * mask


def _forward(x: np.ndarray, wt: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    w = {k: v.astype(np.float64) for k, v in wt.items()}
    conv = _conv(x, w["w1"], w.get("b1"))
    relu = np.maximum(conv, 0)
    pool, mask = _pool(relu)
    flat = pool.reshape(len(x), -1)
    logits = flat @ w["w2"].T + w.get("b2", 0)
    return {"conv": conv, "relu": relu, "pool": pool, "mask": mask, "flat": flat, "logits": logits}


@pytest.fixture(scope="module")
def inputs() -> tuple[np.ndarray, np.ndarray]:
    """(batch, baseline): random float64 (2, C, 6, 6), the baseline small and non-zero."""
    rng = np.random.default_rng(3)
    return rng.standard_normal((2, C_IN, SIDE, SIDE)), 0.3 * rng.standard_normal(
        (2, C_IN, SIDE, SIDE)
    )


def _relative(ours: np.ndarray, reference: np.ndarray) -> float:
    return float(np.abs(ours - reference).max() / np.abs(reference).max())


def test_deeplift_with_maxpool_equals_the_numpy_rules_and_sums_to_the_delta(inputs) -> None:
    x, x0 = inputs
    weights = _weights(1)
    model = _graph(weights)
    targets = [1, 3]
    result = gradients(model, x, targets, mode=DeepLift(x0), forward="numpy")
    ours = result.grads[model.input_name]
    # the reference: multipliers from the logits down, Captum's max-pool rule, Rescale
    f, f0 = _forward(x, weights), _forward(x0, weights)
    g = weights["w2"].astype(np.float64)[targets].reshape(f["pool"].shape)
    top = np.maximum(f["pool"], f0["pool"])
    moved = _unpool(g * (top - f0["pool"]), f["mask"]) + _unpool(g * (f["pool"] - top), f0["mask"])
    d_relu = f["relu"] - f0["relu"]
    flat = np.abs(d_relu) < 1e-10
    m_relu = np.where(flat, _unpool(g, f["mask"]), moved / np.where(flat, 1, d_relu))
    d_conv = f["conv"] - f0["conv"]
    flat = np.abs(d_conv) < 1e-10
    m_conv = np.where(flat, m_relu * (f["conv"] > 0), m_relu * d_relu / np.where(flat, 1, d_conv))
    reference = _conv_transposed(m_conv, weights["w1"].astype(np.float64)) * (x - x0)
    assert _relative(ours, reference) <= 1e-12
    delta = f["logits"][[0, 1], targets] - f0["logits"][[0, 1], targets]
    np.testing.assert_allclose(ours.reshape(2, -1).sum(axis=1), delta, rtol=1e-12, atol=1e-14)
    # every cut of the graph carries the same total: contributions of a layer's units
    layers = gradients(model, x, targets, wrt=["relu", "flat"], mode=DeepLift(x0), forward="numpy")
    for name in ("relu", "flat"):
        sums = layers.grads[name].reshape(2, -1).sum(axis=1)
        np.testing.assert_allclose(sums, delta, rtol=1e-12, atol=1e-14)
    # float32 through onnxruntime: the same within float32 rounding
    ours32 = gradients(model, x.astype(np.float32), targets, mode=DeepLift(x0.astype(np.float32)))
    assert _relative(ours32.grads[model.input_name], reference) <= 1e-5


def test_zbox_input_layer_equals_the_numpy_rule(inputs) -> None:
    """z^B at the Conv reading the pixels (bounds per channel), epsilon above it."""
    x, _ = inputs
    weights = _weights(2)
    model = _graph(weights)
    low = np.array([-2.5, -3.0, -2.0]).reshape(1, C_IN, 1, 1)
    high = np.array([2.5, 3.5, 2.0]).reshape(1, C_IN, 1, 1)
    x = np.clip(x, low, high)
    eps, targets = 1e-3, [0, 2]
    mode = LRP("epsilon", eps, input_rule="zbox", low=low, high=high)
    ours = gradients(model, x, targets, mode=mode, forward="numpy").grads[model.input_name]
    f = _forward(x, weights)
    w1, w2 = weights["w1"].astype(np.float64), weights["w2"].astype(np.float64)
    r_out = np.zeros_like(f["logits"])
    r_out[[0, 1], targets] = f["logits"][[0, 1], targets]
    r_flat = f["flat"] * ((r_out / stabilize(f["logits"], eps)) @ w2)
    r_pool = r_flat.reshape(f["pool"].shape)
    r_relu = f["relu"] * _unpool(r_pool / stabilize(f["pool"], eps), f["mask"])
    lo, hi = np.broadcast_to(low, x.shape), np.broadcast_to(high, x.shape)
    wp, wn = np.maximum(w1, 0), np.minimum(w1, 0)
    z = _conv(x, w1) - _conv(lo, wp) - _conv(hi, wn)
    s = r_relu / stabilize(z, eps)
    reference = x * _conv_transposed(s, w1) - lo * _conv_transposed(s, wp)
    reference = reference - hi * _conv_transposed(s, wn)
    assert _relative(ours, reference) <= 1e-12
    # z-box conserves what reaches the first layer but for eps: sum R_x = sum R z / stab(z)
    kept = (r_relu * z / stabilize(z, eps)).sum(axis=(1, 2, 3))
    np.testing.assert_allclose(ours.sum(axis=(1, 2, 3)), kept, rtol=1e-10)


@pytest.mark.parametrize("rule", ["epsilon", "alphabeta"])
@pytest.mark.parametrize("input_rule", ["same", "zbox"])
def test_lrp_conserves_the_score_layer_by_layer_without_biases(
    inputs, rule: LRPRule, input_rule: Literal["same", "zbox"]
) -> None:
    """Bias-free and (for alpha1-beta0) non-negative input: every layer's relevance sums to
    the target's score; epsilon absorbs at most ~eps / |z| of it."""
    x = np.abs(inputs[0]) if rule == "alphabeta" else inputs[0]
    model = _graph(_weights(4, bias=False))
    mode = LRP(rule, 1e-9, input_rule=input_rule, low=-4.0, high=4.0)
    result = gradients(model, x, [2, 0], wrt=["relu", "flat"], mode=mode, forward="numpy")
    for name in [model.input_name, "relu", "flat"]:
        sums = result.grads[name].reshape(2, -1).sum(axis=1)
        np.testing.assert_allclose(sums, result.scores, rtol=1e-6)


def test_lrp_with_biases_reports_what_they_absorb(inputs) -> None:
    model = _graph(_weights(1))
    result = gradients(model, inputs[0], [1, 1], mode="lrp-epsilon", forward="numpy")
    sums = result.grads[model.input_name].reshape(2, -1).sum(axis=1)
    assert not np.allclose(sums, result.scores, rtol=1e-3)  # biases take their share


# --------------------------------------------- ConvTranspose and the extreme reductions

CT_STRIDE, CT_PAD, CT_OUTPAD, CT_K, CT_OUT = 2, 1, 1, 3, 2


def _up_graph(weights: dict[str, np.ndarray]) -> Model:
    """x -> ConvTranspose(3x3, stride 2, pad 1, output_padding 1) -> Relu ->
    ReduceMax(H, W) -> Gemm(transB): a decoder's upsampling, then a spatial max."""
    nodes = [
        helper.make_node(
            "ConvTranspose",
            ["x", "wt", "bt"],
            ["up"],
            "up",
            strides=[CT_STRIDE] * 2,
            pads=[CT_PAD] * 4,
            output_padding=[CT_OUTPAD] * 2,
        ),
        helper.make_node("Relu", ["up"], ["relu"], "relu"),
        helper.make_node("ReduceMax", ["relu", "hw"], ["peak"], "peak", keepdims=0),
        helper.make_node("Gemm", ["peak", "w2", "b2"], ["logits"], "fc", transB=1),
    ]
    consts = {**weights, "hw": np.array([2, 3], np.int64)}
    proto = make_graph_model(nodes, consts, ["N", C_IN, 4, 4], "logits")
    return Model(proto.SerializeToString())


def _up_frame(h: int) -> tuple[int, int]:
    """(the uncropped extent of the ConvTranspose, its output extent) for input extent h."""
    full = (h - 1) * CT_STRIDE + CT_K + CT_OUTPAD
    return full, (h - 1) * CT_STRIDE - 2 * CT_PAD + CT_K + CT_OUTPAD


def _up(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """ConvTranspose in float64: each input pixel adds x W at its strided place, cropped."""
    n, _, h, wd = x.shape
    full, out = _up_frame(h)
    frame = np.zeros((n, w.shape[1], full, full))
    for i in range(CT_K):
        for j in range(CT_K):
            rows = slice(i, i + (h - 1) * CT_STRIDE + 1, CT_STRIDE)
            cols = slice(j, j + (wd - 1) * CT_STRIDE + 1, CT_STRIDE)
            frame[:, :, rows, cols] += np.einsum("nchw,co->nohw", x, w[:, :, i, j])
    return frame[:, :, CT_PAD : CT_PAD + out, CT_PAD : CT_PAD + out] + b[None, :, None, None]


def _up_adjoint(s: np.ndarray, w: np.ndarray, h: int) -> np.ndarray:
    """sum over the outputs each input pixel reaches of W times ``s`` (outside: zero)."""
    full, out = _up_frame(h)
    frame = np.zeros((*s.shape[:2], full, full))
    frame[:, :, CT_PAD : CT_PAD + out, CT_PAD : CT_PAD + out] = s
    total = np.zeros((len(s), w.shape[0], h, h))
    for i in range(CT_K):
        for j in range(CT_K):
            picked = frame[:, :, i : i + (h - 1) * CT_STRIDE + 1 : CT_STRIDE]
            picked = picked[:, :, :, j : j + (h - 1) * CT_STRIDE + 1 : CT_STRIDE]
            total += np.einsum("nohw,co->nchw", picked, w[:, :, i, j])
    return total


def test_conv_transpose_and_reduce_max_under_lrp_epsilon_equal_the_numpy_rules(inputs) -> None:
    """ConvTranspose is a weighted layer (R = x W^T-side sum of R / stab(z)); ReduceMax
    gives the relevance of each maximum to its winner."""
    rng = np.random.default_rng(5)
    weights = {
        "wt": rng.standard_normal((C_IN, CT_OUT, CT_K, CT_K)).astype(np.float32) * 0.5,
        "bt": rng.standard_normal(CT_OUT).astype(np.float32) * 0.2,
        "w2": rng.standard_normal((CLASSES, CT_OUT)).astype(np.float32),
        "b2": rng.standard_normal(CLASSES).astype(np.float32) * 0.2,
    }
    model = _up_graph(weights)
    x = inputs[0][:, :, :4, :4]
    eps, targets = 1e-3, [3, 1]
    ours = gradients(model, x, targets, mode=LRP("epsilon", eps), forward="numpy")
    w = {k: v.astype(np.float64) for k, v in weights.items()}
    up = _up(x, w["wt"], w["bt"])
    relu = np.maximum(up, 0)
    flat = relu.reshape(*relu.shape[:2], -1)
    peak = flat.max(axis=2)
    logits = peak @ w["w2"].T + w["b2"]
    r_out = np.zeros_like(logits)
    r_out[[0, 1], targets] = logits[[0, 1], targets]
    r_peak = peak * ((r_out / stabilize(logits, eps)) @ w["w2"])
    winner = np.zeros_like(flat)
    np.put_along_axis(winner, flat.argmax(axis=2)[..., None], 1.0, axis=2)
    r_relu = (winner * (r_peak / stabilize(peak, eps))[..., None] * flat).reshape(relu.shape)
    reference = x * _up_adjoint(r_relu / stabilize(up, eps), w["wt"], x.shape[2])
    assert _relative(ours.grads[model.input_name], reference) <= 1e-12
    # float32 through onnxruntime: the same within float32 rounding
    ours32 = gradients(model, x.astype(np.float32), targets, mode="lrp-epsilon")
    reference32 = gradients(model, x, targets, mode=LRP("epsilon", 1e-6), forward="numpy")
    assert _relative(ours32.grads[model.input_name], reference32.grads[model.input_name]) <= 1e-4


@pytest.mark.parametrize(
    "mode",
    [
        LRP("epsilon", 1e-9),
        LRP("gamma", 1e-9),
        LRP("alphabeta", 1e-9),
        LRP("epsilon", 1e-9, input_rule="zbox", low=-4.0, high=4.0),
    ],
    ids=["epsilon", "gamma", "alphabeta", "zbox"],
)
def test_lrp_conserves_the_score_through_conv_transpose_without_biases(inputs, mode) -> None:
    """Bias-free, non-negative input and head weights: every rule (z^B too) hands the whole
    score through ConvTranspose and ReduceMax to the input."""
    rng = np.random.default_rng(7)
    weights = {
        "wt": rng.standard_normal((C_IN, CT_OUT, CT_K, CT_K)).astype(np.float32),
        "bt": np.zeros(CT_OUT, np.float32),
        "w2": np.abs(rng.standard_normal((CLASSES, CT_OUT))).astype(np.float32),
        "b2": np.zeros(CLASSES, np.float32),
    }
    model = _up_graph(weights)
    x = np.abs(inputs[0][:, :, :4, :4])
    result = gradients(model, x, [1, 2], mode=mode, forward="numpy")
    sums = result.grads[model.input_name].reshape(2, -1).sum(axis=1)
    np.testing.assert_allclose(sums, result.scores, rtol=1e-6)


def _extreme_graph(weights: dict[str, np.ndarray], minimum: bool) -> Model:
    """x -> Conv(3x3) -> channel minimum -> Flatten -> Gemm; with ``minimum`` False the same
    minimum written as -ReduceMax(-conv)."""
    reduce = [
        helper.make_node("ReduceMin", ["conv", "c"], ["low"], "low")
        if minimum
        else helper.make_node("ReduceMax", ["negated", "c"], ["high"], "high"),
    ]
    if not minimum:
        reduce = [
            helper.make_node("Neg", ["conv"], ["negated"], "negate"),
            *reduce,
            helper.make_node("Neg", ["high"], ["low"], "negate_back"),
        ]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["conv"], "conv", pads=[1] * 4),
        *reduce,
        helper.make_node("Flatten", ["low"], ["flat"], "flat"),
        helper.make_node("Gemm", ["flat", "w2", "b2"], ["logits"], "fc", transB=1),
    ]
    consts = {**weights, "c": np.array([1], np.int64)}
    proto = make_graph_model(nodes, consts, ["N", C_IN, SIDE, SIDE], "logits")
    return Model(proto.SerializeToString())


def test_deeplift_through_reduce_min_mirrors_reduce_max_and_sums_to_the_delta(inputs) -> None:
    """min(a) = -max(-a): DeepLIFT's rule at ReduceMin is the max-pool rule mirrored (the
    input's argmin takes min(y, y0) - y0), so both graphs give the same contributions."""
    x, x0 = inputs
    rng = np.random.default_rng(6)
    weights = {
        "w1": rng.standard_normal((C_MID, C_IN, 3, 3)).astype(np.float32) * 0.6,
        "b1": rng.standard_normal(C_MID).astype(np.float32) * 0.2,
        "w2": rng.standard_normal((CLASSES, SIDE * SIDE)).astype(np.float32) * 0.5,
        "b2": rng.standard_normal(CLASSES).astype(np.float32) * 0.2,
    }
    targets = [0, 2]
    results = []
    for minimum in (True, False):
        model = _extreme_graph(weights, minimum)
        result = gradients(model, x, targets, mode=DeepLift(x0), forward="numpy")
        results.append(result.grads[model.input_name])
        delta = result.scores - gradients(model, x0, targets, forward="numpy").scores
        np.testing.assert_allclose(results[-1].reshape(2, -1).sum(axis=1), delta, rtol=1e-10)
    assert _relative(results[0], results[1]) <= 1e-12


# ------------------------------------------------------------------------- errors and modes


def test_an_op_without_a_rule_names_the_op_and_the_node() -> None:
    rng = np.random.default_rng(0)
    weights = {"w": rng.standard_normal((3, 3, 1, 1)).astype(np.float32)}
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["conv"], "conv"),
        helper.make_node("Softmax", ["conv"], ["soft"], "channel_softmax", axis=1),
        helper.make_node("GlobalAveragePool", ["soft"], ["out"], "gap"),
    ]
    model = Model(make_graph_model(nodes, weights, ["N", 3, 4, 4], "out").SerializeToString())
    batch = rng.standard_normal((1, 3, 4, 4)).astype(np.float32)
    for mode in RELEVANCE_MODES:
        with pytest.raises(UnsupportedOpError, match=r"no rule for ONNX op 'Softmax' \(node 'chan"):
            gradients(model, batch, {"out": np.ones((1, 3, 1, 1))}, mode=mode)
    assert gradients(model, batch, {"out": np.ones((1, 3, 1, 1))}).scores.shape == (1,)


def test_a_product_of_two_signals_has_no_relevance_rule() -> None:
    rng = np.random.default_rng(0)
    weights = {"w": rng.standard_normal((3, 3, 1, 1)).astype(np.float32)}
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["conv"], "conv"),
        helper.make_node("Sigmoid", ["conv"], ["gate"], "gate"),
        helper.make_node("Mul", ["conv", "gate"], ["out"], "gating"),
    ]
    model = Model(make_graph_model(nodes, weights, ["N", 3, 4, 4], "out").SerializeToString())
    batch = rng.standard_normal((1, 3, 4, 4)).astype(np.float32)
    with pytest.raises(UnsupportedOpError, match=r"one operand of ONNX op 'Mul' \(node 'gating'"):
        gradients(model, batch, {"out": np.ones((1, 3, 4, 4))}, mode="deeplift")


def test_unknown_modes_and_bad_bounds_are_input_errors(inputs) -> None:
    model = _graph(_weights(1))
    with pytest.raises(InputError, match=r"unknown backward mode 'lrp-zeta'.*lrp-alphabeta"):
        gradients(model, inputs[0], 0, mode="lrp-zeta")
    with pytest.raises(InputError, match="needs the input's bounds"):
        LRP("gamma", input_rule="zbox")
    with pytest.raises(InputError, match="must broadcast to the input"):
        gradients(
            model, inputs[0], 0, mode=LRP(input_rule="zbox", low=np.zeros(5), high=np.ones(5))
        )
    with pytest.raises(InputError, match="baseline has shape"):
        gradients(model, inputs[0], 0, mode=DeepLift(np.zeros((3, 3))))


# ------------------------------------------------------------------------- Captum oracles

SIZE = 12


def _torch_net(torch):
    """Conv-ReLU-AvgPool-Conv-ReLU-mean-Linear, nn modules only (Captum hooks them)."""
    nn = torch.nn

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.conv1, self.relu1 = nn.Conv2d(3, 6, 3, padding=1), nn.ReLU()
            self.pool = nn.AvgPool2d(2)
            self.conv2, self.relu2 = nn.Conv2d(6, 8, 3, padding=1), nn.ReLU()
            self.gap, self.fc = nn.AdaptiveAvgPool2d(1), nn.Linear(8, 4)

        def forward(self, x):
            x = self.pool(self.relu1(self.conv1(x)))
            return self.fc(torch.flatten(self.gap(self.relu2(self.conv2(x))), 1))

    return Net().eval()


@pytest.fixture(scope="module")
def exported():
    """(torch net in float64, the same weights as a cnnviz Model)."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("captum")

    net = _torch_net(torch)
    buffer = io.BytesIO()
    with warnings.catch_warnings():  # the TorchScript exporter: 0.4 s here, dynamo's 9 s
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net, (torch.zeros(2, 3, SIZE, SIZE),), buffer, dynamo=False, input_names=["x"],
            output_names=["logits"], dynamic_axes={"x": {0: "N"}},
        )  # fmt: skip
    return net.double(), Model(buffer.getvalue(), preprocess="rgb01", name="tiny")


@pytest.fixture(scope="module")
def pictures() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    return rng.uniform(0, 1, (2, 3, SIZE, SIZE)), 0.3 * rng.uniform(0, 1, (2, 3, SIZE, SIZE))


TARGETS = [1, 3]


@pytest.mark.torch
@pytest.mark.filterwarnings("ignore::UserWarning")  # Captum's notices about its hooks
@pytest.mark.parametrize("precision", ["float64", "float32"])
def test_deeplift_equals_captum(exported, pictures, precision: str) -> None:
    import torch
    from captum.attr import DeepLift as CaptumDeepLift

    net, model = exported
    x, x0 = pictures
    reference = CaptumDeepLift(net).attribute(
        torch.from_numpy(x), baselines=torch.from_numpy(x0), target=TARGETS
    )
    reference = reference.detach().numpy()
    dtype, forward = (
        (np.float64, "numpy") if precision == "float64" else (np.float32, "onnxruntime")
    )
    result = gradients(
        model, x.astype(dtype), TARGETS, mode=DeepLift(x0.astype(dtype)), forward=forward
    )
    error = _relative(result.grads[model.input_name], reference)
    assert error <= (1e-12 if precision == "float64" else 1e-5), error


def _captum_rule(rule: str, epsilon: float):
    from captum.attr._utils.lrp_rules import Alpha1_Beta0_Rule, EpsilonRule, GammaRule

    if rule == "epsilon":
        return EpsilonRule(epsilon)
    made = GammaRule(0.25) if rule == "gamma" else Alpha1_Beta0_Rule()
    made.STABILITY_FACTOR = epsilon
    return made


@pytest.mark.torch
@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("precision", ["float64", "float32"])
@pytest.mark.parametrize(
    ("rule", "epsilon"), [("epsilon", 0.01), ("gamma", 1e-9), ("alphabeta", 1e-9)]
)
def test_lrp_equals_captum(
    exported, pictures, rule: LRPRule, epsilon: float, precision: str
) -> None:
    """Captum's rule on the Conv and Linear layers, EpsilonRule with the same epsilon on the
    pools (its default for them)."""
    import copy

    import torch
    from captum.attr import LRP as CaptumLRP
    from captum.attr._utils.lrp_rules import EpsilonRule

    net, model = exported
    twin = copy.deepcopy(net)
    for layer in (twin.conv1, twin.conv2, twin.fc):
        layer.rule = _captum_rule(rule, epsilon)
    for layer in (twin.pool, twin.gap):
        layer.rule = EpsilonRule(epsilon)
    x = pictures[0]
    reference = CaptumLRP(twin).attribute(torch.from_numpy(x.copy()), target=TARGETS)
    reference = reference.detach().numpy()
    dtype, forward = (
        (np.float64, "numpy") if precision == "float64" else (np.float32, "onnxruntime")
    )
    mode = LRP(rule, epsilon)
    result = gradients(model, x.astype(dtype), TARGETS, mode=mode, forward=forward)
    error = _relative(result.grads[model.input_name], reference)
    assert error <= (1e-12 if precision == "float64" else 1e-5), error
