"""Adaptive drill-down occlusion: score the windows on a coarse stride first, then refine
(stride halved, repeatedly) only where the occlusion changes the target most, and fill in
the other window positions by interpolation (Nakandala, Kumar & Papakonstantinou, SIGMOD
2019, "Incremental and Approximate Inference for Faster Occlusion-based Deep CNN
Explanations", section 4.2, adaptive drill-down).

The window grid is exactly :func:`~.occlusion.occlusion`'s for ``stride``: positions
``0, s, 2s, ...`` per axis, grid indices ``0 .. P-1``. Level 0 scores the sub-lattice of
indices ``0, f, 2f, ...`` (and the last one), ``f = 2**levels``, i.e. stride ``f * s``. Each
level halves the lattice step inside the ``refine`` share of its candidate cells (the cells
whose four corners are all scored) with the largest ``max |drop|`` at their corners, and
scores the new lattice points there. Unscored positions take the bilinear interpolation of
their enclosing cell, level by level. Scored positions are exactly what the scorer gives
(exact for the onnxruntime and incremental scorers); the map is averaged over covering
windows as occlusion's is.

Any :class:`~cnnviz_core.incremental.OcclusionScorer` runs the windows: naive onnxruntime,
incremental (exact or ``tau``-approximate), or bf16 (:mod:`cnnviz_core.torch_bridge.precision`);
the drops are taken against the same scorer's unoccluded score, so a reduced-precision bias
cancels. With ``reference=`` the approximation's error against exact occlusion is recorded in
``metrics["approximation_error"]`` (:func:`~.scoring.approximation_error`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from cnnviz_core import InputError, Model
from cnnviz_core.model import to_probabilities
from cnnviz_core.targets import ResolvedTarget, TargetLike, score_tensor

from .base import Attribution, Images, make_attribution, prepare
from .occlusion import OUTPUTS, occlusion, occlusion_scorer
from .perturbation import (
    Progress,
    cover_average,
    fill_label,
    fill_values,
    window_grid,
)
from .scoring import approximation_error


def lattice(n: int, step: int) -> np.ndarray:
    """Grid indices ``0, step, 2 step, ...`` below ``n``, and ``n - 1``."""
    return np.unique(np.r_[np.arange(0, n, step), n - 1]).astype(np.int64)


def interpolation(fine: np.ndarray, coarse: np.ndarray) -> np.ndarray:
    """(len(fine), len(coarse)) linear interpolation weights from the ``coarse`` lattice
    (a sorted subset of ``fine`` sharing its ends) onto ``fine``."""
    hi = np.clip(np.searchsorted(coarse, fine, side="left"), 1, len(coarse) - 1)
    lo = hi - 1
    span = np.maximum(coarse[hi] - coarse[lo], 1)
    t = np.clip((fine - coarse[lo]) / span, 0.0, 1.0)
    weights = np.zeros((len(fine), len(coarse)))
    rows = np.arange(len(fine))
    np.add.at(weights, (rows, lo), 1 - t)
    np.add.at(weights, (rows, hi), t)
    return weights


def drill_grid(
    score: Callable[[np.ndarray], np.ndarray],
    shape: tuple[int, int],
    levels: int,
    refine: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Drill-down over a (Ph, Pw) grid of window positions.

    Args:
        score: grid indices (B, 2) -> the drop (B,) at those windows.
        shape: (Ph, Pw) of the full grid.
        levels: halvings of the lattice step (level 0 uses step ``2**levels``).
        refine: share of candidate cells refined per level, in (0, 1].

    Returns:
        (values (Ph, Pw) float64: scored or interpolated drops, scored (Ph, Pw) bool).
    """
    ph, pw = shape
    values = np.zeros(shape)
    scored = np.zeros(shape, bool)

    def visit(iy: np.ndarray, ix: np.ndarray) -> None:
        """Score the (iy, ix) grid points not scored yet."""
        points = np.stack([iy.ravel(), ix.ravel()], -1)
        points = np.unique(points[~scored[points[:, 0], points[:, 1]]], axis=0)
        if len(points):
            values[points[:, 0], points[:, 1]] = score(points)
            scored[points[:, 0], points[:, 1]] = True

    step = 2**levels
    ly, lx = lattice(ph, step), lattice(pw, step)
    visit(*np.meshgrid(ly, lx, indexing="ij"))
    estimate = values[np.ix_(ly, lx)]
    for _ in range(levels):
        step //= 2
        ny, nx = lattice(ph, step), lattice(pw, step)
        # cells of the previous lattice with four scored corners, by max |drop| at a corner
        y0, y1, x0, x1 = ly[:-1], ly[1:], lx[:-1], lx[1:]
        corners = np.stack(
            [values[np.ix_(a, b)] for a in (y0, y1) for b in (x0, x1)]
            + [scored[np.ix_(a, b)] for a in (y0, y1) for b in (x0, x1)]
        )
        strength = np.abs(corners[:4]).max(axis=0)
        candidate = corners[4:].astype(bool).all(axis=0)
        cells = np.flatnonzero(candidate.ravel())
        chosen = cells[np.argsort(-strength.ravel()[cells], kind="stable")]
        chosen = chosen[: math.ceil(refine * len(cells))]
        # every chosen cell's new lattice points, scored in one call (batches, not cells)
        points = []
        for cell in chosen:
            cy, cx = divmod(int(cell), len(x0))
            iy = ny[(ny >= y0[cy]) & (ny <= y1[cy])]
            ix = nx[(nx >= x0[cx]) & (nx <= x1[cx])]
            points.append(np.stack(np.meshgrid(iy, ix, indexing="ij"), -1).reshape(-1, 2))
        if points:
            both = np.concatenate(points)
            visit(both[:, 0], both[:, 1])
        # the new lattice: interpolated from the previous one, scored values where scored
        estimate = interpolation(ny, ly) @ estimate @ interpolation(nx, lx).T
        exact = scored[np.ix_(ny, nx)]
        estimate = np.where(exact, values[np.ix_(ny, nx)], estimate)
        ly, lx = ny, nx
    return estimate, scored


