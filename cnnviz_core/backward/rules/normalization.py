"""Rules for the normalisations computed from the input itself: LayerNormalization (ConvNeXt,
MobileViT, every hybrid: Ba et al. 2016), GroupNormalization (Wu & He 2018) and
InstanceNormalization (Ulyanov et al. 2016; also how the dynamo exporter writes GroupNorm).

Each one standardises x over some axes, x_hat = (x - mean) / sqrt(var + eps), then applies a
scale and a shift; the VJP of the standardisation, with g = dy * scale and means over the same
axes, is dx = (g - mean(g) - x_hat * mean(g * x_hat)) / sqrt(var + eps).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from ...errors import UnsupportedOpError
from ..registry import Grad, NodeCall, OpRule, register_rule
from .common import unbroadcast

if TYPE_CHECKING:
    from ..emitter import Emitter


def standardize(
    x: np.ndarray, axes: tuple[int, ...], eps: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x_hat, mean, 1 / sqrt(var + eps)) over ``axes`` (kept as size-1 axes)."""
    mean = x.mean(axis=axes, keepdims=True)
    centred = x - mean
    inv_std = 1.0 / np.sqrt((centred * centred).mean(axis=axes, keepdims=True) + eps)
    return centred * inv_std, mean, inv_std


def standardize_vjp(
    g: np.ndarray, x_hat: np.ndarray, inv_std: np.ndarray, axes: tuple[int, ...]
) -> np.ndarray:
    """The cotangent of x given that of x_hat (``g``), over the standardised ``axes``."""
    mean_g = g.mean(axis=axes, keepdims=True)
    mean_gx = (g * x_hat).mean(axis=axes, keepdims=True)
    return (g - mean_g - x_hat * mean_gx) * inv_std


def emit_standardize(g: Emitter, x: str, axes: Sequence[int], eps: float) -> tuple[str, str]:
    """:func:`standardize` in ONNX: (x_hat, 1 / sqrt(var + eps)) over ``axes``."""
    centred = g.op("Sub", x, g.reduce("ReduceMean", x, axes))
    variance = g.reduce("ReduceMean", g.mul(centred, centred), axes)
    inv_std = g.op("Div", g.scalar(1.0), g.op("Sqrt", g.op("Add", variance, g.scalar(eps))))
    return g.mul(centred, inv_std), inv_std


def emit_standardize_vjp(
    g: Emitter, grad: str, x_hat: str, inv_std: str, axes: Sequence[int]
) -> str:
    """:func:`standardize_vjp` in ONNX."""
    mean_g = g.reduce("ReduceMean", grad, axes)
    mean_gx = g.reduce("ReduceMean", g.mul(grad, x_hat), axes)
    centred = g.op("Sub", g.op("Sub", grad, mean_g), g.mul(x_hat, mean_gx))
    return g.mul(centred, inv_std)


