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
}
RESULTS = Path(__file__).parent / "results"


def print_table(rows: list[dict]) -> None:
    if not rows:
        return
    columns = list(dict.fromkeys(key for row in rows for key in row))
    cells = [[str(row.get(c, "")) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
    print("  ".join("-" * w for w in widths))
    for r in cells:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths)))


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(path)


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
    _write_json(RESULTS / f"bench-{stamp}.json", report)
    # latest.json keeps the newest run of every suite, so running one suite keeps the others
    latest_path = RESULTS / "latest.json"
    latest = json.loads(latest_path.read_text()) if latest_path.exists() else {"suites": {}}
    for name, rows in report["suites"].items():
        latest["suites"][name] = {
            "machine": report["machine"],
            "time": report["time"],
            "rows": rows,
        }
    _write_json(latest_path, latest)
    print(f"\nwritten to {RESULTS / 'latest.json'}")


if __name__ == "__main__":
    main()
