"""Efros-Leung texture synthesis: pixels per second of the native neighbourhood search against
the NumPy reference (the same algorithm, vectorised over candidate positions), both growing a
64 x 64 sample to 128 x 128 with an 11 x 11 window, in onion and scanline order.

Rows per order:

- ``native full``: the whole 128 x 128 growth (16375 pixels after the 3 x 3 seed); its wall
  seconds are the figure the issue bounds (<= 10 s on this 2-core machine).
- ``native prefix`` / ``numpy prefix``: the same growth stopped (KeyboardInterrupt from the
  progress callback) after the first ``PREFIX`` of the pixels, identical work for both (same
  seed, same order; exact ties aside, the same picks): their rate ratio is the speedup. The
  NumPy reference runs about a millisecond or more per pixel, so a full NumPy growth would
  take minutes.
- ``search``: one neighbourhood search (a 64 x 64 sample, half of the 121 taps known): native
  vs reference milliseconds; and against a 256 x 256 sample, the default threads vs one (a
  64 x 64 search is too small to pay for a second thread and runs on one).

Repetitions are interleaved (native, NumPy, native, ...) and the best of each is kept: the
machine is shared and other processes compete for its cores.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from cnnviz.synthesis.efros_leung import TextureResult, efros_leung, gaussian_window
from cnnviz_core import _native, kernels

STYLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "style" / "starry_night.jpg"
SIZE, WINDOW = (128, 128), 11


def sample_texture() -> tuple[np.ndarray, str]:
    """A 64 x 64 crop of a real painting when the shared data is there, else a procedural one."""
    if STYLE.is_file():
        with Image.open(STYLE) as image:
            return np.asarray(image.convert("RGB"))[:64, :64].copy(), "starry_night 64x64 crop"
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:64, :64]
    base = np.stack([np.sin(xx / 3 + c) * np.cos(yy / 4 - c) for c in range(3)], -1)
    noisy = base + 0.3 * rng.standard_normal((64, 64, 3))
    return np.clip((noisy + 1.5) * 60, 0, 255).astype(np.uint8), "procedural 64x64"


def grow(sample: np.ndarray, order: str, backend: str, stop_at: int | None) -> TextureResult:
    """One growth; ``stop_at`` interrupts it once that many pixels are filled."""

    def stop(step: int, total: int, loss: float) -> None:
        if stop_at is not None and step >= stop_at:
            raise KeyboardInterrupt

    return efros_leung(sample, SIZE, WINDOW, order, 0.1, seed=0, progress=stop, backend=backend)


def best_of(runs: list[TextureResult]) -> TextureResult:
    return min(runs, key=lambda r: r.seconds / max(1, r.pixels))


def row(order: str, engine: str, result: TextureResult, speedup: float | str = "") -> dict:
    return {
        "order": order,
        "engine": engine,
        "pixels": result.pixels,
        "wall s": round(result.seconds, 3),
        "pixels/s": round(result.pixels_per_second),
        "speedup": speedup,
    }


def best_seconds(fn: Callable[[], object], rounds: int) -> float:
    fn()
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def run(quick: bool = False) -> list[dict]:
    rounds = 2 if quick else 3
    sample, name = sample_texture()
    prefix = 0.05 if quick else 0.1
    stop_at = int(prefix * SIZE[0] * SIZE[1])
    rows: list[dict] = []
    for order in ("onion", "scanline"):
        full, native, numpy = [], [], []
        for _ in range(rounds):
            full.append(grow(sample, order, "native", None))
            native.append(grow(sample, order, "native", stop_at))
            numpy.append(grow(sample, order, "numpy", stop_at))
        f, n, r = best_of(full), best_of(native), best_of(numpy)
        assert f.filled.all() and not f.interrupted, "the full growth must fill every pixel"
        rows.append(row(order, "native full", f))
        rows.append(row(order, "native prefix", n))
        speedup = round(n.pixels_per_second / r.pixels_per_second, 1)
        rows.append(row(order, "numpy prefix", r, speedup))

    # One search: a 64 x 64 sample, half of the 11 x 11 taps known.
    rng = np.random.default_rng(1)
    s = np.ascontiguousarray(sample.transpose(2, 0, 1), dtype=np.float32) / 255
    query = rng.random((3, WINDOW, WINDOW), dtype=np.float32)
    known = rng.random((WINDOW, WINDOW)) < 0.5
    weights = gaussian_window(WINDOW) * known
    ours = best_seconds(lambda: kernels.texture_match(s, query, weights, 0.1, 0.5), 50)
    ref = best_seconds(lambda: kernels.texture_match_reference(s, query, weights, 0.1, 0.5), 5)
    rows.append(
        {
            "order": "-",
            "engine": f"search ({_native.texture_kernel_name()}), ms",
            "pixels": 1,
            "wall s": f"{ours * 1e3:.3f} vs {ref * 1e3:.2f}",
            "pixels/s": round(1 / ours),
            "speedup": round(ref / ours, 1),
        }
    )
    # Threads: one search against a 256 x 256 sample (63k candidates), 1 thread vs the default.
    big = rng.random((3, 256, 256), dtype=np.float32)
    one = best_seconds(
        lambda: kernels.texture_match(big, query, weights, 0.1, 0.5, num_threads=1), 30
    )
    default = best_seconds(lambda: kernels.texture_match(big, query, weights, 0.1, 0.5), 30)
    rows.append(
        {
            "order": "-",
            "engine": f"search 256x256, {_native.default_compute_threads()} threads vs 1, ms",
            "pixels": 1,
            "wall s": f"{default * 1e3:.3f} vs {one * 1e3:.3f}",
            "pixels/s": round(1 / default),
            "speedup": round(one / default, 2),
        }
    )
    for r in rows:
        r["sample"] = name
    return rows
