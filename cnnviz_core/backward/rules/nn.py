"""Rules for the layers of CNNs: convolution, dense layers and pooling."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from ... import kernels
from ...errors import UnsupportedOpError
from ...geometry import Window
from .. import adjoint
from ..registry import Grad, NodeCall, OpRule, register_rule
from .common import unbroadcast


def conv_1d_as_2d(call: NodeCall) -> NodeCall:
    """The call of a 1-D Conv (N, C, L) as the 2-D one of height 1 (N, C, 1, L)."""
    attrs = dict(call.attrs)
    for key, pad in (("kernel_shape", 1), ("strides", 1), ("dilations", 1)):
        if key in attrs:
            attrs[key] = [pad, *attrs[key]]
    if "pads" in attrs:
        attrs["pads"] = [0, attrs["pads"][0], 0, attrs["pads"][1]]
    inputs = [x if x is None or i > 1 else x[:, :, None] for i, x in enumerate(call.inputs)]
    return dataclasses.replace(call, attrs=attrs, inputs=inputs)


@register_rule("Conv")
class Conv(OpRule):
    """y = W * x (+ b), grouped; dx = col2im(W^T dy) per group (one GEMM + one col2im)."""

    reads_inputs = reads_outputs = False  # x's shape; weights are values (constant or computed)

    def forward(self, call: NodeCall) -> list[np.ndarray]:
        if np.ndim(call.inputs[0]) == 3:  # a 1-D conv (ECA-Net's channel attention)
            return [self.forward(conv_1d_as_2d(call))[0][:, :, 0]]
        x, w = call.inputs[0], call.inputs[1]
        b = call.inputs[2] if len(call.inputs) > 2 else None
        win = Window.from_onnx(call.attrs, w.shape[2:], x.shape[2:])
        groups = call.attrs.get("group", 1)
        n, c_out = x.shape[0], w.shape[0]
        w_groups = w.reshape(groups, c_out // groups, -1)
        parts = []
        for w_g, x_g in zip(w_groups, np.split(x, groups, axis=1)):
            cols = kernels.im2col(
                x_g, win.kernel, win.stride, win.pads, win.dilation, device=call.device
            )
            parts.append(np.matmul(w_g, cols))
        ho, wo = win.output_size(x.shape[2:])
        y = np.concatenate(parts, axis=1).reshape(n, c_out, ho, wo)
        return [y + b.reshape(1, -1, 1, 1) if b is not None else y]

    def vjp(self, call: NodeCall, grads: Sequence[Grad]) -> list[Grad]:
        if np.ndim(call.inputs[0]) == 3 and grads[0] is not None:  # 1-D: as a 2-D of height 1
            lifted = self.vjp(conv_1d_as_2d(call), [grads[0][:, :, None]])
            return [None if g is None else g[:, :, 0] for g in lifted]
        x, w = call.inputs[0], call.inputs[1]
        dy = grads[0]
        assert dy is not None
        out: list[Grad] = [None] * len(call.inputs)
        if call.needs[0]:
            win = Window.from_onnx(call.attrs, w.shape[2:], x.shape[2:])
            groups = call.attrs.get("group", 1)
            if dy.dtype == np.float32:
                out[0] = adjoint.conv_input_grad(dy, w, win, groups, x.shape[2:], call.sessions)
            else:
                out[0] = self.input_grad(dy, w, win, groups, x.shape[2:])
        return out

    @staticmethod
    def input_grad(
        dy: np.ndarray, w: np.ndarray, win: Window, groups: int, hw: Sequence[int]
    ) -> np.ndarray:
        """dL/dx = col2im(W^T dy) per group: the NumPy reference (any float dtype)."""
        n, c_out = dy.shape[:2]
        w_groups = w.astype(dy.dtype, copy=False).reshape(groups, c_out // groups, -1)
        parts = []
        for w_g, dy_g in zip(w_groups, np.split(dy.reshape(n, c_out, -1), groups, axis=1)):
            cols = np.matmul(w_g.T, dy_g)
            parts.append(
                kernels.col2im(cols, (hw[0], hw[1]), win.kernel, win.stride, win.pads, win.dilation)
            )
        return np.concatenate(parts, axis=1) if groups > 1 else parts[0]


@register_rule("Gemm")
class Gemm(OpRule):
    """y = alpha * A' B' + beta * C with A' = A or A^T (transA), likewise B'."""

    def forward(self, call: NodeCall) -> list[np.ndarray]:
        a, b = self._operands(call)
        y = call.attrs.get("alpha", 1.0) * (a @ b)
        if len(call.inputs) > 2 and call.inputs[2] is not None:
            y = y + call.attrs.get("beta", 1.0) * call.inputs[2]
        return [y]

    def vjp(self, call: NodeCall, grads: Sequence[Grad]) -> list[Grad]:
        dy = grads[0]
        assert dy is not None
        a, b = self._operands(call)
        alpha = call.attrs.get("alpha", 1.0)
        out: list[Grad] = [None] * len(call.inputs)
        if call.needs[0]:
            if dy.dtype == np.float32 and not call.needs[1] and dy.ndim == 2:
                # weights (no gradient wanted): dy @ B'^T through onnxruntime
                trans_b = bool(call.attrs.get("transB", 0))
                da = adjoint.matmul_constant(
                    dy, call.inputs[1], call.sessions, transpose=not trans_b
                )
                da = alpha * da if alpha != 1.0 else da
            else:
                da = alpha * (dy @ b.T.astype(dy.dtype, copy=False))
            out[0] = da.T if call.attrs.get("transA", 0) else da
        if call.needs[1]:
            db = alpha * (a.T @ dy)
            out[1] = db.T if call.attrs.get("transB", 0) else db
        if len(call.inputs) > 2 and call.needs[2]:
            c = call.inputs[2]
            out[2] = unbroadcast(call.attrs.get("beta", 1.0) * dy, c.shape)
        return out

    @staticmethod
    def _operands(call: NodeCall) -> tuple[np.ndarray, np.ndarray]:
        a, b = call.inputs[0], call.inputs[1]
        if call.attrs.get("transA", 0):
            a = a.T
        if call.attrs.get("transB", 0):
            b = b.T
        return a, b


@register_rule("MaxPool")
class MaxPool(OpRule):
    """Max pooling; the backward scatters to the forward argmax (max-unpool through the
    switches: the true gradient, and the unpooling step of a deconvnet). The optional second
    output ``Indices`` counts over the whole tensor, row-major (``storage_order`` 0) or with
    H and W swapped (1), and carries no gradient."""

    reads_outputs = False

    def forward(self, call: NodeCall) -> list[np.ndarray]:
        x = call.inputs[0]
        y, switches = self._pool(call, x)
        if len(call.node.output) < 2 or not call.node.output[1]:
            return [y.astype(x.dtype, copy=False)]
        n, c, h, w = x.shape
        if call.attrs.get("storage_order", 0):
            switches = (switches % w) * h + switches // w
        planes = (np.arange(n * c, dtype=np.int64) * (h * w)).reshape(n, c, 1, 1)
        return [y.astype(x.dtype, copy=False), switches + planes]

    def vjp(self, call: NodeCall, grads: Sequence[Grad]) -> list[Grad]:
        x, dy = call.inputs[0], grads[0]
        assert dy is not None
        x = x.astype(dy.dtype, copy=False)
        _, switches = self._pool(call, x)
        return [kernels.max_unpool2d(dy, switches, x.shape[2:], device=call.device)]

    @staticmethod
    def _pool(call: NodeCall, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        win = Window.from_onnx(call.attrs, call.attrs["kernel_shape"], x.shape[2:])
        return kernels.max_pool2d(
            x, win.kernel, win.stride, win.pads, win.dilation, win.ceil_mode, device=call.device
        )


@register_rule("AveragePool")
class AveragePool(OpRule):
    """Average pooling over any number of spatial axes (2-D in CNNs, 3-D in the exporter's LRN
    decomposition): y = sum over the window / count, where count is the window's taps inside the
    input (``count_include_pad`` 0) or inside the padded input (1); ceil_mode windows reaching
    past the padding count only what they cover. One strided add per kernel tap; the backward
    spreads dy / count back the same way."""

    def forward(self, call: NodeCall) -> list[np.ndarray]:
        x = call.inputs[0]
        win, count = self._geometry(call, x.shape[2:], x.dtype)
        out = win.output_size(x.shape[2:])
        padded = np.zeros((*x.shape[:2], *win.padded_size(x.shape[2:])), x.dtype)
        padded[win.inside(x.shape[2:])] = x
        total = np.zeros((*x.shape[:2], *out), x.dtype)
        for tap in win.taps(out):
            total += padded[tap]
        return [(total / count).astype(x.dtype, copy=False)]

    def vjp(self, call: NodeCall, grads: Sequence[Grad]) -> list[Grad]:
        x, dy = call.inputs[0], grads[0]
        assert dy is not None
        win, count = self._geometry(call, x.shape[2:], dy.dtype)
        spread = dy / count
        padded = np.zeros((*x.shape[:2], *win.padded_size(x.shape[2:])), spread.dtype)
        for tap in win.taps(dy.shape[2:]):
            padded[tap] += spread
        return [padded[win.inside(x.shape[2:])].copy()]

    @staticmethod
    def _geometry(
        call: NodeCall, spatial: Sequence[int], dtype: np.dtype
    ) -> tuple[Window, np.ndarray]:
        """The node's window and the divisor of each output (taps counted per ONNX)."""
        win = Window.from_onnx(call.attrs, call.attrs["kernel_shape"], spatial)
        mask = np.zeros(win.padded_size(spatial), dtype)
        if call.attrs.get("count_include_pad", 0):
            mask[tuple(slice(0, n + b + e) for n, b, e in zip(spatial, win.begins, win.ends))] = 1
        else:
            mask[win.inside(spatial)] = 1
        count = sum(mask[tap] for tap in win.taps(win.output_size(spatial)))
        return win, np.asarray(count)


