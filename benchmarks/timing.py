"""Timing for every benchmark suite: interleaved best-of-N, the one measurement that holds up
on a shared machine (a drift of its speed hits every contender alike, and the fastest call is
the least disturbed one)."""

from __future__ import annotations

import time
from collections.abc import Callable


def interleaved_best(
    fns: dict[str, Callable[[], object]], rounds: int, settle: float = 0.0
) -> dict[str, float]:
    """Fastest of ``rounds`` calls of each function, in seconds, the calls interleaved round by
    round (one warm-up call each first), pausing ``settle`` seconds before each round."""
    for fn in fns.values():
        fn()
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(rounds):
        time.sleep(settle)
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def paired_seconds(
    ours: Callable[[], object], reference: Callable[[], object], repeats: int
) -> tuple[float, float]:
    """:func:`interleaved_best` of two calls: (ours, reference) fastest seconds."""
    best = interleaved_best({"ours": ours, "reference": reference}, repeats)
    return best["ours"], best["reference"]
