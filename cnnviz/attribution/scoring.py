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
- ROAD (Rong, Leemann et al. 2022, "A Consistent and Efficient Evaluation Strategy for
  Attribution Methods"): remove the most (MoRF) or least (LeRF) relevant p % of the pixels
  by noisy linear imputation (each removed pixel the weighted mean of its 8 neighbours, 1/6
  sideways, 1/12 diagonally, solved jointly as a sparse linear system, plus Gaussian noise)
  and follow the target's probability: low MoRF and high LeRF are good. Imputing from the
  neighbours leaks no shape of the removed region to the model, unlike a constant fill.
- Faithfulness correlation (Bhatt, Weller & Moura 2020, "Evaluating and Aggregating
  Feature-based Model Explanations"): over random pixel subsets set to a baseline, the
  Pearson correlation between the attribution summed over the subset and the drop of the
  target's score (before softmax).

Shape convention: maps (N, H, W), masks (N, H, W) bool.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse
from scipy.sparse.linalg import splu

from cnnviz_core import InputError, Model

from ..render.charts import chart
from ..render.display import Displayable
from .base import Attribution
from .perturbation import fill_values, gaussian_blur, perturbed_scores


@dataclass
class Curves(Displayable):
    """Deletion or insertion curves.

    Attributes:
        fractions: (steps + 1,) share of pixels removed / inserted.
        scores: (N, steps + 1) target probability (class) or value (channel, neuron).
        auc: (N,) area under each curve (trapezoid over ``fractions``).
        kind: ``deletion`` (lower AUC is better) or ``insertion`` (higher is better).
    """

    fractions: np.ndarray
    scores: np.ndarray
    auc: np.ndarray
    kind: str = "deletion"

    def picture(self) -> np.ndarray:
        """One curve per image, score against the share of pixels moved (:func:`chart`),
        (H, W, 3) uint8: what Jupyter and ``plot()`` show."""
        series = [
            (f"image {i}: AUC {auc:.3f}", self.fractions, scores)
            for i, (scores, auc) in enumerate(zip(self.scores, self.auc))
        ]
        moved = "deleted" if self.kind == "deletion" else "inserted"
        return chart(
            series,
            x_label=f"share of pixels {moved}",
            y_label="target score",
            y_range=_unit_range(self.scores),
        )

    def facts(self) -> list[tuple[str, object]]:
        """Kind, AUC per image and their mean, for the HTML display."""
        better = "lower" if self.kind == "deletion" else "higher"
        return [
            ("curves", f"{self.kind} ({better} AUC is better)"),
            ("AUC per image", ", ".join(f"{a:.3f}" for a in self.auc)),
            ("mean AUC", f"{self.auc.mean():.3f}" if len(self.auc) else "-"),
            ("steps", len(self.fractions) - 1),
        ]


def _unit_range(scores: np.ndarray) -> tuple[float, float] | None:
    """(0, 1) for scores that are probabilities (all within it), else None (the data's)."""
    finite = scores[np.isfinite(scores)]
    return (0.0, 1.0) if finite.size and 0 <= finite.min() and finite.max() <= 1 else None


def _ranking(attribution: Attribution) -> np.ndarray:
    """(N, H*W) pixel order, most important first (the heat map; ties by position)."""
    heat = attribution.heatmap.reshape(len(attribution), -1)
    return np.argsort(-heat, axis=1, kind="stable")


def _curves(
    model: Model, attribution: Attribution, batch: np.ndarray, start: np.ndarray,
    end: np.ndarray, steps: int, kind: str,
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
    return Curves(fractions, scores, auc, kind)


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
    return _curves(model, attribution, batch, batch, end, steps, "deletion")


def insertion(
    model: Model, attribution: Attribution, images: np.ndarray | None = None, *,
    steps: int = 32, blur_sigma: float | None = None,
) -> Curves:  # fmt: skip
    """Insertion curves: from a blurred copy (sigma = side / 8 by default, RISE's blurred
    canvas), the most important pixels inserted first."""
    batch = _batch(model, attribution, images)
    sigma = blur_sigma if blur_sigma is not None else max(batch.shape[2:]) / 8
    blurred = gaussian_blur(batch, sigma)
    return _curves(model, attribution, batch, blurred, batch, steps, "insertion")


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


# ---------------------------------------------------------------------------------- ROAD

#: ROAD's neighbour weights (row offset, column offset, weight): 1/6 sideways, 1/12 diagonal
IMPUTATION_WEIGHTS = (
    (0, 1, 1 / 6), (0, -1, 1 / 6), (1, 0, 1 / 6), (-1, 0, 1 / 6),
    (1, 1, 1 / 12), (1, -1, 1 / 12), (-1, 1, 1 / 12), (-1, -1, 1 / 12),
)  # fmt: skip
#: the removal percentages of :func:`road` by default
ROAD_PERCENTAGES = (10, 30, 50, 70, 90)


def noisy_linear_imputation(
    image: np.ndarray, removed: np.ndarray, noise: float = 0.01,
    rng: np.random.Generator | None = None,
) -> np.ndarray:  # fmt: skip
    """ROAD's imputation of one (C, H, W) image: the ``removed`` (H, W) pixels become the
    solution of ``x_i = sum_j w_ij x_j / sum_j w_ij`` over each pixel's in-image neighbours
    (:data:`IMPUTATION_WEIGHTS`; kept neighbours are known, removed ones unknowns), one
    sparse system for all channels, plus ``noise`` * N(0, 1) per imputed value (``rng``,
    default seed 0). Returns float32 (C, H, W)."""
    c, h, w = image.shape
    removed = np.asarray(removed, bool)
    if removed.shape != (h, w):
        raise InputError(f"removed mask {removed.shape} does not match the image {(h, w)}")
    flat = image.reshape(c, -1).astype(np.float64)
    unknown = np.flatnonzero(removed.ravel())
    out = flat.copy()
    if len(unknown):
        variable = np.full(h * w, -1, np.int64)
        variable[unknown] = np.arange(len(unknown))
        ys, xs = np.divmod(unknown, w)
        diagonal = np.zeros(len(unknown))
        rhs = np.zeros((len(unknown), c))
        rows, cols, vals = [], [], []
        for dy, dx, weight in IMPUTATION_WEIGHTS:
            ny, nx = ys + dy, xs + dx
            inside = (ny >= 0) & (ny < h) & (nx >= 0) & (nx < w)
            where = np.flatnonzero(inside)
            neighbour = ny[inside] * w + nx[inside]
            diagonal[where] += weight
            is_unknown = variable[neighbour] >= 0
            rows.append(where[is_unknown])
            cols.append(variable[neighbour[is_unknown]])
            vals.append(np.full(int(is_unknown.sum()), -weight))
            known = ~is_unknown
            np.add.at(rhs, where[known], weight * flat[:, neighbour[known]].T)
        k = len(unknown)
        system = sparse.csc_matrix(
            (
                np.concatenate([diagonal, *vals]),
                (np.concatenate([np.arange(k), *rows]), np.concatenate([np.arange(k), *cols])),
            ),
            shape=(k, k),
        )
        # symmetric (w_ij = w_ji) and diagonally dominant: a symmetric-mode LU
        factor = splu(system, permc_spec="MMD_AT_PLUS_A", options={"SymmetricMode": True})
        solved = factor.solve(rhs)
        generator = rng if rng is not None else np.random.default_rng(0)
        out[:, unknown] = solved.T + noise * generator.standard_normal((c, k))
    return out.reshape(c, h, w).astype(np.float32)


@dataclass
class Road(Displayable):
    """ROAD curves of a batch.

    Attributes:
        percentages: (P,) share of pixels removed, in percent.
        morf: (N, P) target probability (class) or value with the most relevant removed.
        lerf: (N, P) the same with the least relevant removed.
        morf_kept, lerf_kept: (N, P) 1.0 where the target class is still predicted (the
            accuracy ROAD plots; NaN for non-class targets).
    """

    percentages: np.ndarray
    morf: np.ndarray
    lerf: np.ndarray
    morf_kept: np.ndarray
    lerf_kept: np.ndarray

    @property
    def morf_mean(self) -> np.ndarray:
        """(N,) mean MoRF score over the percentages (lower is better)."""
        return self.morf.mean(axis=1)

    @property
    def lerf_mean(self) -> np.ndarray:
        """(N,) mean LeRF score over the percentages (higher is better)."""
        return self.lerf.mean(axis=1)

    def picture(self) -> np.ndarray:
        """The MoRF and LeRF curves averaged over the images, score against the share
        removed (:func:`chart`), (H, W, 3) uint8: what Jupyter and ``plot()`` show."""
        n = len(self.morf)
        series = [
            (f"MoRF (mean of {n})", self.percentages, self.morf.mean(axis=0)),
            (f"LeRF (mean of {n})", self.percentages, self.lerf.mean(axis=0)),
        ]
        return chart(
            series,
            x_label="% of pixels removed (ROAD)",
            y_label="target score",
            y_range=_unit_range(np.concatenate([self.morf, self.lerf], axis=1)),
        )

    def facts(self) -> list[tuple[str, object]]:
        """Mean MoRF and LeRF per image, for the HTML display."""
        return [
            ("ROAD", "noisy linear imputation: MoRF lower is better, LeRF higher"),
            ("MoRF mean per image", ", ".join(f"{v:.3f}" for v in self.morf_mean)),
            ("LeRF mean per image", ", ".join(f"{v:.3f}" for v in self.lerf_mean)),
            ("percentages", ", ".join(f"{p:g}" for p in self.percentages)),
        ]


def road(
    model: Model, attribution: Attribution, images: np.ndarray | None = None, *,
    percentages: tuple[float, ...] = ROAD_PERCENTAGES, noise: float = 0.01, seed: int = 0,
) -> Road:  # fmt: skip
    """ROAD, MoRF and LeRF (Rong et al. 2022): for each percentage p, the top (MoRF) or
    bottom (LeRF) ``floor(H * W * p / 100)`` pixels of the heat map (ties by position)
    replaced by :func:`noisy_linear_imputation`; one batched forward per image.

    Args:
        model, attribution, images: as :func:`deletion`.
        percentages: removal percentages, each in [0, 100).
        noise: standard deviation of the imputation noise (preprocessed space; ROAD's 0.01).
        seed: seed of the noise.
    """
    batch = _batch(model, attribution, images)
    n, _, h, w = batch.shape
    if attribution.heatmap.shape != (n, h, w):
        raise InputError(
            f"attribution maps {attribution.heatmap.shape} do not match the batch {batch.shape}"
        )
    shares = np.asarray(percentages, np.float64)
    if shares.ndim != 1 or len(shares) == 0 or (shares < 0).any() or (shares >= 100).any():
        raise InputError(
            f"percentages must be values in [0, 100) (a fully removed image has nothing to "
            f"impute from); got {percentages}"
        )
    counts = (h * w * shares / 100).astype(np.int64)
    order = _ranking(attribution)
    rng = np.random.default_rng(seed)
    p = len(shares)
    scores = np.empty((n, 2 * p))
    kept = np.full((n, 2 * p), np.nan)
    for i in range(n):
        rank = np.empty(h * w, np.int64)
        rank[order[i]] = np.arange(h * w)
        rank = rank.reshape(h, w)
        masks = [rank < k for k in counts] + [rank >= h * w - k for k in counts]
        x = np.stack([noisy_linear_imputation(batch[i], m, noise, rng) for m in masks])
        target = attribution.targets[i]
        if target.kind == "class":
            probabilities = model.probabilities(x)
            scores[i] = probabilities[:, target.index[0]]
            kept[i] = probabilities.argmax(axis=1) == target.index[0]
        else:
            scores[i] = perturbed_scores(model, x, target)
    return Road(shares, scores[:, :p], scores[:, p:], kept[:, :p], kept[:, p:])


# ---------------------------------------------------------------- faithfulness correlation


@dataclass
class Faithfulness(Displayable):
    """Faithfulness correlation of a batch.

    Attributes:
        correlation: (N,) Pearson correlation of ``attribution_sums`` and ``drops`` (0 when
            either is constant).
        subsets: (N, runs, size) the flat pixel indices set to the baseline in each run.
        attribution_sums: (N, runs) the heat map summed over each subset.
        drops: (N, runs) the target's value (a class's score before softmax, a channel's
            mean, a neuron) on the image minus on the perturbed copy.
    """

    correlation: np.ndarray
    subsets: np.ndarray
    attribution_sums: np.ndarray
    drops: np.ndarray

    def picture(self) -> np.ndarray:
        """Per image, each run's score drop against its summed attribution, one colour
        per image (:func:`chart`), (H, W, 3) uint8: what Jupyter and ``plot()`` show."""
        series = [
            (f"image {i}: r = {r:.2f}", sums, drops)
            for i, (r, sums, drops) in enumerate(
                zip(self.correlation, self.attribution_sums, self.drops)
            )
        ]
        return chart(
            series, x_label="attribution summed over the subset", y_label="score drop", points=True
        )

    def facts(self) -> list[tuple[str, object]]:
        """Correlation per image, runs and subset size, for the HTML display."""
        n, runs, size = self.subsets.shape
        return [
            ("faithfulness correlation", ", ".join(f"{r:.3f}" for r in self.correlation)),
            ("mean", f"{self.correlation.mean():.3f}" if n else "-"),
            ("runs x pixels per subset", f"{runs} x {size}"),
        ]


def faithfulness_correlation(
    model: Model, attribution: Attribution, images: np.ndarray | None = None, *,
    runs: int = 64, subset: float = 0.2, fill: object = "blur", seed: int = 0,
) -> Faithfulness:  # fmt: skip
    """Faithfulness correlation (Bhatt et al. 2020): ``runs`` random subsets of
    ``round(subset * H * W)`` pixels (all channels) set to ``fill`` (see :func:`deletion`),
    one batched forward per image; the Pearson correlation over the runs of the summed
    heat map and the drop of the target's value (for a class its score before softmax, as
    Quantus: a saturated probability does not move). Higher is better. The
    paper fixes neither the subset size nor the baseline: a blurred copy (as deletion's
    ``blur``) changes the image less out of distribution than zeros, and a fifth of the
    pixels moves the score well above the noise of the runs on the shapes model.

    Raises:
        InputError: ``runs`` < 2 or a ``subset`` outside (0, 1).
    """
    if runs < 2:
        raise InputError(f"runs must be >= 2 (a correlation needs two points); got {runs}")
    if not 0 < subset < 1:
        raise InputError(f"subset must be a share of the pixels in (0, 1); got {subset}")
    batch = _batch(model, attribution, images)
    n, _, h, w = batch.shape
    heat = attribution.heatmap.astype(np.float64)
    if heat.shape != (n, h, w):
        raise InputError(f"attribution maps {heat.shape} do not match the batch {batch.shape}")
    fills = fill_values(model, batch, fill)
    end = fills if fills.ndim == 4 else np.broadcast_to(fills[..., None, None], batch.shape)
    size = max(1, round(subset * h * w))
    rng = np.random.default_rng(seed)
    subsets = np.stack(
        [np.stack([rng.choice(h * w, size, replace=False) for _ in range(runs)]) for _ in range(n)]
    )
    sums = np.empty((n, runs))
    drops = np.empty((n, runs))
    correlation = np.empty(n)
    for i in range(n):
        chosen = np.zeros((runs, h * w), bool)
        chosen[np.arange(runs)[:, None], subsets[i]] = True
        chosen = chosen.reshape(runs, 1, h, w)
        x = np.where(chosen, end[i][None], batch[i][None]).astype(batch.dtype)
        target = attribution.targets[i]
        tensor = model.run(
            np.concatenate([batch[i : i + 1], x]), taps=[target.tensor], outputs=False
        )
        both = target.values(tensor[target.tensor])
        drops[i] = both[0] - both[1:]
        sums[i] = heat[i].ravel()[subsets[i]].sum(axis=1)
        correlation[i] = _pearson(sums[i], drops[i])
    return Faithfulness(correlation, subsets, sums, drops)


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    dx, dy = x - x.mean(), y - y.mean()
    norm = np.sqrt((dx * dx).sum() * (dy * dy).sum())
    return float((dx * dy).sum() / norm) if norm > 0 else 0.0


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
    "IMPUTATION_WEIGHTS",
    "ROAD_PERCENTAGES",
    "Curves",
    "Faithfulness",
    "Road",
    "approximation_error",
    "deletion",
    "energy_inside",
    "faithfulness_correlation",
    "insertion",
    "noisy_linear_imputation",
    "pointing_game",
    "road",
    "score",
]
