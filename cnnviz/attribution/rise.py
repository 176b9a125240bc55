"""RISE (Petsiuk, Das & Saenko 2018, "RISE: Randomized Input Sampling for Explanation of
Black-box Models").

``N`` random binary grids of ``cells`` x ``cells`` (each cell on with probability ``p``) are
upsampled bilinearly to ``(cells + 1) * C`` pixels a side (``C = ceil(H / cells)``, the cell
size, as the authors' code) and cropped to H x W at a random shift in ``[0, C)`` per axis:
smooth masks whose edges fall anywhere. The model scores the image seen through each mask
(``fill + m (image - fill)``; the paper multiplies the input: ``fill="zeros"``) and the
saliency is the masks weighted by those scores::

    S = sum_i f(I . M_i) M_i / (N p)

the Monte Carlo estimate of E[f(I . M) | M(x) = 1] (Eq. 6). Class targets score the class
probability (as the paper), channel / neuron targets their value. The masks come from
``seed`` alone (:func:`rise_masks` makes them again) and are the same for every image; they
are made and scored in chunks of the model's memory budget, never all held at once.

Shape convention: (N, C, H, W) batches, (N, H, W) maps.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from cnnviz_core import InputError, Model
from cnnviz_core.targets import TargetLike

from .base import Attribution, Images, make_attribution, prepare
from .perturbation import Progress, blend, chunk_size, fill_label, fill_values, perturbed_scores


def _pair(value: int | Sequence[int], name: str) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, (int, np.integer)) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, (int, np.integer)) and v >= 1 for v in pair):
        raise InputError(f"{name} must be a positive int or a pair of them; got {value!r}")
    return int(pair[0]), int(pair[1])


def mask_grids(
    count: int,
    size: tuple[int, int],
    cells: int | Sequence[int] = 7,
    p: float = 0.5,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """The random draws of :func:`rise_masks`: (count, gh, gw) float32 0/1 grids (1 with
    probability ``p``) and (count, 2) int64 shifts (row, column), each in [0, cell size)."""
    gh, gw = _pair(cells, "cells")
    if gh > size[0] or gw > size[1]:
        raise InputError(
            f"cells= {cells!r} is more cells than the {size[0]}x{size[1]} input has pixels"
        )
    cell = (math.ceil(size[0] / gh), math.ceil(size[1] / gw))
    rng = np.random.default_rng(seed)
    grids = (rng.random((count, gh, gw)) < p).astype(np.float32)
    shifts = np.stack(
        [rng.integers(0, cell[0], count), rng.integers(0, cell[1], count)], axis=1
    ).astype(np.int64)
    return grids, shifts


def _interpolation(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) float32 matrix of bilinear upsampling along one axis: half-pixel
    centres, mirrored edges (scikit-image ``resize(order=1, mode="reflect")``, the authors'
    code)."""
    matrix = np.zeros((n_out, n_in), np.float32)
    rows = np.arange(n_out)
    if n_in == 1:
        matrix[:, 0] = 1.0
        return matrix
    pos = (rows + 0.5) * (n_in / n_out) - 0.5
    pos = np.abs(pos)  # mirror about the first centre ...
    pos = np.where(pos > n_in - 1, 2 * (n_in - 1) - pos, pos)  # ... and the last
    lo = np.minimum(np.floor(pos).astype(np.int64), n_in - 2)
    frac = (pos - lo).astype(np.float32)
    np.add.at(matrix, (rows, lo), 1 - frac)
    np.add.at(matrix, (rows, lo + 1), frac)
    return matrix


def upsample_masks(
    grids: np.ndarray,
    shifts: np.ndarray,
    size: tuple[int, int],
    out: np.ndarray | None = None,
) -> np.ndarray:
    """(B, gh, gw) grids and (B, 2) shifts -> (B, H, W) float32 masks in [0, 1]: each grid
    upsampled to ``(g + 1) * ceil(size / g)`` a side and cropped at its shift (into ``out``,
    a (B, H, W) float32 buffer, when given)."""
    _, gh, gw = grids.shape
    height, width = size
    cell = (math.ceil(height / gh), math.ceil(width / gw))
    up_rows = _interpolation(gh, (gh + 1) * cell[0])  # (UH, gh)
    up_cols = _interpolation(gw, (gw + 1) * cell[1])  # (UW, gw)
    rows = up_rows[shifts[:, :1] + np.arange(height)]  # (B, H, gh)
    cols = up_cols[shifts[:, 1:] + np.arange(width)]  # (B, W, gw)
    return np.matmul(np.matmul(rows, grids.astype(np.float32)), cols.transpose(0, 2, 1), out=out)


