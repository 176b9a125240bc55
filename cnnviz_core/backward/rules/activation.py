"""Rules for activations: the ReLU-like ones (LeakyRelu, PRelu, Clip as ReLU6) honour the
backward modes (``guided``: Springenberg et al. 2015; ``deconvnet``: Zeiler & Fergus 2014),
the smooth and piecewise-linear ones (Sigmoid-like, HardSwish) and Softmax/LogSoftmax have one
true gradient."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from ... import kernels
from ..registry import Grad, NodeCall, OpRule, register_rule
from .common import unbroadcast

if TYPE_CHECKING:
    from ..emitter import Emitter

#: Clip's bounds before opset 11 default to the float32 extremes
_FLOAT_MAX = float(np.finfo(np.float32).max)


@register_rule("LeakyRelu")
class LeakyRelu(OpRule):
    """y = x if x > 0 else alpha * x; modes as for ReLU (native kernel with the slope)."""

    def forward(self, call: NodeCall) -> list[np.ndarray]:
        x = call.inputs[0]
        alpha = x.dtype.type(call.attrs.get("alpha", 0.01))
        return [np.where(x > 0, x, alpha * x)]

    def vjp(self, call: NodeCall, grads: Sequence[Grad]) -> list[Grad]:
        x, dy = call.inputs[0], grads[0]
        assert dy is not None
        alpha = float(call.attrs.get("alpha", 0.01))
        return [
            kernels.relu_backward(
                x.astype(dy.dtype, copy=False), dy, call.mode, alpha, device=call.device
            )
        ]

    def emit(self, call: NodeCall, grads: Sequence[str | None], g: Emitter) -> list[str | None]:
        dy = grads[0]
        assert dy is not None
        alpha = float(call.attrs.get("alpha", 0.01))
        passed = None
        if call.mode != "deconvnet":
            passed = g.op("Greater", call.node.input[0], g.scalar(0.0))
        return [g.gated(passed, dy, call.mode, alpha)]


@register_rule("PRelu")
class PRelu(OpRule):
    """y = x if x > 0 else slope * x, slope broadcast to x (per channel in CNNs); modes as for
    ReLU with that slope."""

    def forward(self, call: NodeCall) -> list[np.ndarray]:
        x, slope = call.inputs
        return [np.where(x > 0, x, slope * x).astype(x.dtype, copy=False)]

    def vjp(self, call: NodeCall, grads: Sequence[Grad]) -> list[Grad]:
        (x, slope), dy = call.inputs, grads[0]
        assert dy is not None
        out: list[Grad] = [None, None]
        if call.needs[0]:
            if call.mode == "deconvnet":
                out[0] = np.where(dy > 0, dy, 0).astype(dy.dtype)
            else:
                local = np.where(x > 0, dy, slope * dy).astype(dy.dtype)
                out[0] = (
                    np.where(dy > 0, local, 0).astype(dy.dtype) if call.mode == "guided" else local
                )
        if call.needs[1]:
            out[1] = unbroadcast(np.where(x > 0, 0, dy * x), np.shape(slope))
        return out

    def emit(self, call: NodeCall, grads: Sequence[str | None], g: Emitter) -> list[str | None]:
        dy = grads[0]
        assert dy is not None
        x, slope = call.node.input
        zero = g.scalar(0.0)
        positive = g.op("Greater", x, zero)
        out: list[str | None] = [None, None]
        if call.needs[0]:
            if call.mode == "deconvnet":
                out[0] = g.gated(None, dy, "deconvnet")
            else:
                local = g.select(positive, dy, g.mul(slope, dy))
                if call.mode == "guided":  # rectify the incoming signal dy
                    local = g.masked(local, g.op("Greater", dy, zero))
                out[0] = local
        if call.needs[1]:
            shape = np.broadcast_shapes(np.shape(call.inputs[0]), np.shape(call.inputs[1]))
            part = g.masked(g.mul(dy, x), g.op("Not", positive))
            out[1] = g.unbroadcast(part, shape, np.shape(call.inputs[1]))
        return out


class _Clip(OpRule):
    """Clip (ReLU6 in MobileNets): the gate is lo < x < hi, modes as for ReLU."""

    constant_inputs = (1, 2)

    def bounds(self, call: NodeCall) -> tuple[float, float]:
        raise NotImplementedError

    def forward(self, call: NodeCall) -> list[np.ndarray]:
        x = call.inputs[0]
        lo, hi = self.bounds(call)
        return [np.minimum(np.maximum(x, x.dtype.type(lo)), x.dtype.type(hi))]

    def vjp(self, call: NodeCall, grads: Sequence[Grad]) -> list[Grad]:
        x, dy = call.inputs[0], grads[0]
        assert dy is not None
        lo, hi = self.bounds(call)
        dx = kernels.relu_backward_clip(
            x.astype(dy.dtype, copy=False), dy, lo, hi, call.mode, device=call.device
        )
        return [dx, None, None][: len(call.inputs)]

    def emit(self, call: NodeCall, grads: Sequence[str | None], g: Emitter) -> list[str | None]:
        dy = grads[0]
        assert dy is not None
        lo, hi = self.bounds(call)
        passed = None
        if call.mode != "deconvnet":
            x = call.node.input[0]
            passed = g.op(
                "And",
                g.op("Greater", x, g.scalar(np.float32(lo))),
                g.op("Less", x, g.scalar(np.float32(hi))),
            )
        return [g.gated(passed, dy, call.mode), None, None][: len(call.inputs)]


@register_rule("Clip", since=6)
class Clip6(_Clip):
    """Clip with ``min`` / ``max`` attributes (opset 6-10)."""

    def bounds(self, call: NodeCall) -> tuple[float, float]:
        return float(call.attrs.get("min", -_FLOAT_MAX)), float(call.attrs.get("max", _FLOAT_MAX))


@register_rule("Clip", since=11)
class Clip11(_Clip):
    """Clip with optional ``min`` / ``max`` inputs (opset 11 on); absent means unbounded."""

    def bounds(self, call: NodeCall) -> tuple[float, float]:
        given = [*call.inputs[1:3], None, None][:2]
        lo = -np.inf if given[0] is None else float(np.asarray(given[0]))
        hi = np.inf if given[1] is None else float(np.asarray(given[1]))
        return lo, hi


@register_rule("HardSigmoid")
class HardSigmoid(OpRule):
    """y = max(0, min(1, alpha * x + beta))."""

    def forward(self, call: NodeCall) -> list[np.ndarray]:
        x = call.inputs[0]
        alpha, beta = call.attrs.get("alpha", 0.2), call.attrs.get("beta", 0.5)
        return [np.clip(alpha * x + beta, 0, 1).astype(x.dtype, copy=False)]

    def vjp(self, call: NodeCall, grads: Sequence[Grad]) -> list[Grad]:
        x, dy = call.inputs[0], grads[0]
        assert dy is not None
        alpha, beta = call.attrs.get("alpha", 0.2), call.attrs.get("beta", 0.5)
        z = alpha * x + beta
        return [np.where((z > 0) & (z < 1), alpha * dy, 0).astype(dy.dtype)]

    def emit(self, call: NodeCall, grads: Sequence[str | None], g: Emitter) -> list[str | None]:
        dy = grads[0]
        assert dy is not None
        alpha, beta = call.attrs.get("alpha", 0.2), call.attrs.get("beta", 0.5)
        z = g.op("Add", g.scale(call.node.input[0], alpha), g.scalar(beta))
        inside = g.op("And", g.op("Greater", z, g.scalar(0.0)), g.op("Less", z, g.scalar(1.0)))
        return [g.masked(g.scale(dy, alpha), inside)]


@register_rule("HardSwish")
class HardSwish(OpRule):
    """y = x * max(0, min(1, x / 6 + 1 / 2))."""

    def forward(self, call: NodeCall) -> list[np.ndarray]:
        x = call.inputs[0]
        return [(x * np.clip(x / 6 + 0.5, 0, 1)).astype(x.dtype, copy=False)]

    def vjp(self, call: NodeCall, grads: Sequence[Grad]) -> list[Grad]:
        x, dy = call.inputs[0], grads[0]
        assert dy is not None
        local = np.where(x > 3, 1, np.where(x < -3, 0, x / 3 + 0.5))
        return [(dy * local).astype(dy.dtype, copy=False)]

    def emit(self, call: NodeCall, grads: Sequence[str | None], g: Emitter) -> list[str | None]:
        dy = grads[0]
        assert dy is not None
        x = call.node.input[0]
        middle = g.op("Add", g.op("Div", x, g.scalar(3.0)), g.scalar(0.5))
        low = g.masked(middle, g.op("GreaterOrEqual", x, g.scalar(-3.0)))
        high = g.op("Greater", x, g.scalar(3.0))
        return [g.mul(dy, g.select(high, g.scalar(1.0), low))]


class _SoftmaxBase(OpRule):
    """Softmax / LogSoftmax. Before opset 13 the input is flattened to 2-D at ``axis``
    (default 1) and normalised over the second dimension; from 13 on over the one ``axis``
    (default -1)."""

    coerce_2d = False
    log = False

    def _view(self, x: np.ndarray, call: NodeCall) -> tuple[np.ndarray, int]:
        if self.coerce_2d:
            axis = call.attrs.get("axis", 1) % max(x.ndim, 1)
            return x.reshape(int(np.prod(x.shape[:axis])), -1), 1
        return x, call.attrs.get("axis", -1) % x.ndim

    def forward(self, call: NodeCall) -> list[np.ndarray]:
        x = call.inputs[0]
        v, axis = self._view(x, call)
        shifted = v - v.max(axis=axis, keepdims=True)
        if self.log:
            y = shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))
        else:
            e = np.exp(shifted)
            y = e / e.sum(axis=axis, keepdims=True)
        return [y.reshape(x.shape)]

    def vjp(self, call: NodeCall, grads: Sequence[Grad]) -> list[Grad]:
        x, dy = call.inputs[0], grads[0]
        assert dy is not None
        y = call.outputs[0] if call.outputs else self.forward(call)[0]
        y, _ = self._view(y.astype(dy.dtype, copy=False), call)
        g, axis = self._view(dy, call)
        if self.log:
            dx = g - np.exp(y) * g.sum(axis=axis, keepdims=True)
        else:
            dx = y * (g - (g * y).sum(axis=axis, keepdims=True))
        return [dx.reshape(x.shape)]

    def emit(self, call: NodeCall, grads: Sequence[str | None], g: Emitter) -> list[str | None]:
        dy = grads[0]
        assert dy is not None
        x = call.inputs[0]
        y, grad = call.node.output[0], dy
        if self.coerce_2d:
            axis = call.attrs.get("axis", 1) % max(x.ndim, 1)
            y, grad, along = g.op("Flatten", y, axis=axis), g.op("Flatten", dy, axis=axis), 1
        else:
            along = call.attrs.get("axis", -1) % x.ndim
        if self.log:
            total = g.reduce_sum(grad, [along])
            dx = g.op("Sub", grad, g.mul(g.op("Exp", y), total))
        else:
            total = g.reduce_sum(g.mul(grad, y), [along])
            dx = g.mul(y, g.op("Sub", grad, total))
        return [g.reshape_like(dx, call.node.input[0]) if self.coerce_2d else dx]


@register_rule("Softmax")
class Softmax(_SoftmaxBase):
    coerce_2d = True


@register_rule("Softmax", since=13)
class Softmax13(_SoftmaxBase):
    pass


@register_rule("LogSoftmax")
class LogSoftmax(_SoftmaxBase):
    coerce_2d = True
    log = True


@register_rule("LogSoftmax", since=13)
class LogSoftmax13(_SoftmaxBase):
    log = True


def erf(x: np.ndarray) -> np.ndarray:
    """The error function element-wise in ``x``'s dtype (SciPy's, which comes with
    scikit-learn; NumPy has none)."""
    from scipy.special import erf as scipy_erf  # type: ignore[import-untyped]  # no stubs

    return np.asarray(scipy_erf(x)).astype(x.dtype, copy=False)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-x)) without overflow for large |x|."""
    return 0.5 * (1 + np.tanh(0.5 * x))


