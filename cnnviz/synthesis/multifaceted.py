"""Multifaceted feature visualization (Nguyen, Yosinski & Clune 2016): one class model per
facet of the class, e.g. a shape seen at different places or sizes.

The images of a set that score the class highest are embedded at the penultimate layer and
clustered by k-means (scikit-learn); the class visualization starts from each cluster's
mean image, so every facet converges to a different local optimum.

    from cnnviz.data import make_shapes
    from cnnviz.synthesis import multifaceted
    result = multifaceted(model, "star", make_shapes(200, seed=1).images, facets=3)
    result.images                     # (3, H, W, 3), one per facet
    result.metrics["cluster_sizes"]   # images behind each facet, largest first

Values that work on the shipped shapes model: the defaults (top 30 of a few hundred shapes
images, 30 steps) give every facet p >= 0.9.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from cnnviz_core import InputError, Model
from cnnviz_core.preprocess import ImageLike
from cnnviz_core.targets import TargetLike, resolve_target

from .base import Progress, SynthesisResult, pixels
from .class_visualization import class_visualization


def penultimate_layer(model: Model, scores: str) -> str:
    """The layer just before the score tensor ``scores`` (the shapes model: ``view``)."""
    names = [layer.name for layer in model.layers]
    tensors = [model.tensor_name(name) for name in names]
    if scores not in tensors or tensors.index(scores) == 0:
        raise InputError(f"no layer before {scores!r}: pass layer=")
    return names[tensors.index(scores) - 1]


def multifaceted(
    model: Model,
    target: TargetLike,
    images: Sequence[ImageLike] | np.ndarray,
    *,
    facets: int = 3,
    top: int = 30,
    layer: str | None = None,
    steps: int = 30,
    seed: int = 0,
    progress: Progress | None = None,
    **options: Any,
) -> SynthesisResult:
    """One class visualization per facet of ``target``'s class.

    Args:
        model: the model.
        target: a class (index, label or :class:`Class`).
        images: the image set to find the class's facets in (paths, PIL, HWC arrays).
        facets: k of k-means: images returned (3).
        top: the ``top`` images of the set by class score (pre-softmax) are clustered (30;
            Nguyen et al. use the top 15 of ImageNet's training images per class).
        layer: where images are embedded (default: the layer just before the scores).
        steps, seed, progress: as :func:`class_visualization` (all facets optimize as one
            batch); ``options`` go to it too (``start`` is the cluster means).
        seed: also seeds k-means.

    Returns:
        a :class:`SynthesisResult` (method ``multifaceted``), facets largest cluster first;
        metrics as :func:`class_visualization`'s plus ``cluster_sizes``; ``options``
        includes ``starts``, the (k, H, W, 3) uint8 cluster means.
    """
    from sklearn.cluster import KMeans

    resolved = resolve_target(model, target)
    if resolved.kind != "class":
        raise InputError(f"multifaceted needs a class target, got {resolved.label}")
    if "start" in options:
        raise InputError("multifaceted starts from the cluster means: no start= option")
    batch = model.prepare(images)
    top = min(top, len(batch))
    if facets < 1 or facets > top:
        raise InputError(f"facets must be between 1 and {top} (the images clustered)")
    embed = layer if layer is not None else penultimate_layer(model, resolved.tensor)
    values = model.run(batch, taps=[resolved.tensor, embed], outputs=False)
    scores = values[resolved.tensor].reshape(len(batch), -1)[:, resolved.index[0]]
    chosen = np.argsort(-scores, kind="stable")[:top]
    features = values[embed][chosen].reshape(len(chosen), -1)
    kmeans = KMeans(n_clusters=facets, n_init=10, random_state=seed).fit(features)
    sizes = np.bincount(kmeans.labels_, minlength=facets)
    order = np.argsort(-sizes, kind="stable")
    members = batch[chosen]
    means = np.stack([members[kmeans.labels_ == k].mean(axis=0) for k in order])
    starts = pixels(model, means.astype(np.float32))
    result = class_visualization(
        model, [target] * facets, steps=steps, start=starts, seed=seed, progress=progress,
        **options,
    )  # fmt: skip
    result.method = "multifaceted"
    result.metrics["cluster_sizes"] = [int(sizes[k]) for k in order]
    result.labels = [
        f"{resolved.label} facet {i + 1} ({int(sizes[k])} images)" for i, k in enumerate(order)
    ]
    result.options.update(facets=facets, top=top, layer=embed, starts=starts)
    return result
