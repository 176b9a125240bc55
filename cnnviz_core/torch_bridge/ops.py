"""The bridge's op table: one torch function per ONNX operator (and opset), keyed like the
backward registry (:mod:`cnnviz_core.backward.registry`) so the two share one op list.

Each function takes the node's :class:`OpCall` (attributes, opset, the values of inputs known
at conversion) and its input tensors (None for an omitted optional input), and returns the
output tensors. Geometry (pads, windows, resize matrices, slices) comes from the backward
rules' helpers, so the two implementations cannot drift apart.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
import torch
import torch.nn.functional as F

from ..backward.registry import Mode, NodeCall, rule_for
from ..backward.rules.common import pad_maps, reshape_target, slice_index
from ..backward.rules.nn import AveragePool
from ..backward.rules.quantization import quantized_type
from ..errors import UnsupportedOpError
from ..geometry import Window
from ..registry import VersionedRegistry

Tensor = torch.Tensor
Args = list[Any]
OpFn = Callable[["OpCall", Args], list[Tensor]]

_FLOAT_MAX = float(np.finfo(np.float32).max)


@dataclass
class ModeState:
    """The ReLU mode of one module, shared by all its nodes' calls."""

    mode: Mode = "gradient"


@dataclass
class OpCall:
    """One node as the bridge runs it.

    Attributes:
        node: the ONNX node.
        attrs: its attributes as Python values.
        opset: the model's default-domain opset.
        consts: per input, its NumPy value when known at conversion (weights, folded shapes).
        state: the module's ReLU mode.
        cache: per-node memo (resize matrices and the like, keyed by input shape).
    """

    node: onnx.NodeProto
    attrs: dict
    opset: int
    consts: list[np.ndarray | None]
    state: ModeState = field(default_factory=ModeState)
    cache: dict = field(default_factory=dict)

    @property
    def mode(self) -> Mode:
        return self.state.mode

    def array(self, args: Args, i: int) -> np.ndarray | None:
        """Input ``i`` as NumPy (its conversion-time value, else the tensor's): for shapes,
        axes, scales and bounds."""
        if i >= len(args) or args[i] is None:
            return None
        if i < len(self.consts) and self.consts[i] is not None:
            return self.consts[i]
        return args[i].detach().cpu().numpy()

    def ints(self, args: Args, i: int) -> list[int] | None:
        value = self.array(args, i)
        return None if value is None else [int(v) for v in np.asarray(value).ravel()]

    def rule_call(self, args: Args) -> NodeCall:
        """A backward-registry :class:`NodeCall` whose inputs are the small non-data inputs as
        NumPy (data inputs left None), for reusing a rule's geometry helpers."""
        inputs = [None] + [self.array(args, i) for i in range(1, len(args))]
        return NodeCall(self.node, self.attrs, inputs, opset=self.opset)


#: the bridge's op table: one torch function per (op type, since opset)
OPS: VersionedRegistry[OpFn] = VersionedRegistry("torch op")


def register_op(op_type: str, since: int = 1) -> Callable[[OpFn], OpFn]:
    """Decorator: register a torch implementation of ``op_type`` from opset ``since`` on
    (a second one for the same key raises :class:`ValueError`)."""

    def decorate(fn: OpFn) -> OpFn:
        OPS.add(op_type, since, fn)
        return fn

    return decorate


def op_for(op_type: str, opset: int) -> OpFn | None:
    """The implementation of ``op_type`` at ``opset``, or None."""
    return OPS.get(op_type, opset)


def registered_ops() -> list[tuple[str, int]]:
    """Every registered (op type, since opset) key."""
    return OPS.keys()


# ------------------------------------------------------------------------------- helpers

_NP_TO_TORCH = {
    np.dtype(np.float16): torch.float16,
    np.dtype(np.float32): torch.float32,
    np.dtype(np.float64): torch.float64,
    np.dtype(np.int8): torch.int8,
    np.dtype(np.int16): torch.int16,
    np.dtype(np.int32): torch.int32,
    np.dtype(np.int64): torch.int64,
    np.dtype(np.uint8): torch.uint8,
    np.dtype(np.bool_): torch.bool,
}


def torch_dtype(onnx_type: int) -> torch.dtype:
    """The torch dtype of an ONNX ``TensorProto`` data type."""
    np_type = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(onnx_type))
    if np_type not in _NP_TO_TORCH:
        raise UnsupportedOpError(f"ONNX tensor type {np_type} has no torch equivalent here")
    return _NP_TO_TORCH[np_type]


def as_tensor(value: np.ndarray) -> Tensor:
    """A NumPy constant as a CPU tensor (uint types other than uint8 widened to int64)."""
    value = np.asarray(value)
    if value.dtype not in _NP_TO_TORCH:
        value = value.astype(np.int64 if value.dtype.kind in "iu" else np.float32)
    return torch.from_numpy(np.ascontiguousarray(value).copy())


