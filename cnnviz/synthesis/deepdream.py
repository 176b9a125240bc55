"""DeepDream: amplify what a layer sees in an image.

Gradient ascent on the mean squared activation of a layer (Mordvintsev, Olah & Tyka 2015,
"Inceptionism"), from a given image, with jitter (random circular shifts) and octaves
(coarse-to-fine: the first octaves only change low spatial frequencies, so the patterns grow
at several scales; a fixed-size model keeps its input size throughout).

    from cnnviz.synthesis import dream
    result = dream(model, "star.png", "relu_2")
    result.metrics["norm_before"], result.metrics["norm_after"]

Values that work on the shipped shapes model: the defaults (relu_2, 3 octaves of 10 steps,
lr 0.01) raise the layer's activation norm several times over.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from cnnviz_core import Model
from cnnviz_core.preprocess import ImageLike

from .base import (
    Progress,
    Start,
    SynthesisResult,
    bridge,
    pixels,
    quantized,
    require_torch,
    start_batch,
)
from .template import SteppedPixels, gradient_steps, optimize


def activation_norm(net: Any, x: Any, layer: str) -> Any:
    """Per-image L2 norm of a layer's activations, (N,)."""
    return net(x, taps=[layer], outputs=False)[layer].flatten(1).norm(dim=1)


def dream(
    model: Model,
    image: Start | ImageLike | Sequence[ImageLike] | np.ndarray,
    layer: str,
    *,
    steps: int = 10,
    octaves: int = 3,
    octave_scale: float = 1.6,
    lr: float = 0.01,
    jitter: int = 4,
    seed: int = 0,
    progress: Progress | None = None,
) -> SynthesisResult:
    """Dream on image(s): maximize the mean squared activation of ``layer``.

    Args:
        model: the model.
        image: the image(s) to dream on, or ``"zeros"`` / ``"noise"``.
        layer: layer name or alias; shallow layers give strokes, deep ones shapes.
        steps: steps per octave (10).
        octaves: resolutions, coarse to fine (3).
        octave_scale: ratio between octaves (1.6).
        lr: step size (normalized gradient) as a fraction of the pixel range (0.01).
        jitter: largest random shift in pixels (4).
        seed: seeds the jitter (and the noise of a ``"noise"`` start).
        progress: ``progress(step, total, loss)`` after every step.

    Returns:
        a :class:`SynthesisResult`; metrics per image: ``norm_before`` and ``norm_after``
        (L2 norm of the layer's activations on the start and on the saved picture).
    """
    torch = require_torch()
    net = bridge(model)
    name = model.tensor_name(layer)
    if isinstance(image, str) and image in ("zeros", "noise"):
        first = start_batch(model, image, 1, seed)
    else:
        first = model.prepare(image).astype(np.float32)

    def loss(batch: Any) -> Any:
        """Minus the mean squared activation of the layer, (N,)."""
        return -net(batch, taps=[name], outputs=False)[name].flatten(1).pow(2).mean(dim=1)

    run = optimize(
        SteppedPixels(model, first, lr),
        loss,
        gradient_steps(octaves, octave_scale),
        steps=steps,
        jitter=jitter,
        seed=seed,
        progress=progress,
    )
    with torch.no_grad():
        before = activation_norm(net, torch.from_numpy(first), name).numpy()
        after = activation_norm(net, torch.from_numpy(quantized(model, run.best)), name).numpy()
    metrics = {
        "norm_before": [float(v) for v in before],
        "norm_after": [float(v) for v in after],
    }
    options = dict(
        layer=layer,
        steps=steps,
        octaves=octaves,
        octave_scale=octave_scale,
        lr=lr,
        jitter=jitter,
        seed=seed,
    )
    return run.result(
        SynthesisResult,
        "deepdream",
        pixels(model, run.best),
        run.best,
        metrics,
        [layer] * len(run.best),
        options,
    )
