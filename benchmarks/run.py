"""Run the benchmark suites: print a table per suite and write JSON to benchmarks/results/.

    python benchmarks/run.py                 # every suite
    python benchmarks/run.py forward --quick # one suite, fewer repetitions

Figures are ratios measured in one run on one machine (ours vs the reference); absolute
times on a shared machine drift.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import forward  # suites live beside this script
import kernels

SUITES = {"forward": forward.run, "kernels": kernels.run}
RESULTS = Path(__file__).parent / "results"


def print_table(rows: list[dict]) -> None:
    if not rows:
        return
    columns = list(rows[0])
    cells = [[str(row.get(c, "")) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
    print("  ".join("-" * w for w in widths))
    for r in cells:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("suites", nargs="*", choices=[*SUITES, []], help="default: all")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    args = parser.parse_args()
    report = {
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "processor": platform.processor(),
        },
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "suites": {},
    }
    for name in args.suites or list(SUITES):
        print(f"\n== {name} ==")
        rows = SUITES[name](quick=args.quick)
        print_table(rows)
        report["suites"][name] = rows
    RESULTS.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for path in (RESULTS / f"bench-{stamp}.json", RESULTS / "latest.json"):
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(report, indent=1))
        tmp.replace(path)
    print(f"\nwritten to {RESULTS / 'latest.json'}")


if __name__ == "__main__":
    main()
