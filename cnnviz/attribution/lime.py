"""LIME for images (Ribeiro, Singh & Guestrin 2016, "Why Should I Trust You?": Explaining
the Predictions of Any Classifier).

The image is cut into superpixels (:func:`~.perturbation.superpixels`: a SLIC-like k-means
on (y, x, L, a, b), Achanta et al. 2012, NumPy Lloyd iterations; or a regular grid).
Random on/off masks over the segments (deterministic by ``seed``; the first sample keeps
every segment) give perturbed images, segments "off" replaced by a fill. The model scores
them in batches and a ridge regression (scikit-learn's ``Ridge``), weighted by an
exponential kernel on the cosine distance of each mask to the all-on mask, is fitted from
masks to the target's score. Each pixel's map value is its segment's coefficient.
Shape convention: (N, C, H, W).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cnnviz_core import InputError, Model
from cnnviz_core.targets import TargetLike

from .base import Attribution, Images, make_attribution, prepare
from .perturbation import (
    SEGMENTATIONS,
    Progress,
    fill_label,
    fill_values,
    perturbed_scores,
    segment_batch,
)


def sample_masks(k: int, samples: int, seed: int, keep: float = 0.5) -> np.ndarray:
    """(samples, k) 0/1 float masks; row 0 keeps everything (the original image)."""
    rng = np.random.default_rng(seed)
    masks = (rng.random((samples, k)) < keep).astype(np.float64)
    masks[0] = 1.0
    return masks


def kernel_weights(masks: np.ndarray, width: float) -> np.ndarray:
    """LIME's weights: sqrt(exp(-d^2 / width^2)) with d the cosine distance to all-on."""
    norms = np.linalg.norm(masks, axis=1) * np.sqrt(masks.shape[1])
    cosine = masks.sum(axis=1) / np.maximum(norms, 1e-12)
    d = 1.0 - cosine
    return np.sqrt(np.exp(-(d**2) / width**2))


def weighted_ridge(
    x: np.ndarray, y: np.ndarray, weights: np.ndarray, alpha: float
) -> tuple[np.ndarray, float, float]:
    """The surrogate: scikit-learn's ``Ridge(alpha)`` fitted with sample weights.
    Returns (coefficients, intercept, weighted R^2)."""
    from sklearn.linear_model import Ridge  # here: importing scikit-learn takes a second

    surrogate = Ridge(alpha=alpha).fit(x, y, sample_weight=weights)
    fit = float(surrogate.score(x, y, sample_weight=weights)) if np.ptp(y) > 0 else 1.0
    return surrogate.coef_, float(surrogate.intercept_), fit


