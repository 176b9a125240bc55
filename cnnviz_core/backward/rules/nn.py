"""Rules for the layers of CNNs: convolution, dense layers and pooling."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from ... import kernels
from ...errors import UnsupportedOpError
from ...geometry import Window
from .. import adjoint
from ..registry import Grad, NodeCall, OpRule, register_rule
from .common import unbroadcast

if TYPE_CHECKING:
    from ..emitter import Emitter


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

    def emit(self, call: NodeCall, grads: Sequence[str | None], g: Emitter) -> list[str | None]:
        x, w, dy = call.inputs[0], call.inputs[1], grads[0]
        assert dy is not None
        out: list[str | None] = [None] * len(call.inputs)
        if call.needs[0]:
            win = Window.from_onnx(call.attrs, w.shape[2:], x.shape[2:])
            groups = call.attrs.get("group", 1)
            pads = [win.span(a % len(win.kernel)) - 1 - p for a, p in enumerate(win.pads)]
            if len(win.kernel) == 2 and win.stride == (1, 1) and min(pads) >= 0:
                # a stride-1 adjoint is a convolution with flipped kernels (faster than a
                # ConvTranspose); the flip is written as nodes on the weight, which runtimes
                # fold once at load when the weight is constant (the file keeps one copy)
                kernel = emit_flipped_kernel(g, call.node.input[1], w.shape, groups)
                out[0] = g.op(
                    "Conv", dy, kernel, pads=pads, dilations=list(win.dilation), group=groups
                )
                return out
            out[0] = g.transpose_window(
                dy,
                call.node.input[1],
                win.kernel,
                win.stride,
                win.dilation,
                win.begins,
                x.shape[2:],
                win.output_size(x.shape[2:]),
                call.attrs.get("group", 1),
            )
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

    def emit(self, call: NodeCall, grads: Sequence[str | None], g: Emitter) -> list[str | None]:
        dy = grads[0]
        assert dy is not None
        a, b = call.node.input[0], call.node.input[1]
        alpha = float(call.attrs.get("alpha", 1.0))
        trans_a, trans_b = call.attrs.get("transA", 0), call.attrs.get("transB", 0)
        out: list[str | None] = [None] * len(call.inputs)
        if call.needs[0]:
            da = g.op("Gemm", dy, b, alpha=alpha, transB=0 if trans_b else 1)
            out[0] = g.op("Transpose", da, perm=[1, 0]) if trans_a else da
        if call.needs[1]:
            db = g.op("Gemm", a, dy, alpha=alpha, transA=0 if trans_a else 1)
            out[1] = g.op("Transpose", db, perm=[1, 0]) if trans_b else db
        if len(call.inputs) > 2 and call.needs[2]:
            shape = np.shape(call.outputs[0]) if call.outputs else np.shape(call.inputs[2])
            beta = float(call.attrs.get("beta", 1.0))
            out[2] = g.unbroadcast(g.scale(dy, beta), shape, np.shape(call.inputs[2]))
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

    def emit(self, call: NodeCall, grads: Sequence[str | None], g: Emitter) -> list[str | None]:
        """Unpooling through the switches: the Indices of a MaxPool of the same window
        (flat over the whole tensor), then a ScatterElements that adds (overlapping windows)."""
        dy = grads[0]
        assert dy is not None
        x = call.node.input[0]
        attrs = {k: v for k, v in call.attrs.items() if k != "storage_order"}
        _, switches = g.add("MaxPool", [x], 2, **attrs)
        spatial = np.shape(call.inputs[0])[2:]
        win = Window.from_onnx(call.attrs, call.attrs["kernel_shape"], spatial)
        disjoint = all(k <= s for k, s in zip(win.kernel, win.stride))
        # MaxUnpool infers a least output size from its windows: pads or a kernel larger
        # than the input can make it exceed the input's (onnxruntime then refuses the run)
        fits = all(
            n >= m for n, m in zip(spatial, win.transposed_output_size(win.output_size(spatial)))
        )
        if disjoint and fits and set(win.dilation) == {1} and not g.portable:
            # windows do not overlap: each input position gets at most one cotangent
            return [g.op("MaxUnpool", dy, switches, g.shape_of(x), **_unpool_attrs(win))]
        flat = g.ints([-1])
        zeros = g.zeros_like(g.op("Reshape", x, flat))
        scattered = g.op(
            "ScatterElements",
            zeros,
            g.op("Reshape", switches, flat),
            g.op("Reshape", dy, flat),
            axis=0,
            reduction="add",
        )
        return [g.reshape_like(scattered, x)]

    @staticmethod
    def _pool(call: NodeCall, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        win = Window.from_onnx(call.attrs, call.attrs["kernel_shape"], x.shape[2:])
        return kernels.max_pool2d(
            x, win.kernel, win.stride, win.pads, win.dilation, win.ceil_mode, device=call.device
        )


def emit_flipped_kernel(g: Emitter, weight: str, shape: Sequence[int], groups: int) -> str:
    """The kernel of a stride-1 convolution's adjoint: per group, in and out channels swapped
    and the spatial axes reversed (as :mod:`..adjoint` builds it in NumPy)."""
    c_out, c_in_group = int(shape[0]), int(shape[1])
    kernel = [int(k) for k in shape[2:]]
    swapped = weight
    if groups == 1:
        swapped = g.op("Transpose", weight, perm=[1, 0, 2, 3])
    elif c_in_group > 1 or c_out // groups > 1:
        grouped = g.op("Reshape", weight, g.ints([groups, c_out // groups, c_in_group, *kernel]))
        moved = g.op("Transpose", grouped, perm=[0, 2, 1, 3, 4])
        swapped = g.op("Reshape", moved, g.ints([groups * c_in_group, c_out // groups, *kernel]))
    lowest = int(np.iinfo(np.int64).min)
    return g.op(
        "Slice",
        swapped,
        g.ints([-1, -1]),
        g.ints([lowest, lowest]),
        g.ints([2, 3]),
        g.ints([-1, -1]),
    )


def _unpool_attrs(win: Window) -> dict:
    """MaxUnpool's attributes for the windows of a MaxPool (the output shape is given)."""
    return {"kernel_shape": list(win.kernel), "strides": list(win.stride), "pads": list(win.pads)}


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

    def emit(self, call: NodeCall, grads: Sequence[str | None], g: Emitter) -> list[str | None]:
        """dy / count spread back by a depthwise ConvTranspose with a kernel of ones."""
        x, dy = call.inputs[0], grads[0]
        assert dy is not None
        win, count = self._geometry(call, x.shape[2:], np.dtype(np.float32))
        spread = g.op("Div", dy, g.const(count, hint="count"))
        channels = x.shape[1]
        ones = g.const(np.ones((channels, 1, *win.kernel), np.float32), hint="ones")
        dx = g.transpose_window(
            spread,
            ones,
            win.kernel,
            win.stride,
            win.dilation,
            win.begins,
            x.shape[2:],
            win.output_size(x.shape[2:]),
            channels,
        )
        return [dx]

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

    def emit(self, call: NodeCall, grads: Sequence[str | None], g: Emitter) -> list[str | None]:
        x, dy = call.inputs[0], grads[0]
        assert dy is not None
        spread = g.op("Div", dy, g.scalar(x.shape[2] * x.shape[3]))
        return [g.op("Expand", spread, g.shape_of(call.node.input[0]))]


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

    def emit(self, call: NodeCall, grads: Sequence[str | None], g: Emitter) -> list[str | None]:
        dy = grads[0]
        assert dy is not None
        x = call.node.input[0]
        flat = g.op("Reshape", x, g.ints([0, 0, -1]))
        arg = g.op("ArgMax", flat, axis=2, keepdims=1, select_last_index=0)
        values = g.op("Reshape", dy, g.ints([0, 0, 1]))
        scattered = g.op("ScatterElements", g.zeros_like(flat), arg, values, axis=2)
        return [g.reshape_like(scattered, x)]


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

    def emit(self, call: NodeCall, grads: Sequence[str | None], g: Emitter) -> list[str | None]:
        dy = grads[0]
        assert dy is not None
        a, b = call.inputs
        a_name, b_name = call.node.input
        a_shape = (1, *np.shape(a)) if np.ndim(a) == 1 else np.shape(a)
        b_shape = (*np.shape(b), 1) if np.ndim(b) == 1 else np.shape(b)
        a2 = g.op("Unsqueeze", a_name, g.ints([0])) if np.ndim(a) == 1 else a_name
        b2 = g.op("Unsqueeze", b_name, g.ints([1])) if np.ndim(b) == 1 else b_name
        grad = g.op("Unsqueeze", dy, g.ints([-1])) if np.ndim(b) == 1 else dy
        grad = g.op("Unsqueeze", grad, g.ints([-2])) if np.ndim(a) == 1 else grad
        out_shape = (*np.broadcast_shapes(a_shape[:-2], b_shape[:-2]), a_shape[-2], b_shape[-1])

        def swap(name: str, rank: int) -> str:
            perm = [*range(rank - 2), rank - 1, rank - 2]
            return g.op("Transpose", name, perm=perm)

        out: list[str | None] = [None, None]
        if call.needs[0]:
            da = g.op("MatMul", grad, swap(b2, len(b_shape)))
            shape = (*out_shape[:-1], b_shape[-2])
            da = g.unbroadcast(da, shape, a_shape)
            if np.ndim(a) == 1:  # the promoted axis dropped (a vector has no batch axis)
                da = g.op("Reshape", da, g.ints(np.shape(a)))
            out[0] = da
        if call.needs[1]:
            db = g.op("MatMul", swap(a2, len(a_shape)), grad)
            shape = (*out_shape[:-2], a_shape[-1], out_shape[-1])
            db = g.unbroadcast(db, shape, b_shape)
            if np.ndim(b) == 1:
                db = g.op("Reshape", db, g.ints(np.shape(b)))
            out[1] = db
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

    def emit(self, call: NodeCall, grads: Sequence[str | None], g: Emitter) -> list[str | None]:
        dy = grads[0]
        assert dy is not None
        scale, _ = self._affine(call)
        return [g.mul(dy, g.const(scale, hint="bn_scale")), None, None, None, None]

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


