"""Vanilla-gradient saliency (Simonyan, Vedaldi & Zisserman 2014, "Deep Inside
Convolutional Networks"): the gradient of the target w.r.t. the input pixels.

Variants: ``abs`` (the paper's map: max over colour channels of |gradient|), ``signed``
(the gradient summed over channels) and ``grad_x_input`` (gradient x input, summed over
channels; Shrikumar et al. 2016).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cnnviz_core import InputError, Model
from cnnviz_core.backward import gradients
from cnnviz_core.targets import ResolvedTarget, TargetLike

from .base import Attribution, Images, make_attribution

VARIANTS = ("abs", "signed", "grad_x_input")


def input_gradients(
    model: Model, images: Images, target: Any = None, mode: str = "gradient"
) -> tuple[np.ndarray, np.ndarray, list[ResolvedTarget]]:
    """(batch, gradient w.r.t. the batch (N, C, H, W), resolved targets): one forward run."""
    batch = model.prepare(images)
    result = gradients(model, batch, target, mode=mode)
    return batch, result.grads[model.input_name], result.targets


def saliency(
    model: Model, images: Images, target: TargetLike | list = None, *, variant: str = "abs"
) -> Attribution:
    """Saliency maps, (N, H, W).

    Args:
        model: the model.
        images: paths, PIL images, uint8 arrays or a preprocessed (N, C, H, W) batch.
        target: class index or label, :class:`~cnnviz_core.targets.Channel`,
            :class:`~cnnviz_core.targets.Neuron`,
            None for the predicted class, or a list of those (one per image).
        variant: ``abs`` (max |grad| over channels), ``signed`` (sum of grad over channels)
            or ``grad_x_input`` (sum over channels of grad x input).

    Returns:
        An :class:`~.base.Attribution` with (N, H, W) float32 maps.
    """
    if variant not in VARIANTS:
        raise InputError(f"unknown saliency variant {variant!r}; choose one of {VARIANTS}")
    batch, grads, targets = input_gradients(model, images, target)
    if variant == "abs":
        maps = np.abs(grads).max(axis=1)
    elif variant == "signed":
        maps = grads.sum(axis=1)
    else:
        maps = (grads * batch).sum(axis=1)
    return make_attribution(
        maps,
        "saliency",
        targets,
        {"variant": variant},
        model,
        batch,
        signed=variant != "abs",
        extras={"gradient": grads},
        gradients=True,
    )