def lime(
    model: Model,
    images: Images,
    target: TargetLike | list = None,
    *,
    segments: int = 49,
    segmentation: str = "slic",
    compactness: float = 10.0,
    samples: int = 500,
    keep: float = 0.5,
    kernel_width: float = 0.25,
    alpha: float = 1.0,
    fill: Any = "mean",
    top: int = 5,
    seed: int = 0,
    batch_size: int = 128,
    progress: Progress | None = None,
) -> Attribution:
    """LIME maps, (N, H, W): the surrogate's coefficient of each pixel's segment (signed).

    Args:
        model: the model.
        images: images or a preprocessed (N, C, H, W) batch.
        target: as for :func:`~.saliency.saliency` (None: predicted class); class targets
            explain the class probability, channel / neuron targets their value.
        segments: about how many superpixels.
        segmentation: ``slic`` (k-means on position + Lab colour) or ``grid``.
        compactness: SLIC's weight of position against colour.
        samples: perturbed images per input (the first one is the input itself).
        keep: probability that a segment stays on in a sample.
        kernel_width: width of the exponential kernel on cosine distance (LIME's 0.25).
        alpha: ridge regularisation (scikit-learn ``Ridge(alpha)``, LIME's 1.0).
        fill: what replaces an "off" segment: ``mean`` (per-channel mean, default),
            ``grey``, ``zeros``, ``blur``, a number or an array (see
            :func:`~.perturbation.fill_values`).
        top: how many positive segments ``extras["top"]`` shows.
        seed: seed of the random masks (the same masks for every image).
        batch_size: perturbed images per onnxruntime call.
        progress: called as ``progress(done, total)`` after each batch.

    Returns:
        Signed (N, H, W) maps; ``extras``: ``segments`` (N, H, W) labels, ``top`` (N, H, W)
        bool (the ``top`` segments with the largest positive coefficients), ``coefficients``
        (N, max segments; NaN past each image's count); ``metrics``: ``r2`` (weighted fit of
        the surrogate) and ``intercept`` per image.
    """
    if samples < 2 or not 0 < keep < 1 or kernel_width <= 0 or segments < 1:
        raise InputError(
            "lime needs samples >= 2, 0 < keep < 1, kernel_width > 0 and segments >= 1; got "
            f"samples={samples}, keep={keep}, kernel_width={kernel_width}, segments={segments}"
        )
    if segmentation not in SEGMENTATIONS:
        raise InputError(f"unknown segmentation {segmentation!r}; choose one of {SEGMENTATIONS}")
    batch, targets = prepare(model, images, target)
    n, _, h, w = batch.shape
    fills = fill_values(model, batch, fill)
    labels = segment_batch(model, batch, segments, compactness, segmentation)
    counts = labels.reshape(n, -1).max(axis=1) + 1
    maps = np.zeros((n, h, w), np.float32)
    top_masks = np.zeros((n, h, w), bool)
    coefficients = np.full((n, int(counts.max())), np.nan, np.float32)
    r2, intercepts = [], []
    total, done = n * samples, 0
    for i in range(n):
        k = int(counts[i])
        masks = sample_masks(k, samples, seed, keep)
        fill_i = fills[i] if fills.ndim == 4 else fills[i][:, None, None]
        one_hot = labels[i][None] == np.arange(k)[:, None, None]  # (k, H, W)
        y = np.empty(samples, np.float64)
        for start in range(0, samples, batch_size):
            on = masks[start : start + batch_size]
            keep_px = np.tensordot(on, one_hot, axes=1) > 0.5  # (b, H, W)
            x = np.where(keep_px[:, None], batch[i][None], fill_i[None]).astype(batch.dtype)
            y[start : start + len(on)] = perturbed_scores(model, x, targets[i])
            done += len(on)
            if progress is not None:
                progress(done, total)
        weights = kernel_weights(masks, kernel_width)
        beta, intercept, fit = weighted_ridge(masks, y, weights, alpha)
        coef = beta.astype(np.float32)
        coefficients[i, :k] = coef
        maps[i] = coef[labels[i]]
        r2.append(fit)
        intercepts.append(intercept)
        order = [s for s in np.argsort(-coef, kind="stable")[:top] if coef[s] > 0]
        top_masks[i] = np.isin(labels[i], order)
    options = {
        "segments": segments,
        "segmentation": segmentation,
        "samples": samples,
        "kernel_width": kernel_width,
        "alpha": alpha,
        "fill": fill_label(fill),
        "seed": seed,
    }
    return make_attribution(
        maps,
        "lime",
        targets,
        options,
        model,
        batch,
        signed=True,
        metrics={"r2": r2, "intercept": intercepts},
        extras={"segments": labels, "top": top_masks, "coefficients": coefficients},
    )


def show_top(result: Attribution, i: int, dim: float = 0.25) -> np.ndarray:
    """Image ``i`` with only its top positive segments at full brightness (LIME's figure),
    (H, W, 3) uint8."""
    image = result.images[i].astype(np.float32)
    keep = result.extras["top"][i][..., None]
    return np.where(keep, image, image * dim).astype(np.uint8)


__all__ = [
    "kernel_weights",
    "lime",
    "sample_masks",
    "show_top",
    "weighted_ridge",
]
