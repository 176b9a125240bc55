"""Embeddings: stream a data set through the model in chunks and collect one layer's
features per image (flattened or pooled), then save and load them with their file list.

    emb = extract(model, "photos/", layer="view")                 # (N, D) float32
    emb.save("photos.npz"); emb = Embeddings.load("photos.npz")

Memory: one chunk of images and activations at a time plus the (N, D) result.
"""

from __future__ import annotations

import functools
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cnnviz_core import InputError, Model

from ..output import PathLike, atomic_path
from ..render.display import Displayable
from .sources import DEFAULT_BATCH, ENGINES, Chunk, Progress, Source, iter_chunks

log = logging.getLogger(__name__)

#: how a spatial (N, C, H, W) layer becomes one vector per image
POOLINGS = ("flatten", "avg", "max")


@dataclass
class Embeddings(Displayable):
    """Features of a data set at one layer.

    Attributes:
        features: float32 (N, D).
        layer: the layer they come from.
        pooling: ``flatten``, ``avg`` or ``max``.
        names: one name per image (file path or ``#index``).
        labels: int64 (N,) class indices when known, else None.
        predictions: int64 (N,) the model's predicted class per image, when recorded.
    """

    features: np.ndarray
    layer: str
    pooling: str
    names: list[str]
    labels: np.ndarray | None = None
    predictions: np.ndarray | None = None
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.features)

    def picture(self) -> np.ndarray:
        """The features' first two principal components, coloured by label (else by
        prediction), (H, W, 3) uint8: what Jupyter and ``plot()`` show."""
        from .projection import pca, pca_axes_arrows, scatter

        result = pca(self.features, min(2, *self.features.shape))
        colours = self.labels if self.labels is not None else self.predictions
        return scatter(result.coords, colours, arrows=pca_axes_arrows(result), size=480)

    def facts(self) -> list[tuple[str, object]]:
        """Layer, pooling and size, for the HTML display."""
        return [
            ("layer", self.layer),
            ("pooling", self.pooling),
            ("images x features", f"{len(self)} x {self.features.shape[1]}"),
            ("labels", "yes" if self.labels is not None else "no"),
        ]

    def save(self, path: PathLike) -> Path:
        """Write a ``.npz`` (features, names, labels, predictions, layer, pooling),
        atomically: an interrupted save leaves no file under ``path``."""
        arrays: dict[str, np.ndarray] = {
            "features": self.features,
            "names": np.asarray(self.names, dtype=str),
            "info": np.asarray(
                json.dumps({"layer": self.layer, "pooling": self.pooling, "meta": self.meta})
            ),
        }
        if self.labels is not None:
            arrays["labels"] = self.labels
        if self.predictions is not None:
            arrays["predictions"] = self.predictions
        with atomic_path(path) as temp:
            with open(temp, "wb") as handle:
                np.savez(handle, **arrays)  # type: ignore[arg-type]
        return Path(path)

    @classmethod
    def load(cls, path: PathLike) -> Embeddings:
        """Read a file written by :meth:`save`."""
        with np.load(path, allow_pickle=False) as data:
            info = json.loads(str(data["info"]))
            return cls(
                features=data["features"],
                layer=info["layer"],
                pooling=info["pooling"],
                names=[str(n) for n in data["names"]],
                labels=data["labels"] if "labels" in data else None,
                predictions=data["predictions"] if "predictions" in data else None,
                meta=info.get("meta", {}),
            )


def pool(values: np.ndarray, pooling: str = "flatten") -> np.ndarray:
    """(N, ...) activations to (N, D): ``flatten``, or ``avg`` / ``max`` over the spatial
    axes of (N, C, H, W) (vectors pass through)."""
    if pooling not in POOLINGS:
        raise InputError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    values = np.asarray(values)
    if values.ndim <= 2 or pooling == "flatten":
        return values.reshape(len(values), -1)
    axes = tuple(range(2, values.ndim))
    return values.mean(axis=axes) if pooling == "avg" else values.max(axis=axes)


def _chunk_features(
    model: Model, chunk: Chunk, layer: str, pooling: str, predictions: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    """One chunk's (n, D) float32 features and, when asked, predicted classes."""
    out = model.run(chunk.batch, taps=[layer], outputs=predictions)
    features = np.ascontiguousarray(pool(out[layer], pooling), np.float32)
    if not predictions:
        return features, None
    scores = out[model.output_names[0]]
    return features, scores.reshape(len(scores), -1).argmax(axis=1)


def extract(
    model: Model,
    source: Source,
    layer: str,
    *,
    pooling: str = "flatten",
    batch_size: int = DEFAULT_BATCH,
    labels: np.ndarray | list[int] | None = None,
    predictions: bool = False,
    progress: Progress | None = None,
    engine: str = "local",
) -> Embeddings:
    """Features of every image of a data set at ``layer``.

    Args:
        model: the model.
        source: a folder, image paths, an image array, a ``ShapesBatch`` or an iterable of
            chunks (see :mod:`cnnviz.features.sources`).
        layer: layer name or alias.
        pooling: ``flatten``, ``avg`` or ``max`` (spatial layers).
        batch_size: images per forward chunk.
        labels: class indices for the whole source (else the source's own, if any).
        predictions: also record the predicted class (one forward pass serves both).
        progress: ``progress(done, total)`` after each chunk.
        engine: ``local``, or ``ray`` to run the chunks on Ray workers (the ``distributed``
            extra; see :mod:`cnnviz.features.distributed`): the same result exactly.

    Returns:
        :class:`Embeddings` with (N, D) float32 features.
    """
    if pooling not in POOLINGS:
        raise InputError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    if engine not in ENGINES:
        raise InputError(f"engine must be one of {ENGINES}, got {engine!r}")
    model.tensor_name(layer)  # unknown names fail before any work, suggesting close ones
    parts: list[np.ndarray] = []
    label_parts: list[np.ndarray] = []
    predicted: list[np.ndarray] = []
    names: list[str] = []
    have_labels = True
    job = functools.partial(_chunk_features, layer=layer, pooling=pooling, predictions=predictions)
    if engine == "ray":
        from .distributed import map_chunks

        chunks = map_chunks(
            model, source, job, batch_size=batch_size, labels=labels, progress=progress
        )
    else:
        chunks = (
            (chunk, job(model, chunk))
            for chunk in iter_chunks(model, source, batch_size, labels=labels, progress=progress)
        )
    for chunk, (features, chunk_predictions) in chunks:
        parts.append(features)
        if chunk_predictions is not None:
            predicted.append(chunk_predictions)
        names.extend(chunk.names)
        if chunk.labels is None:
            have_labels = False
        else:
            label_parts.append(chunk.labels)
    if not parts:
        raise InputError("the data set is empty")
    return Embeddings(
        features=np.concatenate(parts),
        layer=layer,
        pooling=pooling,
        names=names,
        labels=np.concatenate(label_parts) if have_labels and label_parts else None,
        predictions=np.concatenate(predicted).astype(np.int64) if predictions else None,
    )
