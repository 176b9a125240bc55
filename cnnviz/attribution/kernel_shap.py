"""KernelSHAP on superpixels (Lundberg & Lee 2017, "A Unified Approach to Interpreting Model
Predictions"), sampled and fitted as Captum's ``KernelShap`` does.

The features are superpixels (LIME's segmentation, :func:`~.perturbation.superpixels`, or
labels given). A coalition keeps some segments and fills the others; its Shapley kernel
weight ``(M - 1) / (C(M, k) k (M - k))`` depends on its size k only. The coalitions are
drawn with that weight instead of weighted by it: k from ``p(k) ~ (M - 1) / (k (M - k))``,
1 <= k < M, then k segments uniformly; the first two samples are all-on and all-off and get
the weight 10^6 (the kernel is infinite there: the efficiency constraint, attributions
summing to f(x) - f(fill), held by the fit). A linear regression with intercept, weighted
so, from coalitions to the target's score gives each segment's Shapley value estimate.

The coalitions come from ``seed`` alone (:func:`shapley_coalitions` makes them again), the
same for every image with the same segment count; perturbed images are scored in chunks of
the model's memory budget. Shape convention: (N, C, H, W) batches, (N, H, W) maps.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cnnviz_core import InputError, Model
from cnnviz_core.targets import TargetLike

from .base import Attribution, Images, make_attribution, prepare
from .perturbation import (
    Progress,
    blend,
    chunk_size,
    fill_label,
    fill_values,
    perturbed_scores,
    segment_batch,
)

#: the weight of the all-on and all-off coalitions (Captum's ``inf_weight``)
ENDPOINT_WEIGHT = 1e6


def shapley_coalitions(features: int, samples: int, seed: int = 0) -> np.ndarray:
    """(samples, M) float64 0/1 coalitions: all-on, all-off, then coalitions of size k drawn
    with ``p(k) ~ (M - 1) / (k (M - k))`` and their members uniformly. With M = 1 only the
    two endpoints (nothing else exists)."""
    if features < 2:
        return np.array([[1.0], [0.0]])[: max(samples, 0)].reshape(-1, features)
    rng = np.random.default_rng(seed)
    rows = max(samples - 2, 0)
    k = np.arange(1, features)
    weights = (features - 1) / (k * (features - k))
    sizes = rng.choice(k, size=rows, p=weights / weights.sum())
    ranks = rng.random((rows, features)).argsort(axis=1).argsort(axis=1)
    drawn = (ranks < sizes[:, None]).astype(np.float64)
    return np.concatenate([np.ones((1, features)), np.zeros((1, features)), drawn])[:samples]


def coalition_weights(coalitions: np.ndarray) -> np.ndarray:
    """(S,) regression weights: :data:`ENDPOINT_WEIGHT` for all-on and all-off, else 1 (the
    kernel is in the sampling)."""
    on = coalitions.sum(axis=1)
    return np.where((on == 0) | (on == coalitions.shape[1]), ENDPOINT_WEIGHT, 1.0)


def weighted_linear_fit(
    x: np.ndarray, y: np.ndarray, weights: np.ndarray
) -> tuple[np.ndarray, float]:
    """Least squares with intercept and sample weights in float64 (scikit-learn's
    ``LinearRegression().fit(x, y, sample_weight)``: weighted centring, then the rows scaled
    by sqrt(weight)). Returns (coefficients, intercept)."""
    w = weights / weights.sum()
    x_mean, y_mean = w @ x, float(w @ y)
    root = np.sqrt(weights)[:, None]
    coef = np.linalg.lstsq((x - x_mean) * root, (y - y_mean) * root[:, 0], rcond=None)[0]
    return coef, y_mean - float(x_mean @ coef)


def _labels(model: Model, batch: np.ndarray, segments: Any, compactness: float, method: str):
    """(N, H, W) int64 labels 0..K-1 per image: cut, or given as (H, W) / (N, H, W)."""
    n, _, h, w = batch.shape
    if isinstance(segments, (int, np.integer)) and not isinstance(segments, bool):
        if segments < 1:
            raise InputError(f"segments must be >= 1 or an array of labels; got {segments}")
        return segment_batch(model, batch, int(segments), compactness, method)
    given = np.asarray(segments)
    if given.shape not in ((h, w), (n, h, w)) or not np.issubdtype(given.dtype, np.integer):
        raise InputError(
            f"segments must be an int or integer labels of shape ({h}, {w}) or ({n}, {h}, {w});"
            f" got {given.dtype} {given.shape}"
        )
    given = np.broadcast_to(given, (n, h, w))
    # renumber each image's labels 0..K-1 in the order of their values
    return np.stack([np.unique(g, return_inverse=True)[1].reshape(h, w) for g in given])


def kernel_shap(
    model: Model,
    images: Images,
    target: TargetLike | list = None,
    *,
    segments: int | np.ndarray = 49,
    segmentation: str = "slic",
    compactness: float = 10.0,
    samples: int = 500,
    fill: Any = "mean",
    seed: int = 0,
    batch_size: int | None = None,
    progress: Progress | None = None,
) -> Attribution:
    """KernelSHAP maps, (N, H, W): each pixel's segment's Shapley value estimate (signed).

    Args:
        model: the model.
        images: images or a preprocessed (N, C, H, W) batch.
        target: as for :func:`~.saliency.saliency` (None: predicted class); class targets
            explain the class probability, channel / neuron targets their value.
        segments: about how many superpixels, or the labels themselves ((H, W) for every
            image or (N, H, W); renumbered 0..K-1 in the order of their values).
        segmentation: ``slic`` or ``grid`` (see :func:`~.perturbation.superpixels`).
        compactness: SLIC's weight of position against colour.
        samples: coalitions per image, the all-on and all-off ones included (Captum's
            ``n_samples``).
        fill: what an "off" segment becomes (the reference input): ``mean`` (per-channel
            mean, default), ``zeros``, ``grey``, ``blur``, a number or an array (see
            :func:`~.perturbation.fill_values`).
        seed: seed of the coalitions (the same for images with the same segment count).
        batch_size: perturbed images per forward; None: the model's memory budget.
        progress: called as ``progress(done, total)`` after each batch.

    Returns:
        Signed (N, H, W) maps; ``extras``: ``segments`` (N, H, W) labels, ``coefficients``
        (N, max segments; NaN past each image's count); ``metrics``: ``delta`` (f(x) -
        f(fill)), ``sum`` (of the Shapley values), ``efficiency`` (|sum - delta| / |delta|)
        and ``intercept`` per image.
    """
    if samples < 2:
        raise InputError(f"kernel_shap needs samples >= 2 (all-on and all-off); got {samples}")
    batch, targets = prepare(model, images, target)
    n, _, h, w = batch.shape
    labels = _labels(model, batch, segments, compactness, segmentation)
    counts = labels.reshape(n, -1).max(axis=1, initial=-1) + 1
    fills = fill_values(model, batch, fill)
    step = chunk_size(model, batch_size)
    maps = np.zeros((n, h, w), np.float32)
    coefficients = np.full((n, int(counts.max(initial=0))), np.nan, np.float32)
    deltas, sums, efficiency, intercepts = [], [], [], []
    done = 0
    total = sum(samples if count > 1 else min(samples, 2) for count in counts)
    buffer = np.empty((min(step, samples), *batch.shape[1:]), np.float32)  # reused
    for i in range(n):
        coalitions = shapley_coalitions(int(counts[i]), samples, seed)
        keep = coalitions.astype(bool)
        y = np.empty(len(coalitions), np.float64)
        for start in range(0, len(keep), step):
            on = keep[start : start + step][:, labels[i]]  # (b, H, W)
            x = blend(batch[i], fills[i], on, out=buffer[: len(on)])
            y[start : start + len(on)] = perturbed_scores(model, x, targets[i])
            done += len(on)
            if progress is not None:
                progress(done, total)
        phi, intercept = weighted_linear_fit(coalitions, y, coalition_weights(coalitions))
        coefficients[i, : len(phi)] = phi
        maps[i] = phi[labels[i]]
        delta, total_phi = float(y[0] - y[1]), float(phi.sum())
        deltas.append(delta)
        sums.append(total_phi)
        efficiency.append(abs(total_phi - delta) / max(abs(delta), 1e-12))
        intercepts.append(intercept)
    options = {
        "segments": segments if isinstance(segments, (int, np.integer)) else "array",
        "segmentation": segmentation,
        "samples": samples,
        "fill": fill_label(fill),
        "seed": seed,
    }
    return make_attribution(
        maps,
        "kernelshap",
        targets,
        options,
        model,
        batch,
        signed=True,
        metrics={
            "delta": deltas,
            "sum": sums,
            "efficiency": efficiency,
            "intercept": intercepts,
        },
        extras={"segments": labels, "coefficients": coefficients},
    )


__all__ = [
    "ENDPOINT_WEIGHT",
    "coalition_weights",
    "kernel_shap",
    "shapley_coalitions",
    "weighted_linear_fit",
]
