"""Perturbation utilities shared by the techniques that change the input and watch the target
(occlusion, drill-down, LIME, KernelSHAP, RISE, Integrated Gradients' blurred baseline, the
deletion / insertion scores): fill values, Gaussian blur, the sliding-window grid and its
averaging back onto pixels, superpixels (LIME's and KernelSHAP's features), how many
perturbed images go through one forward, and the explained score of a batch of perturbed
copies.

Shape convention: (N, C, H, W) batches, (N, H, W) maps.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from cnnviz_core import InputError, Model
from cnnviz_core.geometry import occlusion_window
from cnnviz_core.model import to_probabilities
from cnnviz_core.targets import ResolvedTarget, score_tensor

#: the named fills (besides a number or an array)
FILLS = ("grey", "zeros", "mean", "blur")

#: how an image can be cut into superpixels (see :func:`superpixels`)
SEGMENTATIONS = ("slic", "grid")

#: ``progress(done, total)``: called after each batch of perturbed images
Progress = Callable[[int, int], None]


def blur_sigma_for(spatial: Sequence[int], blur_sigma: float | None = None) -> float:
    """The Gaussian sigma of a ``blur`` fill or baseline, in pixels: ``blur_sigma`` when
    given, else the longer side / 16."""
    return float(blur_sigma) if blur_sigma is not None else max(spatial) / 16


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
            return np.repeat(model.preprocess.grey()[None], n, axis=0)
        if fill == "zeros":
            return np.zeros((n, c), np.float32)
        if fill == "mean":
            return batch.mean(axis=(2, 3), dtype=np.float64).astype(np.float32)
        if fill == "blur":
            return gaussian_blur(batch, blur_sigma_for((h, w), blur_sigma))
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


def rgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """CIE L*a*b* (D65) of uint8 / 0-255 sRGB (..., 3), float64."""
    c = np.asarray(rgb, np.float64) / 255.0
    lin = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    m = np.array(
        [[0.4124564, 0.3575761, 0.1804375], [0.2126729, 0.7151522, 0.0721750],
         [0.0193339, 0.1191920, 0.9503041]]
    )  # fmt: skip
    xyz = lin @ m.T / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack(
        [116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])],
        axis=-1,
    )


def superpixels(
    image: np.ndarray, n_segments: int = 50, compactness: float = 10.0, method: str = "slic"
) -> np.ndarray:
    """Segment one (H, W, 3) uint8 image; returns (H, W) int64 labels 0..K-1.

    ``slic``: k-means (10 Lloyd iterations in NumPy, started from the grid cells, so
    deterministic) on (y, x) scaled by ``compactness / S`` (S = sqrt(H W / k), the grid step,
    as in SLIC's distance) and L*a*b*.
    ``grid``: a regular grid of about ``n_segments`` cells.
    """
    h, w = image.shape[:2]
    side = max(1, round(float(np.sqrt(n_segments))))
    gy = np.minimum(np.arange(h) * side // h, side - 1)
    gx = np.minimum(np.arange(w) * side // w, side - 1)
    grid = gy[:, None] * side + gx[None, :]
    if method == "grid":
        return _relabel(grid)
    if method != "slic":
        raise InputError(f"unknown segmentation {method!r}; choose one of {SEGMENTATIONS}")
    step = np.sqrt(h * w / side**2)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    scale = compactness / step
    features = np.concatenate(
        [np.stack([yy * scale, xx * scale], -1), rgb_to_lab(image[..., :3])], axis=-1
    ).reshape(-1, 5)
    labels = grid.reshape(-1)
    for _ in range(10):  # Lloyd iterations from the grid cells (deterministic)
        sums = np.zeros((side * side, 5))
        np.add.at(sums, labels, features)
        sizes = np.bincount(labels, minlength=side * side)
        alive = sizes > 0
        centres = sums[alive] / sizes[alive, None]
        d2 = (features**2).sum(1)[:, None] - 2 * features @ centres.T + (centres**2).sum(1)[None, :]
        new = d2.argmin(axis=1)
        if np.array_equal(new, labels):
            break
        labels = new
    labels = labels.reshape(h, w)
    return _relabel(labels)


def _relabel(labels: np.ndarray) -> np.ndarray:
    _, inverse = np.unique(labels, return_inverse=True)
    return inverse.reshape(labels.shape).astype(np.int64)


def segment_batch(
    model: Model, batch: np.ndarray, segments: int, compactness: float, method: str
) -> np.ndarray:
    """(N, H, W) int64 superpixel labels of each image of a preprocessed batch, cut on the
    images as the model sees them (see :func:`superpixels`)."""
    if method not in SEGMENTATIONS:
        raise InputError(f"unknown segmentation {method!r}; choose one of {SEGMENTATIONS}")
    pixels = model.preprocess.invert(batch)
    labels = [superpixels(image, segments, compactness, method) for image in pixels]
    return np.stack(labels) if labels else np.zeros((0, *batch.shape[2:]), np.int64)


def chunk_size(model: Model, batch_size: int | None) -> int:
    """Perturbed images per forward: ``batch_size``, or None for the model's memory budget
    (:attr:`Model.max_batch`, the most images one onnxruntime call runs).

    Raises:
        InputError: ``batch_size`` < 1.
    """
    if batch_size is None:
        return max(1, int(model.max_batch))
    if batch_size < 1:
        raise InputError(
            f"batch_size must be >= 1 (or None for the model's budget); got {batch_size}"
        )
    return int(batch_size)


def blend(
    image: np.ndarray, fill: np.ndarray, masks: np.ndarray, out: np.ndarray | None = None
) -> np.ndarray:
    """Masked copies of one image, (B, C, H, W) float32: the image where a mask is 1, the
    fill where it is 0, and ``fill + m (image - fill)`` between (soft masks).

    Args:
        image: (C, H, W).
        fill: (C,) or (C, H, W) (one row of :func:`fill_values`).
        masks: (B, H, W) in [0, 1]; bool masks pick exactly (no rounding).
        out: a (B, C, H, W) float32 buffer to write into (hot loops reuse one).
    """
    fill = fill[:, None, None] if fill.ndim == 1 else fill
    shape = (len(masks), *image.shape)
    x = np.empty(shape, np.float32) if out is None else out
    if masks.dtype == bool:
        x[...] = fill
        np.copyto(x, image, where=masks[:, None])
        return x
    np.multiply(masks[:, None], (image - fill)[None], out=x)
    x += fill
    return x


def perturbed_scores(model: Model, x: np.ndarray, target: ResolvedTarget) -> np.ndarray:
    """(B,) float64, the explained score of a batch of (perturbed) images: the class
    probability for a class target, the channel's mean or the neuron's value otherwise."""
    if target.kind != "class":
        return target.values(model.run(x, taps=[target.tensor], outputs=False)[target.tensor])
    name = score_tensor(model)
    scores = model.run(x, taps=[name], outputs=False)[name].reshape(len(x), -1)
    already = model.outputs_probabilities and name == model.output_names[0]
    return to_probabilities(scores.astype(np.float64), already)[:, target.index[0]]


__all__ = [
    "FILLS",
    "SEGMENTATIONS",
    "Progress",
    "blend",
    "chunk_size",
    "cover_average",
    "fill_label",
    "fill_values",
    "gaussian_blur",
    "perturbed_scores",
    "rgb_to_lab",
    "segment_batch",
    "superpixels",
    "window_grid",
    "window_positions",
]
