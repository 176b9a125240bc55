"""Rules the conformance suite found missing: ReduceMax / ReduceMin (CBAM's channel max),
DepthToSpace / SpaceToDepth (sub-pixel convolution heads, YOLO's space-to-depth stems) and
ConvTranspose (U-Net decoders, FCN upsampling).

Shape convention: (N, C, H, W)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import onnx

from ...errors import UnsupportedOpError
from ...geometry import Window
from ...graph import attributes
from ...model import Model
from ..registry import Grad, NodeCall, OpRule, register_rule
from .nn import Conv
from .shape import _Reduce

if TYPE_CHECKING:
    from ..emitter import Emitter


class _ReduceExtreme(_Reduce):
    """y = max (min) over axes; dy goes to the elements equal to the extreme, shared equally
    among ties (as ``torch.amax`` / ``torch.amin``)."""

    reads_inputs = True
    reads_outputs = False
    minimum = False

    def extreme(self, x: np.ndarray, axis: tuple[int, ...], keepdims: bool) -> np.ndarray:
        pick = np.min if self.minimum else np.max
        return np.asarray(pick(x, axis=axis, keepdims=keepdims))

    def forward(self, call: NodeCall) -> list[np.ndarray]:
        x, axes = call.inputs[0], self.axes(call)
        keep = bool(call.attrs.get("keepdims", 1))
        return [self.extreme(x, axis=axes, keepdims=keep) if axes else x]

    def vjp(self, call: NodeCall, grads: Sequence[Grad]) -> list[Grad]:
        x, dy = call.inputs[0], grads[0]
        assert dy is not None
        axes = self.axes(call)
        if not axes:
            return [dy, None][: len(call.inputs)]
        if not call.attrs.get("keepdims", 1):
            dy = np.expand_dims(dy, axes)
        hits = x == self.extreme(x, axis=axes, keepdims=True)
        share = hits / hits.sum(axis=axes, keepdims=True)
        return [(share * dy).astype(dy.dtype, copy=False), None][: len(call.inputs)]

    def emit(self, call: NodeCall, grads: Sequence[str | None], g: Emitter) -> list[str | None]:
        """The extreme recomputed (keepdims), the hits where x equals it, dy shared among
        them: Equal, Cast, ReduceSum and a division (no scatter)."""
        dy = grads[0]
        assert dy is not None
        axes = self.axes(call)
        if not axes:
            return [dy, None][: len(call.inputs)]
        if not call.attrs.get("keepdims", 1):
            dy = g.op("Unsqueeze", dy, g.ints(axes))
        x = call.node.input[0]
        extreme = g.reduce("ReduceMin" if self.minimum else "ReduceMax", x, axes)
        dtype = onnx.helper.np_dtype_to_tensor_dtype(np.asarray(call.inputs[0]).dtype)
        hits = g.op("Cast", g.op("Equal", x, extreme), to=dtype)
        share = g.op("Div", dy, g.reduce_sum(hits, axes))
        return [g.mul(hits, share), None][: len(call.inputs)]


@register_rule("ReduceMax")
class ReduceMax(_ReduceExtreme):
    pass


@register_rule("ReduceMax", since=18)
class ReduceMax18(_ReduceExtreme):
    axes_from_input = True


@register_rule("ReduceMin")
class ReduceMin(_ReduceExtreme):
    minimum = True


@register_rule("ReduceMin", since=18)
class ReduceMin18(_ReduceExtreme):
    minimum = True
    axes_from_input = True


class _Rearrange(OpRule):
    """A reshape -> transpose -> reshape of the data; the VJP runs it backwards."""

    reads_inputs = reads_outputs = False

    def plan(self, call: NodeCall, shape: Sequence[int]) -> tuple[tuple, tuple, tuple]:
        """(first reshape, permutation, output shape) for an input of ``shape``."""
        raise NotImplementedError

    def forward(self, call: NodeCall) -> list[np.ndarray]:
        x = call.inputs[0]
        first, perm, out = self.plan(call, x.shape)
        return [np.ascontiguousarray(x.reshape(first).transpose(perm)).reshape(out)]

    def vjp(self, call: NodeCall, grads: Sequence[Grad]) -> list[Grad]:
        x, dy = call.inputs[0], grads[0]
        assert dy is not None
        first, perm, _ = self.plan(call, x.shape)
        moved = tuple(first[p] for p in perm)
        return [
            np.ascontiguousarray(dy.reshape(moved).transpose(np.argsort(perm))).reshape(x.shape)
        ]

    def emit(self, call: NodeCall, grads: Sequence[str | None], g: Emitter) -> list[str | None]:
        """The VJP's reshape -> transpose -> reshape as nodes (the batch axis kept free)."""
        dy = grads[0]
        assert dy is not None
        first, perm, _ = self.plan(call, np.shape(call.inputs[0]))
        moved = [0, *(first[p] for p in perm[1:])]  # perm keeps axis 0: the batch (0: copied)
        split = g.op("Reshape", dy, g.ints(moved))
        back = g.op("Transpose", split, perm=[int(p) for p in np.argsort(perm)])
        return [g.reshape_like(back, call.node.input[0])]


