"""Efros-Leung neighbourhood search for non-parametric texture synthesis
(csrc/cpu/texture.cpp; CPU only)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ._dispatch import Backend, FloatArray, IndexArray, _native, as_float, c_contiguous, use_native


@dataclass(frozen=True)
class TextureMatch:
    """Picks of :func:`texture_match`, one per query (arrays of shape (B,)).

    Attributes:
        index: flat candidate index y * (W - kw + 1) + x of the chosen window; its centre is
            sample pixel (y + kh // 2, x + kw // 2).
        best: smallest distance over all candidates.
        distance: distance of the chosen candidate (<= (1 + epsilon) * best).
        candidates: number of candidates within (1 + epsilon) * best.
    """

    index: IndexArray
    best: FloatArray
    distance: FloatArray
    candidates: IndexArray


def texture_distances(
    sample: ArrayLike,
    queries: ArrayLike,
    weights: ArrayLike,
    backend: Backend = "auto",
    *,
    num_threads: int = 0,
) -> FloatArray:
    """Neighbourhood distances of Efros & Leung (1999, "Texture Synthesis by Non-parametric
    Sampling"): the weighted sum of squared differences of each query window against every
    window wholly inside the sample, summed over channels and divided by the query's weight sum.

    Args:
        sample: (C, H, W).
        queries: (B, C, kh, kw), or one query (C, kh, kw). Values at unknown taps are ignored.
        weights: (B, kh, kw) (or (kh, kw)), finite and >= 0: a Gaussian times the known-pixel
            mask (0 = unknown tap), with a positive sum for every query.
        backend: "auto" (native for float32, NumPy otherwise), "native" or "numpy".
        num_threads: CPU threads of the native kernel (0 = one per physical core; a search too
            small to pay for a thread runs on one).

    Returns:
        (B, H - kh + 1, W - kw + 1), or (H - kh + 1, W - kw + 1) for one query.
    """
    sa, qa, wa, single = _texture_args(sample, queries, weights, "texture_distances")
    if use_native(np.result_type(sa, qa, wa), backend, "texture_distances"):
        d = _native.texture_distances(
            c_contiguous(sa), c_contiguous(qa), c_contiguous(wa), num_threads=num_threads
        )
    else:
        d = texture_distances_reference(sa, qa, wa)
    return d[0] if single else d


def texture_distances_reference(
    sample: ArrayLike, queries: ArrayLike, weights: ArrayLike
) -> FloatArray:
    """NumPy reference of :func:`texture_distances` (the test oracle): a loop over the known
    taps, each vectorised over every candidate position, in the inputs' float dtype."""
    sa, qa, wa, single = _texture_args(sample, queries, weights, "texture_distances_reference")
    dtype = np.result_type(sa, qa, wa)
    sa, qa, wa = (a.astype(dtype, copy=False) for a in (sa, qa, wa))
    _check_texture_weights(wa, "texture_distances_reference")
    b, _, kh, kw = qa.shape
    h, w = sa.shape[1:]
    ph, pw = h - kh + 1, w - kw + 1
    out = np.zeros((b, ph, pw), dtype)
    for q in range(b):
        acc = out[q]
        for i, j in zip(*np.nonzero(wa[q])):
            diff = sa[:, i : i + ph, j : j + pw] - qa[q, :, i, j, None, None]
            acc += wa[q, i, j] * np.einsum("chw,chw->hw", diff, diff)
        acc /= wa[q].sum(dtype=np.float64)
    return out[0] if single else out


def texture_match(
    sample: ArrayLike,
    queries: ArrayLike,
    weights: ArrayLike,
    epsilon: float = 0.0,
    uniforms: ArrayLike = 0.0,
    backend: Backend = "auto",
    *,
    num_threads: int = 0,
) -> TextureMatch:
    """Efros-Leung match: :func:`texture_distances`, then for each query a pick among the
    candidates within (1 + epsilon) of its best distance (threshold in float64): the k-th in
    index order with k = min(floor(u * count), count - 1), u from ``uniforms``.

    Args:
        sample, queries, weights, backend, num_threads: as in :func:`texture_distances`.
        epsilon: >= 0; 0 picks among exact ties with the best match only.
        uniforms: one number in [0, 1] per query ((B,)), or one for all.

    Returns:
        A :class:`TextureMatch` of (B,) arrays (B = 1 for a single query).
    """
    sa, qa, wa, _ = _texture_args(sample, queries, weights, "texture_match")
    ua = _texture_uniforms(uniforms, qa.shape[0], "texture_match")
    _check_epsilon(epsilon, "texture_match")
    if use_native(np.result_type(sa, qa, wa), backend, "texture_match"):
        index, best, distance, count = _native.texture_match(
            c_contiguous(sa),
            c_contiguous(qa),
            c_contiguous(wa),
            float(epsilon),
            ua,
            num_threads=num_threads,
        )
        return TextureMatch(index, best, distance, count)
    return texture_match_reference(sa, qa, wa, epsilon, ua)


def texture_match_reference(
    sample: ArrayLike,
    queries: ArrayLike,
    weights: ArrayLike,
    epsilon: float = 0.0,
    uniforms: ArrayLike = 0.0,
) -> TextureMatch:
    """NumPy reference of :func:`texture_match` (the test oracle)."""
    sa, qa, wa, _ = _texture_args(sample, queries, weights, "texture_match_reference")
    ua = _texture_uniforms(uniforms, qa.shape[0], "texture_match_reference")
    _check_epsilon(epsilon, "texture_match_reference")
    distances = texture_distances_reference(sa, qa, wa)
    picks = []
    flat = distances.reshape(len(distances), distances.shape[1] * distances.shape[2])
    for d, u in zip(flat, ua):
        if np.isnan(d).any():
            raise ValueError("texture_match_reference: a distance is NaN (a NaN in the sample?)")
        best = d.min()
        inside = np.flatnonzero(d.astype(np.float64) <= float(best) * (1.0 + float(epsilon)))
        pick = inside[min(int(u * len(inside)), len(inside) - 1)]
        picks.append((pick, best, d[pick], len(inside)))
    index, best, distance, count = zip(*picks) if picks else ((), (), (), ())
    return TextureMatch(
        np.asarray(index, np.int64),
        np.asarray(best, distances.dtype),
        np.asarray(distance, distances.dtype),
        np.asarray(count, np.int64),
    )


def texture_matcher(
    sample: ArrayLike,
    epsilon: float = 0.0,
    backend: Backend = "auto",
    *,
    num_threads: int = 0,
) -> Callable[[np.ndarray, np.ndarray, float], tuple[int, float]]:
    """:func:`texture_match` prepared for many single queries against one sample (the pixel
    loop of texture synthesis): the sample, epsilon and backend are checked once, so a call
    costs little more than the search itself.

    Args:
        sample: (C, H, W); the backend is picked from its dtype as in :func:`texture_match`.
        epsilon, backend, num_threads: as in :func:`texture_match`.

    Returns:
        ``match(query, weights, u) -> (index, distance)`` for a query (C, kh, kw), weights
        (kh, kw) and a uniform u in [0, 1]: the flat candidate index and its distance, as
        :func:`texture_match` picks them.
    """
    sa = as_float(sample, "texture_matcher", "sample")
    if sa.ndim != 3:
        raise ValueError(f"texture_matcher: sample must be 3-D (C, H, W), got shape {sa.shape}")
    _check_epsilon(epsilon, "texture_matcher")
    if use_native(sa.dtype, backend, "texture_matcher"):
        sc, eps = c_contiguous(sa), float(epsilon)

        def match_native(query: np.ndarray, weights: np.ndarray, u: float) -> tuple[int, float]:
            q = np.ascontiguousarray(query, dtype=np.float32)[None]
            w = np.ascontiguousarray(weights, dtype=np.float32)[None]
            index, _, distance, _ = _native.texture_match(
                sc, q, w, eps, np.array([u], np.float64), num_threads=num_threads
            )
            return int(index[0]), float(distance[0])

        return match_native

    def match_numpy(query: np.ndarray, weights: np.ndarray, u: float) -> tuple[int, float]:
        m = texture_match_reference(sa, query[None], weights[None], epsilon, u)
        return int(m.index[0]), float(m.distance[0])

    return match_numpy


def _texture_args(
    sample: ArrayLike, queries: ArrayLike, weights: ArrayLike, fn: str
) -> tuple[FloatArray, FloatArray, FloatArray, bool]:
    """Checks shapes; returns sample (C, H, W), queries (B, C, kh, kw), weights (B, kh, kw) and
    whether a single query was given."""
    sa = as_float(sample, fn, "sample")
    qa = as_float(queries, fn, "queries")
    wa = as_float(weights, fn, "weights")
    if sa.ndim != 3:
        raise ValueError(f"{fn}: sample must be 3-D (C, H, W), got shape {sa.shape}")
    single = qa.ndim == 3
    if single:
        qa, wa = qa[None], wa[None]
    if qa.ndim != 4 or qa.shape[1] != sa.shape[0]:
        raise ValueError(
            f"{fn}: queries must be (B, C, kh, kw) or (C, kh, kw) with the sample's "
            f"C = {sa.shape[0]} channels, got shape {np.shape(queries)}"
        )
    b, _, kh, kw = qa.shape
    if wa.shape != (b, kh, kw):
        raise ValueError(
            f"{fn}: weights must have shape {(b, kh, kw)[1 if single else 0 :]} to match the "
            f"queries, got {np.shape(weights)}"
        )
    h, w = sa.shape[1:]
    if not (1 <= kh <= h and 1 <= kw <= w):
        raise ValueError(
            f"{fn}: the window {kh} x {kw} must be >= 1 and fit in the sample {h} x {w}"
        )
    return sa, qa, wa, single


def _check_texture_weights(wa: FloatArray, fn: str) -> None:
    if not np.isfinite(wa).all() or (wa < 0).any():
        raise ValueError(f"{fn}: weights must be finite and >= 0")
    empty = np.flatnonzero(wa.sum(axis=(1, 2)) <= 0)
    if len(empty):
        raise ValueError(
            f"{fn}: query {empty[0]} has no known tap (all weights are 0): at least one "
            "neighbour must be known"
        )


def _texture_uniforms(uniforms: ArrayLike, batch: int, fn: str) -> NDArray[np.float64]:
    ua = np.asarray(uniforms, dtype=np.float64)
    if ua.ndim == 0:
        ua = np.full(batch, float(ua))
    if ua.shape != (batch,):
        raise ValueError(
            f"{fn}: uniforms must be one number or one per query ({batch},), got {ua.shape}"
        )
    if not ((ua >= 0) & (ua <= 1)).all():
        raise ValueError(f"{fn}: uniforms must be in [0, 1], got {ua}")
    return np.ascontiguousarray(ua)


def _check_epsilon(epsilon: float, fn: str) -> None:
    if not (np.isfinite(epsilon) and epsilon >= 0):
        raise ValueError(f"{fn}: epsilon must be finite and >= 0, got {epsilon}")
