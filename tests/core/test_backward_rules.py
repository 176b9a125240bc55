"""Every VJP rule of the backward pass, one-node ONNX graphs per (op, opset rule):
(a) the rule's NumPy forward equals onnxruntime's output in float32,
(b) its VJP equals float64 central finite differences of that forward along random directions,
(c) where torch has the op, its VJP equals torch autograd.
A registered rule without a case here fails :func:`test_every_registered_rule_has_a_case`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from cnnviz_core.backward.registry import make_call, registered_rules, rule_for

F, D, I64, B = TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.INT64, TensorProto.BOOL


class Gen:
    """Seeded input makers: normal, away from 0 (ReLU kinks), positive, distinct (max ties)."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)

    def n(self, *shape: int, scale: float = 1.0) -> np.ndarray:
        return self.rng.standard_normal(shape) * scale

    def away(self, *shape: int) -> np.ndarray:
        return self.rng.choice([-1.0, 1.0], shape) * self.rng.uniform(0.2, 1.5, shape)

    def pos(self, *shape: int) -> np.ndarray:
        return self.rng.uniform(0.5, 2.0, shape)

    def distinct(self, *shape: int) -> np.ndarray:
        size = int(np.prod(shape))
        values = (self.rng.permutation(size) - size / 2) * 0.05
        return (values + self.rng.uniform(0, 0.01, size)).reshape(shape)


def i64(*values: int) -> np.ndarray:
    return np.array(values, np.int64)


def f32(*values: float) -> np.ndarray:
    return np.array(values, np.float32)


@dataclass
class Case:
    op: str
    opset: int
    label: str
    make: Callable[[Gen], list]
    attrs: dict = field(default_factory=dict)
    data: tuple[int, ...] = (0,)
    outputs: tuple[int, ...] = (F,)
    torch: Callable | None = None
    ort: bool = True  # onnxruntime implements this setting

    @property
    def id(self) -> str:
        return f"{self.op}-{self.opset}-{self.label}"

    @property
    def key(self) -> tuple[str, int]:
        rule = rule_for(self.op, self.opset)
        since = [s for op, s in registered_rules() if op == self.op and s <= self.opset]
        assert rule is not None and since, f"no rule for {self.op} at opset {self.opset}"
        return self.op, max(since)


def tf():
    import torch.nn.functional as fn

    return fn


def _torch_pad_conv(x, w, b, pads, stride=1, dilation=1, groups=1):
    top, left, bottom, right = pads
    return tf().conv2d(tf().pad(x, (left, right, top, bottom)), w, b, stride, 0, dilation, groups)


def _resize_torch(mode: str, align: bool | None = None, **kw):
    return lambda x, *_: tf().interpolate(x, mode=mode, align_corners=align, **kw)


def _lrn_torch(size, alpha=1e-4, beta=0.75, bias=1.0):
    return lambda x: tf().local_response_norm(x, size, alpha, beta, bias)


def _gemm_torch(alpha=1.0, beta=1.0, ta=0, tb=0):
    def fn(a, b, c):
        a, b = (a.T if ta else a), (b.T if tb else b)
        return alpha * (a @ b) + beta * c

    return fn


def _softmax_torch(axis: int, coerce: bool, log: bool = False):
    def fn(x):
        v = x.reshape(int(np.prod(x.shape[:axis])), -1) if coerce else x
        f = tf().log_softmax if log else tf().softmax
        return f(v, dim=1 if coerce else axis).reshape(x.shape)

    return fn


def _layer_norm_stats_torch(dims: tuple[int, ...], eps: float):
    """LayerNormalization's three outputs (y, Mean, InvStdDev) in torch."""

    def fn(x, w):
        mean = x.mean(dims, keepdim=True)
        var = ((x - mean) ** 2).mean(dims, keepdim=True)
        inv = (var + eps).rsqrt()
        return [(x - mean) * inv * w, mean, inv]

    return fn


