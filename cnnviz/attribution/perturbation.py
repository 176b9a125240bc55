"""Perturbation utilities shared by the techniques that change the input and watch the target
(occlusion, drill-down, LIME, Integrated Gradients' blurred baseline, the deletion /
insertion scores): fill values, Gaussian blur, the sliding-window grid and its averaging
back onto pixels, and the explained score of a batch of perturbed copies.

Shape convention: (N, C, H, W) batches, (N, H, W) maps.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from cnnviz_core import InputError, Model
from cnnviz_core.geometry import occlusion_window
from cnnviz_core.targets import ResolvedTarget, score_tensor

#: the named fills (besides a number or an array)
FILLS = ("grey", "zeros", "mean", "blur")

#: ``progress(done, total)``: called after each batch of perturbed images
Progress = Callable[[int, int], None]


def gaussian_blur(batch: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of (N, C, H, W) with reflected edges."""
    if sigma <= 0:
        return batch.copy()
    radius = int(np.ceil(3 * sigma))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps = (taps / taps.sum()).astype(np.float32)
    out = batch.astype(np.float32)
    for axis in (2, 3):
        pad = [(0, 0)] * 4
        pad[axis] = (radius, radius)
        padded = np.pad(out, pad, mode="reflect" if out.shape[axis] > radius else "edge")
        size = out.shape[axis]
        out = sum(
            taps[k] * np.take(padded, np.arange(k, k + size), axis=axis) for k in range(len(taps))
        )
    return out.astype(np.float32)


def fill_values(
    model: Model, batch: np.ndarray, fill: Any, blur_sigma: float | None = None
) -> np.ndarray:
    """Per image, the fill as a (C,) vector or a (C, H, W) image: ``grey`` (pixel value 128,
    preprocessed), ``zeros`` (zero in the preprocessed space), ``mean`` (each image's
    per-channel mean), ``blur`` (a Gaussian-blurred copy, sigma = side / 16 by default), a
    number (preprocessed space), or an array of shape (C,), (C, H, W) or (N, C, H, W).

    Returns:
        (N, C) or (N, C, H, W) float32.
    """
    n, c, h, w = batch.shape
    if isinstance(fill, str):
        if fill == "grey":
            grey = model.prepare([np.full((h, w, 3), 128, np.uint8)])[0]
            return np.repeat(grey.mean(axis=(1, 2))[None], n, axis=0).astype(np.float32)
        if fill == "zeros":
            return np.zeros((n, c), np.float32)
        if fill == "mean":
            return batch.mean(axis=(2, 3), dtype=np.float64).astype(np.float32)
        if fill == "blur":
            sigma = blur_sigma if blur_sigma is not None else max(h, w) / 16
            return gaussian_blur(batch, sigma)
        raise InputError(f"unknown fill {fill!r}; choose one of {FILLS}, a number or an array")
    if isinstance(fill, (int, float, np.number)) and not isinstance(fill, bool):
        return np.full((n, c), float(fill), np.float32)
    array = np.asarray(fill, dtype=np.float32)
    if array.shape == (c,):
        return np.repeat(array[None], n, axis=0)
    if array.shape == (c, h, w):
        return np.repeat(array[None], n, axis=0)
    if array.shape == (n, c, h, w):
        return array
    raise InputError(
        f"fill array must have shape ({c},), ({c}, {h}, {w}) or ({n}, {c}, {h}, {w}) for this "
        f"batch; got {array.shape}"
    )


def fill_label(fill: Any) -> Any:
    """How a fill is recorded in an attribution's options: its name or number, else
    ``array``."""
    return fill if isinstance(fill, (str, int, float)) else "array"


def window_positions(
    size: Sequence[int], window: tuple[int, int], stride: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Top rows and left columns of the windows (Captum's count: ``ceil((H-h)/s) + 1``)."""
    axes = []
    for n, w, s in zip(size, window, stride):
        count = math.ceil((n - w) / s) + 1
        axes.append(np.arange(count, dtype=np.int64) * s)
    return axes[0], axes[1]


def window_grid(
    size: tuple[int, int], window: int | Sequence[int], stride: int | Sequence[int]
) -> tuple[tuple[int, int], tuple[int, int], np.ndarray, np.ndarray]:
    """The checked (window, stride) pairs and the window tops and lefts for an image size.

    Raises:
        InputError: a window larger than the image or not positive, a stride < 1.
    """
    win, step = occlusion_window(size, window, stride)
    tops, lefts = window_positions(size, win, step)
    return win, step, tops, lefts


def cover_average(
    drops: np.ndarray,
    starts: tuple[np.ndarray, np.ndarray],
    window: tuple[int, int],
    size: tuple[int, int],
) -> np.ndarray:
    """(..., Ph, Pw) drops per window -> (..., H, W) float32: each pixel's mean over the
    windows (clipped at the edges) that cover it, as Captum averages."""
    rows, cols = (
        ((np.arange(n) >= s[:, None]) & (np.arange(n) < s[:, None] + w)).astype(np.float64)
        for s, w, n in zip(starts, window, size)
    )
    count = rows.sum(axis=0)[:, None] * cols.sum(axis=0)[None, :]
    return (rows.T @ drops @ cols / np.maximum(count, 1)).astype(np.float32)


def perturbed_scores(model: Model, x: np.ndarray, target: ResolvedTarget) -> np.ndarray:
    """(B,) float64, the explained score of a batch of (perturbed) images: the class
    probability for a class target, the channel's mean or the neuron's value otherwise."""
    if target.kind != "class":
        return target.values(model.run(x, taps=[target.tensor], outputs=False)[target.tensor])
    name = score_tensor(model)
    scores = model.run(x, taps=[name], outputs=False)[name].reshape(len(x), -1)
    scores = scores.astype(np.float64)
    if not (model.outputs_probabilities and name == model.output_names[0]):
        scores = np.exp(scores - scores.max(axis=1, keepdims=True))
        scores /= scores.sum(axis=1, keepdims=True)
    return scores[:, target.index[0]]


__all__ = [
    "FILLS",
    "Progress",
    "cover_average",
    "fill_label",
    "fill_values",
    "gaussian_blur",
    "perturbed_scores",
    "window_grid",
    "window_positions",
]