@register_rule("GlobalAveragePool")
class GlobalAveragePool(OpRule):
    reads_inputs = reads_outputs = False  # shapes only

    def forward(self, call: NodeCall) -> list[np.ndarray]:
        return [call.inputs[0].mean(axis=(2, 3), keepdims=True)]

    def vjp(self, call: NodeCall, grads: Sequence[Grad]) -> list[Grad]:
        x, dy = call.inputs[0], grads[0]
        assert dy is not None
        return [np.broadcast_to(dy / (x.shape[2] * x.shape[3]), x.shape).copy()]


@register_rule("GlobalMaxPool")
class GlobalMaxPool(OpRule):
    """Max over all spatial positions; the cotangent goes to the (first) argmax."""

    def forward(self, call: NodeCall) -> list[np.ndarray]:
        x = call.inputs[0]
        return [x.max(axis=tuple(range(2, x.ndim)), keepdims=True)]

    def vjp(self, call: NodeCall, grads: Sequence[Grad]) -> list[Grad]:
        x, dy = call.inputs[0], grads[0]
        assert dy is not None
        flat = x.reshape(*x.shape[:2], -1)
        dx = np.zeros(flat.shape, dy.dtype)
        arg = flat.argmax(axis=2)[..., None]
        np.put_along_axis(dx, arg, dy.reshape(*x.shape[:2], 1), axis=2)
        return [dx.reshape(x.shape)]