# fmt: off
CASES = [
    # ---------------------------------------------------------------- Conv
    Case("Conv", 13, "pads1", lambda g: [g.n(2, 3, 7, 6), g.n(4, 3, 3, 3), g.n(4)],
         {"pads": [1, 1, 1, 1]},
         torch=lambda x, w, b: _torch_pad_conv(x, w, b, (1, 1, 1, 1))),
    Case("Conv", 13, "stride2-asym", lambda g: [g.n(2, 3, 9, 8), g.n(4, 3, 3, 2), g.n(4)],
         {"pads": [0, 1, 2, 1], "strides": [2, 2]},
         torch=lambda x, w, b: _torch_pad_conv(x, w, b, (0, 1, 2, 1), 2)),
    Case("Conv", 18, "groups2-dil2", lambda g: [g.n(1, 4, 9, 9), g.n(6, 2, 3, 3)],
         {"group": 2, "dilations": [2, 2], "pads": [2, 1, 2, 1]},
         torch=lambda x, w: _torch_pad_conv(x, w, None, (2, 1, 2, 1), 1, 2, 2)),
    Case("Conv", 11, "depthwise-s2", lambda g: [g.n(2, 4, 8, 8), g.n(4, 1, 3, 3), g.n(4)],
         {"group": 4, "strides": [2, 2], "pads": [1, 1, 1, 1]},
         torch=lambda x, w, b: _torch_pad_conv(x, w, b, (1, 1, 1, 1), 2, 1, 4)),
    Case("Conv", 13, "same-upper-s2", lambda g: [g.n(1, 2, 7, 8), g.n(3, 2, 3, 4)],
         {"auto_pad": "SAME_UPPER", "strides": [2, 2]}),
    Case("Conv", 13, "same-lower", lambda g: [g.n(1, 2, 6, 7), g.n(3, 2, 2, 3)],
         {"auto_pad": "SAME_LOWER"}),
    Case("Conv", 13, "valid-s3", lambda g: [g.n(1, 2, 10, 9), g.n(3, 2, 3, 3)],
         {"auto_pad": "VALID", "strides": [3, 2]},
         torch=lambda x, w: tf().conv2d(x, w, None, (3, 2))),
    # ---------------------------------------------------------------- Gemm / MatMul
    Case("Gemm", 13, "alpha-beta", lambda g: [g.n(3, 4), g.n(4, 5), g.n(5)],
         {"alpha": 0.5, "beta": 2.0}, data=(0, 1, 2), torch=_gemm_torch(0.5, 2.0)),
    Case("Gemm", 13, "transA-col-C", lambda g: [g.n(4, 3), g.n(4, 5), g.n(3, 1)],
         {"transA": 1}, data=(0, 1, 2), torch=_gemm_torch(ta=1)),
    Case("Gemm", 11, "transB-full-C", lambda g: [g.n(3, 4), g.n(5, 4), g.n(3, 5)],
         {"transB": 1, "beta": -1.5}, data=(0, 1, 2), torch=_gemm_torch(beta=-1.5, tb=1)),
    Case("Gemm", 9, "both-scalar-C", lambda g: [g.n(4, 3), g.n(5, 4), g.n(1)],
         {"transA": 1, "transB": 1, "alpha": 1.5}, data=(0, 1, 2),
         torch=_gemm_torch(1.5, ta=1, tb=1)),
    Case("MatMul", 13, "batched", lambda g: [g.n(2, 3, 4, 5), g.n(5, 2)], data=(0, 1),
         torch=lambda a, b: a @ b),
    Case("MatMul", 13, "broadcast", lambda g: [g.n(3, 4), g.n(2, 4, 5)], data=(0, 1),
         torch=lambda a, b: a @ b),
    Case("MatMul", 13, "size1-batch", lambda g: [g.n(1, 3, 4), g.n(2, 4, 5)], data=(0, 1),
         torch=lambda a, b: a @ b),
    Case("MatMul", 13, "vec-left", lambda g: [g.n(4), g.n(2, 4, 3)], data=(0, 1),
         torch=lambda a, b: a @ b),
    Case("MatMul", 13, "vec-right", lambda g: [g.n(2, 3, 4), g.n(4)], data=(0, 1),
         torch=lambda a, b: a @ b),
    # ---------------------------------------------------------------- arithmetic
    Case("Add", 14, "broadcast", lambda g: [g.n(2, 3, 4, 5), g.n(3, 1, 5)], data=(0, 1),
         torch=lambda a, b: a + b),
    Case("Sub", 14, "broadcast", lambda g: [g.n(3, 1, 5), g.n(2, 3, 4, 5)], data=(0, 1),
         torch=lambda a, b: a - b),
    Case("Sub", 14, "const-scalar", lambda g: [g.n(2, 3), np.array(0.7)],
         torch=lambda a, b: a - b),
    Case("Mul", 14, "broadcast", lambda g: [g.n(2, 3, 4, 5), g.n(1, 3, 1, 1)], data=(0, 1),
         torch=lambda a, b: a * b),
    Case("Mul", 14, "self-shape", lambda g: [g.n(4, 5), g.n(4, 5)], data=(0, 1),
         torch=lambda a, b: a * b),
    Case("Div", 14, "broadcast", lambda g: [g.n(2, 3, 4), g.away(3, 1)], data=(0, 1),
         torch=lambda a, b: a / b),
    Case("Div", 14, "const-denominator", lambda g: [g.n(2, 3), g.pos(3)],
         torch=lambda a, b: a / b),
    Case("Pow", 15, "const-exponent", lambda g: [g.pos(2, 3, 4), np.array(2.0)],
         torch=lambda a, b: a**b),
    Case("Pow", 15, "cube-root", lambda g: [g.pos(3, 4), np.array(0.75)],
         torch=lambda a, b: a**b),
    Case("Pow", 15, "tensor-exponent", lambda g: [g.pos(2, 3, 4), g.n(3, 1)], data=(0, 1),
         torch=lambda a, b: a**b),
    Case("Sum", 13, "three", lambda g: [g.n(2, 3, 4), g.n(3, 1), g.n(4)], data=(0, 1, 2),
         torch=lambda a, b, c: a + b + c),
    Case("Sum", 13, "one", lambda g: [g.n(2, 3)], torch=lambda a: a * 1),
    Case("Max", 13, "two", lambda g: [g.n(2, 3, 4), g.n(3, 4)], data=(0, 1),
         torch=lambda a, b: torch_mod().maximum(a, b)),
    Case("Max", 13, "three", lambda g: [g.n(3, 4), g.n(4), g.n(3, 1)], data=(0, 1, 2),
         torch=lambda a, b, c: torch_mod().maximum(torch_mod().maximum(a, b), c)),
    Case("Min", 13, "two", lambda g: [g.n(2, 3, 4), g.n(2, 1, 4)], data=(0, 1),
         torch=lambda a, b: torch_mod().minimum(a, b)),
    Case("Neg", 13, "plain", lambda g: [g.n(3, 4)], torch=lambda x: -x),
    Case("Reciprocal", 13, "plain", lambda g: [g.away(3, 4)], torch=lambda x: 1 / x),
    Case("Sqrt", 13, "plain", lambda g: [g.pos(3, 4)], torch=lambda x: x.sqrt()),
    Case("Exp", 13, "plain", lambda g: [g.n(3, 4)], torch=lambda x: x.exp()),
    Case("Log", 13, "plain", lambda g: [g.pos(3, 4)], torch=lambda x: x.log()),
    # ---------------------------------------------------------------- activations
    Case("Relu", 14, "plain", lambda g: [g.away(2, 3, 4, 4)], torch=lambda x: x.relu()),
    Case("LeakyRelu", 16, "default", lambda g: [g.away(2, 3, 4)],
         torch=lambda x: tf().leaky_relu(x, 0.01)),
    Case("LeakyRelu", 6, "alpha0.25", lambda g: [g.away(2, 3, 4)], {"alpha": 0.25},
         torch=lambda x: tf().leaky_relu(x, 0.25)),
    Case("PRelu", 16, "per-channel", lambda g: [g.away(2, 3, 4, 4), g.pos(3, 1, 1) * 0.2],
         data=(0, 1), torch=lambda x, s: torch_mod().where(x > 0, x, s * x)),
    Case("PRelu", 9, "scalar", lambda g: [g.away(2, 3, 4), np.array([0.25])],
         torch=lambda x, s: torch_mod().where(x > 0, x, s * x)),
    Case("Clip", 6, "attrs", lambda g: [g.n(2, 3, 4, scale=2)], {"min": -1.0, "max": 1.5},
         torch=lambda x: x.clamp(-1.0, 1.5)),
    Case("Clip", 6, "min-only", lambda g: [g.away(2, 3, 4)], {"min": 0.0},
         torch=lambda x: x.clamp(min=0.0)),
    Case("Clip", 13, "relu6", lambda g: [g.n(2, 3, 4, scale=4), np.array(0.0), np.array(6.0)],
         torch=lambda x, lo, hi: x.clamp(0.0, 6.0)),
    Case("Clip", 11, "max-only", lambda g: [g.n(2, 3, 4, scale=2), None, np.array(0.5)],
         torch=lambda x, lo, hi: x.clamp(max=0.5)),
    Case("Clip", 12, "no-bounds", lambda g: [g.n(3, 4)], torch=lambda x: x * 1),
    Case("Sigmoid", 13, "plain", lambda g: [g.n(2, 3, 4, scale=2)], torch=lambda x: x.sigmoid()),
    Case("Tanh", 13, "plain", lambda g: [g.n(2, 3, 4, scale=2)], torch=lambda x: x.tanh()),
    Case("HardSigmoid", 6, "default", lambda g: [g.n(2, 3, 4, scale=3)],
         torch=lambda x: (0.2 * x + 0.5).clamp(0, 1)),
    Case("HardSigmoid", 6, "alpha-beta", lambda g: [g.n(2, 3, 4, scale=3)],
         {"alpha": 0.5, "beta": 0.3}, torch=lambda x: (0.5 * x + 0.3).clamp(0, 1)),
    Case("HardSwish", 14, "plain", lambda g: [g.n(2, 3, 4, 4, scale=4)],
         torch=lambda x: tf().hardswish(x)),
    Case("Softmax", 11, "coerce-axis1", lambda g: [g.n(2, 3, 4, 5)], {"axis": 1},
         torch=_softmax_torch(1, True)),
    Case("Softmax", 11, "coerce-axis2", lambda g: [g.n(2, 3, 4, 5)], {"axis": 2},
         torch=_softmax_torch(2, True)),
    Case("Softmax", 13, "axis1", lambda g: [g.n(2, 3, 4, 5)], {"axis": 1},
         torch=_softmax_torch(1, False)),
    Case("Softmax", 13, "default", lambda g: [g.n(2, 5)], torch=_softmax_torch(-1, False)),
    Case("LogSoftmax", 11, "coerce-axis1", lambda g: [g.n(2, 3, 4)], {"axis": 1},
         torch=_softmax_torch(1, True, True)),
    Case("LogSoftmax", 13, "axis1", lambda g: [g.n(2, 3, 4)], {"axis": 1},
         torch=_softmax_torch(1, False, True)),
    Case("LogSoftmax", 13, "default", lambda g: [g.n(3, 6)], torch=_softmax_torch(-1, False, True)),
    # ---------------------------------------------------------------- pooling and normalisation
    Case("MaxPool", 12, "k2s2", lambda g: [g.distinct(2, 3, 6, 6)],
         {"kernel_shape": [2, 2], "strides": [2, 2]},
         torch=lambda x: tf().max_pool2d(x, 2, 2)),
    Case("MaxPool", 12, "k3s2-pad1-ceil", lambda g: [g.distinct(1, 2, 8, 7)],
         {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1], "ceil_mode": 1},
         torch=lambda x: tf().max_pool2d(x, 3, 2, 1, ceil_mode=True)),
    # disjoint windows whose last one (ceil mode) reaches past the input: MaxUnpool's least
    # output (8x8) exceeds the input (7x7), so the unpooling scatters instead
    Case("MaxPool", 12, "k2s2-ceil", lambda g: [g.distinct(1, 2, 7, 7)],
         {"kernel_shape": [2, 2], "strides": [2, 2], "ceil_mode": 1},
         torch=lambda x: tf().max_pool2d(x, 2, 2, ceil_mode=True)),
    Case("MaxPool", 12, "dilation2", lambda g: [g.distinct(1, 2, 7, 7)],
         {"kernel_shape": [2, 2], "dilations": [2, 2]},
         torch=lambda x: tf().max_pool2d(x, 2, 1, 0, 2)),
    Case("MaxPool", 12, "asym-pads", lambda g: [g.distinct(1, 2, 5, 6)],
         {"kernel_shape": [3, 2], "strides": [2, 1], "pads": [0, 1, 1, 0]}),
    Case("MaxPool", 12, "indices", lambda g: [g.distinct(2, 2, 5, 5)],
         {"kernel_shape": [2, 2], "strides": [2, 2], "pads": [0, 0, 1, 1]}, outputs=(F, I64)),
    Case("MaxPool", 12, "indices-colmajor", lambda g: [g.distinct(2, 2, 4, 5)],
         {"kernel_shape": [3, 3], "storage_order": 1}, outputs=(F, I64)),
    Case("AveragePool", 19, "k3s2-pad1-exclude", lambda g: [g.n(2, 3, 7, 7)],
         {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]},
         torch=lambda x: tf().avg_pool2d(x, 3, 2, 1, count_include_pad=False)),
    Case("AveragePool", 19, "k3s2-pad1-include", lambda g: [g.n(2, 3, 7, 7)],
         {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1],
          "count_include_pad": 1},
         torch=lambda x: tf().avg_pool2d(x, 3, 2, 1, count_include_pad=True)),
    Case("AveragePool", 19, "ceil-include", lambda g: [g.n(1, 2, 8, 8)],
         {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1], "ceil_mode": 1,
          "count_include_pad": 1},
         torch=lambda x: tf().avg_pool2d(x, 3, 2, 1, ceil_mode=True, count_include_pad=True)),
    Case("AveragePool", 19, "ceil-exclude", lambda g: [g.n(1, 2, 8, 9)],
         {"kernel_shape": [2, 2], "strides": [2, 2], "ceil_mode": 1},
         torch=lambda x: tf().avg_pool2d(x, 2, 2, ceil_mode=True)),
    Case("AveragePool", 19, "asym-dilated", lambda g: [g.n(1, 2, 7, 8)],
         {"kernel_shape": [2, 3], "pads": [1, 0, 0, 2], "dilations": [2, 1]}),
    Case("AveragePool", 19, "3d-lrn-like", lambda g: [g.n(2, 1, 6, 3, 3)],
         {"kernel_shape": [3, 1, 1], "pads": [1, 0, 0, 1, 0, 0], "count_include_pad": 1},
         torch=lambda x: tf().avg_pool3d(x, (3, 1, 1), 1, (1, 0, 0), count_include_pad=True)),
    Case("AveragePool", 19, "1d-ceil", lambda g: [g.n(2, 3, 9)],
         {"kernel_shape": [2], "strides": [2], "ceil_mode": 1},
         torch=lambda x: tf().avg_pool1d(x, 2, 2, ceil_mode=True)),
    Case("AveragePool", 11, "same-upper", lambda g: [g.n(1, 2, 7, 7)],
         {"kernel_shape": [3, 3], "strides": [2, 2], "auto_pad": "SAME_UPPER"}),
    Case("GlobalAveragePool", 13, "plain", lambda g: [g.n(2, 3, 4, 5)],
         torch=lambda x: x.mean((2, 3), keepdim=True)),
    Case("GlobalMaxPool", 13, "plain", lambda g: [g.distinct(2, 3, 4, 5)],
         torch=lambda x: x.amax((2, 3), keepdim=True)),
    Case("BatchNormalization", 9, "inference",
         lambda g: [g.n(2, 3, 4, 4), g.n(3), g.n(3), g.n(3), g.pos(3)], {"epsilon": 1e-3},
         torch=lambda x, s, b, m, v: tf().batch_norm(x, m, v, s, b, False, 0.1, 1e-3)),
    Case("BatchNormalization", 15, "inference",
         lambda g: [g.n(2, 3, 5), g.n(3), g.n(3), g.n(3), g.pos(3)],
         torch=lambda x, s, b, m, v: tf().batch_norm(x, m, v, s, b, False, 0.1, 1e-5)),
    Case("LRN", 13, "size3", lambda g: [g.n(2, 6, 3, 3)], {"size": 3},
         torch=_lrn_torch(3)),
    Case("LRN", 13, "size5-strong", lambda g: [g.n(2, 7, 3, 2, scale=2)],
         {"size": 5, "alpha": 0.125, "beta": 0.75, "bias": 2.0},
         torch=_lrn_torch(5, 0.125, 0.75, 2.0)),
    Case("LRN", 13, "size4-even", lambda g: [g.n(1, 6, 2, 3, scale=2)],
         {"size": 4, "alpha": 0.2, "beta": 0.6, "bias": 1.5}, ort=False),
    # ---------------------------------------------------------------- pass-through
    Case("Dropout", 7, "ratio-attr", lambda g: [g.n(2, 3)], {"ratio": 0.3},
         torch=lambda x: x * 1),
    Case("Dropout", 13, "mask-output", lambda g: [g.n(2, 3, 4)], outputs=(F, B),
         torch=lambda x: x * 1),
    Case("Identity", 16, "plain", lambda g: [g.n(2, 3)], torch=lambda x: x * 1),
    Case("Cast", 13, "to-double", lambda g: [g.n(2, 3)], {"to": D}, outputs=(D,),
         torch=lambda x: x * 1),
    Case("Cast", 13, "to-float", lambda g: [g.n(2, 3)], {"to": F}, torch=lambda x: x * 1),
    # ---------------------------------------------------------------- shapes
    Case("Flatten", 13, "axis1", lambda g: [g.n(2, 3, 4, 5)], torch=lambda x: x.flatten(1)),
    Case("Flatten", 13, "axis2", lambda g: [g.n(2, 3, 4, 5)], {"axis": 2},
         torch=lambda x: x.reshape(6, 20)),
    Case("Flatten", 13, "axis0", lambda g: [g.n(2, 3, 4)], {"axis": 0},
         torch=lambda x: x.reshape(1, -1)),
    Case("Reshape", 13, "zero-minus1", lambda g: [g.n(2, 3, 4, 5), i64(0, -1, 5)],
         torch=lambda x, s: x.reshape(2, -1, 5)),
    Case("Reshape", 19, "allowzero", lambda g: [g.n(2, 3, 4), i64(4, -1)], {"allowzero": 1},
         torch=lambda x, s: x.reshape(4, -1)),
    Case("Transpose", 13, "nhwc", lambda g: [g.n(2, 3, 4, 5)], {"perm": [0, 2, 3, 1]},
         torch=lambda x: x.permute(0, 2, 3, 1)),
    Case("Transpose", 13, "default", lambda g: [g.n(2, 3, 4)], torch=lambda x: x.permute(2, 1, 0)),
    Case("Squeeze", 11, "axes-attr", lambda g: [g.n(2, 1, 3, 1)], {"axes": [1, -1]},
         torch=lambda x: x.reshape(2, 3)),
    Case("Squeeze", 11, "all", lambda g: [g.n(1, 3, 1, 4)], torch=lambda x: x.reshape(3, 4)),
    Case("Squeeze", 13, "axes-input", lambda g: [g.n(2, 3, 1, 1), i64(-1, 2)],
         torch=lambda x, a: x.reshape(2, 3)),
    Case("Unsqueeze", 11, "axes-attr", lambda g: [g.n(2, 3)], {"axes": [0, 3]},
         torch=lambda x: x.reshape(1, 2, 3, 1)),
    Case("Unsqueeze", 13, "axes-input", lambda g: [g.n(2, 3), i64(1, -1)],
         torch=lambda x, a: x.reshape(2, 1, 3, 1)),
    Case("Concat", 13, "axis1-three", lambda g: [g.n(2, 1, 3), g.n(2, 4, 3), g.n(2, 2, 3)],
         {"axis": 1}, data=(0, 1, 2), torch=lambda a, b, c: torch_mod().cat([a, b, c], 1)),
    Case("Concat", 11, "axis-neg", lambda g: [g.n(2, 3), g.n(2, 2)], {"axis": -1},
         data=(0, 1), torch=lambda a, b: torch_mod().cat([a, b], -1)),
    Case("Split", 11, "split-attr", lambda g: [g.n(2, 3, 4)], {"axis": 1, "split": [1, 2]},
         outputs=(F, F), torch=lambda x: list(x.split([1, 2], 1))),
    Case("Split", 11, "equal", lambda g: [g.n(6, 2)], outputs=(F, F, F),
         torch=lambda x: list(x.split(2, 0))),
    Case("Split", 13, "split-input", lambda g: [g.n(2, 4, 3), i64(2, 1, 1)], {"axis": 1},
         outputs=(F, F, F), torch=lambda x, s: list(x.split([2, 1, 1], 1))),
    Case("Split", 18, "num-outputs", lambda g: [g.n(2, 7)], {"axis": -1, "num_outputs": 3},
         outputs=(F, F, F), torch=lambda x: list(x.split(3, 1))),
    Case("Slice", 9, "attrs", lambda g: [g.n(3, 5, 4)],
         {"starts": [1, -3], "ends": [100, -1], "axes": [0, 1]},
         torch=lambda x: x[1:, -3:-1]),
    Case("Slice", 9, "no-axes", lambda g: [g.n(4, 5)], {"starts": [1, 0], "ends": [3, 4]},
         torch=lambda x: x[1:3, 0:4]),
    Case("Slice", 13, "steps", lambda g: [g.n(3, 6, 5), i64(0, 1), i64(6, 10**9), i64(1, 2),
                                          i64(2, 1)],
         torch=lambda x, *_: x[:, 0:6:2, 1:]),
    Case("Slice", 13, "negative-steps",
         lambda g: [g.n(4, 7), i64(-1, 5), i64(-(2**63), 0), i64(1, 0), i64(-1, -2)],
         torch=lambda x, *_: x[[3, 1]].flip(1)),
    Case("Slice", 10, "no-steps", lambda g: [g.n(4, 5), i64(1), i64(-1)],
         torch=lambda x, *_: x[1:-1]),
    Case("Pad", 10, "constant-value", lambda g: [g.n(1, 2, 3, 4)],
         {"pads": [0, 0, 1, 2, 0, 0, 2, 1], "value": 1.5},
         torch=lambda x: tf().pad(x, (2, 1, 1, 2), value=1.5)),
    Case("Pad", 10, "reflect", lambda g: [g.n(1, 2, 4, 5)],
         {"pads": [0, 0, 2, 1, 0, 0, 1, 3], "mode": "reflect"},
         torch=lambda x: tf().pad(x, (1, 3, 2, 1), mode="reflect")),
    Case("Pad", 10, "edge", lambda g: [g.n(1, 2, 3, 4)],
         {"pads": [0, 0, 2, 1, 0, 0, 1, 3], "mode": "edge"},
         torch=lambda x: tf().pad(x, (1, 3, 2, 1), mode="replicate")),
    Case("Pad", 13, "constant-input",
         lambda g: [g.n(1, 2, 3, 4), i64(0, 0, 1, 0, 0, 1, 0, 2), f32(-0.5)],
         torch=lambda x, *_: tf().pad(x, (0, 2, 1, 0, 0, 1), value=-0.5)),
    Case("Pad", 13, "reflect-input", lambda g: [g.n(1, 2, 4, 4), i64(0, 0, 1, 2, 0, 0, 3, 1)],
         {"mode": "reflect"},
         torch=lambda x, *_: tf().pad(x, (2, 1, 1, 3), mode="reflect")),
    Case("Pad", 13, "edge-input", lambda g: [g.n(2, 5), i64(2, 1, 0, 3)], {"mode": "edge"}),
    Case("Pad", 13, "crop", lambda g: [g.n(1, 2, 5, 5), i64(0, 0, -1, 2, 0, 0, 1, -2)],
         torch=lambda x, *_: tf().pad(x, (2, -2, -1, 1))),
    Case("Pad", 18, "axes", lambda g: [g.n(1, 2, 4, 5), i64(1, 2, 3, 0), None, i64(2, -1)],
         {"mode": "reflect"},
         torch=lambda x, *_: tf().pad(x, (2, 0, 1, 3), mode="reflect")),
    Case("Pad", 19, "wrap", lambda g: [g.n(1, 2, 4, 5), i64(0, 0, 1, 2, 0, 0, 2, 1)],
         {"mode": "wrap"}, torch=lambda x, *_: tf().pad(x, (2, 1, 1, 2), mode="circular")),
    Case("Gather", 13, "rows-repeated", lambda g: [g.n(4, 3), i64(2, 0, 2)],
         torch=lambda x, i: x[i]),
    Case("Gather", 13, "axis1-2d-negative",
         lambda g: [g.n(2, 5, 3), np.array([[1, -1], [0, 1]])],
         {"axis": 1}, torch=lambda x, i: x[:, i % 5]),
    Case("Gather", 13, "scalar-channel", lambda g: [g.n(2, 3, 4, 4), np.array(1, np.int64)],
         {"axis": 1}, torch=lambda x, i: x[:, 1]),
    # ---------------------------------------------------------------- reductions
    Case("ReduceMean", 13, "axes-attr", lambda g: [g.n(2, 3, 4, 5)],
         {"axes": [2, 3], "keepdims": 0}, torch=lambda x: x.mean((2, 3))),
    Case("ReduceMean", 13, "all", lambda g: [g.n(2, 3, 4)],
         torch=lambda x: x.mean().reshape(1, 1, 1)),
    Case("ReduceMean", 18, "axes-input", lambda g: [g.n(2, 3, 4, 5), i64(-1, 1)],
         torch=lambda x, a: x.mean((1, 3), keepdim=True)),
    Case("ReduceSum", 11, "axes-attr", lambda g: [g.n(2, 3, 4)], {"axes": [0], "keepdims": 0},
         torch=lambda x: x.sum(0)),
    Case("ReduceSum", 13, "axes-input", lambda g: [g.n(2, 3, 4), i64(1)],
         torch=lambda x, a: x.sum(1, keepdim=True)),
    Case("ReduceSum", 13, "noop-empty", lambda g: [g.n(2, 3), None],
         {"noop_with_empty_axes": 1}, torch=lambda x, a: x * 1),
    # ---------------------------------------------------------------- resizing
    Case("Upsample", 7, "nearest", lambda g: [g.n(1, 2, 3, 4)], {"scales": [1.0, 1.0, 2.0, 3.0]},
         torch=_resize_torch("nearest", scale_factor=(2, 3))),
    Case("Upsample", 7, "linear", lambda g: [g.n(1, 2, 3, 4)],
         {"scales": [1.0, 1.0, 2.0, 2.0], "mode": "linear"}),
    Case("Upsample", 9, "nearest", lambda g: [g.n(1, 2, 3, 3), f32(1, 1, 2, 2)],
         torch=_resize_torch("nearest", scale_factor=2)),
    Case("Upsample", 9, "linear", lambda g: [g.n(1, 2, 3, 3), f32(1, 1, 2, 1.5)],
         {"mode": "linear"}),
    Case("Resize", 10, "nearest-up", lambda g: [g.n(1, 2, 3, 4), f32(1, 1, 2, 2)],
         torch=_resize_torch("nearest", scale_factor=2)),
    Case("Resize", 10, "nearest-down", lambda g: [g.n(1, 2, 6, 7), f32(1, 1, 0.5, 0.5)]),
    Case("Resize", 10, "linear-up", lambda g: [g.n(1, 2, 3, 4), f32(1, 1, 2, 2)],
         {"mode": "linear"}),
    Case("Resize", 13, "nearest-half-pixel",
         lambda g: [g.n(1, 2, 3, 4), None, f32(1, 1, 2, 2)],
         {"mode": "nearest"}),
    Case("Resize", 13, "nearest-asymmetric-floor",
         lambda g: [g.n(1, 2, 3, 4), None, f32(1, 1, 2, 3)],
         {"coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"},
         torch=_resize_torch("nearest", scale_factor=(2, 3))),
    Case("Resize", 13, "nearest-ceil-sizes",
         lambda g: [g.n(1, 2, 4, 5), None, None, i64(1, 2, 7, 3)],
         {"coordinate_transformation_mode": "asymmetric", "nearest_mode": "ceil"}),
    Case("Resize", 13, "nearest-prefer-ceil",
         lambda g: [g.n(1, 2, 5, 4), None, f32(1, 1, 0.6, 1.5)],
         {"nearest_mode": "round_prefer_ceil"}),
    Case("Resize", 13, "nearest-tf-half-pixel",
         lambda g: [g.n(1, 2, 3, 4), None, f32(1, 1, 2, 2)],
         {"coordinate_transformation_mode": "tf_half_pixel_for_nearest"}, ort=False),
    Case("Resize", 13, "linear-half-pixel", lambda g: [g.n(1, 2, 3, 4), None, f32(1, 1, 2, 2)],
         {"mode": "linear"}, torch=_resize_torch("bilinear", False, scale_factor=2)),
    Case("Resize", 11, "linear-align-corners",
         lambda g: [g.n(1, 2, 3, 4), f32(), f32(1, 1, 2, 2)],
         {"mode": "linear", "coordinate_transformation_mode": "align_corners"},
         torch=_resize_torch("bilinear", True, scale_factor=2)),
    Case("Resize", 13, "linear-pytorch-sizes",
         lambda g: [g.n(1, 2, 4, 5), None, None, i64(1, 2, 7, 3)],
         {"mode": "linear", "coordinate_transformation_mode": "pytorch_half_pixel"},
         torch=_resize_torch("bilinear", False, size=(7, 3))),
    Case("Resize", 13, "linear-down", lambda g: [g.n(1, 2, 6, 8), None, f32(1, 1, 0.5, 0.5)],
         {"mode": "linear"}, torch=_resize_torch("bilinear", False, scale_factor=0.5)),
    Case("Resize", 13, "cubic", lambda g: [g.n(1, 2, 4, 4), None, f32(1, 1, 2, 2)],
         {"mode": "cubic"}),
    Case("Resize", 13, "cubic-exclude", lambda g: [g.n(1, 2, 4, 5), None, f32(1, 1, 2, 1.5)],
         {"mode": "cubic", "exclude_outside": 1, "cubic_coeff_a": -0.5}),
    Case("Resize", 18, "axes-not-larger", lambda g: [g.n(1, 2, 4, 6), None, None, i64(8, 9)],
         {"mode": "linear", "axes": [2, 3], "keep_aspect_ratio_policy": "not_larger"}),
    Case("Resize", 18, "axes-scales", lambda g: [g.n(1, 2, 3, 4), None, f32(2, 2)],
         {"mode": "nearest", "axes": [-2, -1]}),
    Case("Resize", 19, "half-pixel-symmetric",
         lambda g: [g.n(1, 2, 3, 4), None, f32(1, 1, 2, 1.5)],
         {"mode": "linear", "coordinate_transformation_mode": "half_pixel_symmetric"}),
    # ---------------------------------------------------------------- QDQ (forward only here:
    # the straight-through backward is checked in test_quantized.py)
    Case("QuantizeLinear", 19, "per-channel",
         lambda g: [g.n(2, 3, 4, scale=3.0), f32(0.02, 0.05, 0.1), np.array([0, -5, 7], np.int8)],
         {"axis": 1}, data=(), outputs=(TensorProto.INT8,)),
    Case("DequantizeLinear", 19, "per-channel",
         lambda g: [g.rng.integers(-128, 128, (2, 3, 4)).astype(np.int8), f32(0.02, 0.05, 0.1),
                    np.array([0, -5, 7], np.int8)],
         {"axis": 1}, data=()),
    # ---------------------------------------------------------------- modern CNN ops
    Case("LayerNormalization", 17, "last-axis", lambda g: [g.n(2, 3, 4, 5), g.n(5), g.n(5)],
         data=(0, 1, 2), torch=lambda x, w, b: tf().layer_norm(x, (5,), w, b, 1e-5)),
    Case("LayerNormalization", 17, "axis2-stats", lambda g: [g.n(2, 3, 4, 5), g.n(4, 5)],
         {"axis": 2, "epsilon": 2**-10}, data=(0, 1), outputs=(F, F, F),
         torch=_layer_norm_stats_torch((2, 3), 2**-10)),
    Case("LayerNormalization", 18, "axis-neg3-no-bias", lambda g: [g.n(2, 3, 4, 2), g.n(3, 4, 2)],
         {"axis": -3}, torch=lambda x, w: tf().layer_norm(x, (3, 4, 2), w, None, 1e-5)),
    Case("GroupNormalization", 18, "scale-per-group",
         lambda g: [g.n(2, 6, 3, 3), g.n(3), g.n(3)], {"num_groups": 3}, data=(0, 1, 2),
         torch=lambda x, s, b: tf().group_norm(
             x, 3, s.repeat_interleave(2), b.repeat_interleave(2), 1e-5)),
    Case("GroupNormalization", 21, "scale-per-channel",
         lambda g: [g.n(2, 6, 4, 2), g.n(6), g.n(6)], {"num_groups": 2, "epsilon": 2**-10},
         data=(0, 1, 2), torch=lambda x, s, b: tf().group_norm(x, 2, s, b, 2**-10)),
    Case("InstanceNormalization", 13, "plain", lambda g: [g.n(2, 3, 4, 5), g.n(3), g.n(3)],
         data=(0, 1, 2), torch=lambda x, s, b: tf().instance_norm(x, weight=s, bias=b)),
    Case("Erf", 13, "plain", lambda g: [g.n(2, 3, 4, scale=1.5)],
         torch=lambda x: torch_mod().erf(x)),
    Case("Gelu", 20, "exact", lambda g: [g.n(2, 3, 4, scale=2)], torch=lambda x: tf().gelu(x)),
    Case("Gelu", 20, "tanh", lambda g: [g.n(2, 3, 4, scale=2)], {"approximate": "tanh"},
         torch=lambda x: tf().gelu(x, approximate="tanh")),
    Case("Softplus", 13, "plain", lambda g: [g.n(2, 3, 4, scale=3)],
         torch=lambda x: tf().softplus(x)),
    Case("Mish", 18, "plain", lambda g: [g.n(2, 3, 4, scale=3)], torch=lambda x: tf().mish(x)),
    Case("GatherND", 13, "pairs-repeated", lambda g: [g.n(2, 3, 4), i64(0, 1, 1, 2, 0, 1)
                                                      .reshape(3, 2)],
         torch=lambda x, i: x[i[:, 0], i[:, 1]]),
    Case("GatherND", 12, "full-negative", lambda g: [g.n(3, 4), i64(-1, 0, 1, -2).reshape(2, 2)],
         torch=lambda x, i: x[i[:, 0] % 3, i[:, 1] % 4]),
    Case("GatherND", 13, "batch-dims1", lambda g: [g.n(2, 3, 4), i64(2, 0, 1, 1).reshape(2, 2, 1)],
         {"batch_dims": 1},
         torch=lambda x, i: torch_mod().stack([x[b, i[b, :, 0]] for b in range(2)])),
    Case("ScatterND", 13, "rows", lambda g: [g.n(4, 3), i64(1, 3).reshape(2, 1), g.n(2, 3)],
         data=(0, 2), torch=lambda x, i, u: x.index_put((i[:, 0],), u)),
    Case("ScatterND", 16, "add-repeated",
         lambda g: [g.n(3, 4), i64(0, 1, 0, 1, 2, 3).reshape(3, 2), g.n(3)],
         {"reduction": "add"}, data=(0, 2),
         torch=lambda x, i, u: x.index_put((i[:, 0], i[:, 1]), u, accumulate=True)),
    Case("Where", 16, "broadcast", lambda g: [g.rng.random((3, 4)) > 0.5, g.n(2, 3, 4),
                                              g.n(3, 1)],
         data=(1, 2), torch=lambda c, a, b: torch_mod().where(c, a, b)),
    Case("Expand", 13, "grow", lambda g: [g.n(3, 1), i64(2, 1, 4)],
         torch=lambda x, s: x.expand(2, 3, 4)),
    Case("Expand", 13, "both-ways", lambda g: [g.n(2, 1, 4), i64(3, 1)],
         torch=lambda x, s: x.expand(2, 3, 4)),
    Case("Tile", 13, "plain", lambda g: [g.n(2, 3, 1), i64(2, 1, 3)],
         torch=lambda x, r: x.repeat(2, 1, 3)),
    Case("Einsum", 12, "attention-scores", lambda g: [g.n(2, 2, 3, 4), g.n(2, 2, 5, 4)],
         {"equation": "bhid,bhjd->bhij"}, data=(0, 1),
         torch=lambda a, b: torch_mod().einsum("bhid,bhjd->bhij", a, b)),
    Case("Einsum", 12, "ellipsis-matmul", lambda g: [g.n(2, 3, 4), g.n(4, 5)],
         {"equation": "...ij, jk -> ...ik"}, data=(0, 1),
         torch=lambda a, b: torch_mod().einsum("...ij,jk->...ik", a, b)),
    Case("Einsum", 12, "implicit-summed", lambda g: [g.n(2, 3, 4), g.n(4, 5)],
         {"equation": "bij,jk"}, data=(0, 1),
         torch=lambda a, b: torch_mod().einsum("bij,jk", a, b)),
    Case("Einsum", 12, "reduce", lambda g: [g.n(2, 3, 4)], {"equation": "bij->bj"},
         torch=lambda a: a.sum(1)),
    Case("Equal", 13, "broadcast", lambda g: [g.rng.integers(0, 3, (2, 3)).astype(float),
                                              np.array([1.0, 0.0, 2.0])],
         data=(), outputs=(B,)),
    Case("Greater", 13, "broadcast", lambda g: [g.n(2, 3), g.n(3)], data=(), outputs=(B,)),
    Case("Less", 13, "broadcast", lambda g: [g.n(2, 3), g.n(2, 1)], data=(), outputs=(B,)),
    Case("GreaterOrEqual", 16, "plain", lambda g: [g.n(2, 3), np.array(0.0)], data=(),
         outputs=(B,)),
    Case("LessOrEqual", 16, "plain", lambda g: [g.n(2, 3), np.array(0.0)], data=(),
         outputs=(B,)),
    Case("Not", 1, "plain", lambda g: [g.rng.random((2, 3)) > 0.5], data=(), outputs=(B,)),
    Case("And", 7, "broadcast", lambda g: [g.rng.random((2, 3)) > 0.5, g.rng.random(3) > 0.5],
         data=(), outputs=(B,)),
    Case("Or", 7, "broadcast", lambda g: [g.rng.random((2, 3)) > 0.5, g.rng.random(3) > 0.5],
         data=(), outputs=(B,)),
    # ---------------------------------------------------------------- found by conformance
    Case("ReduceMax", 13, "channels-keep", lambda g: [g.distinct(2, 3, 4, 5)],
         {"axes": [1], "keepdims": 1}, torch=lambda x: x.amax(1, keepdim=True)),
    Case("ReduceMax", 18, "axes-input-drop", lambda g: [g.distinct(2, 3, 4, 5), i64(2, 3)],
         {"keepdims": 0}, torch=lambda x, a: x.amax((2, 3))),
    Case("ReduceMin", 13, "all", lambda g: [g.distinct(2, 3, 4)], {"keepdims": 0},
         torch=lambda x: x.amin()),
    Case("ReduceMin", 18, "axes-input", lambda g: [g.distinct(2, 3, 4), i64(-1)],
         torch=lambda x, a: x.amin(-1, keepdim=True)),
    Case("DepthToSpace", 13, "dcr", lambda g: [g.n(2, 8, 3, 2)], {"blocksize": 2},
         torch=lambda x: x.reshape(2, 2, 2, 2, 3, 2).permute(0, 3, 4, 1, 5, 2).reshape(2, 2, 6, 4)),
    Case("DepthToSpace", 13, "crd-pixelshuffle", lambda g: [g.n(2, 8, 3, 2)],
         {"blocksize": 2, "mode": "CRD"}, torch=lambda x: tf().pixel_shuffle(x, 2)),
    Case("SpaceToDepth", 13, "b2", lambda g: [g.n(2, 3, 4, 6)], {"blocksize": 2},
         torch=lambda x: tf().pixel_unshuffle(x, 2).reshape(2, 3, 2, 2, 2, 3)
         .permute(0, 2, 3, 1, 4, 5).reshape(2, 12, 2, 3)),
    Case("ConvTranspose", 13, "s2-pad1-outpad1",
         lambda g: [g.n(2, 4, 5, 4), g.n(4, 3, 3, 3), g.n(3)],
         {"strides": [2, 2], "pads": [1, 1, 1, 1], "output_padding": [1, 1]},
         torch=lambda x, w, b: tf().conv_transpose2d(x, w, b, 2, 1, 1)),
    Case("ConvTranspose", 13, "groups2-dil2", lambda g: [g.n(1, 4, 4, 5), g.n(4, 2, 2, 3)],
         {"group": 2, "dilations": [2, 2]},
         torch=lambda x, w: tf().conv_transpose2d(x, w, None, 1, 0, 0, 2, 2)),
    Case("ConvTranspose", 13, "k2s2-unet",
         lambda g: [g.n(2, 3, 4, 4), g.n(3, 5, 2, 2), g.n(5)],
         {"strides": [2, 2]}, torch=lambda x, w, b: tf().conv_transpose2d(x, w, b, 2)),
]
# fmt: on


