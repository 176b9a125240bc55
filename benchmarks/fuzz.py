"""Long fuzz run: 1,000 seeded cases per input family (mutated ONNX models, mutated images
of every format, out-of-range CLI option values), each in a worker process under a time
limit; prints a table (family, ok, clean errors, anything else) and writes JSON.

    python benchmarks/fuzz.py                        # 1,000 cases per family
    python benchmarks/fuzz.py --cases 200 --family image --seed 7

Anything else than ``ok`` or ``clean`` is a defect: the JSON lists each such case (family,
mutation, what was seen) so it can be replayed with the same seed.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import fuzzing  # the mutators and the worker, shared with the fuzz tests
from table import RESULTS, print_table, write_json


def run(count: int, families: list[str], seed: int, timeout: float) -> dict:
    """Run ``count`` cases of each family; returns the summary rows and the failures."""
    rows, failures = [], []
    with fuzzing.Runner(timeout=timeout) as runner:
        for family in families:
            tally = {"ok": 0, "clean": 0, "other": 0}
            slowest = 0.0
            start = time.perf_counter()
            for index, case in enumerate(fuzzing.cases(family, seed, count)):
                outcome = runner.run(case)
                tally[outcome.verdict] += 1
                slowest = max(slowest, outcome.seconds)
                if outcome.verdict == "other":
                    failures.append(
                        {"family": family, "index": index, "mutation": case.mutation}
                        | {"argv": case.argv, "detail": outcome.detail}
                    )
                    print(f"{family} #{index} {case.mutation}: {outcome.detail}", file=sys.stderr)
            rows.append(
                {
                    "family": family,
                    "cases": count,
                    "ok": tally["ok"],
                    "clean errors": tally["clean"],
                    "anything else": tally["other"],
                    "slowest case s": f"{slowest:.2f}",
                    "total s": f"{time.perf_counter() - start:.0f}",
                }
            )
    return {"seed": seed, "timeout_s": timeout, "rows": rows, "failures": failures}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=1000, help="cases per family")
    parser.add_argument("--family", action="append", choices=fuzzing.FAMILIES)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per case")
    parser.add_argument("--out", type=Path, default=RESULTS / "fuzz.json")
    args = parser.parse_args()
    result = run(args.cases, args.family or list(fuzzing.FAMILIES), args.seed, args.timeout)
    print_table(result["rows"])
    write_json(args.out, result)
    return 1 if result["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