def _value(logits: np.ndarray, taps: dict[str, np.ndarray], target: ResolvedTarget, output: str,
           already: bool) -> np.ndarray:  # fmt: skip
    """(B,) explained value per row: the class logit / probability, or the channel's mean /
    the neuron's value."""
    if target.kind == "class":
        k = target.index[0]
        if output == "probability":
            return (np.exp(logits) if already else to_probabilities(logits, False))[:, k]
        return logits[:, k]
    return target.values(taps[target.tensor])


class _Counter:
    """Windows scored so far, reported to ``progress``."""

    def __init__(self, total: int, progress: Progress | None) -> None:
        self.done, self.total, self.progress = 0, total, progress

    def add(self, count: int) -> None:
        self.done += count
        if self.progress is not None:
            self.progress(self.done, self.total)


class _ImageScorer:
    """The explained value of one image's occluded copies, through a scorer."""

    def __init__(self, scorer: Any, image: np.ndarray, fill: np.ndarray,
                 target: ResolvedTarget, output: str, already: bool,
                 batch_size: int | None) -> None:  # fmt: skip
        self.scorer, self.image, self.fill, self.target = scorer, image, fill, target
        self.output, self.already, self.batch_size = output, already, batch_size

    def __call__(self, positions: np.ndarray) -> np.ndarray:
        logits, out = self.scorer.scores(self.image, positions, self.fill, self.batch_size)
        if self.already:
            logits = np.log(np.maximum(logits, 1e-30))
        return _value(logits, out, self.target, self.output, self.already)


class _Drops:
    """Grid indices (B, 2) -> drop of the target at those windows, against the same
    scorer's unoccluded value (a window wholly off the image), so a scorer's bias cancels."""

    def __init__(self, value: _ImageScorer, tops: np.ndarray, lefts: np.ndarray,
                 window: tuple[int, int], counter: _Counter) -> None:  # fmt: skip
        self.value, self.tops, self.lefts, self.counter = value, tops, lefts, counter
        self.base = value(np.array([[-window[0], -window[1]]], np.int64))[0]

    def __call__(self, index: np.ndarray) -> np.ndarray:
        where = np.stack([self.tops[index[:, 0]], self.lefts[index[:, 1]]], -1)
        result = self.base - self.value(where)
        self.counter.add(len(index))
        return result


