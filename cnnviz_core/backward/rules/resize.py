"""Rules for Resize (opset 10, 11-19) and the deprecated Upsample (opset 7, 9).

For fixed output sizes and scales a resize is linear in its input and separable: along each
resized axis it is an (out, in) interpolation matrix (one-hot rows for ``nearest``, two taps for
``linear``, four for ``cubic``). The forward applies the matrices axis by axis; the backward
applies their transposes. ``tf_crop_and_resize`` (an affine map with extrapolation) and
``antialias`` down-sampling are not covered and raise.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ...errors import UnsupportedOpError
from ..registry import Grad, NodeCall, OpRule, register_rule

if TYPE_CHECKING:
    from ..emitter import Emitter


@dataclass(frozen=True)
class AxisResize:
    """One resized axis: sizes and the scale the coordinate transform uses."""

    axis: int
    size_in: int
    size_out: int
    scale: float


def source_coordinates(step: AxisResize, mode: str) -> np.ndarray:
    """Input coordinate of each output position (ONNX ``coordinate_transformation_mode``)."""
    x = np.arange(step.size_out, dtype=np.float64)
    n_in, n_out, scale = step.size_in, step.size_out, step.scale
    if mode == "half_pixel":
        return (x + 0.5) / scale - 0.5
    if mode == "half_pixel_symmetric":
        offset = n_in / 2 * (1 - n_out / (scale * n_in))
        return offset + (x + 0.5) / scale - 0.5
    if mode == "pytorch_half_pixel":
        return (x + 0.5) / scale - 0.5 if n_out > 1 else np.zeros_like(x)
    if mode == "align_corners":
        return x * (n_in - 1) / (n_out - 1) if n_out > 1 else np.zeros_like(x)
    if mode == "asymmetric":
        return x / scale
    if mode == "tf_half_pixel_for_nearest":
        return (x + 0.5) / scale
    raise UnsupportedOpError(f"Resize: coordinate_transformation_mode {mode!r} is not supported")


def _nearest(coord: np.ndarray, rounding: str, scale: float) -> np.ndarray:
    if rounding == "legacy":  # Upsample and Resize-10: floor when up-sampling, else ceil
        return np.floor(coord) if scale >= 1 else np.ceil(coord)
    if rounding == "floor":
        return np.floor(coord)
    if rounding == "ceil":
        return np.ceil(coord)
    half = coord == np.floor(coord) + 0.5
    if rounding == "round_prefer_floor":
        return np.where(half, np.floor(coord), np.round(coord))
    if rounding == "round_prefer_ceil":
        return np.where(half, np.ceil(coord), np.round(coord))
    raise UnsupportedOpError(f"Resize: nearest_mode {rounding!r} is not supported")


def _cubic_weights(t: np.ndarray, a: float) -> np.ndarray:
    """Keys' cubic convolution weights of the taps at floor - 1 .. floor + 2."""
    d = np.stack([t + 1, t, 1 - t, 2 - t], axis=1)
    near = ((a + 2) * d - (a + 3)) * d * d + 1
    far = ((a * d - 5 * a) * d + 8 * a) * d - 4 * a
    return np.where(d <= 1, near, far)


def interpolation_matrix(step: AxisResize, attrs: dict, legacy: bool) -> np.ndarray:
    """The (size_out, size_in) matrix of one axis's resize."""
    mode = attrs.get("mode", "nearest")
    transform = (
        "asymmetric" if legacy else attrs.get("coordinate_transformation_mode", "half_pixel")
    )
    coord = source_coordinates(step, transform)
    n_in = step.size_in
    rows = np.arange(step.size_out)
    m = np.zeros((step.size_out, n_in))
    if mode == "nearest":
        rounding = "legacy" if legacy else attrs.get("nearest_mode", "round_prefer_floor")
        index = np.clip(_nearest(coord, rounding, step.scale), 0, n_in - 1).astype(np.int64)
        m[rows, index] = 1
    elif mode in ("linear", "bilinear"):
        coord = np.clip(coord, 0, n_in - 1)
        low = np.floor(coord).astype(np.int64)
        t = coord - low
        np.add.at(m, (rows, low), 1 - t)
        np.add.at(m, (rows, np.minimum(low + 1, n_in - 1)), t)
    elif mode == "cubic" and not legacy:
        low = np.floor(coord).astype(np.int64)
        taps = low[:, None] + np.arange(-1, 3)
        w = _cubic_weights(coord - low, attrs.get("cubic_coeff_a", -0.75))
        if attrs.get("exclude_outside", 0):
            w = np.where((taps >= 0) & (taps < n_in), w, 0)
            w = w / w.sum(axis=1, keepdims=True)
        np.add.at(m, (np.repeat(rows, 4), np.clip(taps, 0, n_in - 1).ravel()), w.ravel())
    else:
        raise UnsupportedOpError(f"Resize: mode {mode!r} is not supported")
    return m