@register_rule("DepthToSpace")
class DepthToSpace(_Rearrange):
    """(N, C, H, W) -> (N, C / b^2, H b, W b); ``DCR`` (default) or ``CRD`` channel order."""

    def plan(self, call: NodeCall, shape: Sequence[int]) -> tuple[tuple, tuple, tuple]:
        n, c, h, w = shape
        b = int(call.attrs["blocksize"])
        out = (n, c // (b * b), h * b, w * b)
        if call.attrs.get("mode", "DCR") == "CRD":
            return (n, c // (b * b), b, b, h, w), (0, 1, 4, 2, 5, 3), out
        return (n, b, b, c // (b * b), h, w), (0, 3, 4, 1, 5, 2), out

    def emit(self, call: NodeCall, grads: Sequence[str | None], g: Emitter) -> list[str | None]:
        """DCR: SpaceToDepth (its exact inverse, a permutation); CRD: the generic nodes."""
        dy = grads[0]
        assert dy is not None
        if call.attrs.get("mode", "DCR") == "CRD":
            return super().emit(call, grads, g)
        return [g.op("SpaceToDepth", dy, blocksize=int(call.attrs["blocksize"]))]


@register_rule("SpaceToDepth")
class SpaceToDepth(_Rearrange):
    """(N, C, H, W) -> (N, C b^2, H / b, W / b)."""

    def plan(self, call: NodeCall, shape: Sequence[int]) -> tuple[tuple, tuple, tuple]:
        n, c, h, w = shape
        b = int(call.attrs["blocksize"])
        first = (n, c, h // b, b, w // b, b)
        return first, (0, 3, 5, 1, 2, 4), (n, c * b * b, h // b, w // b)

    def emit(self, call: NodeCall, grads: Sequence[str | None], g: Emitter) -> list[str | None]:
        """DepthToSpace in DCR mode: the exact inverse (a permutation)."""
        dy = grads[0]
        assert dy is not None
        return [g.op("DepthToSpace", dy, blocksize=int(call.attrs["blocksize"]), mode="DCR")]


@register_rule("ConvTranspose")
class ConvTranspose(OpRule):
    """y = ConvTranspose(x, W) (+ b): the adjoint of a Conv with weights W (C_in, C_out /
    groups, kh, kw) run from x; so y = Conv's input gradient of x, and dx = Conv(dy, W) with
    the same strides, pads, dilations and groups. Explicit pads and ``output_padding``
    (``auto_pad`` other than NOTSET and ``output_shape`` are refused at planning)."""

    reads_inputs = reads_outputs = False  # x's shape; the weights are values

    def check(self, node: onnx.NodeProto, model: Model) -> None:
        attrs = attributes(node)
        if attrs.get("auto_pad", "NOTSET") != "NOTSET" or "output_shape" in attrs:
            raise UnsupportedOpError(
                f"ConvTranspose node {node.name!r}: auto_pad / output_shape are not covered by "
                "the backward pass; export with explicit pads (torch.nn.ConvTranspose2d does)"
            )

    @staticmethod
    def conv_attrs(call: NodeCall, kernel: Sequence[int]) -> dict:
        rank = len(kernel)
        return {
            "kernel_shape": list(kernel),
            "strides": list(call.attrs.get("strides", [1] * rank)),
            "pads": list(call.attrs.get("pads", [0] * 2 * rank)),
            "dilations": list(call.attrs.get("dilations", [1] * rank)),
            "group": int(call.attrs.get("group", 1)),
        }

    def forward(self, call: NodeCall) -> list[np.ndarray]:
        x, w = call.inputs[0], call.inputs[1]
        b = call.inputs[2] if len(call.inputs) > 2 else None
        win = Window.from_onnx_transpose(call.attrs, w.shape[2:], x.shape[2:])
        size = win.transposed_output_size(x.shape[2:], call.attrs.get("output_padding"))
        groups = int(call.attrs.get("group", 1))
        y = Conv.input_grad(x, w.astype(x.dtype, copy=False), win, groups, size)
        return [y + b.reshape(1, -1, 1, 1).astype(y.dtype) if b is not None else y]

    def vjp(self, call: NodeCall, grads: Sequence[Grad]) -> list[Grad]:
        dy = grads[0]
        assert dy is not None
        w = call.inputs[1]
        out: list[Grad] = [None] * len(call.inputs)
        if call.needs[0]:
            conv = dataclasses.replace(
                call,
                inputs=[dy, w.astype(dy.dtype, copy=False)],
                attrs=self.conv_attrs(call, w.shape[2:]),
            )
            out[0] = Conv().forward(conv)[0].astype(dy.dtype, copy=False)
        return out

    def emit(self, call: NodeCall, grads: Sequence[str | None], g: Emitter) -> list[str | None]:
        """dx = Conv(dy, W) with the node's strides, pads, dilations and groups (W read as
        the weights of the convolution the node is the adjoint of)."""
        dy = grads[0]
        assert dy is not None
        out: list[str | None] = [None] * len(call.inputs)
        if call.needs[0]:
            kernel = np.shape(call.inputs[1])[2:]
            out[0] = g.op("Conv", dy, call.node.input[1], **self.conv_attrs(call, kernel))
        return out
