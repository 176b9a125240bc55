"""Run a feature-space job on a Ray cluster (Ray Data): ``engine="ray"`` of
:func:`~cnnviz.features.extract`, :func:`~cnnviz.features.top_patches` and
:func:`~cnnviz.features.top_images`.

The driver splits the source into the same chunks as the local path (each with the global
index of its first image), Ray actors (each loads the model once from its ONNX bytes)
preprocess and run them, and the driver merges the per-chunk results in data-set order:
embeddings are concatenated, top-k lists merged with the same deterministic
:class:`~cnnviz.features.RunningTopK` (value, then image index, then position), so the
result equals the single-machine run exactly.

Needs the ``distributed`` extra (``pip install 'cnnviz[distributed]'``). Connects to the
cluster already initialised in this process (``ray.init(address=...)``), else starts a local
one for the call (``num_cpus=os.cpu_count()``, no dashboard) and shuts it down afterwards.
A folder or list of paths travels as file names (the workers read the files, so they need
the same paths, e.g. a shared file system); arrays and chunk iterables travel as pixels.
"""

from __future__ import annotations

import logging
import os
import pickle
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from cnnviz_core import InputError, Model

from .sources import Chunk, Progress, Source, _raw_chunks, source_length

log = logging.getLogger(__name__)

#: CPUs reserved per model actor: with a 2-CPU cluster whole-CPU actors can starve Ray
#: Data's read tasks and deadlock the job
ACTOR_CPUS = 0.5
#: model actors by default (fewer when there are fewer chunks)
DEFAULT_ACTORS = 2

#: ``job(model, chunk) -> result``: one chunk's work on a worker (picklable)
Job = Callable[[Model, Chunk], Any]


def _ray() -> Any:
    try:
        import ray
        import ray.data
    except ImportError as error:
        raise ImportError(
            "engine='ray' needs Ray Data: pip install 'cnnviz[distributed]'"
        ) from error
    return ray


def model_spec(model: Model) -> dict[str, Any]:
    """What a worker needs to rebuild ``model``: its ONNX bytes and options."""
    return {
        "onnx": model.proto.SerializeToString(),
        "options": {
            "preprocess": model.preprocess,
            "labels": model.labels,
            "device": model.device,
            "memory_budget": model.memory_budget,
            "threads": model.threads,
            "name": model.name,
        },
    }


class _Worker:
    """A Ray Data actor: loads the model once, then runs ``job`` on each chunk it gets."""

    def __init__(self, spec: dict[str, Any], job: Job):
        self.model = Model(spec["onnx"], **spec["options"])
        self.job = job

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        results = []
        for start, payload in zip(batch["start"], batch["payload"]):
            images = pickle.loads(payload)
            chunk = Chunk(self.model.prepare(images), int(start), None, [])
            results.append(pickle.dumps(self.job(self.model, chunk), protocol=5))
        out = np.empty(len(results), dtype=object)
        out[:] = results
        return {"start": np.asarray(batch["start"], np.int64), "result": out}


def _plan(source: Source, batch_size: int, labels: Any) -> tuple[list[Chunk], list[dict[str, Any]]]:
    """The chunks without pixels (start, labels, names) and the rows shipped to workers."""
    given = None if labels is None else np.asarray(labels, np.int64)
    metas: list[Chunk] = []
    rows: list[dict[str, Any]] = []
    done = 0
    for images, own_labels, names in _raw_chunks(source, batch_size):
        n = len(images)
        chunk_labels = given[done : done + n] if given is not None else own_labels
        if chunk_labels is not None and len(chunk_labels) != n:
            raise InputError(f"{len(chunk_labels)} labels for a chunk of {n} images")
        empty = np.empty((0,), np.float32)
        metas.append(Chunk(empty, done, chunk_labels, names or [f"#{done + i}" for i in range(n)]))
        rows.append({"start": done, "payload": pickle.dumps(images, protocol=5)})
        done += n
    if given is not None and len(given) != done:
        raise InputError(f"{len(given)} labels given for {done} images")
    return metas, rows


def map_chunks(
    model: Model,
    source: Source,
    job: Job,
    *,
    batch_size: int,
    labels: Any = None,
    progress: Progress | None = None,
    actors: int = DEFAULT_ACTORS,
) -> Iterator[tuple[Chunk, Any]]:
    """Run ``job`` on every chunk of ``source`` on Ray actors.

    Args:
        model: the model (rebuilt once per actor from its ONNX bytes).
        source: a data set (see :mod:`cnnviz.features.sources`).
        job: ``job(model, chunk)``, a picklable function of one preprocessed chunk.
        batch_size: images per chunk (the same chunks as the local path).
        labels: class indices for the whole source (else the source's own, if any).
        progress: ``progress(done, total)`` as chunk results arrive, in order.
        actors: model actors (each reserves ``ACTOR_CPUS`` CPUs).

    Yields:
        (chunk without pixels: start, labels, names; the job's result) in data-set order.
    """
    if batch_size < 1:
        raise InputError(f"batch_size must be >= 1, got {batch_size}")
    if actors < 1:
        raise InputError(f"actors must be >= 1, got {actors}")
    ray = _ray()
    metas, rows = _plan(source, batch_size, labels)
    if not rows:
        return
    total = source_length(source)
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False)
    try:
        dataset = ray.data.from_items(rows).map_batches(
            _Worker,
            fn_constructor_args=(model_spec(model), job),
            batch_size=1,
            concurrency=min(actors, len(rows)),
            num_cpus=ACTOR_CPUS,
            batch_format="numpy",
        )
        index = {meta.start: n for n, meta in enumerate(metas)}
        pending: dict[int, Any] = {}
        cursor = 0
        for row in dataset.iter_rows():
            pending[index[int(row["start"])]] = row["result"]
            while cursor in pending:
                meta = metas[cursor]
                yield meta, pickle.loads(pending.pop(cursor))
                cursor += 1
                if progress is not None:
                    progress(meta.start + len(meta.names), total)
        if cursor != len(metas):
            raise RuntimeError(f"Ray returned {cursor} of {len(metas)} chunks")
    finally:
        if started:
            ray.shutdown()