def _same_device(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """Shape sub-graphs live on the CPU: move a CPU operand to the other's device."""
    if a.device != b.device:
        if a.device.type == "cpu" and a.ndim > 0:
            a = a.to(b.device)
        elif b.device.type == "cpu" and b.ndim > 0:
            b = b.to(a.device)
    return a, b


def _spatial_pad(x: Tensor, begins: Sequence[int], ends: Sequence[int], value: float) -> Tensor:
    """Pad (negative: crop) the trailing spatial axes of (N, C, ...)."""
    if not any(begins) and not any(ends):
        return x
    spec: list[int] = []
    for b, e in zip(reversed(begins), reversed(ends)):
        spec += [int(b), int(e)]
    return F.pad(x, spec, value=value)


def _geometry(
    call: OpCall, spatial: Sequence[int], kernel: Sequence[int]
) -> tuple[Window, tuple[int, ...], tuple[int, ...]]:
    """The window of a conv / pool node for an input size, its output size and padded extent,
    worked out once per size (pure Python: recomputing it every call cost ~10% of a small
    model's forward)."""
    key = ("geometry", tuple(spatial), tuple(kernel))
    geo = call.cache.get(key)
    if geo is None:
        win = Window.from_onnx(call.attrs, kernel, spatial)
        geo = call.cache[key] = (win, win.output_size(spatial), win.padded_size(spatial))
    return geo


def _functional(name: str, ndim: int) -> Callable:
    if ndim not in (1, 2, 3):
        raise UnsupportedOpError(f"{name}: {ndim}-D inputs are not supported by the torch bridge")
    return getattr(F, f"{name}{ndim}d")


# ------------------------------------------------------------------- ReLU-like activations


class _GatedActivation(torch.autograd.Function):
    """y = fn(x); the backward follows the mode: ``gradient`` dx = dy where the gate passes
    (slope * dy elsewhere), ``guided`` the same times [dy > 0], ``deconvnet`` dy * [dy > 0]."""

    @staticmethod
    def forward(ctx, x, fn, gate, slope, mode):  # type: ignore[override]
        ctx.mode, ctx.slope = mode, slope
        passed = gate(x) if mode != "deconvnet" else None
        ctx.save_for_backward(passed if passed is not None else x.new_empty(0))
        return fn(x)

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        zero = torch.zeros((), dtype=g.dtype, device=g.device)
        if ctx.mode == "deconvnet":
            return torch.where(g > 0, g, zero), None, None, None, None
        (passed,) = ctx.saved_tensors
        slope = ctx.slope
        blocked = g * slope if not (isinstance(slope, float) and slope == 0) else zero
        local = torch.where(passed, g, blocked)
        if ctx.mode == "guided":
            local = torch.where(g > 0, local, zero)
        return local, None, None, None, None


def _positive(x: Tensor) -> Tensor:
    return x > 0


def _gated(call: OpCall, x: Tensor, fn: Callable, gate: Callable, slope: Any) -> Tensor:
    if call.state.mode == "gradient" or not x.requires_grad:
        return fn(x)
    return _GatedActivation.apply(x, fn, gate, slope, call.mode)


@register_op("Relu")
def relu(call: OpCall, args: Args) -> list[Tensor]:
    return [_gated(call, args[0], torch.relu, _positive, 0.0)]


@register_op("LeakyRelu")
def leaky_relu(call: OpCall, args: Args) -> list[Tensor]:
    alpha = float(call.attrs.get("alpha", 0.01))
    return [
        _gated(call, args[0], lambda x: torch.where(x > 0, x, x * alpha), lambda x: x > 0, alpha)
    ]


@register_op("PRelu")
def prelu(call: OpCall, args: Args) -> list[Tensor]:
    x, slope = _same_device(args[0], args[1])
    return [
        _gated(call, x, lambda v: torch.where(v > 0, v, v * slope), lambda v: v > 0, slope.detach())
    ]


def _clip(call: OpCall, x: Tensor, lo: float, hi: float) -> list[Tensor]:
    def fn(v: Tensor) -> Tensor:
        return torch.clamp(v, None if lo == -math.inf else lo, None if hi == math.inf else hi)

    return [_gated(call, x, fn, lambda v: (v > lo) & (v < hi), 0.0)]


@register_op("Clip", since=6)
def clip6(call: OpCall, args: Args) -> list[Tensor]:
    lo = float(call.attrs.get("min", -_FLOAT_MAX))
    hi = float(call.attrs.get("max", _FLOAT_MAX))
    return _clip(call, args[0], lo, hi)


@register_op("Clip", since=11)
def clip11(call: OpCall, args: Args) -> list[Tensor]:
    lo, hi = call.array(args, 1), call.array(args, 2)
    return _clip(
        call,
        args[0],
        -math.inf if lo is None else float(np.asarray(lo)),
        math.inf if hi is None else float(np.asarray(hi)),
    )


@register_op("HardSigmoid")
def hard_sigmoid(call: OpCall, args: Args) -> list[Tensor]:
    alpha, beta = call.attrs.get("alpha", 0.2), call.attrs.get("beta", 0.5)
    return [torch.clamp(args[0] * alpha + beta, 0, 1)]


@register_op("HardSwish")
def hard_swish(call: OpCall, args: Args) -> list[Tensor]:
    x = args[0]
    return [x * torch.clamp(x / 6 + 0.5, 0, 1)]


def _softmax(call: OpCall, x: Tensor, log: bool) -> Tensor:
    fn = torch.log_softmax if log else torch.softmax
    if call.opset < 13:
        axis = call.attrs.get("axis", 1) % max(x.ndim, 1)
        return fn(x.reshape(math.prod(x.shape[:axis]), -1), 1).reshape(x.shape)
    return fn(x, call.attrs.get("axis", -1) % x.ndim)


@register_op("Softmax")
@register_op("Softmax", since=13)
def softmax(call: OpCall, args: Args) -> list[Tensor]:
    return [_softmax(call, args[0], log=False)]


@register_op("LogSoftmax")
@register_op("LogSoftmax", since=13)
def log_softmax(call: OpCall, args: Args) -> list[Tensor]:
    return [_softmax(call, args[0], log=True)]


# -------------------------------------------------------------------------- element-wise


def _binary(fn: Callable[[Tensor, Tensor], Tensor]) -> OpFn:
    def apply(call: OpCall, args: Args) -> list[Tensor]:
        return [fn(*_same_device(args[0], args[1]))]

    return apply


def _div(a: Tensor, b: Tensor) -> Tensor:
    if not a.is_floating_point() and not b.is_floating_point():
        return torch.div(a, b, rounding_mode="trunc")
    return a / b


def _pow(a: Tensor, b: Tensor) -> Tensor:
    return torch.pow(a, b).to(a.dtype)


register_op("Add")(_binary(torch.add))
register_op("Sub")(_binary(torch.sub))
register_op("Mul")(_binary(torch.mul))
register_op("Div")(_binary(_div))
register_op("Pow")(_binary(_pow))


def _variadic(fn: Callable[[Tensor, Tensor], Tensor]) -> OpFn:
    def apply(call: OpCall, args: Args) -> list[Tensor]:
        out = args[0]
        for x in args[1:]:
            out = fn(*_same_device(out, x))
        return [out]

    return apply


register_op("Sum")(_variadic(torch.add))
register_op("Max")(_variadic(torch.maximum))
register_op("Min")(_variadic(torch.minimum))


def _unary(fn: Callable[[Tensor], Tensor]) -> OpFn:
    def apply(call: OpCall, args: Args) -> list[Tensor]:
        return [fn(args[0])]

    return apply


register_op("Neg")(_unary(torch.neg))
register_op("Reciprocal")(_unary(torch.reciprocal))
register_op("Sqrt")(_unary(torch.sqrt))
register_op("Exp")(_unary(torch.exp))
register_op("Log")(_unary(torch.log))
register_op("Sigmoid")(_unary(torch.sigmoid))
register_op("Tanh")(_unary(torch.tanh))
register_op("Identity")(_unary(lambda x: x))


@register_op("Dropout")
def dropout(call: OpCall, args: Args) -> list[Tensor]:
    """Inference Dropout: the identity (and an all-true mask)."""
    training = call.array(args, 2)
    if training is not None and bool(np.asarray(training)):
        raise UnsupportedOpError(
            f"Dropout node {call.node.name!r} runs in training mode: the bridge covers inference"
        )
    x = args[0]
    outs = [x]
    if len(call.node.output) > 1 and call.node.output[1]:
        outs.append(torch.ones(x.shape, dtype=torch.bool, device=x.device))
    return outs


@register_op("Cast")
def cast(call: OpCall, args: Args) -> list[Tensor]:
    """Between float types the wider one is kept (as in the backward rule), so a float32
    module of a float16 model stays float32 and ``.double()`` stays float64."""
    x, target = args[0], torch_dtype(call.attrs["to"])
    if x.is_floating_point() and target.is_floating_point:
        return [x.to(torch.promote_types(x.dtype, target))]
    return [x.to(target)]


# --------------------------------------------------------------------------- QDQ quantization


def _quantization_params(call: OpCall, args: Args, ndim: int) -> tuple[Tensor, Tensor]:
    """(scale, zero point) of a Quantize/DequantizeLinear node, shaped along ``axis``."""
    axis = call.attrs.get("axis", 1)

    def shaped(t: Tensor) -> Tensor:
        if t.dim() == 0:
            return t
        shape = [1] * ndim
        shape[axis % ndim] = t.numel()
        return t.reshape(shape)

    zero_point = args[2] if len(args) > 2 and args[2] is not None else torch.zeros(())
    return shaped(args[1]), shaped(zero_point)


@register_op("QuantizeLinear")
def quantize_linear(call: OpCall, args: Args) -> list[Tensor]:
    """Fake quantization: the integer values in x's float type, with the backward rule's
    straight-through gradient (1 / scale where nothing is clipped, else 0)."""
    x = args[0]
    dtype = quantized_type(
        call.consts[2] if len(call.consts) > 2 else None,
        call.attrs.get("output_dtype", 0),
        call.node.name,
    )
    info = np.iinfo(dtype)
    scale, zero_point = _quantization_params(call, args, x.dim())
    scaled = x / scale.to(x.dtype)
    rounded = torch.round(scaled.detach()) + zero_point.to(x.dtype)
    inside = (rounded >= info.min) & (rounded <= info.max)
    straight = (scaled - scaled.detach()) * inside.to(x.dtype)
    return [rounded.clamp(info.min, info.max) + straight]


@register_op("DequantizeLinear")
def dequantize_linear(call: OpCall, args: Args) -> list[Tensor]:
    """(x - zero_point) * scale, for integer constants (weights) and fake-quantized floats."""
    x = args[0]
    scale, zero_point = _quantization_params(call, args, x.dim())
    dtype = x.dtype if x.is_floating_point() else scale.dtype
    return [(x.to(dtype) - zero_point.to(dtype)) * scale.to(dtype)]


# --------------------------------------------------------------------------- CNN layers


@register_op("Conv")
def conv(call: OpCall, args: Args) -> list[Tensor]:
    x, w = args[0], args[1]
    b = args[2] if len(args) > 2 else None
    key = ("conv", x.shape[2:], w.shape[2:])
    plan = call.cache.get(key)
    if plan is None:  # per input size: the torch call's arguments and any asymmetric padding
        win = _geometry(call, x.shape[2:], w.shape[2:])[0]
        symmetric = win.begins == win.ends
        plan = call.cache[key] = (
            _functional("conv", x.ndim - 2),
            None if symmetric else (win.begins, win.ends),
            (
                win.stride,
                win.begins if symmetric else 0,
                win.dilation,
                call.attrs.get("group", 1),
            ),
        )
    fn, pads, options = plan
    if pads is not None:
        x = _spatial_pad(x, pads[0], pads[1], 0.0)
    return [fn(x, w, b, *options)]


@register_op("ConvTranspose")
def conv_transpose(call: OpCall, args: Args) -> list[Tensor]:
    """Transposed convolution: the full (unpadded) result, then cropped (pads) or extended
    with zeros (output_padding, or an output_shape past it) to the ONNX output, then the bias;
    the pads (output_shape / SAME split included) come from :meth:`Window.from_onnx_transpose`."""
    x, w = args[0], args[1]
    b = args[2] if len(args) > 2 else None
    k = x.ndim - 2
    win = Window.from_onnx_transpose(call.attrs, w.shape[2:], x.shape[2:])
    adjust = list(call.attrs.get("output_padding", [0] * k))
    fn = _functional("conv_transpose", k)
    raw = fn(x, w, None, win.stride, 0, 0, call.attrs.get("group", 1), win.dilation)
    # the full result lacks output_padding: the end pad left to crop is end - output_padding
    y = _spatial_pad(raw, [-v for v in win.begins], [a - e for a, e in zip(adjust, win.ends)], 0.0)
    if b is not None:
        y = y + b.reshape(1, -1, *([1] * k))
    return [y]


@register_op("Gemm")
def gemm(call: OpCall, args: Args) -> list[Tensor]:
    a, b = args[0], args[1]
    if call.attrs.get("transA", 0):
        a = a.t()
    if call.attrs.get("transB", 0):
        b = b.t()
    alpha = call.attrs.get("alpha", 1.0)
    beta = call.attrs.get("beta", 1.0)
    c = args[2] if len(args) > 2 else None
    if c is not None and c.dtype == a.dtype:  # one fused product-and-add (one autograd node)
        return [torch.addmm(c, a, b, beta=beta, alpha=alpha)]
    y = a @ b
    if alpha != 1.0:
        y = y * alpha
    if c is not None:
        y = y + (c if beta == 1.0 else beta * c)
    return [y]


@register_op("MatMul")
def matmul(call: OpCall, args: Args) -> list[Tensor]:
    return [torch.matmul(*_same_device(args[0], args[1]))]


@register_op("MaxPool")
def max_pool(call: OpCall, args: Args) -> list[Tensor]:
    """Max pooling: -inf padding to the extent every window fits in (ceil_mode included, as
    in the backward rule's geometry), then a plain torch pool; ``Indices`` when asked."""
    x = args[0]
    spatial = x.shape[2:]
    key = ("max_pool", spatial)
    plan = call.cache.get(key)
    if plan is None:  # per input size: padding, the torch call's arguments, the crop
        win, out, padded = _geometry(call, spatial, call.attrs["kernel_shape"])
        ends = [p - n - b for p, n, b in zip(padded, spatial, win.begins)]
        crop = (..., *(slice(0, o) for o in out))
        want_indices = len(call.node.output) > 1 and bool(call.node.output[1])
        _functional("max_pool", x.ndim - 2)  # the rank check
        # without indices the torch op itself (F.max_poolNd's dispatch wrapper costs ~4 us)
        fn = (
            getattr(F, f"max_pool{x.ndim - 2}d_with_indices")
            if want_indices
            else getattr(torch, f"max_pool{x.ndim - 2}d")
        )
        plan = call.cache[key] = (
            (win.begins, padded[1], out),
            (win.begins, ends),
            fn,
            want_indices,
            (win.kernel, win.stride, 0, win.dilation),
            crop,
        )
    (begins, padded_w, out), pads, fn, want_indices, options, crop = plan
    result = fn(_spatial_pad(x, pads[0], pads[1], -math.inf), *options)
    if not want_indices:  # crop only when needed: a no-op slice still adds an autograd node
        return [result if result.shape[2:] == out else result[crop]]
    y, flat = result[0][crop], result[1][crop]
    if x.ndim != 4:
        raise UnsupportedOpError("MaxPool: Indices are supported for 2-D pooling only")
    n, c, h, w = x.shape
    row = flat // padded_w - begins[0]
    col = flat % padded_w - begins[1]
    index = col * h + row if call.attrs.get("storage_order", 0) else row * w + col
    planes = (torch.arange(n * c, device=x.device) * (h * w)).reshape(n, c, 1, 1)
    return [y, index + planes]


@register_op("AveragePool")
def average_pool(call: OpCall, args: Args) -> list[Tensor]:
    """Average pooling with ONNX's counts (count_include_pad, ceil_mode windows past the pads)
    from the backward rule: a sum over the zero-padded extent divided by the count."""
    x = args[0]
    spatial = tuple(x.shape[2:])
    key = ("count", spatial, x.dtype, x.device)
    if key not in call.cache:
        win, count = AveragePool._geometry(call.rule_call(args), spatial, np.dtype(np.float64))
        ends = win.covering_ends(spatial)
        call.cache[key] = (win, ends, torch.from_numpy(count).to(x.dtype).to(x.device))
    win, ends, count = call.cache[key]
    out = tuple(count.shape)
    padded = _spatial_pad(x, win.begins, ends, 0.0)
    if all(d == 1 for d in win.dilation) and x.ndim in (3, 4, 5):
        pool = _functional("avg_pool", x.ndim - 2)
        total = pool(padded, win.kernel, win.stride, 0) * math.prod(win.kernel)
        crop = (Ellipsis, *[slice(0, o) for o in out])
        total = total[crop]
    else:
        total = sum(padded[tap] for tap in win.taps(out))
    return [total / count]


@register_op("GlobalAveragePool")
def global_average_pool(call: OpCall, args: Args) -> list[Tensor]:
    x = args[0]
    return [x.mean(dim=tuple(range(2, x.ndim)), keepdim=True)]


@register_op("GlobalMaxPool")
def global_max_pool(call: OpCall, args: Args) -> list[Tensor]:
    x = args[0]
    return [x.amax(dim=tuple(range(2, x.ndim)), keepdim=True)]


def _per_channel(p: Tensor, ndim: int) -> Tensor:
    return p.reshape((1, -1) + (1,) * (ndim - 2)) if p.ndim == 1 else p[None]


@register_op("BatchNormalization")
def batch_norm(call: OpCall, args: Args) -> list[Tensor]:
    """Inference batch norm with the running statistics."""
    if call.attrs.get("training_mode", 0):
        raise UnsupportedOpError(
            f"BatchNormalization node {call.node.name!r} is in training mode: the bridge covers "
            "inference graphs only"
        )
    x, gamma, beta, mean, var = args[:5]
    eps = call.attrs.get("epsilon", 1e-5)
    if gamma.ndim == 1:
        return [F.batch_norm(x, mean, var, gamma, beta, False, 0.0, eps)]
    inv = gamma / torch.sqrt(var + eps)
    return [x * _per_channel(inv, x.ndim) + _per_channel(beta - mean * inv, x.ndim)]


@register_op("InstanceNormalization")
def instance_norm(call: OpCall, args: Args) -> list[Tensor]:
    x, scale, bias = args
    return [F.instance_norm(x, weight=scale, bias=bias, eps=call.attrs.get("epsilon", 1e-5))]


@register_op("LRN")
def lrn(call: OpCall, args: Args) -> list[Tensor]:
    """y = x / (bias + alpha / size * sum of x^2 over channels c - floor((size-1)/2) ..
    c + ceil((size-1)/2))^beta (torch's own LRN centres even windows the other way)."""
    x = args[0]
    size = int(call.attrs["size"])
    alpha, beta = call.attrs.get("alpha", 1e-4), call.attrs.get("beta", 0.75)
    bias = call.attrs.get("bias", 1.0)
    before, after = (size - 1) // 2, -(-(size - 1) // 2)
    c = x.shape[1]
    sq = F.pad(x * x, [0, 0] * (x.ndim - 2) + [before, after])
    total = sum(sq[:, i : i + c] for i in range(size))
    return [x * (bias + alpha / size * total) ** -beta]


# ------------------------------------------------------------------------- style networks


@register_op("ImageScaler")
def image_scaler(call: OpCall, args: Args) -> list[Tensor]:
    """Experimental (opset < 10): y = scale * x + bias[c]."""
    x = args[0]
    bias = torch.tensor(call.attrs.get("bias", [0.0] * x.shape[1]), dtype=x.dtype)
    return [x * call.attrs.get("scale", 1.0) + bias.to(x.device).reshape(1, -1, 1, 1)]


@register_op("Affine")
def affine(call: OpCall, args: Args) -> list[Tensor]:
    """Experimental: y = alpha * x + beta."""
    return [args[0] * call.attrs.get("alpha", 1.0) + call.attrs.get("beta", 0.0)]


@register_op("Crop")
def crop(call: OpCall, args: Args) -> list[Tensor]:
    """Experimental: ``border`` = (left, top, right, bottom) cut off; with ``scale`` = (height,
    width) the output is that size from the top-left border on."""
    x = args[0]
    left, top, right, bottom = (int(v) for v in call.attrs["border"])
    h, w = x.shape[2:]
    if "scale" in call.attrs:
        sh, sw = (int(v) for v in call.attrs["scale"])
        return [x[:, :, top : top + sh, left : left + sw]]
    return [x[:, :, top : h - bottom, left : w - right]]


# -------------------------------------------------------------------------------- resize


def _resize(call: OpCall, args: Args) -> list[Tensor]:
    """Resize / Upsample through the backward rule's per-axis interpolation matrices (every
    mode and coordinate transform the rule covers, exactly)."""
    x = args[0]
    key = (tuple(x.shape), x.dtype, x.device)
    if key not in call.cache:
        from ..backward.rules.resize import interpolation_matrix

        rule = rule_for(call.node.op_type, call.opset)
        assert rule is not None
        steps = rule.steps(call.rule_call(args), tuple(x.shape))  # type: ignore[attr-defined]
        legacy = rule.legacy  # type: ignore[attr-defined]
        call.cache[key] = [
            (s.axis, torch.from_numpy(interpolation_matrix(s, call.attrs, legacy)).to(x))
            for s in steps
        ]
    y = x
    for axis, m in call.cache[key]:
        y = torch.movedim(torch.tensordot(m, y, dims=([1], [axis])), 0, axis)
    return [y]


register_op("Upsample", since=7)(_resize)
register_op("Upsample", since=9)(_resize)
register_op("Resize", since=10)(_resize)
register_op("Resize", since=11)(_resize)


# ----------------------------------------------------------------------- shapes and moves


@register_op("Reshape")
def reshape(call: OpCall, args: Args) -> list[Tensor]:
    x = args[0]
    key = ("reshape", x.shape)
    constant = len(call.consts) > 1 and call.consts[1] is not None
    shape = call.cache.get(key) if constant else None
    if shape is None:
        target = np.asarray(call.ints(args, 1))
        shape = reshape_target(target, x.shape, call.attrs.get("allowzero", 0))
        if constant:  # a constant target: worked out once per input shape
            call.cache[key] = shape
    return [x.reshape(shape)]


@register_op("Flatten")
def flatten(call: OpCall, args: Args) -> list[Tensor]:
    x = args[0]
    axis = call.attrs.get("axis", 1) % max(x.ndim, 1)
    return [x.reshape(math.prod(x.shape[:axis]), -1)]


def _reduce_axes(call: OpCall, args: Args, from_input: bool, ndim: int) -> tuple[int, ...]:
    constant = not from_input or (len(call.consts) > 1 and call.consts[1] is not None)
    key = ("axes", ndim)
    if constant and key in call.cache:  # known at conversion: worked out once per rank
        return call.cache[key]
    given = call.ints(args, 1) if from_input else call.attrs.get("axes")
    if given is None or len(given) == 0:
        axes = () if call.attrs.get("noop_with_empty_axes", 0) else tuple(range(ndim))
    else:
        axes = tuple(sorted(int(a) % ndim for a in given))
    if constant:
        call.cache[key] = axes
    return axes


def _reduce(mean: bool, from_input: bool) -> OpFn:
    def apply(call: OpCall, args: Args) -> list[Tensor]:
        x = args[0]
        axes = _reduce_axes(call, args, from_input, x.ndim)
        if not axes:
            return [x]
        keep = bool(call.attrs.get("keepdims", 1))
        return [(torch.mean if mean else torch.sum)(x, dim=axes, keepdim=keep)]

    return apply


register_op("ReduceMean")(_reduce(mean=True, from_input=False))
register_op("ReduceMean", since=18)(_reduce(mean=True, from_input=True))
register_op("ReduceSum")(_reduce(mean=False, from_input=False))
register_op("ReduceSum", since=13)(_reduce(mean=False, from_input=True))


def _reduce_extreme(maximum: bool, from_input: bool) -> OpFn:
    """ReduceMax / ReduceMin as ``torch.amax`` / ``amin`` (ties share the gradient, as the
    backward rule does)."""

    def apply(call: OpCall, args: Args) -> list[Tensor]:
        x = args[0]
        axes = _reduce_axes(call, args, from_input, x.ndim)
        if not axes:
            return [x]
        keep = bool(call.attrs.get("keepdims", 1))
        return [(torch.amax if maximum else torch.amin)(x, dim=axes, keepdim=keep)]

    return apply


register_op("ReduceMax")(_reduce_extreme(maximum=True, from_input=False))
register_op("ReduceMax", since=18)(_reduce_extreme(maximum=True, from_input=True))
register_op("ReduceMin")(_reduce_extreme(maximum=False, from_input=False))
register_op("ReduceMin", since=18)(_reduce_extreme(maximum=False, from_input=True))


@register_op("DepthToSpace")
def depth_to_space(call: OpCall, args: Args) -> list[Tensor]:
    x, b = args[0], int(call.attrs["blocksize"])
    if call.attrs.get("mode", "DCR") == "CRD":
        return [torch.nn.functional.pixel_shuffle(x, b)]
    n, c, h, w = x.shape
    y = x.reshape(n, b, b, c // (b * b), h, w).permute(0, 3, 4, 1, 5, 2)
    return [y.reshape(n, c // (b * b), h * b, w * b)]


@register_op("SpaceToDepth")
def space_to_depth(call: OpCall, args: Args) -> list[Tensor]:
    x, b = args[0], int(call.attrs["blocksize"])
    n, c, h, w = x.shape
    y = x.reshape(n, c, h // b, b, w // b, b).permute(0, 3, 5, 1, 2, 4)
    return [y.reshape(n, c * b * b, h // b, w // b)]


@register_op("Transpose")
def transpose(call: OpCall, args: Args) -> list[Tensor]:
    x = args[0]
    return [x.permute(*call.attrs.get("perm", range(x.ndim - 1, -1, -1)))]


def _axes(call: OpCall, args: Args) -> list[int] | None:
    return call.ints(args, 1) if call.opset >= 13 else call.attrs.get("axes")


@register_op("Squeeze")
@register_op("Squeeze", since=13)
def squeeze(call: OpCall, args: Args) -> list[Tensor]:
    x = args[0]
    axes = _axes(call, args)
    if not axes:
        return [x.reshape([d for d in x.shape if d != 1])]
    drop = {a % x.ndim for a in axes}
    return [x.reshape([d for i, d in enumerate(x.shape) if i not in drop])]


@register_op("Unsqueeze")
@register_op("Unsqueeze", since=13)
def unsqueeze(call: OpCall, args: Args) -> list[Tensor]:
    x = args[0]
    axes = _axes(call, args) or []
    rank = x.ndim + len(axes)
    shape = list(x.shape)
    for a in sorted(a % rank for a in axes):
        shape.insert(a, 1)
    return [x.reshape(shape)]


@register_op("Concat")
def concat(call: OpCall, args: Args) -> list[Tensor]:
    parts = [a for a in args if a is not None]
    device = next((p.device for p in parts if p.device.type != "cpu"), parts[0].device)
    return [torch.cat([p.to(device) for p in parts], dim=call.attrs["axis"])]


@register_op("Split", since=2)
@register_op("Split", since=13)
@register_op("Split", since=18)
def split(call: OpCall, args: Args) -> list[Tensor]:
    x = args[0]
    axis = call.attrs.get("axis", 0) % x.ndim
    rule = rule_for("Split", call.opset)
    assert rule is not None
    sizes = rule.sizes(call.rule_call(args), x.shape[axis])  # type: ignore[attr-defined]
    return list(torch.split(x, sizes, dim=axis))


def _slice(x: Tensor, index: tuple[slice, ...]) -> Tensor:
    """Python slices on a tensor; torch has no negative steps, so those axes gather."""
    plain = tuple(s if (s.step or 1) > 0 else slice(None) for s in index)
    y = x[plain]
    for axis, s in enumerate(index):
        if (s.step or 1) < 0:
            picks = list(range(x.shape[axis]))[s]
            y = y.index_select(axis, torch.tensor(picks, dtype=torch.long, device=x.device))
    return y


@register_op("Slice")
def slice_1(call: OpCall, args: Args) -> list[Tensor]:
    a = call.attrs
    return [
        _slice(args[0], slice_index(args[0].shape, a["starts"], a["ends"], a.get("axes"), None))
    ]


@register_op("Slice", since=10)
def slice_10(call: OpCall, args: Args) -> list[Tensor]:
    x = args[0]
    starts, ends = call.ints(args, 1), call.ints(args, 2)
    axes, steps = call.ints(args, 3), call.ints(args, 4)
    assert starts is not None and ends is not None
    return [_slice(x, slice_index(x.shape, starts, ends, axes, steps))]


def _pad(call: OpCall, x: Tensor, pads: Sequence[int], value: float, axes: Any) -> Tensor:
    """Pad through the backward rule's index maps (any axis, negative pads, every mode)."""
    mode = call.attrs.get("mode", "constant")
    n = x.ndim
    pads = [int(p) for p in pads]
    if mode == "constant" and axes is None and n >= 2 and not any(pads[:2] + pads[n : n + 2]):
        return _spatial_pad(x, pads[2:n], pads[n + 2 :], value)
    y = x
    for axis, source in pad_maps(x.shape, pads, mode, axes):
        index = torch.from_numpy(np.maximum(source, 0)).to(x.device)
        y = y.index_select(axis, index)
        if (source < 0).any():
            shape = [1] * y.ndim
            shape[axis] = len(source)
            fill = torch.from_numpy(source < 0).to(x.device).reshape(shape)
            y = torch.where(fill, torch.full((), value, dtype=y.dtype, device=y.device), y)
    return y


@register_op("Pad", since=2)
def pad_2(call: OpCall, args: Args) -> list[Tensor]:
    pads = [int(p) for p in call.attrs["pads"]]
    return [_pad(call, args[0], pads, float(call.attrs.get("value", 0.0)), None)]


@register_op("Pad", since=11)
def pad_11(call: OpCall, args: Args) -> list[Tensor]:
    pads = call.ints(args, 1)
    assert pads is not None
    value = call.array(args, 2)
    fill = 0.0 if value is None or np.size(value) == 0 else float(np.asarray(value).ravel()[0])
    return [_pad(call, args[0], pads, fill, call.ints(args, 3))]


@register_op("Gather")
def gather(call: OpCall, args: Args) -> list[Tensor]:
    x, indices = args
    axis = call.attrs.get("axis", 0) % x.ndim
    index = indices.to(device=x.device, dtype=torch.long)
    index = torch.where(index < 0, index + x.shape[axis], index)
    picked = x.index_select(axis, index.reshape(-1))
    return [picked.reshape(*x.shape[:axis], *index.shape, *x.shape[axis + 1 :])]


# ---------------------------------------------------------------- shape sub-graph ops


@register_op("Shape")
def shape(call: OpCall, args: Args) -> list[Tensor]:
    dims = list(args[0].shape)
    start, end = call.attrs.get("start", 0), call.attrs.get("end")
    return [torch.tensor(dims[start:end], dtype=torch.int64)]


@register_op("Size")
def size(call: OpCall, args: Args) -> list[Tensor]:
    return [torch.tensor(args[0].numel(), dtype=torch.int64)]


def constant_value(attrs: dict) -> np.ndarray:
    """A Constant node's value from whichever ``value*`` attribute it has."""
    if "value" in attrs:
        return onnx.numpy_helper.to_array(attrs["value"])
    for key, dtype in (
        ("value_float", np.float32),
        ("value_floats", np.float32),
        ("value_int", np.int64),
        ("value_ints", np.int64),
    ):
        if key in attrs:
            return np.asarray(attrs[key], dtype)
    raise UnsupportedOpError(f"Constant with attributes {sorted(attrs)} is not supported")


@register_op("Constant")
def constant(call: OpCall, args: Args) -> list[Tensor]:
    return [as_tensor(constant_value(call.attrs))]


@register_op("ConstantOfShape")
def constant_of_shape(call: OpCall, args: Args) -> list[Tensor]:
    dims = call.ints(args, 0) or []
    value = call.attrs.get("value")
    fill = np.zeros(1, np.float32) if value is None else onnx.numpy_helper.to_array(value)
    return [as_tensor(np.full(dims, fill.ravel()[0], fill.dtype))]


@register_op("Range")
def range_(call: OpCall, args: Args) -> list[Tensor]:
    start, limit, delta = (call.array(args, i) for i in range(3))
    assert start is not None and limit is not None and delta is not None
    return [as_tensor(np.arange(start.item(), limit.item(), delta.item(), dtype=start.dtype))]


# ------------------------------------------------------- modern CNN and attention-block ops


@register_op("LayerNormalization", since=17)
def layer_normalization(call: OpCall, args: Args) -> list[Tensor]:
    """Over the axes ``axis`` .. rank - 1; the optional Mean and InvStdDev outputs when asked."""
    x, scale = _same_device(args[0], args[1])
    bias = args[2] if len(args) > 2 else None
    bias = None if bias is None else bias.to(x.device)
    axis = call.attrs.get("axis", -1) % x.ndim
    eps = float(call.attrs.get("epsilon", 1e-5))
    wanted = len([o for o in call.node.output if o])
    normalized = tuple(x.shape[axis:])
    if wanted == 1 and tuple(scale.shape) == normalized:
        return [F.layer_norm(x, normalized, scale, bias, eps)]
    dims = tuple(range(axis, x.ndim))
    mean = x.mean(dims, keepdim=True)
    inv_std = torch.rsqrt((x - mean).square().mean(dims, keepdim=True) + eps)
    y = (x - mean) * inv_std * scale
    if bias is not None:
        y = y + bias
    return [y, mean, inv_std][: len(call.node.output)]


def _group_norm(per_group: bool) -> OpFn:
    def apply(call: OpCall, args: Args) -> list[Tensor]:
        x, scale = _same_device(args[0], args[1])
        bias = args[2].to(x.device)
        groups = int(call.attrs["num_groups"])
        if per_group:  # GroupNormalization-18: one scale and bias per group
            scale = scale.repeat_interleave(x.shape[1] // groups)
            bias = bias.repeat_interleave(x.shape[1] // groups)
        return [F.group_norm(x, groups, scale, bias, float(call.attrs.get("epsilon", 1e-5)))]

    return apply


register_op("GroupNormalization", since=18)(_group_norm(per_group=True))
register_op("GroupNormalization", since=21)(_group_norm(per_group=False))


@register_op("Gelu", since=20)
def gelu(call: OpCall, args: Args) -> list[Tensor]:
    return [F.gelu(args[0], approximate=call.attrs.get("approximate", "none"))]


register_op("Erf", since=9)(_unary(torch.erf))
register_op("Softplus")(_unary(F.softplus))
register_op("Mish", since=18)(_unary(F.mish))


def _nd_index(call: OpCall, args: Args, shape: Sequence[int], batch_dims: int) -> tuple:
    """GatherND / ScatterND indices as a tuple of long tensors on the data's device (from the
    backward rule's helper; cached per data shape when the indices are constants)."""
    from ..backward.rules.gather import nd_index

    constant = len(call.consts) > 1 and call.consts[1] is not None
    key = ("nd_index", tuple(shape), args[0].device)
    if constant and key in call.cache:
        return call.cache[key]
    indices = call.array(args, 1)
    assert indices is not None
    index = tuple(
        torch.from_numpy(np.ascontiguousarray(part)).to(args[0].device)
        for part in nd_index(shape, indices, batch_dims)
    )
    if constant:
        call.cache[key] = index
    return index


@register_op("GatherND", since=11)
def gather_nd(call: OpCall, args: Args) -> list[Tensor]:
    x = args[0]
    return [x[_nd_index(call, args, x.shape, call.attrs.get("batch_dims", 0))]]


@register_op("ScatterND", since=11)
def scatter_nd(call: OpCall, args: Args) -> list[Tensor]:
    data, updates = _same_device(args[0], args[2])
    reduction = call.attrs.get("reduction", "none")
    if reduction not in ("none", "add"):
        raise UnsupportedOpError(
            f"ScatterND node {call.node.name!r} with reduction={reduction!r}: the bridge covers "
            "reduction 'none' and 'add'"
        )
    index = _nd_index(call, args, data.shape, 0)
    return [data.index_put(index, updates.to(data.dtype), accumulate=reduction == "add")]


@register_op("Where", since=9)
def where(call: OpCall, args: Args) -> list[Tensor]:
    x, y = _same_device(args[1], args[2])
    condition = args[0].to(device=x.device, dtype=torch.bool)
    return [torch.where(condition, x, y)]


@register_op("Expand", since=8)
def expand(call: OpCall, args: Args) -> list[Tensor]:
    x = args[0]
    shape = call.ints(args, 1)
    assert shape is not None
    return [x.expand(np.broadcast_shapes(tuple(x.shape), tuple(shape)))]


@register_op("Tile", since=6)
def tile(call: OpCall, args: Args) -> list[Tensor]:
    repeats = call.ints(args, 1)
    assert repeats is not None
    return [args[0].repeat(*repeats)]


@register_op("Einsum", since=12)
def einsum(call: OpCall, args: Args) -> list[Tensor]:
    """torch.einsum with the backward rule's reading of the equation (ellipsis spelled out,
    implicit output made explicit), so both cover the same equations."""
    from ..backward.rules.einsum import einsum_terms

    device = next((a.device for a in args if a.device.type != "cpu"), args[0].device)
    operands = [a.to(device) for a in args]
    terms, output = einsum_terms(
        call.attrs["equation"], [tuple(a.shape) for a in operands], call.node.name
    )
    return [torch.einsum(",".join(terms) + "->" + output, *operands)]


def _predicate(fn: Callable[..., Tensor]) -> OpFn:
    def apply(call: OpCall, args: Args) -> list[Tensor]:
        if len(args) == 1:
            return [fn(args[0])]
        return [fn(*_same_device(args[0], args[1]))]

    return apply


register_op("Equal", since=11)(_predicate(torch.eq))
register_op("Greater", since=9)(_predicate(torch.gt))
register_op("Less", since=9)(_predicate(torch.lt))
register_op("GreaterOrEqual", since=12)(_predicate(torch.ge))
register_op("LessOrEqual", since=12)(_predicate(torch.le))
register_op("Not")(_predicate(torch.logical_not))
register_op("And", since=7)(_predicate(torch.logical_and))
register_op("Or", since=7)(_predicate(torch.logical_or))