def emit_sigmoid(x: str, g: Emitter) -> str:
    """:func:`_sigmoid` as ONNX nodes."""
    return g.scale(g.op("Add", g.scalar(1.0), g.op("Tanh", g.scale(x, 0.5))), 0.5)


class _Smooth(OpRule):
    """A smooth activation y = f(x) whose derivative is written with x alone (the output is
    not fetched); one true gradient in every backward mode."""

    reads_outputs = False

    def fn(self, x: np.ndarray, call: NodeCall) -> np.ndarray:
        raise NotImplementedError

    def derivative(self, x: np.ndarray, call: NodeCall) -> np.ndarray:
        raise NotImplementedError

    def forward(self, call: NodeCall) -> list[np.ndarray]:
        x = call.inputs[0]
        return [np.asarray(self.fn(x, call)).astype(x.dtype, copy=False)]

    def vjp(self, call: NodeCall, grads: Sequence[Grad]) -> list[Grad]:
        dy = grads[0]
        assert dy is not None
        x = call.inputs[0].astype(dy.dtype, copy=False)
        return [(dy * self.derivative(x, call)).astype(dy.dtype, copy=False)]

    def emit_derivative(self, x: str, call: NodeCall, g: Emitter) -> str:
        """f'(x) as ONNX nodes on the graph tensor ``x``."""
        raise NotImplementedError

    def emit(self, call: NodeCall, grads: Sequence[str | None], g: Emitter) -> list[str | None]:
        dy = grads[0]
        assert dy is not None
        return [g.mul(dy, self.emit_derivative(call.node.input[0], call, g))]