def drilldown(
    model: Model,
    images: Images,
    target: TargetLike | list = None,
    *,
    window: int | Sequence[int] = 8,
    stride: int | Sequence[int] = 4,
    levels: int = 1,
    refine: float = 0.25,
    fill: Any = "grey",
    output: str = "logit",
    engine: str = "auto",
    precision: str = "fp32",
    tau: float | None = None,
    scorer: Any = None,
    blur_sigma: float | None = None,
    batch_size: int | None = None,
    reference: Attribution | bool = False,
    progress: Progress | None = None,
) -> Attribution:
    """Occlusion maps (N, H, W) by adaptive drill-down: the same grid and map as
    :func:`~.occlusion.occlusion` for ``window`` / ``stride``, with most windows interpolated.

    Args:
        model, images, target, window, stride, fill, output, blur_sigma: as in occlusion.
        levels: stride halvings: the first pass uses stride ``stride * 2**levels``; 0 scores
            every window (exact occlusion). 1 (default) keeps the first pass's windows
            touching for the usual ``window = 2 * stride``; with more, its windows leave
            unseen gaps (SqueezeNet, window 16, stride 8, eight photos: mean map correlation
            0.97 at 1 level, 0.87 at 2).
        refine: share of candidate cells refined at each level, in (0, 1] (1: every cell,
            which scores every window).
        engine, precision, tau: the scorer, as in occlusion (see
            :func:`~.occlusion.occlusion_scorer`).
        scorer: a ready :class:`~cnnviz_core.incremental.OcclusionScorer` (overrides engine,
            precision and tau; it must return the tensors the targets need).
        batch_size: windows per scorer call.
        reference: an exact occlusion :class:`~.base.Attribution` of the same images (or True
            to compute one) whose error against this map goes to
            ``metrics["approximation_error"]``.
        progress: called as ``progress(done, total)`` after each scored batch (windows).

    Returns:
        An :class:`~.base.Attribution` (method ``occlusion``) with ``options["approximation"]``
        = ``drilldown`` (and the scorer's settings); ``extras``: ``grid`` (N, Ph, Pw) drops
        (interpolated where not scored), ``scored`` (N, Ph, Pw) bool, ``positions_y`` /
        ``positions_x``; ``metrics``: ``positions_scored``, ``positions_total``,
        ``scored_share`` and, with ``reference``, ``approximation_error``.

    Raises:
        InputError: bad window, stride, levels, refine, output, engine or precision.
    """
    batch, targets = prepare(model, images, target)
    n, _, h, w = batch.shape
    win, step, tops, lefts = window_grid((h, w), window, stride)
    if output not in OUTPUTS:
        raise InputError(f"unknown output {output!r}; choose one of {OUTPUTS}")
    if not isinstance(levels, (int, np.integer)) or levels < 0:
        raise InputError(f"levels must be an int >= 0; got {levels!r}")
    if not 0 < refine <= 1:
        raise InputError(f"refine must be in (0, 1]; got {refine!r}")
    taps = sorted({t.tensor for t in targets if t.kind != "class"})
    fills = fill_values(model, batch, fill, blur_sigma)
    if scorer is None:
        grid = np.stack(np.meshgrid(tops, lefts, indexing="ij"), -1).reshape(-1, 2)
        scorer = occlusion_scorer(model, win, taps, batch.shape[1:], grid, engine=engine,
                                  precision=precision, tau=tau)  # fmt: skip
    ph, pw = len(tops), len(lefts)
    already = model.outputs_probabilities and score_tensor(model) == model.output_names[0]
    grids = np.empty((n, ph, pw))
    scored = np.empty((n, ph, pw), bool)
    counter = _Counter(n * ph * pw, progress)
    for i, t in enumerate(targets):
        scorer_i = _ImageScorer(scorer, batch[i], fills[i], t, output, already, batch_size)
        drops = _Drops(scorer_i, tops, lefts, win, counter)
        grids[i], scored[i] = drill_grid(drops, (ph, pw), levels, refine)
    maps = np.stack([cover_average(g, (tops, lefts), win, (h, w)) for g in grids])
    options = {
        "window": win,
        "stride": step,
        "fill": fill_label(fill),
        "output": output,
        "approximation": "drilldown",
        "levels": int(levels),
        "refine": float(refine),
        "coarse_stride": (step[0] * 2**levels, step[1] * 2**levels),
        "scorer": dict(getattr(scorer, "stats", {}) or {}, approximate=scorer.approximate),
    }
    total = int(scored[0].size)
    metrics: dict[str, Any] = {
        "positions_scored": [int(s.sum()) for s in scored],
        "positions_total": total,
        "scored_share": float(scored.mean()),
    }
    result = make_attribution(
        maps, "occlusion", targets, options, model, batch, signed=True,
        extras={"grid": grids.astype(np.float32), "scored": scored, "positions_y": tops,
                "positions_x": lefts},
        metrics=metrics,
    )  # fmt: skip
    if reference is not False:
        exact = reference
        if exact is True:
            exact = occlusion(model, batch, targets, window=win, stride=step,
                              fill=fill, output=output, blur_sigma=blur_sigma)  # fmt: skip
        metrics["approximation_error"] = approximation_error(result, exact, model, batch)
    return result


__all__ = ["drill_grid", "drilldown"]
