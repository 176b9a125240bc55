"""Rules for the layers of CNNs: convolution, dense layers and pooling."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ... import kernels
from ...graph import same_pads
from ..registry import Grad, NodeCall, OpRule, register_rule


def window(attrs: dict, hw: Sequence[int], kernel: Sequence[int]) -> kernels.Window:
    """The sliding window of a Conv / pooling node on an (H, W) input, auto_pad resolved."""
    strides = attrs.get("strides", [1, 1])
    dilations = attrs.get("dilations", [1, 1])
    auto_pad = attrs.get("auto_pad", "NOTSET")
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        pads = [0, 0, 0, 0]
        for axis in range(2):
            k_eff = dilations[axis] * (kernel[axis] - 1) + 1
            total = max((-(-hw[axis] // strides[axis]) - 1) * strides[axis] + k_eff - hw[axis], 0)
            begin = same_pads(hw[axis], k_eff, strides[axis], auto_pad)
            pads[axis], pads[axis + 2] = begin, total - begin
    elif auto_pad == "VALID":
        pads = [0, 0, 0, 0]
    else:
        pads = list(attrs.get("pads", [0, 0, 0, 0]))
    return kernels.Window.of(tuple(kernel), tuple(strides), tuple(pads), tuple(dilations))


@register_rule("Conv")
class Conv(OpRule):
    """y = W * x (+ b), grouped; dx = col2im(W^T dy) per group (one GEMM + one col2im)."""

    def forward(self, call: NodeCall) -> list[np.ndarray]:
        x, w = call.inputs[0], call.inputs[1]
        b = call.inputs[2] if len(call.inputs) > 2 else None
        win = window(call.attrs, x.shape[2:], w.shape[2:])
        groups = call.attrs.get("group", 1)
        n, c_out = x.shape[0], w.shape[0]
        w_groups = w.reshape(groups, c_out // groups, -1)
        parts = []
        for w_g, x_g in zip(w_groups, np.split(x, groups, axis=1)):
            cols = kernels.im2col(x_g, win.kernel, win.stride, win.pads, win.dilation)
            parts.append(np.matmul(w_g, cols))
        ho, wo = win.output_size(*x.shape[2:])
        y = np.concatenate(parts, axis=1).reshape(n, c_out, ho, wo)
        return [y + b.reshape(1, -1, 1, 1) if b is not None else y]

    def vjp(self, call: NodeCall, grads: Sequence[Grad]) -> list[Grad]:
        x, w = call.inputs[0], call.inputs[1]
        dy = grads[0]
        assert dy is not None
        out: list[Grad] = [None] * len(call.inputs)
        if call.needs[0]:
            win = window(call.attrs, x.shape[2:], w.shape[2:])
            groups = call.attrs.get("group", 1)
            n, c_out = dy.shape[:2]
            w_groups = w.astype(dy.dtype, copy=False).reshape(groups, c_out // groups, -1)
            parts = []
            for w_g, dy_g in zip(w_groups, np.split(dy.reshape(n, c_out, -1), groups, axis=1)):
                cols = np.matmul(w_g.T, dy_g)
                parts.append(
                    kernels.col2im(
                        cols, x.shape[2:], win.kernel, win.stride, win.pads, win.dilation
                    )
                )
            out[0] = np.concatenate(parts, axis=1) if groups > 1 else parts[0]
        return out


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
            da = alpha * (dy @ b.T.astype(dy.dtype, copy=False))
            out[0] = da.T if call.attrs.get("transA", 0) else da
        if call.needs[1]:
            db = alpha * (a.T @ dy)
            out[1] = db.T if call.attrs.get("transB", 0) else db
        if len(call.inputs) > 2 and call.needs[2]:
            c = call.inputs[2]
            out[2] = _unbroadcast(call.attrs.get("beta", 1.0) * dy, c.shape)
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
    switches: the true gradient, and the unpooling step of a deconvnet)."""

    def forward(self, call: NodeCall) -> list[np.ndarray]:
        x = call.inputs[0]
        y, _ = kernels.max_pool2d(x, *self._window_args(call, x))
        return [y]

    def vjp(self, call: NodeCall, grads: Sequence[Grad]) -> list[Grad]:
        x, dy = call.inputs[0], grads[0]
        assert dy is not None
        x = x.astype(dy.dtype, copy=False)
        _, switches = kernels.max_pool2d(x, *self._window_args(call, x))
        return [kernels.max_unpool2d(dy, switches, x.shape[2:])]

    @staticmethod
    def _window_args(call: NodeCall, x: np.ndarray) -> tuple:
        win = window(call.attrs, x.shape[2:], call.attrs["kernel_shape"])
        return win.kernel, win.stride, win.pads, win.dilation, bool(call.attrs.get("ceil_mode", 0))


@register_rule("GlobalAveragePool")
class GlobalAveragePool(OpRule):
    def forward(self, call: NodeCall) -> list[np.ndarray]:
        return [call.inputs[0].mean(axis=(2, 3), keepdims=True)]

    def vjp(self, call: NodeCall, grads: Sequence[Grad]) -> list[Grad]:
        x, dy = call.inputs[0], grads[0]
        assert dy is not None
        return [np.broadcast_to(dy / (x.shape[2] * x.shape[3]), x.shape).copy()]


def _unbroadcast(grad: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Sum a broadcast result's cotangent back to an operand's ``shape``."""
    extra = grad.ndim - len(shape)
    if extra > 0:
        grad = grad.sum(axis=tuple(range(extra)))
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    return grad.sum(axis=axes, keepdims=True) if axes else grad
