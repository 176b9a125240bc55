"""Guided backpropagation (Springenberg et al. 2015, "Striving for Simplicity") and the
deconvnet (Zeiler & Fergus 2014, "Visualizing and Understanding Convolutional Networks").

Both are the engine's backward pass in another mode at ReLU-like ops: ``guided`` passes a
signal only where both the forward input and the backward signal are positive;
``deconvnet`` rectifies the backward signal alone (max-pools unpool through the forward
switches, convolutions use the transposed filters, as the gradient does). The result is a
colour image, (N, C, H, W), for a class or for an intermediate channel or neuron.
"""

from __future__ import annotations

from cnnviz_core import Model
from cnnviz_core.targets import TargetLike

from .base import Attribution, Images, make_attribution
from .saliency import input_gradients


def guided_backprop(model: Model, images: Images, target: TargetLike | list = None) -> Attribution:
    """Guided-backprop images, (N, C, H, W) (see the module doc for the arguments'
    forms: ``target`` as for :func:`~.saliency.saliency`)."""
    batch, grads, targets = input_gradients(model, images, target, mode="guided")
    return make_attribution(grads, "guided", targets, {}, model, batch, gradients=True)


def deconvnet(model: Model, images: Images, target: TargetLike | list = None) -> Attribution:
    """Deconvnet reconstructions, (N, C, H, W) (``target`` as for
    :func:`~.saliency.saliency`)."""
    batch, grads, targets = input_gradients(model, images, target, mode="deconvnet")
    return make_attribution(grads, "deconvnet", targets, {}, model, batch, gradients=True)
