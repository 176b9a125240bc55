"""Nearest neighbours in feature space (L2 or cosine), beside the neighbours in pixel space,
and the k-NN classification accuracy of a feature space.

A good feature space puts images of one class together even when their pixels differ
(Krizhevsky et al. 2012, Fig. 4: neighbours by the last hidden layer vs by pixels).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cnnviz_core import InputError

from ..render.images import text_strip, tile_grid, upscale

METRICS = ("l2", "cosine")
#: query rows per distance block (bounds the (queries, N) distance matrix)
_BLOCK = 512


def _normalize(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norm > 0, norm, 1)


def nearest_neighbors(
    features: np.ndarray,
    queries: np.ndarray | None = None,
    k: int = 5,
    metric: str = "l2",
    *,
    exclude_self: bool | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The k nearest rows of ``features`` for each query.

    Args:
        features: (N, D) data base.
        queries: (Q, D); None: the data base itself (leave-one-out, ``exclude_self``).
        k: neighbours per query.
        metric: ``l2`` (Euclidean distance) or ``cosine`` (1 - cosine similarity).
        exclude_self: skip each query's own row (default: when ``queries`` is None).

    Returns:
        (indices int64 (Q, k), distances float32 (Q, k)), nearest first (ties: lower index).
    """
    if metric not in METRICS:
        raise InputError(f"metric must be one of {METRICS}, got {metric!r}")
    for name, value in (("features", features), ("queries", queries)):
        if value is not None and not isinstance(value, (np.ndarray, list, tuple)):
            hint = ".features" if hasattr(value, "features") else ""
            raise InputError(
                f"{name}= must be an (N, D) array, got {type(value).__name__}; "
                f"pass {name}{hint or ' as an array'} (e.g. embeddings.features)"
            )
    base = np.asarray(features, np.float32).reshape(len(features), -1)
    self_query = queries is None
    query = base if queries is None else np.asarray(queries, np.float32).reshape(len(queries), -1)
    if query.shape[1] != base.shape[1]:
        raise InputError(f"queries have {query.shape[1]} features, the data base {base.shape[1]}")
    exclude = self_query if exclude_self is None else exclude_self
    limit = len(base) - (1 if exclude else 0)
    if not 1 <= k <= limit:
        raise InputError(f"k must lie in 1..{limit}, got {k}")
    if metric == "cosine":
        base, query = _normalize(base), _normalize(query)
    base_sq = (base.astype(np.float64) ** 2).sum(axis=1)
    indices = np.empty((len(query), k), np.int64)
    distances = np.empty((len(query), k), np.float32)
    for start in range(0, len(query), _BLOCK):
        block = query[start : start + _BLOCK].astype(np.float64)
        if metric == "cosine":
            dist = 1.0 - block @ base.T.astype(np.float64)
        else:
            sq = (block**2).sum(axis=1)[:, None] - 2 * block @ base.T + base_sq[None, :]
            dist = np.sqrt(np.maximum(sq, 0))
        if exclude:
            rows = np.arange(len(block))
            dist[rows, start + rows] = np.inf
        part = np.argpartition(dist, k - 1, axis=1)[:, :k] if k < dist.shape[1] else None
        if part is None:
            part = np.broadcast_to(np.arange(dist.shape[1]), dist.shape).copy()
        picked = np.take_along_axis(dist, part, axis=1)
        order = np.lexsort((part, picked), axis=1)
        indices[start : start + len(block)] = np.take_along_axis(part, order, axis=1)
        distances[start : start + len(block)] = np.take_along_axis(picked, order, axis=1)
    return indices, distances


def label_agreement(
    features: np.ndarray, labels: np.ndarray, k: int = 5, metric: str = "l2"
) -> float:
    """Mean fraction of each image's k nearest other images that share its label."""
    labels = np.asarray(labels)
    indices, _ = nearest_neighbors(features, k=k, metric=metric)
    return float((labels[indices] == labels[:, None]).mean())


def knn_accuracy(features: np.ndarray, labels: np.ndarray, k: int = 5, metric: str = "l2") -> float:
    """Leave-one-out k-NN classification accuracy: each image gets the majority label of its
    k nearest other images (a tie goes to the label of the nearest among the tied)."""
    labels = np.asarray(labels, np.int64)
    indices, _ = nearest_neighbors(features, k=k, metric=metric)
    votes = labels[indices]
    classes = int(labels.max()) + 1
    counts = np.zeros((len(labels), classes), np.float64)
    rank_bonus = (k - np.arange(k)) / (k * (k + 1.0))  # < 1 in total: breaks ties only
    np.add.at(counts, (np.arange(len(labels))[:, None], votes), 1.0 + rank_bonus[None, :])
    return float((counts.argmax(axis=1) == labels).mean())


def pixel_features(images: np.ndarray) -> np.ndarray:
    """Raw pixels as features: (N, ...) images flattened to float32 (N, D)."""
    images = np.asarray(images)
    return images.reshape(len(images), -1).astype(np.float32)


def neighbor_rows(
    images: np.ndarray,
    query_images: np.ndarray,
    rows: Sequence[Sequence[int]],
    *,
    separator_after: int | None = None,
    min_side: int = 64,
    group_names: Sequence[str] = ("feature", "pixel"),
) -> np.ndarray:
    """Query images followed by their neighbours, one row per query, under a header row
    naming each column (``query``, then the neighbour rank: ``feature 1``, ... and, after
    the separator, ``pixel 1``, ...; without a separator just ``1``, ``2``, ...).

    Args:
        images: (N, H, W, 3) uint8 data-base images.
        query_images: (Q, H, W, 3) uint8.
        rows: per query, data-base indices to show after it (e.g. feature-space neighbours
            then pixel-space neighbours).
        separator_after: insert a blank tile after this many neighbours in each row.
        min_side: tiles enlarged to at least this side.
        group_names: the header's names of the neighbour groups before and after the
            separator.

    Returns:
        uint8 (H', W', 3) grid, its first rows the header.
    """
    tiles = []
    blank = np.full_like(upscale(images[0], min_side=min_side), 255)
    width = 1 + max(len(r) for r in rows) + (1 if separator_after is not None else 0)
    for query, row in zip(query_images, rows):
        line = [upscale(query, min_side=min_side)]
        for n, index in enumerate(row):
            if separator_after is not None and n == separator_after:
                line.append(blank)
            line.append(upscale(images[int(index)], min_side=min_side))
        line += [blank] * (width - len(line))
        tiles += line
    titles = ["query"]
    for n in range(width - 1):
        if separator_after is None:
            titles.append(str(n + 1))
        elif n < separator_after:
            titles.append(f"{group_names[0]} {n + 1}")
        elif n == separator_after:
            titles.append("")
        else:
            titles.append(f"{group_names[1]} {n - separator_after}")
    header = text_strip(titles, blank.shape[1], pad=2)
    grid = tile_grid(tiles, columns=width, pad=2, background=255)
    return np.concatenate([header, grid], axis=0)
