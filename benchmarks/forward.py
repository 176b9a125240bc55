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


def paired_rates(
    ours: Callable[[], object], theirs: Callable[[], object], batch: int, seconds: float
) -> tuple[float, float, float]:
    """Rates of two functions timed in alternating rounds of about 20 ms, so that machine
    drift hits both alike (rounds, not single calls: a session's idle threads keep spinning
    for a moment after each call and would slow the other one down).

    Returns (ours img/s, theirs img/s, median of the per-round time ratios ours/theirs).
    """
    start = time.perf_counter()
    ours(), theirs()
    calls = max(1, int(0.04 / (time.perf_counter() - start)))
    times: dict[str, list[float]] = {"ours": [], "theirs": []}
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(times["ours"]) < 10:
        for key, fn in (("theirs", theirs), ("ours", ours)):
            start = time.perf_counter()
            for _ in range(calls):
                fn()
            times[key].append((time.perf_counter() - start) / calls)
    ratio = statistics.median(o / t for o, t in zip(times["ours"], times["theirs"]))
    return (
        batch / statistics.median(times["ours"]),
        batch / statistics.median(times["theirs"]),
        ratio,
    )


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
            ours, theirs, ratio = paired_rates(
                partial(model.run, batch), partial(raw.run, None, feed), n, seconds
            )
            row = {
                "model": name,
                "batch": n,
                "engine img/s": round(ours, 1),
                "raw ort img/s": round(theirs, 1),
                "overhead %": round(100 * (ratio - 1), 2),
            }
            eager = torch_eager(batch) if name == "shapes" else None
            if eager is not None:
                rate = images_per_second(eager, n, seconds)
                row["torch eager img/s"] = round(rate, 1)
                row["engine / torch"] = round(ours / rate, 2)
            rows.append(row)
    return rows
