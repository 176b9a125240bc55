"""DeepLIFT with the Rescale rule (Shrikumar, Greenside & Kundaje 2017, "Learning Important
Features Through Propagating Activation Differences"), as Captum's ``DeepLift``.

One forward on the images and one on the baseline, then one backward pass in the engine's
``deeplift`` mode (:mod:`cnnviz_core.backward.relevance`): linear ops pass multipliers as
the gradient does, activations pass ``dy / dx`` of the two forwards, max-pools split the
output difference between the image's and the baseline's argmax. The contributions
``m * (x - x0)`` sum to ``f(x) - f(x0)`` (summation-to-delta); the result reports how far
they are from it. Shapes: (N, C, H, W).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cnnviz_core import Model
from cnnviz_core.backward import DeepLift, gradients
from cnnviz_core.targets import TargetLike, seeded_scores

from .base import Attribution, Images, make_attribution
from .integrated_gradients import make_baseline


def deeplift(
    model: Model,
    images: Images,
    target: TargetLike | list = None,
    *,
    baseline: str | np.ndarray = "zeros",
    blur_sigma: float | None = None,
) -> Attribution:
    """DeepLIFT (Rescale) contribution maps, (N, H, W) (summed over channels; signed).

    Args:
        model: the model.
        images: images or a preprocessed (N, C, H, W) batch.
        target: as for :func:`~.saliency.saliency` (None: the predicted class); class
            targets explain the score before softmax.
        baseline: the reference input: ``zeros``, ``black``, ``blur`` or an array (see
            :func:`~.integrated_gradients.make_baseline`).
        blur_sigma: Gaussian sigma of the ``blur`` baseline in pixels.

    Returns:
        Signed (N, H, W) maps; ``extras``: ``attributions`` (N, C, H, W) and ``baseline``;
        ``metrics``: ``sum`` of the contributions, ``delta`` (f(x) - f(baseline)),
        ``completeness`` (``|sum - delta| / |delta|`` per image) and ``completeness_max``.
    """
    batch = model.prepare(images)
    base = make_baseline(model, batch, baseline, blur_sigma)
    result = gradients(model, batch, target, mode=DeepLift(base))
    attributions = result.grads[model.input_name].astype(np.float64)
    n = len(batch)
    sums = attributions.reshape(n, -1).sum(axis=1)
    delta = result.scores - seeded_scores(result.seeds, result.references)
    completeness = np.abs(sums - delta) / np.maximum(np.abs(delta), 1e-12)
    options: dict[str, Any] = {
        "rule": "rescale",
        "baseline": baseline if isinstance(baseline, str) else "array",
    }
    return make_attribution(
        attributions.sum(axis=1),
        "deeplift",
        result.targets,
        options,
        model,
        batch,
        signed=True,
        metrics={
            "sum": sums.tolist(),
            "delta": delta.tolist(),
            "completeness": completeness.tolist(),
            "completeness_max": float(completeness.max()) if n else 0.0,
        },
        extras={"attributions": attributions.astype(np.float32), "baseline": base},
    )


__all__ = ["deeplift"]
