"""Sanity-check verdict (Adebayo et al. 2018, cascading model parameter randomization) of
every registered method on the shapes model and on SqueezeNet 1.1, one image per model:
the Spearman rank correlation and SSIM of |original| and |randomized| maps with the top
layer randomized and with every layer randomized (the final cascade step, which the
verdict reads: pass when the mean Spearman there is below the threshold, 0.5), and the
seconds each method took. Also writes results/sanity_verdicts.json.

Shapes (5 Conv/Gemm layers): the full cascade of :func:`model_randomization`.
SqueezeNet (26 Conv layers): the cascade's first and last steps only (top layer random;
every layer random), built from the same pieces (``randomized_proto``, ``Model.with_graph``, the
same Spearman / SSIM of absolute maps, the same targets), since 26 steps of the expensive
methods would not fit a ~10 minute run. The expensive methods run with small settings
(:data:`SMALL`), printed in the table.

    python benchmarks/sanity_verdicts.py [--quick]   # --quick: shapes only
"""

from __future__ import annotations

import sys
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
from table import RESULTS, print_table, write_json

from cnnviz import load_model
from cnnviz.attribution.methods import SPECS, explain
from cnnviz.attribution.sanity import (
    DEFAULT_THRESHOLD,
    model_randomization,
    randomizable_layers,
    randomized_proto,
    spearman,
    ssim,
)
from cnnviz.data import make_shapes
from cnnviz_core import Model

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SEED = 0

#: small settings for the expensive methods (per model: window sizes follow the image size)
SMALL: dict[str, dict[str, dict[str, Any]]] = {
    "shapes": {
        "smoothgrad": {"samples": 8, "sigma": 0.15},  # the README's verdicts: at 0.15
        "ig": {"steps": 16},
        "gradientshap": {"n_samples": 8},
        "occlusion": {"window": 16, "stride": 8},
        "occlusion-drilldown": {"window": 16, "stride": 8},
        "lime": {"samples": 64, "segments": 25},
        "kernelshap": {"samples": 64, "segments": 25},
        "rise": {"masks": 64, "cells": 7},
    },
    "squeezenet": {
        "smoothgrad": {"samples": 8, "sigma": 0.15},  # the README's verdicts: at 0.15
        "ig": {"steps": 16},
        "gradientshap": {"n_samples": 8},
        "occlusion": {"window": 56, "stride": 56},
        "occlusion-drilldown": {"window": 56, "stride": 56},
        "lime": {"samples": 64, "segments": 25},
        "kernelshap": {"samples": 64, "segments": 25},
        "rise": {"masks": 64, "cells": 7},
    },
}


def _models(quick: bool) -> list[tuple[str, Model, Any]]:
    shapes = load_model("shapes")
    image = make_shapes(1, 2).images[:1]  # the held-out seed of the quality table
    models: list[tuple[str, Model, Any]] = [("shapes", shapes, image)]
    if not quick:
        squeezenet = Model(
            DATA / "models" / "squeezenet1.1_fp32.onnx",
            preprocess="caffe",
            labels=DATA / "labels" / "imagenet_synset_words.txt",
        )
        models.append(("squeezenet", squeezenet, [DATA / "photos" / "both.png"]))
    return models


def _first_and_last(model: Model, image: Any, method: str, options: dict) -> dict[str, Any]:
    """The cascade's first step (top layer random) and last step (every layer random)."""
    batch = model.prepare(image)
    original = explain(model, batch, method, **options)
    layers = list(reversed(randomizable_layers(model)))
    figures = {}
    for key, changed in (("top", layers[:1]), ("all", layers)):
        proto = randomized_proto(model.proto, changed, SEED)
        result = explain(model.with_graph(proto), batch, method, original.targets, **options)
        x, y = np.abs(original.heatmap[0]), np.abs(result.heatmap[0])
        figures[key] = (spearman(x, y), ssim(x / (x.max() or 1.0), y / (y.max() or 1.0)))
    return {
        "constant": bool(np.ptp(result.heatmap) == 0),
        "top": figures["top"],
        "all": figures["all"],
        "passed": figures["all"][0] < DEFAULT_THRESHOLD,
        "target": original.targets[0].label,
        "steps": f"top, all {len(layers)}",
    }


def _cascade(model: Model, image: Any, method: str, options: dict) -> dict[str, Any]:
    """The full cascade of :func:`model_randomization`."""
    result = model_randomization(model, image, method, seed=SEED, options=options)
    return {
        "constant": bool(np.ptp(result.randomized[-1].heatmap) == 0),
        "top": (float(result.spearman[0].mean()), float(result.ssim[0].mean())),
        "all": (float(result.spearman[-1].mean()), float(result.ssim[-1].mean())),
        "passed": result.passed,
        "target": result.original.targets[0].label,
        "steps": f"cascade {len(result.layers)}",
        "figures": result.figures(),
    }


def run(quick: bool = False) -> list[dict]:
    rows: list[dict] = []
    details: list[dict] = []
    for name, model, image in _models(quick):
        for spec in SPECS:
            options = SMALL[name].get(spec.name, {})
            start = time.perf_counter()
            try:
                if name == "shapes":
                    found = _cascade(model, image, spec.name, options)
                else:
                    found = _first_and_last(model, image, spec.name, options)
            except Exception as error:  # a benchmark reports every method, it does not stop
                rows.append(
                    {"model": name, "method": spec.name, "verdict": f"ERROR {error!r}"[:120]}
                )
                details.append(
                    {"model": name, "method": spec.name, "error": traceback.format_exc()}
                )
                continue
            seconds = time.perf_counter() - start
            settings = ", ".join(f"{k}={v}" for k, v in options.items()) or "defaults"
            rows.append(
                {
                    "model": name,
                    "method": spec.name,
                    "verdict": "pass" if found["passed"] else "FAIL",
                    "rho top": f"{found['top'][0]:.3f}",
                    "ssim top": f"{found['top'][1]:.3f}",
                    "rho all": f"{found['all'][0]:.3f}",
                    "ssim all": f"{found['all'][1]:.3f}",
                    "steps": found["steps"],
                    "seconds": round(seconds, 1),
                    "settings": settings,
                }
            )
            if found["constant"]:  # Spearman is 0 for a constant map: the pass says nothing
                rows[-1]["note"] = "every-layer-random map is constant: vacuous pass"
            details.append({"model": name, "method": spec.name, "settings": options, **found})
            print(rows[-1], file=sys.stderr, flush=True)
    write_json(
        RESULTS / "sanity_verdicts.json",
        {"threshold": DEFAULT_THRESHOLD, "seed": SEED, "rows": rows, "details": details},
    )
    return rows


if __name__ == "__main__":
    print_table(run(quick="--quick" in sys.argv))