@register_rule("Erf", since=9)
class Erf(_Smooth):
    """erf(x); d/dx = 2 / sqrt(pi) exp(-x^2) (the exact GELU of the opset-17 exporters)."""

    def fn(self, x, call):
        return erf(x)

    def derivative(self, x, call):
        return 2 / np.sqrt(np.pi) * np.exp(-x * x)

    def emit_derivative(self, x, call, g):
        return g.scale(g.op("Exp", g.op("Neg", g.mul(x, x))), 2 / np.sqrt(np.pi))


#: sqrt(2 / pi) and the cubic coefficient of GELU's tanh approximation
_GELU_TANH_SCALE, _GELU_TANH_CUBIC = float(np.sqrt(2 / np.pi)), 0.044715


@register_rule("Gelu", since=20)
class Gelu(_Smooth):
    """GELU (Hendrycks & Gimpel 2016): x Phi(x) (``approximate="none"``) or its tanh form
    0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) (``"tanh"``)."""

    def fn(self, x, call):
        if self._tanh(call):
            return 0.5 * x * (1 + np.tanh(_GELU_TANH_SCALE * (x + _GELU_TANH_CUBIC * x**3)))
        return 0.5 * x * (1 + erf(x / np.sqrt(2)))

    def derivative(self, x, call):
        if self._tanh(call):
            t = np.tanh(_GELU_TANH_SCALE * (x + _GELU_TANH_CUBIC * x**3))
            inner = _GELU_TANH_SCALE * (1 + 3 * _GELU_TANH_CUBIC * x * x)
            return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * inner
        return 0.5 * (1 + erf(x / np.sqrt(2))) + x * np.exp(-0.5 * x * x) / np.sqrt(2 * np.pi)

    @staticmethod
    def _tanh(call: NodeCall) -> bool:
        approximate = call.attrs.get("approximate", "none")
        if approximate not in ("none", "tanh"):
            raise ValueError(f"Gelu node {call.node.name!r}: unknown approximate={approximate!r}")
        return approximate == "tanh"

    def emit_derivative(self, x, call, g):
        if self._tanh(call):
            cube = g.scale(g.mul(g.mul(x, x), x), _GELU_TANH_CUBIC)
            t = g.op("Tanh", g.scale(g.op("Add", x, cube), _GELU_TANH_SCALE))
            square = g.scale(g.mul(x, x), 3 * _GELU_TANH_CUBIC)
            inner = g.scale(g.op("Add", g.scalar(1.0), square), _GELU_TANH_SCALE)
            left = g.scale(g.op("Add", g.scalar(1.0), t), 0.5)
            slope = g.op("Sub", g.scalar(1.0), g.mul(t, t))
            return g.op("Add", left, g.mul(g.mul(g.scale(x, 0.5), slope), inner))
        erf = g.op("Erf", g.scale(x, 1 / np.sqrt(2)))
        left = g.scale(g.op("Add", g.scalar(1.0), erf), 0.5)
        bump = g.op("Exp", g.scale(g.mul(x, x), -0.5))
        return g.op("Add", left, g.scale(g.mul(x, bump), 1 / np.sqrt(2 * np.pi)))


@register_rule("Softplus")
class Softplus(_Smooth):
    """log(1 + exp(x)); d/dx = sigmoid(x)."""

    def fn(self, x, call):
        return np.logaddexp(0, x)

    def derivative(self, x, call):
        return _sigmoid(x)

    def emit_derivative(self, x, call, g):
        return emit_sigmoid(x, g)


@register_rule("Mish", since=18)
class Mish(_Smooth):
    """Mish (Misra 2019, CSP/YOLOv4 backbones): x tanh(softplus(x)); d/dx = tanh(sp) +
    x (1 - tanh(sp)^2) sigmoid(x)."""

    def fn(self, x, call):
        return x * np.tanh(np.logaddexp(0, x))

    def derivative(self, x, call):
        t = np.tanh(np.logaddexp(0, x))
        return t + x * (1 - t * t) * _sigmoid(x)

    def emit_derivative(self, x, call, g):
        t = g.op("Tanh", g.op("Softplus", x))
        slope = g.op("Sub", g.scalar(1.0), g.mul(t, t))
        return g.op("Add", t, g.mul(g.mul(x, slope), emit_sigmoid(x, g)))
