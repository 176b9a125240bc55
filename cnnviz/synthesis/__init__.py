"""Synthesis: images made by optimizing the model's input (torch needed at call time only).

- :func:`class_visualization`: the image a class (or a channel, a neuron) likes most.
- :func:`invert`, :func:`invert_layers`: images reconstructed from a layer's features.
- :func:`dream`: DeepDream, amplifying what a layer sees.
- :func:`fool`: adversarial images, predicted as a chosen class after a small change.
- :func:`multifaceted`: one class visualization per facet (cluster) of a class.
- :func:`gram_texture`: neural texture synthesis (Gatys et al. 2015), Gram matrices matched.
- :func:`style_transfer`: neural style transfer (Gatys et al. 2016); the loss network of
  both (and of fast style transfer) is :class:`~.style_losses.LossNetwork`.
- :func:`efros_leung`: non-parametric texture synthesis (Efros & Leung), no network, no torch.
- :func:`stylize`: run a feed-forward style network (trained, or e.g. fns_candy) via onnxruntime.

The gradient techniques share one template (:mod:`.template`): each supplies its loss and
its parameterization; the template runs the optimizer, jitter, progress, the best-so-far
and Ctrl-C, and builds the result. Every technique is deterministic by ``seed``, reports
``progress(step, total, loss)``, returns the best image so far when interrupted (Ctrl-C, or
KeyboardInterrupt raised by the progress callback; ``result.interrupted`` is then True), and
takes its start image as ``"zeros"``, ``"noise"`` or images. Importing this package never
imports torch; a call without torch raises ImportError naming ``pip install 'cnnviz[torch]'``.
"""

from __future__ import annotations

# the report sections register on import (explicitly, here)
from . import report
from .adversarial import AdversarialResult, fool
from .base import INSTALL_HINT, SynthesisResult, psnr
from .class_visualization import class_visualization
from .deepdream import dream
from .efros_leung import TextureResult, efros_leung
from .fast_style_network import StyleNetwork, load_style_network, stylize
from .gatys_transfer import style_transfer
from .inversion import default_layers, invert, invert_layers
from .multifaceted import multifaceted
from .style_losses import LossNetwork, default_content_layer, default_style_layers
from .texture import gram_texture

__all__ = [
    "INSTALL_HINT",
    "AdversarialResult",
    "LossNetwork",
    "StyleNetwork",
    "SynthesisResult",
    "TextureResult",
    "class_visualization",
    "default_content_layer",
    "default_layers",
    "default_style_layers",
    "dream",
    "efros_leung",
    "fool",
    "gram_texture",
    "invert",
    "invert_layers",
    "load_style_network",
    "multifaceted",
    "psnr",
    "report",
    "style_transfer",
    "stylize",
]