def torch_mod():
    import torch

    return torch


def _node(case: Case) -> onnx.NodeProto:
    n = len(case.make(Gen(0)))
    inputs = [f"in{i}" for i in range(n)]
    outputs = [f"out{i}" for i in range(len(case.outputs))]
    return helper.make_node(case.op, inputs, outputs, name=f"{case.op.lower()}_node", **case.attrs)


def _inputs(case: Case, seed: int = 0) -> list:
    return case.make(Gen(seed))


def _node_for(case: Case, values: list) -> onnx.NodeProto:
    node = _node(case)
    names = [f"in{i}" if v is not None else "" for i, v in enumerate(values)]
    while names and not names[-1]:
        names.pop()
    del node.input[:]
    node.input.extend(names)
    return node


def _call(case: Case, values: list, mode: str = "gradient"):
    call = make_call(_node_for(case, values), values, mode=mode, opset=case.opset)
    call.needs = [i in case.data and v is not None for i, v in enumerate(values)]
    return call


def _as32(values: list) -> list:
    return [
        v.astype(np.float32) if isinstance(v, np.ndarray) and v.dtype.kind == "f" else v
        for v in values
    ]


def _onnx_model(case: Case, values: list) -> onnx.ModelProto:
    node = _node_for(case, values)
    graph_inputs, inits = [], []
    for i, v in enumerate(values):
        if v is None:
            continue
        if i in case.data:
            graph_inputs.append(helper.make_tensor_value_info(f"in{i}", F, v.shape))
        else:
            inits.append(numpy_helper.from_array(v, f"in{i}"))
    outputs = [
        helper.make_tensor_value_info(f"out{i}", t, None) for i, t in enumerate(case.outputs)
    ]
    graph = helper.make_graph([node], "one_node", graph_inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", case.opset)])
    model.ir_version = 10
    return model


def _by_key(cases: list[Case]) -> set[tuple[str, int]]:
    return {c.key for c in cases}


def test_every_registered_rule_has_a_case():
    missing = set(registered_rules()) - _by_key(CASES)
    assert not missing, f"registered rules without a test case: {sorted(missing)}"


@pytest.mark.parametrize("case", [c for c in CASES if c.ort], ids=lambda c: c.id)
def test_forward_matches_onnxruntime(case: Case):
    values = _as32(_inputs(case))
    model = _onnx_model(case, values)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = {f"in{i}": values[i] for i in case.data}
    expected = session.run(None, feeds)
    got = rule_for(case.op, case.opset).forward(_call(case, values))
    assert len(got) == len(expected)
    for ours, theirs in zip(got, expected):
        assert np.shape(ours) == theirs.shape
        if theirs.dtype.kind == "f":
            np.testing.assert_allclose(ours, theirs, rtol=2e-5, atol=2e-6)
        else:
            np.testing.assert_array_equal(ours, theirs)


def _objective(case: Case, values: list, weights: list) -> float:
    outs = rule_for(case.op, case.opset).forward(_call(case, values))
    return sum(float(np.sum(o * w)) for o, w in zip(outs, weights) if w is not None)


def _vjp(case: Case, values: list, seed: int = 1, mode: str = "gradient"):
    rule = rule_for(case.op, case.opset)
    call = _call(case, values, mode)
    outs = rule.forward(call)
    rng = np.random.default_rng(seed)
    weights = [
        rng.standard_normal(np.shape(o)) if np.asarray(o).dtype.kind == "f" else None for o in outs
    ]
    call.outputs = outs
    grads = rule.vjp(call, weights)
    assert len(grads) == len(values), "one cotangent (or None) per input"
    return weights, grads


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_vjp_matches_finite_differences(case: Case):
    values = _inputs(case)
    weights, grads = _vjp(case, values)
    for i in case.data:
        assert grads[i] is not None and grads[i].shape == np.shape(values[i])
        assert grads[i].dtype == np.float64
    rng = np.random.default_rng(2)
    eps = 1e-6
    for _ in range(3):
        direction = {i: rng.standard_normal(np.shape(values[i])) for i in case.data}
        plus = [v + eps * direction[i] if i in direction else v for i, v in enumerate(values)]
        minus = [v - eps * direction[i] if i in direction else v for i, v in enumerate(values)]
        numeric = (_objective(case, plus, weights) - _objective(case, minus, weights)) / (2 * eps)
        analytic = sum(float(np.sum(grads[i] * d)) for i, d in direction.items())
        scale = 1 + abs(_objective(case, values, weights))
        assert abs(numeric - analytic) <= 1e-6 * abs(analytic) + 1e-7 * scale, (numeric, analytic)


TORCH_CASES = [c for c in CASES if c.torch is not None]


@pytest.mark.torch
@pytest.mark.parametrize("case", TORCH_CASES, ids=lambda c: c.id)
def test_vjp_matches_torch_autograd(case: Case):
    torch = pytest.importorskip("torch")
    values = _inputs(case)
    weights, grads = _vjp(case, values)
    tensors = [
        None if v is None else torch.tensor(v, requires_grad=i in case.data)
        for i, v in enumerate(values)
    ]
    outs = case.torch(*tensors)
    outs = outs if isinstance(outs, list) else [outs]
    total = sum((o * torch.tensor(w)).sum() for o, w in zip(outs, weights) if w is not None)
    expected = torch.autograd.grad(total, [tensors[i] for i in case.data])
    for i, e in zip(case.data, expected):
        np.testing.assert_allclose(grads[i], e.numpy(), rtol=1e-10, atol=1e-12)


RELU_LIKE = [c for c in CASES if c.op in ("Relu", "LeakyRelu", "PRelu", "Clip")]


@pytest.mark.parametrize("case", RELU_LIKE, ids=lambda c: c.id)
def test_relu_like_modes(case: Case):
    """guided = gradient where the cotangent is positive; deconvnet = the rectified cotangent."""
    values = _inputs(case)
    weights, gradient = _vjp(case, values, mode="gradient")
    _, guided = _vjp(case, values, mode="guided")
    _, deconv = _vjp(case, values, mode="deconvnet")
    g = weights[0]
    np.testing.assert_array_equal(guided[0], np.where(g > 0, gradient[0], 0))
    np.testing.assert_array_equal(deconv[0], np.maximum(g, 0))


@pytest.mark.parametrize("mode", ["guided", "deconvnet"])
@pytest.mark.parametrize(
    "case", [c for c in CASES if c.op in ("Sigmoid", "Conv", "MaxPool")][:4], ids=lambda c: c.id
)
def test_modes_do_not_change_other_ops(case: Case, mode: str):
    values = _inputs(case)
    _, gradient = _vjp(case, values)
    _, other = _vjp(case, values, mode=mode)
    np.testing.assert_array_equal(gradient[0], other[0])


@pytest.mark.parametrize(
    ("equation", "shapes", "why"),
    [
        ("ii->i", [(3, 3)], "repeated index"),
        ("ij,ij->ij", [(3, 1), (3, 4)], "sizes"),
        ("ijk->ij", [(3, 4)], "rank"),
    ],
)
def test_einsum_outside_the_covered_forms_names_the_equation(equation, shapes, why):
    from cnnviz_core import UnsupportedOpError

    node = helper.make_node("Einsum", [f"in{i}" for i in range(len(shapes))], ["out0"],
                            name="my_einsum", equation=equation)  # fmt: skip
    values = [np.ones(s) for s in shapes]
    call = make_call(node, values, opset=12)
    with pytest.raises(UnsupportedOpError, match=rf"my_einsum.*{equation!r}.*{why}"):
        rule_for("Einsum", 12).forward(call)
