"""Incremental occlusion (Krypton: Nakandala, Kumar and Papakonstantinou, SIGMOD 2019):
recompute per occluding window only the feature-map regions it can change.

:class:`IncrementalOcclusion` (exact, or approximate with projective-field thresholding
``tau``) and :class:`NaiveOcclusion` (one full forward per window) share one interface,
:class:`OcclusionScorer`: ``scores(image, positions, fill) -> (scores, taps)``.
"""

from .engine import DEFAULT_BATCH, IncrementalOcclusion, NaiveOcclusion, OcclusionScorer
from .plan import Plan, build_plan

__all__ = [
    "DEFAULT_BATCH",
    "IncrementalOcclusion",
    "NaiveOcclusion",
    "OcclusionScorer",
    "Plan",
    "build_plan",
]
