"""Rules for QDQ-quantized models (as ``onnxruntime.quantization.quantize_static(...,
quant_format=QuantFormat.QDQ)`` writes them): QuantizeLinear and DequantizeLinear.

Rounding has a zero derivative almost everywhere, so the backward pass uses the
straight-through estimator (Bengio et al. 2013; the rule of quantization-aware training,
Jacob et al. 2018): ``d dequant(quant(x)) / dx = 1`` where ``x`` lies inside the
representable range and 0 where it is clipped. Split over the two ops: QuantizeLinear passes
``dq / scale`` inside the range (0 outside), DequantizeLinear passes ``dy * scale``. The
gradient of a QDQ model is therefore the gradient of its float model at the quantized
activations, with clipped units gated off: an approximation, stated as such in
:attr:`cnnviz_core.Model.quantization` and in the results' metadata.

Weights stored as int8 behind a DequantizeLinear do not depend on the input: the engine
fetches the dequantized weights as values (see :func:`~cnnviz_core.backward.forward_values`).
QOperator models (QLinearConv, ConvInteger...) compute in integers throughout and have no
rule: the engine refuses them before any work, saying to export QDQ instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from ...errors import UnsupportedOpError
from ..registry import Grad, NodeCall, OpRule, register_rule

if TYPE_CHECKING:
    from ..emitter import Emitter

#: ONNX elem types of QuantizeLinear's ``output_dtype`` (opset 21) -> NumPy integer types
_OUTPUT_DTYPES: dict[int, type[np.integer]] = {
    2: np.uint8,
    3: np.int8,
    4: np.uint16,
    5: np.int16,
}


def _per_axis(param: np.ndarray, ndim: int, axis: int) -> np.ndarray:
    """A scale or zero point shaped to broadcast against an ``ndim`` tensor: a scalar as it
    is, a 1-D per-axis parameter along ``axis``."""
    param = np.asarray(param)
    if param.ndim == 0:
        return param
    if param.ndim != 1:
        raise UnsupportedOpError(
            f"blocked quantization (a {param.ndim}-D scale) is not supported; quantize per "
            "tensor or per channel"
        )
    shape = [1] * ndim
    shape[axis % ndim] = param.size
    return param.reshape(shape)


def quantized_type(
    zero_point: np.ndarray | None, output_dtype: int, node: str = ""
) -> type[np.integer]:
    """QuantizeLinear's output type: the zero point's, else the ``output_dtype`` attribute
    (an ONNX elem type, opset 21), else uint8 (the torch bridge shares this)."""
    if zero_point is not None:
        return np.asarray(zero_point).dtype.type
    if output_dtype and output_dtype not in _OUTPUT_DTYPES:
        raise UnsupportedOpError(
            f"QuantizeLinear node {node!r} quantizes to ONNX type {output_dtype}; the backward "
            "pass covers 8- and 16-bit integers"
        )
    return _OUTPUT_DTYPES.get(output_dtype, np.uint8)


def _quantized_dtype(call: NodeCall) -> type[np.integer]:
    zero_point = call.inputs[2] if len(call.inputs) > 2 else None
    return quantized_type(zero_point, call.attrs.get("output_dtype", 0), call.node.name)


def _params(call: NodeCall, ndim: int) -> tuple[np.ndarray, np.ndarray]:
    """(scale, zero point) shaped to broadcast over the data (zero point 0 when omitted)."""
    axis = call.attrs.get("axis", 1)
    scale = _per_axis(call.inputs[1], ndim, axis)
    zero_point = call.inputs[2] if len(call.inputs) > 2 else None
    zp = np.zeros((), np.int64) if zero_point is None else _per_axis(zero_point, ndim, axis)
    return scale, zp.astype(np.int64)


@register_rule("QuantizeLinear")
class QuantizeLinear(OpRule):
    """q = saturate(round_half_even(x / scale) + zero_point); backward: the straight-through
    estimator, dx = dq / scale where the rounded value lies inside the type's range, else 0."""

    constant_inputs = (1, 2)
    reads_outputs = False

    def forward(self, call: NodeCall) -> list[np.ndarray]:
        x = np.asarray(call.inputs[0])
        dtype = _quantized_dtype(call)
        scale, zp = _params(call, x.ndim)
        info = np.iinfo(dtype)
        q = np.rint(x / scale) + zp
        return [np.clip(q, info.min, info.max).astype(dtype)]

    def vjp(self, call: NodeCall, grads: Sequence[Grad]) -> list[Grad]:
        dq = grads[0]
        out: list[Grad] = [None] * len(call.inputs)
        if dq is None or not call.needs[0]:
            return out
        x = np.asarray(call.inputs[0])
        info = np.iinfo(_quantized_dtype(call))
        scale, zp = _params(call, x.ndim)
        q = np.rint(x / scale) + zp
        inside = (q >= info.min) & (q <= info.max)
        out[0] = np.where(inside, dq / scale.astype(dq.dtype), 0).astype(dq.dtype, copy=False)
        return out

    def emit(self, call: NodeCall, grads: Sequence[str | None], g: Emitter) -> list[str | None]:
        dq = grads[0]
        out: list[str | None] = [None] * len(call.inputs)
        if dq is None or not call.needs[0]:
            return out
        x = call.node.input[0]
        info = np.iinfo(_quantized_dtype(call))
        scale, zp = _params(call, np.ndim(call.inputs[0]))
        scale_c = g.const(scale.astype(np.float32), hint="q_scale")
        q = g.op("Add", g.op("Round", g.op("Div", x, scale_c)), g.const(zp, np.float32, "zp"))
        inside = g.op(
            "And",
            g.op("GreaterOrEqual", q, g.scalar(info.min)),
            g.op("LessOrEqual", q, g.scalar(info.max)),
        )
        out[0] = g.masked(g.op("Div", dq, scale_c), inside)
        return out


@register_rule("DequantizeLinear")
class DequantizeLinear(OpRule):
    """y = (x - zero_point) * scale; backward dx = dy * scale (a float cotangent of the
    integer tensor, which QuantizeLinear's straight-through rule takes on)."""

    constant_inputs = (1, 2)
    reads_inputs = reads_outputs = False  # the scale (a constant) and x's shape

    def forward(self, call: NodeCall) -> list[np.ndarray]:
        x = np.asarray(call.inputs[0])
        scale, zp = _params(call, x.ndim)
        return [((x.astype(np.int64) - zp) * scale).astype(scale.dtype, copy=False)]

    def vjp(self, call: NodeCall, grads: Sequence[Grad]) -> list[Grad]:
        dy = grads[0]
        out: list[Grad] = [None] * len(call.inputs)
        if dy is None or not call.needs[0]:
            return out
        scale, _ = _params(call, dy.ndim)
        out[0] = (dy * scale.astype(dy.dtype)).astype(dy.dtype, copy=False)
        return out

    def emit(self, call: NodeCall, grads: Sequence[str | None], g: Emitter) -> list[str | None]:
        dy = grads[0]
        out: list[str | None] = [None] * len(call.inputs)
        if dy is None or not call.needs[0]:
            return out
        scale, _ = _params(call, np.ndim(call.inputs[0]))
        out[0] = g.mul(dy, g.const(scale.astype(np.float32), hint="dq_scale"))
        return out
