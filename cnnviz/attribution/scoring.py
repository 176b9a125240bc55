"""Scoring explanations: how faithful and how well placed an attribution is.

- Deletion and insertion curves (Petsiuk, Das & Saenko 2018, "RISE", section 4.1): remove
  (deletion: replace by a fill, from the image) or add (insertion: onto a blurred copy)
  pixels in decreasing order of attribution and follow the target's probability; the area
  under the curve (x from 0 to 1, trapezoid rule) is the score. Low deletion AUC and high
  insertion AUC are good.
- With ground-truth object masks (the shapes data set): the pointing game (Zhang et al. 2016,
  "Top-down Neural Attention by Excitation Backprop": is the map's peak on the object, within
  ``tolerance`` pixels) and the energy inside the mask (the share of the positive attribution
  that falls on the object, as in Score-CAM's energy-based pointing game).

Shape convention: maps (N, H, W), masks (N, H, W) bool.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cnnviz_core import InputError, Model

from .base import Attribution
from .perturbation import fill_values, gaussian_blur, perturbed_scores


@dataclass
class Curves:
    """Deletion or insertion curves.

    Attributes:
        fractions: (steps + 1,) share of pixels removed / inserted.
        scores: (N, steps + 1) target probability (class) or value (channel, neuron).
        auc: (N,) area under each curve (trapezoid over ``fractions``).
    """

    fractions: np.ndarray
    scores: np.ndarray
    auc: np.ndarray


def _ranking(attribution: Attribution) -> np.ndarray:
    """(N, H*W) pixel order, most important first (the heat map; ties by position)."""
    heat = attribution.heatmap.reshape(len(attribution), -1)
    return np.argsort(-heat, axis=1, kind="stable")


def _curves(
    model: Model, attribution: Attribution, batch: np.ndarray, start: np.ndarray,
    end: np.ndarray, steps: int,
) -> Curves:  # fmt: skip
    """Move pixels from ``start`` to ``end`` in attribution order, ``steps`` equal chunks."""
    if steps < 1:
        raise InputError(f"steps must be >= 1; got {steps}")
    n, _, h, w = batch.shape
    if attribution.heatmap.shape != (n, h, w):
        raise InputError(
            f"attribution maps {attribution.heatmap.shape} do not match the batch {batch.shape}"
        )
    order = _ranking(attribution)
    counts = np.rint(np.linspace(0, h * w, steps + 1)).astype(np.int64)
    scores = np.empty((n, steps + 1), np.float64)
    for i in range(n):
        rank = np.empty(h * w, np.int64)
        rank[order[i]] = np.arange(h * w)
        moved = rank.reshape(1, h, w) < counts[:, None, None]  # (steps + 1, H, W)
        x = np.where(moved[:, None], end[i][None], start[i][None]).astype(batch.dtype)
        scores[i] = perturbed_scores(model, x, attribution.targets[i])
    fractions = counts / (h * w)
    auc = ((scores[:, 1:] + scores[:, :-1]) * 0.5 * np.diff(fractions)).sum(axis=1)
    return Curves(fractions, scores, auc)


def deletion(
    model: Model, attribution: Attribution, images: np.ndarray | None = None, *,
    steps: int = 32, fill: object = "zeros",
) -> Curves:  # fmt: skip
    """Deletion curves: the most important pixels first replaced by ``fill`` (``zeros`` in
    the preprocessed space, ``grey``, ``mean``, ``blur``, a number or an array; see
    :func:`~.perturbation.fill_values`).

    Args:
        model: the model the attribution explains.
        attribution: maps (N, H, W) (colour maps are reduced by their heat map).
        images: the preprocessed batch (default: re-prepared from ``attribution.images``,
            exact for the shapes model's 8-bit inputs; pass it for any other).
        steps: number of chunks of pixels.
        fill: what deleted pixels become.
    """
    batch = _batch(model, attribution, images)
    fills = fill_values(model, batch, fill)
    end = fills if fills.ndim == 4 else np.broadcast_to(fills[..., None, None], batch.shape)
    return _curves(model, attribution, batch, batch, end, steps)


def insertion(
    model: Model, attribution: Attribution, images: np.ndarray | None = None, *,
    steps: int = 32, blur_sigma: float | None = None,
) -> Curves:  # fmt: skip
    """Insertion curves: from a blurred copy (sigma = side / 8 by default, RISE's blurred
    canvas), the most important pixels inserted first."""
    batch = _batch(model, attribution, images)
    sigma = blur_sigma if blur_sigma is not None else max(batch.shape[2:]) / 8
    return _curves(model, attribution, batch, gaussian_blur(batch, sigma), batch, steps)


def _batch(model: Model, attribution: Attribution, images: np.ndarray | None) -> np.ndarray:
    if images is None:
        return model.prepare(attribution.images)
    return model.prepare(images)


def pointing_game(attribution: Attribution, masks: np.ndarray, tolerance: int = 0) -> np.ndarray:
    """(N,) bool: whether each map's maximum lies on the object (within ``tolerance`` pixels
    of it; ties: the first maximum in row-major order)."""
    heat = attribution.heatmap
    masks = _check_masks(heat, masks)
    hits = np.empty(len(heat), bool)
    for i, (m, mask) in enumerate(zip(heat, masks)):
        y, x = np.unravel_index(int(np.argmax(m)), m.shape)
        t = tolerance
        hits[i] = bool(mask[max(0, y - t) : y + t + 1, max(0, x - t) : x + t + 1].any())
    return hits


def energy_inside(attribution: Attribution, masks: np.ndarray) -> np.ndarray:
    """(N,) share of the positive attribution on the object: sum(max(map, 0) on the mask) /
    sum(max(map, 0)); 0 for a map with no positive value."""
    heat = attribution.heatmap.astype(np.float64)
    masks = _check_masks(heat, masks)
    positive = np.maximum(heat, 0).reshape(len(heat), -1)
    inside = (positive * masks.reshape(len(heat), -1)).sum(axis=1)
    total = positive.sum(axis=1)
    return np.where(total > 0, inside / np.where(total > 0, total, 1), 0.0)


def _check_masks(heat: np.ndarray, masks: np.ndarray) -> np.ndarray:
    masks = np.asarray(masks, bool)
    if masks.shape != heat.shape:
        raise InputError(f"masks {masks.shape} do not match the maps {heat.shape}")
    return masks


def score(
    model: Model,
    attribution: Attribution,
    masks: np.ndarray | None = None,
    images: np.ndarray | None = None,
    *,
    steps: int = 32,
) -> dict[str, float]:
    """Mean scores of one attribution: ``deletion_auc`` (lower is better), ``insertion_auc``
    (higher), and with masks ``pointing_game`` and ``energy_inside`` (higher)."""
    result = {
        "deletion_auc": float(deletion(model, attribution, images, steps=steps).auc.mean()),
        "insertion_auc": float(insertion(model, attribution, images, steps=steps).auc.mean()),
    }
    if masks is not None:
        result["pointing_game"] = float(pointing_game(attribution, masks).mean())
        result["energy_inside"] = float(energy_inside(attribution, masks).mean())
    return result


def approximation_error(
    approx: Attribution,
    exact: Attribution,
    model: Model | None = None,
    images: np.ndarray | None = None,
    *,
    steps: int = 16,
) -> dict[str, float]:
    """How far an approximate attribution (drill-down, bf16, thresholded incremental
    occlusion) is from the exact one of the same images and targets.

    Args:
        approx, exact: attributions with maps of the same shape.
        model: with it, the deletion curves of both are compared as well.
        images: the preprocessed batch for the deletion curves (see :func:`deletion`).
        steps: deletion curve steps.

    Returns:
        ``map_correlation``: mean over images of the Pearson correlation of the heat maps (1
        for two equal constant maps, 0 for a constant map against a varying one);
        ``max_abs_diff_rel``: max |approx - exact| / max |exact| over the batch;
        with ``model``: ``deletion_auc_diff`` (mean of approx AUC - exact AUC: > 0 when the
        approximate ranking deletes the evidence more slowly), ``deletion_auc_approx``,
        ``deletion_auc_exact``.

    Raises:
        InputError: maps of different shapes.
    """
    a = approx.heatmap.astype(np.float64)
    e = exact.heatmap.astype(np.float64)
    if a.shape != e.shape:
        raise InputError(f"approximate maps {a.shape} and exact maps {e.shape} differ in shape")
    correlations = []
    for x, y in zip(a.reshape(len(a), -1), e.reshape(len(e), -1)):
        dx, dy = x - x.mean(), y - y.mean()
        norm = np.sqrt((dx * dx).sum() * (dy * dy).sum())
        if norm > 0:
            correlations.append(float((dx * dy).sum() / norm))
        else:  # a constant map: perfect only against the same constant map
            correlations.append(1.0 if np.array_equal(x, y) else 0.0)
    scale = float(np.abs(e).max())
    diff = float(np.abs(a - e).max())
    result = {
        "map_correlation": float(np.mean(correlations)),
        "max_abs_diff_rel": diff / scale if scale > 0 else diff,
    }
    if model is not None:
        auc_a = deletion(model, approx, images, steps=steps).auc
        auc_e = deletion(model, exact, images, steps=steps).auc
        result["deletion_auc_diff"] = float((auc_a - auc_e).mean())
        result["deletion_auc_approx"] = float(auc_a.mean())
        result["deletion_auc_exact"] = float(auc_e.mean())
    return result


__all__ = [
    "Curves",
    "approximation_error",
    "deletion",
    "energy_inside",
    "insertion",
    "pointing_game",
    "score",
]
