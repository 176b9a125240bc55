"""Sliding-window geometry, in one place: the window of a Conv / pooling op (kernel, strides,
pads, dilations, ceil mode) decoded from ONNX attributes (``auto_pad`` NOTSET / VALID /
SAME_UPPER / SAME_LOWER resolved), its output-size arithmetic, and the one conversion and
check of a user's window and stride (an int or an (h, w) pair).

Every user of a window (receptive fields in :mod:`cnnviz_core.graph`, the backward rules, the
incremental occlusion plan, the torch bridge and :mod:`cnnviz_core.kernels`) works on
:class:`Window`; the C++ side of it is ``cnnviz::Window2d`` (``csrc/include/cnnviz/window.hpp``),
filled from :meth:`Window.native_args`. Spatial axes only: (H, W) of (N, C, H, W) in 2-D.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

import numpy as np

from .errors import InputError

#: an int (both axes) or an (h, w) pair
IntPair: TypeAlias = int | tuple[int, int] | Sequence[int]
#: an int, (pad_h, pad_w) or ONNX-style (top, left, bottom, right)
Padding: TypeAlias = int | tuple[int, int] | tuple[int, int, int, int] | Sequence[int]

#: valid ONNX ``auto_pad`` values
AUTO_PADS: tuple[str, ...] = ("NOTSET", "VALID", "SAME_UPPER", "SAME_LOWER")


def ints(value: object, name: str, lengths: tuple[int, ...] = (2,)) -> tuple[int, ...]:
    """An int repeated ``lengths[0]`` times, or a sequence of ints of one of ``lengths``.

    Raises:
        InputError: anything else, naming ``name``.
    """
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return (operator.index(value),) * lengths[0]
    try:
        result = tuple(operator.index(v) for v in value)  # type: ignore[attr-defined]
    except TypeError:
        result = ()
    if len(result) not in lengths:
        counts = " or ".join(str(n) for n in lengths)
        raise InputError(f"{name} must be an int or {counts} ints, got {value!r}")
    return result


def pair(value: object, name: str) -> tuple[int, int]:
    """An (h, w) pair from an int (a square) or two ints: the one conversion of a window,
    stride or size a user gives."""
    h, w = ints(value, name)
    return h, w


def pads_of(padding: object) -> tuple[int, int, int, int]:
    """(top, left, bottom, right) from an int, (h, w) or 4 ints."""
    pads = ints(padding, "padding", (4, 2))
    top, left, bottom, right = pads * 2 if len(pads) == 2 else pads
    return top, left, bottom, right


def occlusion_window(
    image_hw: tuple[int, int], window: IntPair, stride: IntPair
) -> tuple[tuple[int, int], tuple[int, int]]:
    """The one check of an occlusion window and stride (Zeiler & Fergus, 2014) on an image.

    Returns:
        ((h, w), (sy, sx)) as int pairs.

    Raises:
        InputError: a window that is not positive or does not fit the image, a stride < 1.
    """
    h, w = image_hw
    win, step = pair(window, "window"), pair(stride, "stride")
    if min(win) < 1 or win[0] > h or win[1] > w:
        raise InputError(f"window {win} must be at least 1 and fit the {h}x{w} image")
    if min(step) < 1:
        raise InputError(f"stride must be >= 1 on both axes; got {step}")
    return win, step


def window_output_size(
    size: int,
    kernel: int,
    stride: int,
    pad_begin: int,
    pad_end: int,
    dilation: int,
    ceil_mode: bool = False,
) -> int:
    """Window positions along one axis: floor (or ceil) of (size + pads - dilated kernel) /
    stride, plus 1; in ceil mode a last window starting in the end padding is dropped (the
    PyTorch / ONNX rule).

    Raises:
        InputError: for size < 1, kernel/stride/dilation < 1, negative pads, or a dilated kernel
            larger than the padded input.
    """
    if size < 1:
        raise InputError(f"bad window: input size must be >= 1, got {size}")
    if min(kernel, stride, dilation) < 1:
        raise InputError(
            f"bad window: kernel, stride and dilation must be >= 1, got {kernel}, {stride}, "
            f"{dilation}"
        )
    if min(pad_begin, pad_end) < 0:
        raise InputError(f"bad window: pads must be >= 0, got {pad_begin}, {pad_end}")
    span = size + pad_begin + pad_end - dilation * (kernel - 1) - 1
    if span < 0:
        raise InputError(
            f"bad window: dilated kernel {dilation * (kernel - 1) + 1} is larger than the padded "
            f"input {size + pad_begin + pad_end}"
        )
    out = (span + (stride - 1 if ceil_mode else 0)) // stride + 1
    if ceil_mode and (out - 1) * stride >= size + pad_begin:
        out -= 1
    return out


def same_pads(size: int, span: int, stride: int, auto_pad: str) -> tuple[int, int]:
    """(begin, end) pads of ONNX ``auto_pad`` SAME_UPPER / SAME_LOWER along one axis: the
    output keeps ceil(size / stride) positions; an odd total puts the extra pixel at the end
    (SAME_UPPER) or the beginning (SAME_LOWER). ``span`` is the dilated kernel."""
    out = -(-size // stride)
    total = max((out - 1) * stride + span - size, 0)
    begin = total // 2 if auto_pad == "SAME_UPPER" else total - total // 2
    return begin, total - begin


def needs_input_size(attrs: Mapping[str, object]) -> bool:
    """Whether the pads of a node with these attributes depend on its input size (SAME)."""
    return attrs.get("auto_pad", "NOTSET") in ("SAME_UPPER", "SAME_LOWER")


@dataclass(frozen=True)
class Window:
    """A sliding window over the spatial axes (2 for images; any number for pooling), pads
    resolved. Each field holds one entry per spatial axis.

    Attributes:
        kernel, stride, dilation: per axis (PyTorch's names; ONNX's kernel_shape, strides,
            dilations).
        begins, ends: the pads before and after each axis (ONNX ``pads`` is begins + ends).
        ceil_mode: round the output size up (pooling), dropping a last window that would
            start in the end padding.
    """

    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    dilation: tuple[int, ...]
    begins: tuple[int, ...]
    ends: tuple[int, ...]
    ceil_mode: bool = False

    @classmethod
    def of(
        cls,
        kernel_size: IntPair,
        stride: IntPair | None = None,
        padding: Padding = 0,
        dilation: IntPair = 1,
        ceil_mode: bool = False,
    ) -> Window:
        """A 2-D window from PyTorch-style arguments; ``stride=None`` means the kernel size,
        ``padding`` is an int, (h, w) or (top, left, bottom, right)."""
        kernel = pair(kernel_size, "kernel_size")
        top, left, bottom, right = pads_of(padding)
        return cls(
            kernel,
            kernel if stride is None else pair(stride, "stride"),
            pair(dilation, "dilation"),
            (top, left),
            (bottom, right),
            bool(ceil_mode),
        )

    @classmethod
    def from_onnx(
        cls,
        attrs: Mapping[str, object],
        kernel: Sequence[int],
        spatial: Sequence[int] | None = None,
    ) -> Window:
        """The window of a Conv / MaxPool / AveragePool / LpPool node from its attributes
        (``strides``, ``dilations``, ``pads``, ``auto_pad``, ``ceil_mode``) and kernel shape.

        Args:
            attrs: the node's attributes as plain values (:func:`cnnviz_core.graph.attributes`).
            kernel: the kernel's spatial shape (``kernel_shape``, or a Conv weight's).
            spatial: the input's spatial size; needed only for SAME auto_pad
                (:func:`needs_input_size`).

        Raises:
            InputError: an unknown auto_pad, or SAME auto_pad without ``spatial``.
        """
        k = len(kernel)
        auto_pad = str(attrs.get("auto_pad", "NOTSET"))
        stride = _attr_ints(attrs, "strides", (1,) * k)
        dilation = _attr_ints(attrs, "dilations", (1,) * k)
        if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            if spatial is None:
                raise InputError(f"auto_pad {auto_pad} needs the input's spatial size")
            spans = [d * (kk - 1) + 1 for d, kk in zip(dilation, kernel)]
            resolved = [same_pads(n, e, s, auto_pad) for n, e, s in zip(spatial, spans, stride)]
            begins, ends = tuple(b for b, _ in resolved), tuple(e for _, e in resolved)
        elif auto_pad == "VALID":
            begins = ends = (0,) * k
        elif auto_pad == "NOTSET":
            pads = _attr_ints(attrs, "pads", (0,) * (2 * k))
            begins, ends = pads[:k], pads[k:]
        else:
            raise InputError(f"auto_pad must be one of {', '.join(AUTO_PADS)}, got {auto_pad!r}")
        return cls(
            tuple(int(v) for v in kernel),
            stride,
            dilation,
            begins,
            ends,
            bool(attrs.get("ceil_mode", 0)),
        )

    @classmethod
    def from_onnx_transpose(
        cls, attrs: Mapping[str, object], kernel: Sequence[int], spatial: Sequence[int]
    ) -> Window:
        """The window of a ConvTranspose node: the convolution it is the adjoint of. With
        ``output_shape`` (or SAME auto_pad, output = input * stride) the total padding is split
        as the spec says: the extra pixel of an odd total at the end for SAME_UPPER, at the
        start otherwise; an output past the full result gives negative end pads (zeros added).
        See :meth:`transposed_output_size`.

        Raises:
            InputError: an unknown auto_pad.
        """
        k = len(kernel)
        auto_pad = str(attrs.get("auto_pad", "NOTSET"))
        if auto_pad not in AUTO_PADS:
            raise InputError(f"auto_pad must be one of {', '.join(AUTO_PADS)}, got {auto_pad!r}")
        if "output_shape" not in attrs and not needs_input_size(attrs):
            return cls.from_onnx(attrs, kernel, spatial)
        stride = _attr_ints(attrs, "strides", (1,) * k)
        dilation = _attr_ints(attrs, "dilations", (1,) * k)
        adjust = _attr_ints(attrs, "output_padding", (0,) * k)
        shape = attrs.get("output_shape")
        out = [n * s for n, s in zip(spatial, stride)]
        if shape is not None:
            out = [int(v) for v in list(shape)[-k:]]  # type: ignore[call-overload]
        begins, ends = [], []
        for n, kk, s, d, a, o in zip(spatial, kernel, stride, dilation, adjust, out):
            natural = (n - 1) * s + d * (kk - 1) + 1 + a
            total = max(natural - o, 0)
            begins.append(total // 2 if auto_pad == "SAME_UPPER" else total - total // 2)
            ends.append(natural - begins[-1] - o)
        return cls(tuple(int(v) for v in kernel), stride, dilation, tuple(begins), tuple(ends))

    def transposed_output_size(
        self, spatial: Sequence[int], output_padding: Sequence[int] | None = None
    ) -> tuple[int, ...]:
        """Output size of the transposed convolution of this window on an input of
        ``spatial`` size: (n - 1) * stride + dilated kernel + output_padding - pads."""
        adjust = output_padding or (0,) * len(spatial)
        return tuple(
            (n - 1) * s + self.span(i) + a - b - e
            for i, (n, s, a, b, e) in enumerate(
                zip(spatial, self.stride, adjust, self.begins, self.ends)
            )
        )

    @property
    def pads(self) -> tuple[int, ...]:
        """ONNX order: begins then ends ((top, left, bottom, right) in 2-D)."""
        return self.begins + self.ends

    def span(self, axis: int) -> int:
        """The dilated kernel's extent along ``axis``."""
        return self.dilation[axis] * (self.kernel[axis] - 1) + 1

    def output_size(self, spatial: Sequence[int]) -> tuple[int, ...]:
        """Output size per axis on an input of ``spatial`` size (see :func:`window_output_size`)."""
        return tuple(
            window_output_size(n, k, s, b, e, d, self.ceil_mode)
            for n, k, s, b, e, d in zip(
                spatial, self.kernel, self.stride, self.begins, self.ends, self.dilation
            )
        )

    def covering_ends(self, spatial: Sequence[int]) -> tuple[int, ...]:
        """End pads grown so that every output's window lies inside the padded input (ceil
        mode's last window may reach past the declared end pad)."""
        out = self.output_size(spatial)
        return tuple(
            max(e, (o - 1) * s + self.span(a) - b - n)
            for a, (n, b, e, o, s) in enumerate(
                zip(spatial, self.begins, self.ends, out, self.stride)
            )
        )

    def padded_size(self, spatial: Sequence[int]) -> tuple[int, ...]:
        """The padded extent every window fits in (:meth:`covering_ends` included)."""
        return tuple(
            n + b + e for n, b, e in zip(spatial, self.begins, self.covering_ends(spatial))
        )

    def taps(self, out: Sequence[int]) -> list[tuple[Any, ...]]:
        """For each kernel tap (row-major), the index of what it reads in a padded
        (..., *padded_size) array at every one of the ``out`` output positions (strided
        slices after a leading Ellipsis)."""
        return [
            (
                Ellipsis,
                *(
                    slice(t * d, t * d + (o - 1) * s + 1, s)
                    for t, d, s, o in zip(tap, self.dilation, self.stride, out)
                ),
            )
            for tap in np.ndindex(*self.kernel)
        ]

    def inside(self, spatial: Sequence[int]) -> tuple[Any, ...]:
        """The index of the input in a padded (..., *padded_size) array."""
        return (Ellipsis, *(slice(b, b + n) for b, n in zip(self.begins, spatial)))

    def native_args(
        self,
    ) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int, int, int], tuple[int, int]]:
        """(kernel, stride, pads, dilation) of a 2-D window, as the native kernels take them
        (``cnnviz::Window2d``)."""
        if len(self.kernel) != 2:
            raise InputError(f"the native kernels take 2-D windows, got {len(self.kernel)}-D")
        (kh, kw), (sh, sw), (dh, dw) = self.kernel, self.stride, self.dilation
        (top, left), (bottom, right) = self.begins, self.ends
        return (kh, kw), (sh, sw), (top, left, bottom, right), (dh, dw)


def _attr_ints(attrs: Mapping[str, object], name: str, default: tuple[int, ...]) -> tuple[int, ...]:
    value = attrs.get(name)
    if value is None:
        return default
    result = tuple(int(v) for v in value)  # type: ignore[attr-defined]
    if len(result) != len(default):
        raise InputError(f"{name} must have {len(default)} entries, got {list(result)}")
    return result


__all__ = [
    "AUTO_PADS",
    "IntPair",
    "Padding",
    "Window",
    "needs_input_size",
    "occlusion_window",
    "pads_of",
    "pair",
    "same_pads",
    "window_output_size",
]
