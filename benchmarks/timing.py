"""Timing for every benchmark suite: interleaved best-of-N, the one measurement that holds up
on a shared machine (a drift of its speed hits every contender alike, and the fastest call is
the least disturbed one)."""

from __future__ import annotations

import time
from collections.abc import Callable


def interleaved_best(
    fns: dict[str, Callable[[], object]],
    rounds: int,
    settle: float = 0.0,
    rotate: bool = True,
) -> dict[str, float]:
    """Fastest of ``rounds`` calls of each function, in seconds, the calls interleaved round by
    round (one warm-up call each first), pausing ``settle`` seconds before each round (then
    one untimed call of the round's first function).

    ``rotate``: each round starts with the next function, so that every one goes first
    equally often. The first call of a round runs measurably slower here (the bridge's
    batch-1 gradient step: 9-12 % slower than its twin when always first, 0-4 % faster when
    always second); without rotation the order is fixed, for suites that must keep a call
    last (the BLAS calls whose spinning threads would hold the cores)."""
    for fn in fns.values():
        fn()
    best = dict.fromkeys(fns, float("inf"))
    order = list(fns.items())
    for r in range(rounds):
        shift = r % len(order) if rotate else 0
        if settle:
            time.sleep(settle)
            order[shift][1]()  # untimed: the pause leaves the cores idle (slow to wake)
        for name, fn in order[shift:] + order[:shift]:
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


def best_within(fn: Callable[[], object], min_runs: int, budget: float = 3.0, max_runs: int = 10):
    """(the last result, the fastest of the calls) of ``fn`` called at least ``min_runs``
    times and then again while the calls total under ``budget`` seconds (at most
    ``max_runs``): a short call gets more tries on a shared machine, a long one no more time."""
    times: list[float] = []
    while len(times) < min_runs or (sum(times) < budget and len(times) < max_runs):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return result, min(times)
