"""Forward throughput: the engine's ``Model.run`` vs raw onnxruntime on the same graph, and
vs torch eager on the default model's architecture."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import onnxruntime as ort

from cnnviz import load_model
from cnnviz_core import Model

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "models"
BATCHES = (1, 8, 32)


def images_per_second(fn: Callable[[], object], batch: int, seconds: float) -> float:
    """Median rate over timed rounds of ``fn`` (after a warm-up), in images/s."""
    fn()
    rounds = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(rounds) < 5:
        start = time.perf_counter()
        fn()
        rounds.append(time.perf_counter() - start)
    return batch / statistics.median(rounds)


def torch_eager(batch: np.ndarray) -> Callable[[], object] | None:
    """The shapes architecture in torch eager mode (eval, no grad), or None without torch."""
    try:
        import torch

        from cnnviz.data.train_shapes import build_model
    except ImportError:
        return None
    torch.set_num_threads(2)
    net = build_model().eval()
    x = torch.from_numpy(batch)

    def run() -> object:
        with torch.no_grad():
            return net(x)

    return run


def run(quick: bool = False) -> list[dict]:
    seconds = 0.5 if quick else 2.0
    models: list[tuple[str, Model]] = [("shapes", load_model("shapes"))]
    if (SHARED / "squeezenet1.1_fp32.onnx").exists():
        models.append(("squeezenet1.1_fp32", Model(SHARED / "squeezenet1.1_fp32.onnx")))
    rows = []
    for name, model in models:
        raw = ort.InferenceSession(
            model.runnable.SerializeToString(), providers=["CPUExecutionProvider"]
        )
        for n in BATCHES:
            batch = np.random.default_rng(0).standard_normal((n, *model.input_shape))
            batch = batch.astype(np.float32)
            feed = {model.input_name: batch}
            # interleave the two so that machine drift hits both alike
            ours, theirs = [], []
            for _ in range(3):
                theirs.append(images_per_second(partial(raw.run, None, feed), n, seconds / 3))
                ours.append(images_per_second(partial(model.run, batch), n, seconds / 3))
            row = {
                "model": name,
                "batch": n,
                "engine img/s": round(max(ours), 1),
                "raw ort img/s": round(max(theirs), 1),
                "overhead %": round(100 * (max(theirs) / max(ours) - 1), 2),
            }
            eager = torch_eager(batch) if name == "shapes" else None
            if eager is not None:
                rate = images_per_second(eager, n, seconds)
                row["torch eager img/s"] = round(rate, 1)
                row["engine / torch"] = round(max(ours) / rate, 2)
            rows.append(row)
    return rows