def emit_channel_window_sum(
    g: Emitter, a: str, before: int, after: int, channels: int, rank: int
) -> str:
    """:func:`_channel_window_sum` in ONNX: the channels zero-padded, then shifted slices
    summed."""
    pads = [0] * rank
    pads_end = [0] * rank
    pads[1], pads_end[1] = before, after
    padded = g.op("Pad", a, g.ints(pads + pads_end), mode="constant")
    total = None
    for k in range(before + after + 1):
        part = g.op("Slice", padded, g.ints([k]), g.ints([k + channels]), g.ints([1]))
        total = part if total is None else g.op("Add", total, part)
    assert total is not None
    return total


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

    def emit(self, call: NodeCall, grads: Sequence[str | None], g: Emitter) -> list[str | None]:
        dy = grads[0]
        assert dy is not None
        x_value, x = call.inputs[0], call.node.input[0]
        size = int(call.attrs["size"])
        alpha, beta = call.attrs.get("alpha", 1e-4), call.attrs.get("beta", 0.75)
        bias = call.attrs.get("bias", 1.0)
        before, after = (size - 1) // 2, -(-(size - 1) // 2)
        coef = alpha / size
        rank, channels = np.ndim(x_value), np.shape(x_value)[1]
        window = emit_channel_window_sum(g, g.mul(x, x), before, after, channels, rank)
        d = g.op("Add", g.scalar(bias), g.scale(window, coef))
        weighted = g.mul(g.mul(dy, x), g.op("Pow", d, g.scalar(-beta - 1)))
        inner = emit_channel_window_sum(g, weighted, after, before, channels, rank)
        first = g.mul(dy, g.op("Pow", d, g.scalar(-beta)))
        return [g.op("Sub", first, g.mul(g.scale(x, 2 * beta * coef), inner))]

    @staticmethod
    def _denominator(call: NodeCall, x: np.ndarray) -> tuple:
        size = int(call.attrs["size"])
        alpha, beta = call.attrs.get("alpha", 1e-4), call.attrs.get("beta", 0.75)
        bias = call.attrs.get("bias", 1.0)
        before, after = (size - 1) // 2, -(-(size - 1) // 2)
        coef = alpha / size
        return bias + coef * _channel_window_sum(x * x, before, after), beta, coef, before, after
