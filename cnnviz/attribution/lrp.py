"""Layer-wise relevance propagation (Bach et al. 2015, "On Pixel-Wise Explanations for
Non-Linear Classifier Decisions by Layer-Wise Relevance Propagation"; Montavon et al. 2019,
"Layer-Wise Relevance Propagation: An Overview") with the epsilon, gamma and alpha1-beta0
rules and the z^B rule at the layers reading the pixels, as Captum's ``LRP`` rules.

The model is canonized first (BatchNormalization folded into the preceding Conv:
:func:`cnnviz_core.canonize.canonized`), then one backward pass runs in the engine's
``lrp-*`` mode (:mod:`cnnviz_core.backward.relevance`, where each op's convention is listed).
The relevance starts as the target's score and is conserved layer by layer up to what the
biases and the epsilon absorb; the result reports the gap. Shapes: (N, C, H, W).
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from cnnviz_core import InputError, Model
from cnnviz_core.backward import LRP, gradients
from cnnviz_core.canonize import canonized
from cnnviz_core.targets import TargetLike

from .base import Attribution, Images, make_attribution

INPUT_RULES = ("zbox", "same")


def input_range(model: Model, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The preprocessed values of black and white pixels per channel, (1, C, 1, 1) each:
    the bounds l, h of the z^B rule (per channel min and max, whatever the preprocessing's
    sign)."""
    size = batch.shape[2:]
    black, white = (np.full((*size, 3), v, np.uint8) for v in (0, 255))
    ends = model.prepare([black, white])[:, :, :1, :1]
    return ends.min(axis=0, keepdims=True), ends.max(axis=0, keepdims=True)


def lrp(
    model: Model,
    images: Images,
    target: TargetLike | list = None,
    *,
    rule: Literal["epsilon", "gamma", "alphabeta"] = "epsilon",
    epsilon: float = 1e-6,
    gamma: float = 0.25,
    input_rule: str = "zbox",
    canonize: bool = True,
) -> Attribution:
    """LRP relevance maps, (N, H, W) (summed over channels; signed).

    Args:
        model: the model.
        images: images or a preprocessed (N, C, H, W) batch.
        target: as for :func:`~.saliency.saliency` (None: the predicted class); class
            targets explain the score before softmax.
        rule: the rule at Conv / Gemm / MatMul: ``epsilon``, ``gamma`` or ``alphabeta``
            (alpha1-beta0).
        epsilon: the stabiliser of every denominator (the epsilon rule's epsilon).
        gamma: the gamma rule's weight on positive weights.
        input_rule: ``zbox`` (z^B within the black and white pixels' values at the layers
            reading the input) or ``same`` (the rule above there too).
        canonize: fold BatchNormalization into the preceding Conv first.

    Returns:
        Signed (N, H, W) maps; ``extras["relevance"]`` (N, C, H, W); ``metrics``: ``sum``
        of the relevance, ``score`` (the target's score, the relevance put in),
        ``conservation`` (``|sum - score| / |score|`` per image: what biases, epsilon and
        the z^B bounds absorb) and ``conservation_max``.
    """
    if input_rule not in INPUT_RULES:
        raise InputError(f"unknown input_rule {input_rule!r}; choose one of {INPUT_RULES}")
    batch = model.prepare(images)
    low, high = input_range(model, batch) if input_rule == "zbox" else (None, None)
    mode = LRP(rule, epsilon, gamma, "zbox" if input_rule == "zbox" else "same", low, high)
    explained = canonized(model) if canonize else model
    result = gradients(explained, batch, target, mode=mode)
    relevance = result.grads[explained.input_name].astype(np.float64)
    n = len(batch)
    sums = relevance.reshape(n, -1).sum(axis=1)
    conservation = np.abs(sums - result.scores) / np.maximum(np.abs(result.scores), 1e-12)
    options: dict[str, Any] = {"rule": rule, "epsilon": epsilon, "input_rule": input_rule}
    if rule == "gamma":
        options["gamma"] = gamma
    options["canonize"] = canonize
    return make_attribution(
        relevance.sum(axis=1),
        mode.mode,
        result.targets,
        options,
        model,
        batch,
        signed=True,
        metrics={
            "sum": sums.tolist(),
            "score": result.scores.tolist(),
            "conservation": conservation.tolist(),
            "conservation_max": float(conservation.max()) if n else 0.0,
        },
        extras={"relevance": relevance.astype(np.float32)},
    )


def lrp_epsilon(
    model: Model,
    images: Images,
    target: TargetLike | list = None,
    *,
    epsilon: float = 1e-6,
    input_rule: str = "zbox",
) -> Attribution:
    """LRP-epsilon maps (see :func:`lrp`)."""
    return lrp(model, images, target, rule="epsilon", epsilon=epsilon, input_rule=input_rule)


def lrp_gamma(
    model: Model,
    images: Images,
    target: TargetLike | list = None,
    *,
    gamma: float = 0.25,
    epsilon: float = 1e-6,
    input_rule: str = "zbox",
) -> Attribution:
    """LRP-gamma maps (see :func:`lrp`)."""
    return lrp(
        model, images, target, rule="gamma", gamma=gamma, epsilon=epsilon, input_rule=input_rule
    )


def lrp_alphabeta(
    model: Model,
    images: Images,
    target: TargetLike | list = None,
    *,
    epsilon: float = 1e-6,
    input_rule: str = "zbox",
) -> Attribution:
    """LRP-alpha1-beta0 maps (see :func:`lrp`)."""
    return lrp(model, images, target, rule="alphabeta", epsilon=epsilon, input_rule=input_rule)


__all__ = ["INPUT_RULES", "input_range", "lrp", "lrp_alphabeta", "lrp_epsilon", "lrp_gamma"]
