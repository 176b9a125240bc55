"""Clustering a feature space: k-means (scikit-learn), the clusters' purity against the
labels, and sample images per cluster (the ones nearest each centre)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cnnviz_core import InputError

from ..render.images import tile_grid, upscale


@dataclass(frozen=True)
class Clustering:
    """k-means result.

    Attributes:
        assignments: int64 (N,) cluster of each row.
        centers: float32 (k, D).
        inertia: sum of squared distances to the assigned centres.
    """

    assignments: np.ndarray
    centers: np.ndarray
    inertia: float

    @property
    def k(self) -> int:
        return len(self.centers)


def kmeans(features: np.ndarray, k: int, seed: int = 0) -> Clustering:
    """k-means with k-means++ initialisation (scikit-learn, several restarts)."""
    from sklearn.cluster import KMeans

    x = np.asarray(features, np.float32).reshape(len(features), -1)
    if not 1 <= k <= len(x):
        raise InputError(f"k must lie in 1..{len(x)}, got {k}")
    model = KMeans(n_clusters=k, n_init=4, random_state=seed).fit(x)
    return Clustering(
        np.asarray(model.labels_, np.int64),
        model.cluster_centers_.astype(np.float32),
        float(model.inertia_),
    )


def purity(assignments: np.ndarray, labels: np.ndarray) -> float:
    """Share of rows whose label is their cluster's most common label (1: every cluster is
    one class)."""
    assignments = np.asarray(assignments, np.int64)
    labels = np.asarray(labels, np.int64)
    if len(assignments) != len(labels) or not len(labels):
        raise InputError(f"{len(assignments)} assignments for {len(labels)} labels")
    table = np.zeros((assignments.max() + 1, labels.max() + 1), np.int64)
    np.add.at(table, (assignments, labels), 1)
    return float(table.max(axis=1).sum() / len(labels))


def cluster_samples(
    features: np.ndarray, clustering: Clustering, per_cluster: int = 8
) -> list[np.ndarray]:
    """For each cluster, the indices of up to ``per_cluster`` members nearest its centre."""
    x = np.asarray(features, np.float32).reshape(len(features), -1)
    samples = []
    for c in range(clustering.k):
        members = np.flatnonzero(clustering.assignments == c)
        dist = ((x[members] - clustering.centers[c]) ** 2).sum(axis=1)
        samples.append(members[np.argsort(dist, kind="stable")[:per_cluster]])
    return samples


def render_clusters(
    images: np.ndarray, samples: list[np.ndarray], per_cluster: int, min_side: int = 48
) -> np.ndarray:
    """One row per cluster with its sample images (blank where a cluster is smaller)."""
    blank = np.full_like(upscale(images[0], min_side=min_side), 255)
    tiles = []
    for members in samples:
        row = [upscale(images[int(i)], min_side=min_side) for i in members[:per_cluster]]
        tiles += row + [blank] * (per_cluster - len(row))
    return tile_grid(tiles, columns=per_cluster, pad=2, background=255)
