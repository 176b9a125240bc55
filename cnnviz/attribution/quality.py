"""The scored comparison of explanation methods: every method of a list, from the registry
(:mod:`.methods`), explains one held-out batch and is scored by :mod:`.scoring` (deletion
and insertion AUC, pointing game, energy inside the object mask, ROAD MoRF / LeRF,
faithfulness correlation) and timed.
"""

from __future__ import annotations

import time

import numpy as np

from cnnviz_core import Model

from .methods import method_spec
from .scoring import faithfulness_correlation, road, score

#: methods the quality table scores, by their name in :data:`~.methods.REGISTRY`
QUALITY_METHODS = ("occlusion", "lime", "saliency", "guided", "gradcam", "ig", "smoothgrad")
#: the table's ROAD removal percentages and faithfulness-correlation runs (fewer than the
#: defaults of :func:`~.scoring.road` and :func:`~.scoring.faithfulness_correlation`, to
#: keep the demo report quick)
ROAD_PERCENTAGES = (20, 50, 80)
FAITHFULNESS_RUNS = 32


def quality_table(
    model: Model,
    images: np.ndarray,
    masks: np.ndarray,
    methods: tuple[str, ...] = QUALITY_METHODS,
    *,
    steps: int = 16,
    road_percentages: tuple[float, ...] = ROAD_PERCENTAGES,
    faithfulness_runs: int = FAITHFULNESS_RUNS,
) -> list[dict[str, object]]:
    """Score each method on one held-out batch (its predicted class): deletion and
    insertion AUC, pointing game, energy inside the mask, ROAD MoRF and LeRF (the class
    probability averaged over ``road_percentages``), faithfulness correlation
    (``faithfulness_runs`` subsets of a fifth of the pixels, blurred), and seconds per
    image."""
    batch = model.prepare(images)
    rows: list[dict[str, object]] = []
    for name in methods:
        spec = method_spec(name)
        start = time.perf_counter()
        result = spec.function(model, batch, None)
        seconds = (time.perf_counter() - start) / len(batch)
        scores = score(model, result, masks, batch, steps=steps)
        curves = road(model, result, batch, percentages=road_percentages)
        faithful = faithfulness_correlation(model, result, batch, runs=faithfulness_runs)
        rows.append(
            {
                "method": spec.title,
                "deletion AUC (lower better)": round(scores["deletion_auc"], 3),
                "insertion AUC (higher better)": round(scores["insertion_auc"], 3),
                "pointing game": round(scores["pointing_game"], 3),
                "energy inside mask": round(scores["energy_inside"], 3),
                "ROAD MoRF (lower better)": round(float(curves.morf_mean.mean()), 3),
                "ROAD LeRF (higher better)": round(float(curves.lerf_mean.mean()), 3),
                "faithfulness corr. (higher better)": round(float(faithful.correlation.mean()), 3),
                "s / image": round(seconds, 4),
            }
        )
    return rows


__all__ = ["FAITHFULNESS_RUNS", "QUALITY_METHODS", "ROAD_PERCENTAGES", "quality_table"]
