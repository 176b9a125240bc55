"""Scored comparison of every explanation method on a fixed held-out shapes set (the
shipped model, predicted class): deletion / insertion AUC, pointing game, energy inside
the object mask, seconds per image. Also writes results/attribution_quality.json."""

from __future__ import annotations

import json
from pathlib import Path

from cnnviz import load_model
from cnnviz.attribution.scoring import quality_table
from cnnviz.data import make_shapes

HELDOUT_SEED = 2  # the shapes training script's held-out seed
RESULTS = Path(__file__).parent / "results"


def run(quick: bool = False) -> list[dict]:
    model = load_model("shapes")
    held = make_shapes(8 if quick else 32, HELDOUT_SEED)
    rows = quality_table(model, held.images, held.masks)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "attribution_quality.json").write_text(json.dumps(rows, indent=1) + "\n")
    return rows


if __name__ == "__main__":
    import sys

    from run import print_table

    print_table(run(quick="--quick" in sys.argv))