@register_rule("MatMul")
class MatMul(OpRule):
    """NumPy matmul semantics: batched, broadcasting, 1-D operands promoted and squeezed."""

    def forward(self, call: NodeCall) -> list[np.ndarray]:
        return [np.matmul(call.inputs[0], call.inputs[1])]

    def vjp(self, call: NodeCall, grads: Sequence[Grad]) -> list[Grad]:
        dy = grads[0]
        assert dy is not None
        a, b = call.inputs
        a2 = a[None, :] if a.ndim == 1 else a
        b2 = b[:, None] if b.ndim == 1 else b
        g = dy[..., None] if b.ndim == 1 else dy
        g = g[..., None, :] if a.ndim == 1 else g
        out: list[Grad] = [None, None]
        if call.needs[0]:
            out[0] = unbroadcast(g @ np.swapaxes(b2, -1, -2), a2.shape).reshape(a.shape)
        if call.needs[1]:
            out[1] = unbroadcast(np.swapaxes(a2, -1, -2) @ g, b2.shape).reshape(b.shape)
        return out


def _per_channel(p: np.ndarray, ndim: int) -> np.ndarray:
    """A (C,) parameter shaped to broadcast over (N, C, ...); (C, H, W) ones (spatial=0) too."""
    p = np.asarray(p)
    return p.reshape((1, -1) + (1,) * (ndim - 2)) if p.ndim == 1 else p[None]


