"""Neural texture synthesis: Gatys, Ecker & Bethge 2015 ("Texture Synthesis Using
Convolutional Neural Networks").

A texture is summarized by the Gram matrices of a CNN's feature maps at several layers (the
correlations between channels, averaged over positions: where things are is lost, what
co-occurs is kept). Synthesis starts from noise and minimizes the weighted sum over layers of
the (relative) squared Gram differences to the sample's, by L-BFGS or Adam. Gram matrices do
not depend on the image size, so the output can be larger (or smaller) than the sample.

    from cnnviz.synthesis import gram_texture
    result = gram_texture(model, "bricks.png", size=256)     # 256 x 256 from any sample
    result.metrics["style_loss_ratio"]                        # end / start Gram loss

Pixels are free variables with a smooth penalty for leaving [0, 1], clipped when saved (see
:class:`.template.UnitPixels`): L-BFGS sees a smooth unconstrained problem.

Values that work: L-BFGS, 100-300 iterations (the Gram loss falls by 2-3 orders of
magnitude in 100); Adam needs lr 0.05 and several hundred steps. On SqueezeNet 1.1 the
default layers (conv1_2, fire2, fire4, fire6) keep colours and strokes; dropping fire6 gives
finer, less structured textures. On the shapes model the textures are coarse (its features
know eight shapes).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from cnnviz_core import Model
from cnnviz_core.preprocess import ImageLike

from .base import Progress, SynthesisResult, require_torch
from .style_losses import (
    LossNetwork,
    Size,
    fit_size,
    load_pixels,
    noise_pixels,
    to_pictures,
    tv_loss,
)
from .template import UnitPixels, minimizer, optimize


def gram_texture(
    model: Model,
    sample: ImageLike,
    size: Size | None = None,
    *,
    layers: Sequence[str] | None = None,
    layer_weights: Sequence[float] | Mapping[str, float] | None = None,
    sample_size: Size | None = None,
    optimizer: str = "lbfgs",
    steps: int = 100,
    lr: float = 0.02,
    tv_weight: float = 0.0,
    seed: int = 0,
    progress: Progress | None = None,
    device: str = "cpu",
) -> SynthesisResult:
    """Synthesize a texture like ``sample`` from seeded noise by matching Gram matrices.

    Args:
        model: the loss network (a classifier; SqueezeNet 1.1 or any ImageNet CNN gives
            the best textures, the shapes model works as a fallback).
        sample: the texture image (path, PIL or (H, W, 3) array).
        size: output size: None (the sample's, after ``sample_size``), an int (square) or
            (H, W).
        layers: style layers (default :func:`~.style_losses.default_style_layers`).
        layer_weights: per layer weights (sequence or {layer: weight}); default 1 each.
        sample_size: the sample's size seen by the network: None (longer side = the model's
            input size, e.g. 224), an int (longer side) or (H, W). Textures' scale follows it.
        optimizer: ``lbfgs`` (default) or ``adam``.
        steps: L-BFGS function evaluations or Adam steps.
        lr: Adam's learning rate in pixel units (0-1) (L-BFGS uses 1 with a line search).
        tv_weight: weight of the total variation of the pixels (0: Gatys et al. use none).
        seed: seeds the start noise.
        progress: ``progress(step, total, loss)`` after every step.
        device: torch device.

    Returns:
        a :class:`SynthesisResult` (``method="texture"``); metrics: ``style_loss_start`` and
        ``style_loss_end`` (the Gram loss of the start noise and of the saved 8-bit picture),
        ``style_loss_ratio`` (end / start), ``style_losses`` (the Gram loss at every step),
        ``layers``, ``layer_weights``, ``sample_size``.
    """
    torch = require_torch()
    method = minimizer(optimizer, lr)
    net = LossNetwork(model, style_layers=layers, style_weights=layer_weights, device=device)
    if sample_size is None:
        sample_size = max(model.input_shape[1:])
    target_pixels = load_pixels(sample, sample_size, device)
    targets = net.targets(target_pixels)
    shape = tuple(target_pixels.shape[-2:])
    if size is None:
        out_size = shape
    elif isinstance(size, (int, np.integer)):
        out_size = fit_size(shape, (int(size), int(size)))
    else:
        out_size = fit_size(shape, size)
    x = noise_pixels((1, 3, *out_size), seed, net.device)
    style_history: list[float] = []

    def style_of(pixels: Any) -> Any:
        return net.style_loss(
            net.grams(net.features(pixels, content=False)), targets, per_image=True
        )

    def loss(pixels: Any) -> Any:
        style = style_of(pixels)
        style_history.append(float(style.detach().mean()))
        return style + tv_weight * tv_loss(pixels, per_image=True) if tv_weight else style

    with torch.no_grad():
        start = float(style_of(x).mean())
    run = optimize(UnitPixels(x), loss, method, steps=steps, progress=progress)
    pictures = to_pictures(torch.from_numpy(run.best))
    saved = torch.from_numpy(pictures.transpose(0, 3, 1, 2).copy()).float().to(net.device) / 255
    with torch.no_grad():
        end = float(style_of(saved).mean())
        batch = net.preprocess(saved).cpu().numpy().astype(np.float32)
    metrics = {
        "style_loss_start": start,
        "style_loss_end": end,
        "style_loss_ratio": end / start if start > 0 else 0.0,
        "style_losses": style_history[: run.tracker.steps],
        "layers": list(net.style_layers),
        "layer_weights": list(net.style_weights),
        "sample_size": list(shape),
    }
    options = dict(
        size=list(out_size),
        layers=list(net.style_layers),
        layer_weights=list(net.style_weights),
        sample_size=list(shape),
        optimizer=optimizer,
        steps=steps,
        lr=lr,
        tv_weight=tv_weight,
        seed=seed,
    )
    label = f"gram texture {out_size[0]}x{out_size[1]}"
    return run.result(SynthesisResult, "texture", pictures, batch, metrics, [label], options)