@register_rule("LayerNormalization", since=17)
class LayerNormalization(OpRule):
    """y = x_hat * Scale + B over the axes ``axis`` .. rank - 1 (default -1: the last one, as in
    ConvNeXt's channels-last Transpose -> LayerNorm -> Transpose); optional outputs Mean and
    InvStdDev (shaped like x with the normalised axes of size 1) carry gradients too."""

    reads_outputs = False

    def forward(self, call: NodeCall) -> list[np.ndarray]:
        x = call.inputs[0]
        x_hat, mean, inv_std = standardize(x, self._axes(call, x.ndim), self._eps(call))
        y = x_hat * call.inputs[1]
        if len(call.inputs) > 2 and call.inputs[2] is not None:
            y = y + call.inputs[2]
        outputs = [y.astype(x.dtype, copy=False), mean, inv_std]
        return outputs[: max(len(call.node.output), 1)]

    def vjp(self, call: NodeCall, grads: Sequence[Grad]) -> list[Grad]:
        x, scale = call.inputs[0], call.inputs[1]
        dtype = next(g.dtype for g in grads if g is not None)
        x = x.astype(dtype, copy=False)
        axes = self._axes(call, x.ndim)
        x_hat, _, inv_std = standardize(x, axes, self._eps(call))
        dy, d_mean, d_inv = [*grads, None, None][:3]
        out: list[Grad] = [None] * len(call.inputs)
        if call.needs[0]:
            dx = np.zeros(x.shape, dtype)
            if dy is not None:
                dx += standardize_vjp(dy * scale, x_hat, inv_std, axes)
            count = int(np.prod([x.shape[a] for a in axes]))
            if d_mean is not None:
                dx += d_mean / count
            if d_inv is not None:  # d(1/sqrt(var + eps))/dx = -inv_std^2 * x_hat / count
                dx -= d_inv * inv_std * inv_std * x_hat / count
            out[0] = dx
        if dy is not None and call.needs[1]:
            out[1] = unbroadcast(dy * x_hat, np.shape(scale))
        if dy is not None and len(call.inputs) > 2 and call.needs[2]:
            out[2] = unbroadcast(dy, np.shape(call.inputs[2]))
        return out

    def emit(self, call: NodeCall, grads: Sequence[str | None], g: Emitter) -> list[str | None]:
        x_value = call.inputs[0]
        x, scale = call.node.input[0], call.node.input[1]
        shape = np.shape(x_value)
        axes = self._axes(call, len(shape))
        x_hat, inv_std = emit_standardize(g, x, axes, self._eps(call))
        dy, d_mean, d_inv = [*grads, None, None][:3]
        count = int(np.prod([shape[a] for a in axes]))
        out: list[str | None] = [None] * len(call.inputs)
        if call.needs[0]:
            parts = []
            if dy is not None:
                parts.append(emit_standardize_vjp(g, g.mul(dy, scale), x_hat, inv_std, axes))
            if d_mean is not None:
                parts.append(g.op("Expand", g.scale(d_mean, 1 / count), g.shape_of(x)))
            if d_inv is not None:
                term = g.mul(g.mul(g.mul(d_inv, inv_std), inv_std), x_hat)
                parts.append(g.op("Neg", g.op("Div", term, g.scalar(count))))
            dx = parts[0] if parts else g.zeros_like(x)
            for part in parts[1:]:
                dx = g.op("Add", dx, part)
            out[0] = dx
        if dy is not None and call.needs[1]:
            out[1] = g.unbroadcast(g.mul(dy, x_hat), shape, np.shape(call.inputs[1]))
        if dy is not None and len(call.inputs) > 2 and call.needs[2]:
            out[2] = g.unbroadcast(dy, shape, np.shape(call.inputs[2]))
        return out

    @staticmethod
    def _axes(call: NodeCall, ndim: int) -> tuple[int, ...]:
        return tuple(range(call.attrs.get("axis", -1) % ndim, ndim))

    @staticmethod
    def _eps(call: NodeCall) -> float:
        return float(call.attrs.get("epsilon", 1e-5))


