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

import attribution_quality
import backward  # suites live beside this script
import features
import forward
import kernels
import occlusion
from table import RESULTS, print_table, write_json

SUITES = {
    "forward": forward.run,
    "kernels": kernels.run,
    "backward": backward.run,
    "features": features.run,
    "occlusion": occlusion.run,
    "attribution_quality": attribution_quality.run,
    "synthesis": __import__("synthesis").run,
    "style": __import__("style").run,
    "incremental": __import__("incremental").run,
    "texture": __import__("texture").run,
    "fast_style": __import__("fast_style").run,
    "perturbation": __import__("perturbation").run,
    "compiled_backward": __import__("compiled_backward").run,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("suites", nargs="*", choices=[*SUITES, []], help="default: all")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    args = parser.parse_args()
    machine = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "processor": platform.processor(),
    }
    when = time.strftime("%Y-%m-%dT%H:%M:%S")
    suites: dict[str, list[dict]] = {}
    for name in args.suites or list(SUITES):
        print(f"\n== {name} ==")
        rows = SUITES[name](quick=args.quick)
        print_table(rows)
        suites[name] = rows
    report = {"machine": machine, "time": when, "suites": suites}
    stamp = time.strftime("%Y%m%d-%H%M%S")
    write_json(RESULTS / f"bench-{stamp}.json", report)
    # latest.json keeps the newest run of every suite, so running one suite keeps the others
    latest_path = RESULTS / "latest.json"
    latest = json.loads(latest_path.read_text()) if latest_path.exists() else {"suites": {}}
    for name, rows in suites.items():
        latest["suites"][name] = {"machine": machine, "time": when, "rows": rows}
    write_json(latest_path, latest)
    print(f"\nwritten to {RESULTS / 'latest.json'}")


if __name__ == "__main__":
    main()
