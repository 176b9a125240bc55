"""The scored comparison of explanation methods: every method of a list, from the registry
(:mod:`.methods`), explains one held-out batch and is scored by :mod:`.scoring` (deletion
and insertion AUC, pointing game, energy inside the object mask) and timed.
"""

from __future__ import annotations

import time

import numpy as np

from cnnviz_core import Model

from .methods import method_spec
from .scoring import score

#: methods the quality table scores, by their name in :data:`~.methods.REGISTRY`
QUALITY_METHODS = ("occlusion", "lime", "saliency", "guided", "gradcam", "ig", "smoothgrad")


def quality_table(
    model: Model,
    images: np.ndarray,
    masks: np.ndarray,
    methods: tuple[str, ...] = QUALITY_METHODS,
    *,
    steps: int = 16,
) -> list[dict[str, object]]:
    """Score each method on one held-out batch (its predicted class): deletion and
    insertion AUC, pointing game, energy inside the mask, and seconds per image."""
    batch = model.prepare(images)
    rows: list[dict[str, object]] = []
    for name in methods:
        spec = method_spec(name)
        start = time.perf_counter()
        result = spec.function(model, batch, None)
        seconds = (time.perf_counter() - start) / len(batch)
        scores = score(model, result, masks, batch, steps=steps)
        rows.append(
            {
                "method": spec.title,
                "deletion AUC (lower better)": round(scores["deletion_auc"], 3),
                "insertion AUC (higher better)": round(scores["insertion_auc"], 3),
                "pointing game": round(scores["pointing_game"], 3),
                "energy inside mask": round(scores["energy_inside"], 3),
                "s / image": round(seconds, 4),
            }
        )
    return rows


__all__ = ["QUALITY_METHODS", "quality_table"]
