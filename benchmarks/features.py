"""Feature tools: embedding extraction vs raw onnxruntime on the same tapped graph, t-SNE of
5,000 x 512 features (scikit-learn vs openTSNE when installed), and the top-patches pass
over 10k shapes images (images/s, peak traced memory)."""

from __future__ import annotations

import time
import tracemalloc

import numpy as np
import onnxruntime as ort

from cnnviz import load_model
from cnnviz.data import iter_shapes
from cnnviz.features import extract, top_patches, tsne
from cnnviz.features.projection import opentsne_available
from cnnviz_core import graph

LAYER = "view"
BATCH = 256


def _embedding_rows(quick: bool) -> list[dict]:
    model = load_model("shapes")
    n = 2048 if quick else 8192
    rng = np.random.default_rng(0)
    data = rng.standard_normal((n, *model.input_shape)).astype(np.float32)
    tensor = model.tensor_name(LAYER)
    proto = graph.expose(model.runnable, (tensor,), model._types)
    raw = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])

    def ours() -> None:
        extract(model, data, LAYER, batch_size=BATCH)

    def theirs() -> None:
        for start in range(0, n, BATCH):
            raw.run([tensor], {model.input_name: data[start : start + BATCH]})

    ours(), theirs()
    times: dict[str, list[float]] = {"ours": [], "theirs": []}
    for _ in range(3 if quick else 7):
        for key, fn in (("theirs", theirs), ("ours", ours)):
            start = time.perf_counter()
            fn()
            times[key].append(time.perf_counter() - start)
    ratio = float(np.median(np.array(times["ours"]) / np.array(times["theirs"])))
    return [
        {
            "task": f"embed {n} shapes images at {LAYER!r} (batch {BATCH})",
            "ours img/s": round(n / float(np.median(times["ours"])), 1),
            "raw ort img/s": round(n / float(np.median(times["theirs"])), 1),
            "overhead %": round(100 * (ratio - 1), 2),
        }
    ]


def _tsne_rows(quick: bool) -> list[dict]:
    n = 1000 if quick else 5000
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((10, 512)) * 4
    x = (centres[rng.integers(0, 10, n)] + rng.standard_normal((n, 512))).astype(np.float32)
    rows = []
    for backend in ["sklearn", *(["opentsne"] if opentsne_available() else [])]:
        start = time.perf_counter()
        tsne(x, seed=0, backend=backend)
        rows.append({"task": f"t-SNE {n} x 512", "backend": backend,
                     "seconds": round(time.perf_counter() - start, 2)})  # fmt: skip
    if not opentsne_available():
        rows.append({"task": f"t-SNE {n} x 512", "backend": "opentsne", "seconds": "not installed"})
    return rows


def _top_patch_rows(quick: bool) -> list[dict]:
    model = load_model("shapes")
    n = 2000 if quick else 10_000
    rows = []
    for layer in ("relu_1", "relu_3"):
        # images are generated outside the timed pass (generation is slower than the model)
        chunks = list(iter_shapes(n, seed=0, batch=BATCH))
        tracemalloc.start()
        start = time.perf_counter()
        top_patches(model, chunks, layer, k=9, batch_size=BATCH)
        seconds = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        rows.append({"task": f"top-9 patches over {n} shapes images, {layer}",
                     "img/s": round(n / seconds, 1), "seconds": round(seconds, 2),
                     "peak traced MB (beyond the images)": round(peak / 2**20, 1)})  # fmt: skip
        del chunks
    return rows


def run(quick: bool = False) -> list[dict]:
    return [*_embedding_rows(quick), *_tsne_rows(quick), *_top_patch_rows(quick)]