def _apply(x: np.ndarray, steps: Sequence[AxisResize], attrs: dict, legacy: bool, back: bool):
    y = x
    for step in steps:
        m = interpolation_matrix(step, attrs, legacy).astype(x.dtype, copy=False)
        m = m.T if back else m
        y = np.moveaxis(np.tensordot(m, y, axes=([1], [step.axis])), 0, step.axis)
    return y


class _Resize(OpRule):
    """Shared forward and VJP; subclasses say where the scales / sizes come from."""

    legacy = False

    def steps(self, call: NodeCall, shape: Sequence[int]) -> list[AxisResize]:
        raise NotImplementedError

    def forward(self, call: NodeCall) -> list[np.ndarray]:
        x = call.inputs[0]
        return [_apply(x, self.steps(call, x.shape), call.attrs, self.legacy, back=False)]

    def vjp(self, call: NodeCall, grads: Sequence[Grad]) -> list[Grad]:
        x, dy = call.inputs[0], grads[0]
        assert dy is not None
        dx = _apply(dy, self.steps(call, x.shape), call.attrs, self.legacy, back=True)
        return [dx] + [None] * (len(call.inputs) - 1)

    def emit(self, call: NodeCall, grads: Sequence[str | None], g: Emitter) -> list[str | None]:
        """The transposed interpolation matrices, axis by axis (matrix products)."""
        x, dy = call.inputs[0], grads[0]
        assert dy is not None
        shape = np.shape(x)
        out = dy
        for step in self.steps(call, shape):
            m = interpolation_matrix(step, call.attrs, self.legacy).astype(np.float32)
            out = g.axis_matmul(out, len(shape), step.axis, m.T)
        return [out] + [None] * (len(call.inputs) - 1)


def _from_scales(
    shape: Sequence[int], scales: Sequence[float] | np.ndarray, axes: Iterable[int]
) -> list[AxisResize]:
    """One step per axis whose scale is not 1 (output size: floor(size * scale))."""
    return [
        AxisResize(a, shape[a], int(np.floor(shape[a] * float(s))), float(s))
        for a, s in zip(axes, scales)
        if float(s) != 1.0
    ]


@register_rule("Upsample", since=7)
class Upsample7(_Resize):
    """Upsample with a ``scales`` attribute (nearest: floor; linear: asymmetric coordinates)."""

    legacy = True

    def steps(self, call: NodeCall, shape: Sequence[int]) -> list[AxisResize]:
        return _from_scales(shape, call.attrs["scales"], range(len(shape)))


@register_rule("Upsample", since=9)
class Upsample9(_Resize):
    """Upsample with a ``scales`` input."""

    legacy = True
    constant_inputs = (1,)

    def steps(self, call: NodeCall, shape: Sequence[int]) -> list[AxisResize]:
        return _from_scales(shape, np.asarray(call.inputs[1]).ravel(), range(len(shape)))


@register_rule("Resize", since=10)
class Resize10(_Resize):
    """Resize-10: a ``scales`` input, asymmetric coordinates, nearest or linear."""

    legacy = True
    constant_inputs = (1,)

    def steps(self, call: NodeCall, shape: Sequence[int]) -> list[AxisResize]:
        return _from_scales(shape, np.asarray(call.inputs[1]).ravel(), range(len(shape)))


@register_rule("Resize", since=11)
class Resize11(_Resize):
    """Resize from opset 11: ``roi`` (ignored outside tf_crop_and_resize), ``scales`` or
    ``sizes`` inputs, every coordinate transform but tf_crop_and_resize; from opset 18 also
    ``axes``, ``keep_aspect_ratio_policy`` and ``antialias`` (up-sampling only), and the
    half_pixel_symmetric transform of opset 19."""

    constant_inputs = (1, 2, 3)

    def steps(self, call: NodeCall, shape: Sequence[int]) -> list[AxisResize]:
        attrs = call.attrs
        if attrs.get("coordinate_transformation_mode") == "tf_crop_and_resize":
            raise UnsupportedOpError("Resize: tf_crop_and_resize is not supported")
        axes = [int(a) % len(shape) for a in attrs.get("axes", range(len(shape)))]
        scales, sizes = [*call.inputs[2:4], None, None][:2]
        if sizes is not None and np.size(sizes):
            sizes = [int(s) for s in np.asarray(sizes).ravel()]
            policy = attrs.get("keep_aspect_ratio_policy", "stretch")
            if policy != "stretch":
                ratios = [s / shape[a] for s, a in zip(sizes, axes)]
                ratio = min(ratios) if policy == "not_larger" else max(ratios)
                sizes = [int(np.floor(ratio * shape[a] + 0.5)) for a in axes]
                steps = [AxisResize(a, shape[a], s, ratio) for a, s in zip(axes, sizes)]
            else:
                steps = [AxisResize(a, shape[a], s, s / shape[a]) for a, s in zip(axes, sizes)]
            steps = [s for s in steps if s.size_in != s.size_out]
        else:
            steps = _from_scales(shape, np.asarray(scales).ravel(), axes)
        if attrs.get("antialias", 0) and attrs.get("mode", "nearest") != "nearest":
            if any(s.size_out < s.size_in for s in steps):
                raise UnsupportedOpError("Resize: antialias down-sampling is not supported")
        return steps