@register_rule("BatchNormalization")
class BatchNormalization(OpRule):
    """Inference batch norm with the running statistics: y = (x - mean) / sqrt(var + eps) *
    scale + B; only x gets a gradient (the parameters are weights)."""

    constant_inputs = (1, 2, 3, 4)

    def forward(self, call: NodeCall) -> list[np.ndarray]:
        x = call.inputs[0]
        scale, shift = self._affine(call)
        return [(x * scale + shift).astype(x.dtype, copy=False)]

    def vjp(self, call: NodeCall, grads: Sequence[Grad]) -> list[Grad]:
        dy = grads[0]
        assert dy is not None
        scale, _ = self._affine(call)
        return [(dy * scale).astype(dy.dtype, copy=False), None, None, None, None]

    @staticmethod
    def _affine(call: NodeCall) -> tuple[np.ndarray, np.ndarray]:
        if call.attrs.get("training_mode", 0):
            raise UnsupportedOpError(
                f"BatchNormalization node {call.node.name!r} is in training mode: the backward "
                "pass covers inference graphs only"
            )
        x, gamma, beta, mean, var = call.inputs[:5]
        eps = call.attrs.get("epsilon", 1e-5)
        inv = gamma / np.sqrt(var + eps)
        return _per_channel(inv, x.ndim), _per_channel(beta - mean * inv, x.ndim)


def _channel_window_sum(a: np.ndarray, before: int, after: int) -> np.ndarray:
    """out[:, c] = sum of a[:, c'] for c - before <= c' <= c + after (inside the channels)."""
    c = a.shape[1]
    out = np.zeros_like(a)
    for off in range(-before, after + 1):
        out[:, max(0, -off) : c - max(0, off)] += a[:, max(0, off) : c - max(0, -off)]
    return out


@register_rule("LRN")
class LRN(OpRule):
    """Local response normalisation across channels (AlexNet): y = x / d^beta with
    d = bias + alpha / size * sum of x^2 over channels c - floor((size-1)/2) ..
    c + ceil((size-1)/2)."""

    def forward(self, call: NodeCall) -> list[np.ndarray]:
        x = call.inputs[0]
        d, beta, _, _, _ = self._denominator(call, x)
        return [(x * d**-beta).astype(x.dtype, copy=False)]

    def vjp(self, call: NodeCall, grads: Sequence[Grad]) -> list[Grad]:
        dy = grads[0]
        assert dy is not None
        x = call.inputs[0].astype(dy.dtype, copy=False)
        d, beta, coef, before, after = self._denominator(call, x)
        inner = _channel_window_sum(dy * x * d ** (-beta - 1), after, before)
        return [dy * d**-beta - 2 * beta * coef * x * inner]

    @staticmethod
    def _denominator(call: NodeCall, x: np.ndarray) -> tuple:
        size = int(call.attrs["size"])
        alpha, beta = call.attrs.get("alpha", 1e-4), call.attrs.get("beta", 0.75)
        bias = call.attrs.get("bias", 1.0)
        before, after = (size - 1) // 2, -(-(size - 1) // 2)
        coef = alpha / size
        return bias + coef * _channel_window_sum(x * x, before, after), beta, coef, before, after