def rise_masks(
    count: int,
    size: tuple[int, int],
    cells: int | Sequence[int] = 7,
    p: float = 0.5,
    seed: int = 0,
) -> np.ndarray:
    """The ``count`` masks :func:`rise` uses with these options, (count, H, W) float32."""
    grids, shifts = mask_grids(count, size, cells, p, seed)
    return upsample_masks(grids, shifts, size)


def rise(
    model: Model,
    images: Images,
    target: TargetLike | list = None,
    *,
    masks: int = 2000,
    cells: int | Sequence[int] = 7,
    p: float = 0.5,
    fill: Any = "zeros",
    seed: int = 0,
    batch_size: int | None = None,
    progress: Progress | None = None,
) -> Attribution:
    """RISE saliency maps, (N, H, W).

    Args:
        model: the model.
        images: images or a preprocessed (N, C, H, W) batch.
        target: as for :func:`~.saliency.saliency` (None: predicted class); class targets
            explain the class probability, channel / neuron targets their value.
        masks: how many random masks (N; the paper used 4000 on ResNet-50 at 224 x 224).
        cells: the grid a side (the paper's s = h = w = 7), or (rows, columns).
        p: probability that a grid cell is on (the paper's 0.5).
        fill: what a masked pixel becomes: ``zeros`` (zero in the preprocessed space: the
            paper's ``I . M``, default), ``mean``, ``grey``, ``blur``, a number or an array
            (see :func:`~.perturbation.fill_values`).
        seed: seed of the masks (the same masks for every image; :func:`rise_masks`).
        batch_size: masked images per forward; None: the model's memory budget
            (:attr:`~cnnviz_core.Model.max_batch`).
        progress: called as ``progress(done, total)`` after each batch.

    Returns:
        (N, H, W) maps in the target's units (for a class, the expected probability when the
        pixel is kept); ``metrics["score"]``: each image's unmasked score.
    """
    if masks < 1 or not 0 < p <= 1:
        raise InputError(f"rise needs masks >= 1 and 0 < p <= 1; got masks={masks}, p={p}")
    batch, targets = prepare(model, images, target)
    n, c, h, w = batch.shape
    grids, shifts = mask_grids(masks, (h, w), cells, p, seed)
    fills = fill_values(model, batch, fill)
    step = min(chunk_size(model, batch_size), masks)
    # buffers reused chunk to chunk (fresh large arrays cost page faults every time)
    images = np.empty((step, c, h, w), np.float32)
    planes = np.empty((step, h, w), np.float32)
    flat = np.empty((step, h * w), np.float64)
    saliency = np.zeros((n, h * w), np.float64)
    done, total = 0, n * masks
    for start in range(0, masks, step):
        b = min(step, masks - start)
        chunk = upsample_masks(
            grids[start : start + b], shifts[start : start + b], (h, w), out=planes[:b]
        )
        np.copyto(flat[:b], chunk.reshape(b, -1))
        for i in range(n):
            x = blend(batch[i], fills[i], chunk, out=images[:b])
            saliency[i] += perturbed_scores(model, x, targets[i]) @ flat[:b]
            done += len(chunk)
            if progress is not None:
                progress(done, total)
    maps = saliency.reshape(n, h, w) / (masks * p)
    options = {"masks": masks, "cells": cells, "p": p, "fill": fill_label(fill), "seed": seed}
    scores = [float(perturbed_scores(model, batch[i : i + 1], targets[i])[0]) for i in range(n)]
    return make_attribution(maps, "rise", targets, options, model, batch, metrics={"score": scores})


__all__ = ["mask_grids", "rise", "rise_masks", "upsample_masks"]
