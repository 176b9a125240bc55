"""Rules for element-wise ops: activations (with the guided/deconvnet modes) and arithmetic."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import onnx

from ... import kernels
from ...errors import UnsupportedOpError
from ..registry import Grad, NodeCall, OpRule, register_rule
from .common import unbroadcast

if TYPE_CHECKING:
    from ..emitter import Emitter


@register_rule("Relu")
class Relu(OpRule):
    """ReLU; its backward is where the modes differ (fused native kernel). The gate reads
    the output (y > 0 exactly where x > 0), so the pre-activation need not be fetched."""

    reads_inputs = False

    def forward(self, call: NodeCall) -> list[np.ndarray]:
        x = call.inputs[0]
        return [np.maximum(x, np.zeros((), x.dtype))]

    def vjp(self, call: NodeCall, grads: Sequence[Grad]) -> list[Grad]:
        y, dy = call.outputs[0], grads[0]
        assert dy is not None
        return [
            kernels.relu_backward(y.astype(dy.dtype, copy=False), dy, call.mode, device=call.device)
        ]

    def emit(self, call: NodeCall, grads: Sequence[str | None], g: Emitter) -> list[str | None]:
        dy = grads[0]
        assert dy is not None
        return [g.relu_from_output(call.node.output[0], dy, call.mode)]


@register_rule("Add")
class Add(OpRule):
    reads_inputs = reads_outputs = False  # shapes only

    def forward(self, call: NodeCall) -> list[np.ndarray]:
        return [call.inputs[0] + call.inputs[1]]

    def vjp(self, call: NodeCall, grads: Sequence[Grad]) -> list[Grad]:
        dy = grads[0]
        assert dy is not None
        return [
            unbroadcast(dy, np.shape(x)) if need else None
            for x, need in zip(call.inputs, call.needs)
        ]

    def emit(self, call: NodeCall, grads: Sequence[str | None], g: Emitter) -> list[str | None]:
        dy = grads[0]
        assert dy is not None
        return emit_needed_unbroadcast(call, g, [lambda: dy] * len(call.inputs))


def _needed_unbroadcast(call: NodeCall, parts: Sequence) -> list[Grad]:
    """Per input: its cotangent (a thunk, evaluated only when needed) summed to its shape."""
    return [
        unbroadcast(part(), np.shape(x)) if need else None
        for x, need, part in zip(call.inputs, call.needs, parts)
    ]


def emit_needed_unbroadcast(call: NodeCall, g: Emitter, parts: Sequence) -> list[str | None]:
    """:func:`_needed_unbroadcast` in ONNX: per needed input, its cotangent (a thunk making
    a tensor of the broadcast output's shape) summed back to the input's shape."""
    out = np.broadcast_shapes(*(np.shape(x) for x in call.inputs if x is not None))
    return [
        g.unbroadcast(part(), out, np.shape(x)) if need else None
        for x, need, part in zip(call.inputs, call.needs, parts)
    ]


@register_rule("Sub")
class Sub(OpRule):
    def forward(self, call: NodeCall) -> list[np.ndarray]:
        return [call.inputs[0] - call.inputs[1]]

    def vjp(self, call: NodeCall, grads: Sequence[Grad]) -> list[Grad]:
        dy = grads[0]
        assert dy is not None
        return _needed_unbroadcast(call, [lambda: dy, lambda: -dy])

    def emit(self, call: NodeCall, grads: Sequence[str | None], g: Emitter) -> list[str | None]:
        dy = grads[0]
        assert dy is not None
        return emit_needed_unbroadcast(call, g, [lambda: dy, lambda: g.op("Neg", dy)])


@register_rule("Mul")
class Mul(OpRule):
    def forward(self, call: NodeCall) -> list[np.ndarray]:
        return [call.inputs[0] * call.inputs[1]]

    def vjp(self, call: NodeCall, grads: Sequence[Grad]) -> list[Grad]:
        dy = grads[0]
        assert dy is not None
        a, b = call.inputs
        return _needed_unbroadcast(call, [lambda: dy * b, lambda: dy * a])

    def emit(self, call: NodeCall, grads: Sequence[str | None], g: Emitter) -> list[str | None]:
        dy = grads[0]
        assert dy is not None
        a, b = call.node.input
        return emit_needed_unbroadcast(call, g, [lambda: g.mul(dy, b), lambda: g.mul(dy, a)])


@register_rule("Div")
class Div(OpRule):
    def forward(self, call: NodeCall) -> list[np.ndarray]:
        return [call.inputs[0] / call.inputs[1]]

    def vjp(self, call: NodeCall, grads: Sequence[Grad]) -> list[Grad]:
        dy = grads[0]
        assert dy is not None
        a, b = call.inputs
        return _needed_unbroadcast(call, [lambda: dy / b, lambda: -dy * a / (b * b)])

    def emit(self, call: NodeCall, grads: Sequence[str | None], g: Emitter) -> list[str | None]:
        dy = grads[0]
        assert dy is not None
        a, b = call.node.input
        return emit_needed_unbroadcast(
            call,
            g,
            [
                lambda: g.op("Div", dy, b),
                lambda: g.op("Div", g.mul(g.op("Neg", dy), a), g.mul(b, b)),
            ],
        )


@register_rule("Pow")
class Pow(OpRule):
    """x ** e; d/dx = e x^(e-1), d/de = x^e log x (only for a positive base)."""

    def forward(self, call: NodeCall) -> list[np.ndarray]:
        x, e = call.inputs
        return [np.power(x, e).astype(x.dtype, copy=False)]

    def vjp(self, call: NodeCall, grads: Sequence[Grad]) -> list[Grad]:
        dy = grads[0]
        assert dy is not None
        x, e = call.inputs
        return _needed_unbroadcast(
            call,
            [lambda: dy * e * np.power(x, e - 1), lambda: dy * np.power(x, e) * np.log(x)],
        )

    def emit(self, call: NodeCall, grads: Sequence[str | None], g: Emitter) -> list[str | None]:
        dy = grads[0]
        assert dy is not None
        x, e = call.node.input
        return emit_needed_unbroadcast(
            call,
            g,
            [
                lambda: g.mul(g.mul(dy, e), g.op("Pow", x, g.op("Sub", e, g.scalar(1.0)))),
                lambda: g.mul(g.mul(dy, g.op("Pow", x, e)), g.op("Log", x)),
            ],
        )


@register_rule("Sum")
class Sum(OpRule):
    """Variadic sum with broadcasting."""

    def forward(self, call: NodeCall) -> list[np.ndarray]:
        total = call.inputs[0]
        for x in call.inputs[1:]:
            total = total + x
        return [total]

    def vjp(self, call: NodeCall, grads: Sequence[Grad]) -> list[Grad]:
        dy = grads[0]
        assert dy is not None
        return _needed_unbroadcast(call, [lambda: dy] * len(call.inputs))

    def emit(self, call: NodeCall, grads: Sequence[str | None], g: Emitter) -> list[str | None]:
        dy = grads[0]
        assert dy is not None
        return emit_needed_unbroadcast(call, g, [lambda: dy] * len(call.inputs))


class _Extremum(OpRule):
    """Variadic Max / Min: the cotangent goes to the input that is the output (the first one
    on ties)."""

    pick = staticmethod(np.maximum)

    def forward(self, call: NodeCall) -> list[np.ndarray]:
        out = call.inputs[0]
        for x in call.inputs[1:]:
            out = self.pick(out, x)
        return [out]

    def vjp(self, call: NodeCall, grads: Sequence[Grad]) -> list[Grad]:
        dy = grads[0]
        assert dy is not None
        y = self.forward(call)[0]
        taken = np.zeros(y.shape, bool)
        out: list[Grad] = []
        for x, need in zip(call.inputs, call.needs):
            mine = (np.broadcast_to(x, y.shape) == y) & ~taken
            taken |= mine
            out.append(unbroadcast(np.where(mine, dy, 0), np.shape(x)) if need else None)
        return out

    def emit(self, call: NodeCall, grads: Sequence[str | None], g: Emitter) -> list[str | None]:
        dy = grads[0]
        assert dy is not None
        y = call.node.output[0]
        shape = np.broadcast_shapes(*(np.shape(x) for x in call.inputs))
        taken: str | None = None
        out: list[str | None] = []
        for name, x, need in zip(call.node.input, call.inputs, call.needs):
            mine = g.op("Equal", name, y)
            if taken is not None:
                mine = g.op("And", mine, g.op("Not", taken))
            taken = mine if taken is None else g.op("Or", taken, mine)
            picked = g.masked(dy, mine)
            out.append(g.unbroadcast(picked, shape, np.shape(x)) if need else None)
        return out


@register_rule("Max")
class Max(_Extremum):
    pick = staticmethod(np.maximum)


@register_rule("Min")
class Min(_Extremum):
    pick = staticmethod(np.minimum)


class _Unary(OpRule):
    """y = f(x) element-wise; dx = dy * f'(x) written with x and y."""

    def fn(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def derivative(self, x: np.ndarray, y: np.ndarray, call: NodeCall) -> np.ndarray:
        raise NotImplementedError

    def forward(self, call: NodeCall) -> list[np.ndarray]:
        x = call.inputs[0]
        return [np.asarray(self.fn(x)).astype(x.dtype, copy=False)]

    def vjp(self, call: NodeCall, grads: Sequence[Grad]) -> list[Grad]:
        dy = grads[0]
        assert dy is not None
        x = call.inputs[0].astype(dy.dtype, copy=False)
        y = call.outputs[0] if call.outputs else self.forward(call)[0]
        return [dy * self.derivative(x, y.astype(dy.dtype, copy=False), call)]

    def emit_derivative(self, x: str, y: str, g: Emitter) -> str:
        """f'(x) as ONNX nodes, written with the graph tensors ``x`` and ``y``."""
        raise NotImplementedError

    def emit(self, call: NodeCall, grads: Sequence[str | None], g: Emitter) -> list[str | None]:
        dy = grads[0]
        assert dy is not None
        return [g.mul(dy, self.emit_derivative(call.node.input[0], call.node.output[0], g))]


@register_rule("Neg")
class Neg(_Unary):
    def fn(self, x):
        return -x

    def derivative(self, x, y, call):
        return -np.ones_like(x)

    def emit_derivative(self, x, y, g):
        return g.scalar(-1.0)


@register_rule("Reciprocal")
class Reciprocal(_Unary):
    def fn(self, x):
        return 1 / x

    def derivative(self, x, y, call):
        return -y * y

    def emit_derivative(self, x, y, g):
        return g.mul(g.op("Neg", y), y)


@register_rule("Sqrt")
class Sqrt(_Unary):
    def fn(self, x):
        return np.sqrt(x)

    def derivative(self, x, y, call):
        return 0.5 / y

    def emit_derivative(self, x, y, g):
        return g.op("Div", g.scalar(0.5), y)


@register_rule("Exp")
class Exp(_Unary):
    def fn(self, x):
        return np.exp(x)

    def derivative(self, x, y, call):
        return y

    def emit_derivative(self, x, y, g):
        return y


@register_rule("Log")
class Log(_Unary):
    def fn(self, x):
        return np.log(x)

    def derivative(self, x, y, call):
        return 1 / x

    def emit_derivative(self, x, y, g):
        return g.op("Div", g.scalar(1.0), x)


@register_rule("Sigmoid")
class Sigmoid(_Unary):
    def fn(self, x):
        return 1 / (1 + np.exp(-x))

    def derivative(self, x, y, call):
        return y * (1 - y)

    def emit_derivative(self, x, y, g):
        return g.mul(y, g.op("Sub", g.scalar(1.0), y))


@register_rule("Tanh")
class Tanh(_Unary):
    def fn(self, x):
        return np.tanh(x)

    def derivative(self, x, y, call):
        return 1 - y * y

    def emit_derivative(self, x, y, g):
        return g.op("Sub", g.scalar(1.0), g.mul(y, y))


@register_rule("Identity")
class Identity(OpRule):
    def forward(self, call: NodeCall) -> list[np.ndarray]:
        return [call.inputs[0]]

    def vjp(self, call: NodeCall, grads: Sequence[Grad]) -> list[Grad]:
        return [grads[0]]

    def emit(self, call: NodeCall, grads: Sequence[str | None], g: Emitter) -> list[str | None]:
        return [grads[0]]


@register_rule("Dropout")
class Dropout(OpRule):
    """Inference Dropout: the identity (and an all-true mask as the optional second output).
    ``ratio`` / ``training_mode`` (inputs since opset 12) never carry a gradient."""

    constant_inputs = (1, 2)

    def forward(self, call: NodeCall) -> list[np.ndarray]:
        x = call.inputs[0]
        training = call.inputs[2] if len(call.inputs) > 2 else None
        if training is not None and bool(np.asarray(training)):
            raise UnsupportedOpError(
                f"Dropout node {call.node.name!r} runs in training mode: the backward pass "
                "covers inference graphs only"
            )
        outputs = [x]
        if len(call.node.output) > 1 and call.node.output[1]:
            outputs.append(np.ones(x.shape, bool))
        return outputs

    def vjp(self, call: NodeCall, grads: Sequence[Grad]) -> list[Grad]:
        return [grads[0], None, None][: len(call.inputs)]

    def emit(self, call: NodeCall, grads: Sequence[str | None], g: Emitter) -> list[str | None]:
        return [grads[0], None, None][: len(call.inputs)]


@register_rule("Cast")
class Cast(OpRule):
    """Cast; between float types it keeps the wider dtype, so a float64 reference forward stays
    float64 (onnxruntime's float32 values are unchanged). The gradient passes back in the input's
    float dtype; casts from or to integers carry none."""

    def forward(self, call: NodeCall) -> list[np.ndarray]:
        x = call.inputs[0]
        target = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(call.attrs["to"]))
        if x.dtype.kind == "f" and target.kind == "f":
            return [x.astype(np.result_type(x.dtype, target), copy=False)]
        return [x.astype(target)]

    def vjp(self, call: NodeCall, grads: Sequence[Grad]) -> list[Grad]:
        x, dy = call.inputs[0], grads[0]
        target = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(call.attrs["to"]))
        if dy is None or x.dtype.kind != "f" or target.kind != "f":
            return [None]
        return [dy.astype(np.result_type(x.dtype, dy.dtype), copy=False)]

    def emit(self, call: NodeCall, grads: Sequence[str | None], g: Emitter) -> list[str | None]:
        x, dy = call.inputs[0], grads[0]
        target = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(call.attrs["to"]))
        if dy is None or x.dtype.kind != "f" or target.kind != "f":
            return [None]
        if np.dtype(x.dtype) == target:
            return [dy]
        return [g.op("Cast", dy, to=onnx.helper.np_dtype_to_tensor_dtype(np.dtype(x.dtype)))]
