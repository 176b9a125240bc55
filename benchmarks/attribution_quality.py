"""Scored comparison of every explanation method on a fixed held-out shapes set (the
shipped model, predicted class): deletion / insertion AUC, pointing game, energy inside
the object mask, seconds per image. Also writes results/attribution_quality.json."""

from __future__ import annotations

from table import RESULTS, print_table, write_json

from cnnviz import load_model
from cnnviz.attribution.quality import quality_table
from cnnviz.data import make_shapes

HELDOUT_SEED = 2  # the shapes training script's held-out seed


def run(quick: bool = False) -> list[dict]:
    model = load_model("shapes")
    held = make_shapes(8 if quick else 32, HELDOUT_SEED)
    rows = quality_table(model, held.images, held.masks)
    write_json(RESULTS / "attribution_quality.json", rows)
    return rows


if __name__ == "__main__":
    import sys

    print_table(run(quick="--quick" in sys.argv))