class _GroupNorm(OpRule):
    """Shared by GroupNormalization (18: scale and bias per group; 21: per channel) and
    InstanceNormalization (one group per channel): x (N, C, ...) standardised over each
    group's channels and all spatial positions, then scaled and shifted per channel."""

    reads_outputs = False
    #: whether scale and bias have one value per group (GroupNormalization-18) or per channel
    per_group = False

    def groups(self, call: NodeCall, channels: int) -> int:
        raise NotImplementedError

    def forward(self, call: NodeCall) -> list[np.ndarray]:
        x = call.inputs[0]
        x_hat, _, _ = self._standardize(call, x)
        scale, bias = self._per_channel(call, x)
        return [(x_hat.reshape(x.shape) * scale + bias).astype(x.dtype, copy=False)]

    def vjp(self, call: NodeCall, grads: Sequence[Grad]) -> list[Grad]:
        dy = grads[0]
        assert dy is not None
        x = call.inputs[0].astype(dy.dtype, copy=False)
        x_hat, inv_std, grouped = self._standardize(call, x)
        scale, _ = self._per_channel(call, x)
        out: list[Grad] = [None] * len(call.inputs)
        if call.needs[0]:
            g = (dy * scale).reshape(grouped)
            out[0] = standardize_vjp(g, x_hat, inv_std, (2,)).reshape(x.shape)
        reduce = (0, *range(2, x.ndim))
        for i, part in ((1, dy * x_hat.reshape(x.shape)), (2, dy)):
            if len(call.inputs) > i and call.needs[i]:
                per_channel = part.sum(axis=reduce)
                if self.per_group:
                    per_channel = per_channel.reshape(grouped[1], -1).sum(axis=1)
                out[i] = per_channel.reshape(np.shape(call.inputs[i]))
        return out

    def emit(self, call: NodeCall, grads: Sequence[str | None], g: Emitter) -> list[str | None]:
        dy = grads[0]
        assert dy is not None
        x_value, x = call.inputs[0], call.node.input[0]
        channels = np.shape(x_value)[1]
        groups = self.groups(call, channels)
        _, _, grouped = self._standardize(call, np.asarray(x_value, np.float32))
        x_grouped = g.op("Reshape", x, g.ints([0, groups, -1]))
        x_hat, inv_std = emit_standardize(g, x_grouped, [2], call.attrs.get("epsilon", 1e-5))
        scale, _ = self._per_channel(call, np.asarray(x_value))
        out: list[str | None] = [None] * len(call.inputs)
        if call.needs[0]:
            grad = g.op("Reshape", g.mul(dy, g.const(scale, hint="scale")), g.ints([0, groups, -1]))
            out[0] = g.reshape_like(emit_standardize_vjp(g, grad, x_hat, inv_std, [2]), x)
        reduce = [0, *range(2, np.ndim(x_value))]
        x_hat_full = g.reshape_like(x_hat, x)
        for i, part in ((1, lambda: g.mul(dy, x_hat_full)), (2, lambda: dy)):
            if len(call.inputs) > i and call.needs[i]:
                per_channel = g.reduce_sum(part(), reduce, keepdims=False)
                if self.per_group:
                    per_channel = g.reduce_sum(
                        g.op("Reshape", per_channel, g.ints([grouped[1], -1])), [1], keepdims=False
                    )
                out[i] = g.op("Reshape", per_channel, g.ints(np.shape(call.inputs[i])))
        return out

    def _standardize(
        self, call: NodeCall, x: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, tuple[int, int, int]]:
        """(x_hat, 1 / std) on x seen as (N, groups, rest), and that grouped shape."""
        channels = x.shape[1]
        groups = self.groups(call, channels)
        if groups <= 0 or channels % groups:
            raise UnsupportedOpError(
                f"{call.node.op_type} node {call.node.name!r}: {channels} channels do not split "
                f"into num_groups={groups} groups"
            )
        grouped = (x.shape[0], groups, -1)
        x_hat, _, inv_std = standardize(x.reshape(grouped), (2,), call.attrs.get("epsilon", 1e-5))
        return x_hat, inv_std, (x.shape[0], groups, x_hat.shape[2])

    def _per_channel(self, call: NodeCall, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Scale and bias shaped (1, C, 1, ...) (a group's value repeated over its channels)."""
        shape = (1, -1) + (1,) * (x.ndim - 2)
        channels = x.shape[1]
        parts = []
        for value in call.inputs[1:3]:
            value = np.asarray(value).ravel()
            if self.per_group:
                value = np.repeat(value, channels // len(value))
            parts.append(value.reshape(shape))
        return parts[0], parts[1]


@register_rule("GroupNormalization", since=18)
class GroupNormalization18(_GroupNorm):
    """GroupNormalization-18: scale and bias of shape (num_groups,)."""

    per_group = True

    def groups(self, call: NodeCall, channels: int) -> int:
        return int(call.attrs["num_groups"])


@register_rule("GroupNormalization", since=21)
class GroupNormalization21(_GroupNorm):
    """GroupNormalization-21: scale and bias of shape (C,) (``stash_type``: float32 statistics
    in onnxruntime; the rule computes in the input's dtype)."""

    def groups(self, call: NodeCall, channels: int) -> int:
        return int(call.attrs["num_groups"])


@register_rule("InstanceNormalization")
class InstanceNormalization(_GroupNorm):
    """Per (image, channel) over the spatial positions; scale and bias of shape (C,)."""

    def groups(self, call: NodeCall, channels: int) -> int:
        return channels
