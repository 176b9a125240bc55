"""Helpers shared by several rule files and by the torch bridge's ops (which reuse the rules'
geometry so the two implementations cannot drift apart): broadcasting, reshape targets,
slices and pad index maps, each decoded the ONNX way."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

#: ONNX Pad modes that np.pad implements with the same semantics (constant is handled apart)
_NUMPY_PAD_MODES: dict[str, Literal["reflect", "edge", "wrap"]] = {
    "reflect": "reflect",
    "edge": "edge",
    "wrap": "wrap",
}


def unbroadcast(grad: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Sum a broadcast result's cotangent back to an operand's ``shape`` (NumPy broadcasting:
    leading axes the operand lacks, and axes where it has size 1)."""
    extra = grad.ndim - len(shape)
    if extra > 0:
        grad = grad.sum(axis=tuple(range(extra)))
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    return grad.sum(axis=axes, keepdims=True) if axes else grad


def reshape_target(shape: np.ndarray, data_shape: Sequence[int], allowzero: int) -> list[int]:
    """ONNX Reshape's target with 0 ("copy this dim") resolved; -1 is left to NumPy."""
    return [data_shape[i] if d == 0 and not allowzero else int(d) for i, d in enumerate(shape)]


def slice_index(
    shape: Sequence[int],
    starts: Sequence[int],
    ends: Sequence[int],
    axes: Sequence[int] | None,
    steps: Sequence[int] | None,
) -> tuple[slice, ...]:
    """ONNX Slice as Python slices: negative starts/ends count from the end, then clamp to
    [0, dim] (positive steps) or [-1, dim - 1] (negative steps, -1 meaning before the start)."""
    index = [slice(None)] * len(shape)
    axes = range(len(starts)) if axes is None else axes
    steps = [1] * len(starts) if steps is None else steps
    for start, end, axis, step in zip(starts, ends, axes, steps):
        axis, start, end, step = int(axis) % len(shape), int(start), int(end), int(step)
        dim = shape[axis]
        start, end = start + dim if start < 0 else start, end + dim if end < 0 else end
        if step > 0:
            start, end = min(max(start, 0), dim), min(max(end, 0), dim)
        else:
            start, end = min(max(start, 0), dim - 1), min(max(end, -1), dim - 1)
        index[axis] = slice(start, None if end < 0 else end, step)
    return tuple(index)


def pad_maps(
    shape: Sequence[int], pads: Sequence[int], mode: str, axes: Sequence[int] | None
) -> list[tuple[int, np.ndarray]]:
    """ONNX Pad as index maps: per padded axis, the source index of each output position
    (-1: the constant value). Negative pads crop; np.pad's reflect / edge / wrap match ONNX's
    modes."""
    ndim = len(shape)
    axes = list(range(ndim)) if axes is None else [int(a) % ndim for a in axes]
    pads = [int(p) for p in pads]
    maps = []
    for i, axis in enumerate(axes):
        begin, end = pads[i], pads[i + len(axes)]
        if begin == 0 and end == 0:
            continue
        n = shape[axis]
        source = np.arange(n)[max(-begin, 0) : n - max(-end, 0)]
        widths = (max(begin, 0), max(end, 0))
        if mode == "constant":
            source = np.pad(source, widths, constant_values=-1)
        elif mode in _NUMPY_PAD_MODES:
            source = np.pad(source, widths, mode=_NUMPY_PAD_MODES[mode])
        else:
            raise ValueError(f"Pad: unknown mode {mode!r}")
        maps.append((axis, source))
    return maps
