"""Data sets as streams of preprocessed chunks, so every feature-space tool runs in bounded
memory whatever the data set's size.

A *source* is any of:

- a folder (its image files, sorted, recursively) or a sequence of image paths;
- an array: (N, H, W, 3) uint8 images or an already preprocessed float (N, C, H, W) batch;
- a :class:`~cnnviz.data.ShapesBatch` (images and labels);
- an iterable of chunks: each an array as above, a ``ShapesBatch``, or an
  ``(images, labels)`` pair (e.g. :func:`cnnviz.data.iter_shapes`).

:func:`iter_chunks` yields :class:`Chunk` objects holding at most ``batch_size`` images.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cnnviz_core import InputError, Model

log = logging.getLogger(__name__)

#: file suffixes read as images when a folder is given
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
#: default images per forward chunk
DEFAULT_BATCH = 256
#: where the chunks run: this process, or Ray workers (:mod:`cnnviz.features.distributed`)
ENGINES = ("local", "ray")

#: ``progress(done, total)``: images done so far and the total (None when unknown)
Progress = Callable[[int, int | None], None]
Source = Any


@dataclass
class Chunk:
    """A slice of a data set, ready for the model.

    Attributes:
        batch: float32 (n, C, H, W), preprocessed.
        start: index of the chunk's first image in the whole data set.
        labels: int64 (n,) class indices when the source has labels, else None.
        names: one name per image (file path or ``#index``).
    """

    batch: np.ndarray
    start: int
    labels: np.ndarray | None
    names: list[str]

    def __len__(self) -> int:
        return len(self.batch)


def list_images(folder: str | Path) -> list[Path]:
    """The image files under ``folder`` (recursively), sorted by path."""
    root = Path(folder)
    if not root.is_dir():
        raise InputError(f"{folder} is not a folder")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise InputError(f"no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) under {folder}")
    return files


def source_length(source: Source) -> int | None:
    """Number of images in a source when known without reading it."""
    if isinstance(source, (str, Path)):
        return len(list_images(source)) if Path(source).is_dir() else 1
    if isinstance(source, np.ndarray):
        return len(source)
    if hasattr(source, "images") and hasattr(source, "labels"):
        return len(source.labels)
    if isinstance(source, Sequence):
        return len(source)
    return None


def _split(item: Any) -> tuple[Any, np.ndarray | None]:
    """(images, labels or None) of one chunk-like item."""
    if hasattr(item, "images") and hasattr(item, "labels"):
        return item.images, np.asarray(item.labels, np.int64)
    if isinstance(item, tuple) and len(item) == 2:
        images, labels = item
        return images, None if labels is None else np.asarray(labels, np.int64)
    return item, None


def iter_chunks(
    model: Model,
    source: Source,
    batch_size: int = DEFAULT_BATCH,
    *,
    labels: Sequence[int] | np.ndarray | None = None,
    progress: Progress | None = None,
) -> Iterator[Chunk]:
    """Stream a source as preprocessed chunks of at most ``batch_size`` images.

    Args:
        model: the model whose preprocessing applies.
        source: see the module doc.
        batch_size: images per chunk (bounds memory: one chunk of pixels and activations).
        labels: class indices for the whole source (overrides the source's own).
        progress: called after each chunk with (images done, total or None).

    Yields:
        :class:`Chunk` objects in data-set order.
    """
    if batch_size < 1:
        raise InputError(f"batch_size must be >= 1, got {batch_size}")
    total = source_length(source)
    given = None if labels is None else np.asarray(labels, np.int64)
    done = 0
    for images, own_labels, names in _raw_chunks(source, batch_size):
        batch = model.prepare(images)
        n = len(batch)
        chunk_labels = given[done : done + n] if given is not None else own_labels
        if chunk_labels is not None and len(chunk_labels) != n:
            raise InputError(f"{len(chunk_labels)} labels for a chunk of {n} images")
        yield Chunk(batch, done, chunk_labels, names or [f"#{done + i}" for i in range(n)])
        done += n
        log.debug("%d/%s images", done, total if total is not None else "?")
        if progress is not None:
            progress(done, total)
    if given is not None and len(given) != done:
        raise InputError(f"{len(given)} labels given for {done} images")


def _raw_chunks(
    source: Source, batch_size: int
) -> Iterator[tuple[Any, np.ndarray | None, list[str] | None]]:
    if isinstance(source, (str, Path)):
        files = list_images(source) if Path(source).is_dir() else [Path(source)]
        yield from _path_chunks(files, batch_size)
        return
    if isinstance(source, np.ndarray) or (hasattr(source, "images") and hasattr(source, "labels")):
        images, labels = _split(source)
        images = np.asarray(images)
        for start in range(0, len(images), batch_size):
            stop = start + batch_size
            yield images[start:stop], None if labels is None else labels[start:stop], None
        return
    if isinstance(source, Sequence) and source and isinstance(source[0], (str, Path)):
        yield from _path_chunks([Path(p) for p in source], batch_size)
        return
    if isinstance(source, Iterable):
        for item in source:
            images, labels = _split(item)
            images = np.asarray(images)
            for start in range(0, len(images), batch_size):
                stop = start + batch_size
                yield images[start:stop], None if labels is None else labels[start:stop], None
        return
    raise InputError(
        f"cannot read a data set from {type(source).__name__}: give a folder, image paths, an "
        "image array, a ShapesBatch or an iterable of chunks"
    )


def _path_chunks(
    files: list[Path], batch_size: int
) -> Iterator[tuple[Any, np.ndarray | None, list[str]]]:
    for start in range(0, len(files), batch_size):
        part = files[start : start + batch_size]
        yield [str(p) for p in part], None, [str(p) for p in part]
