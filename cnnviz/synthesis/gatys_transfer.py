"""Neural style transfer: Gatys, Ecker & Bethge 2016 ("Image Style Transfer Using
Convolutional Neural Networks").

The picture x minimizes ``content_weight * L_content + style_weight * L_style + tv_weight *
TV``: ``L_content`` compares x's feature maps at one middle layer with the content image's,
``L_style`` the Gram matrices at several layers with the style image's (the texture loss of
:mod:`.texture`), TV smooths the pixels. Started from the content image (the usual
choice: converges in tens of L-BFGS iterations) or from noise (the paper's choice).

    from cnnviz.synthesis import style_transfer
    result = style_transfer(model, "photo.jpg", "starry_night.jpg", size=256)
    result.metrics["style_loss_end"] / result.metrics["style_loss_start"]

Weights. Gatys et al. weigh content against style as alpha / beta = 1e-3 to 1e-4 with VGG-19
and raw Gram sums. Here both losses are relative (:mod:`.style_losses`: each starts near 1 from
noise whatever the network's input scale), so the ratio means something else: with the
defaults ``content_weight=1``, ``style_weight=1e3``, ``tv_weight=1`` (pixels in [0, 1])
the style dominates as in the paper while the content layer keeps the layout.
SqueezeNet 1.1 (default layers conv1_2, fire2, fire4, fire6; content fire5): style_weight
1e2 to 1e4 (lower keeps more of the photo), 50-200 L-BFGS iterations at 256 px. The
shapes model: its features are coarse (eight shapes), style_weight 1e2 to 1e3 moves colours
and strokes; expect blotchy results rather than painting.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from cnnviz_core import InputError, Model
from cnnviz_core.preprocess import ImageLike

from .base import Progress, SynthesisResult, require_torch
from .style_losses import LossNetwork, Size, load_pixels, noise_pixels, to_pictures, tv_loss
from .template import UnitPixels, check_choice, minimizer, optimize

INITS = ("content", "noise")


def style_transfer(
    model: Model,
    content: ImageLike,
    style: ImageLike,
    *,
    content_layer: str | None = None,
    style_layers: Sequence[str] | None = None,
    style_layer_weights: Sequence[float] | Mapping[str, float] | None = None,
    content_weight: float = 1.0,
    style_weight: float = 1e3,
    tv_weight: float = 1.0,
    init: str = "content",
    optimizer: str = "lbfgs",
    steps: int = 100,
    lr: float = 0.02,
    size: Size | None = None,
    style_size: Size | None = None,
    seed: int = 0,
    progress: Progress | None = None,
    device: str = "cpu",
) -> SynthesisResult:
    """Paint ``content`` in the style of ``style``.

    Args:
        model: the loss network (SqueezeNet 1.1 or any ImageNet CNN; the shapes model as a
            fallback).
        content, style: images (paths, PIL or (H, W, 3) arrays).
        content_layer: default :func:`~.style_losses.default_content_layer`.
        style_layers: default :func:`~.style_losses.default_style_layers`.
        style_layer_weights: per style layer (sequence or {layer: weight}); default 1 each.
        content_weight, style_weight, tv_weight: the weights of the three terms (see the
            module docstring).
        init: ``content`` (start from the content image) or ``noise`` (seeded white noise).
        optimizer: ``lbfgs`` (default) or ``adam`` (lr in pixel units, 0-1).
        steps: L-BFGS function evaluations or Adam steps.
        size: the output (and content) size: None (longer side = the model's input size),
            an int (longer side, aspect kept) or (H, W).
        style_size: the style image's size: None (longer side = the output's longer side),
            an int or (H, W). Brush strokes scale with it.
        seed: seeds the noise start.
        progress: ``progress(step, total, loss)`` after every step.
        device: torch device.

    Returns:
        a :class:`SynthesisResult` (``method="style-transfer"``); metrics:
        ``content_loss_start``/``_end``, ``style_loss_start``/``_end`` (unweighted, of the
        start image and of the saved 8-bit picture), ``content_losses``, ``style_losses``
        (every step), ``content_layer``, ``style_layers``.
    """
    torch = require_torch()
    check_choice("init", init, INITS)
    method = minimizer(optimizer, lr)
    for name, weight in (
        ("content_weight", content_weight),
        ("style_weight", style_weight),
        ("tv_weight", tv_weight),
    ):
        if not np.isfinite(weight) or weight < 0:
            raise InputError(f"{name} must be a finite number >= 0, got {weight}")
    net = LossNetwork(
        model,
        style_layers=style_layers,
        content_layer=content_layer,
        style_weights=style_layer_weights,
        device=device,
    )
    content_pixels = load_pixels(content, size or max(model.input_shape[1:]), net.device)
    shape = tuple(content_pixels.shape[-2:])
    style_pixels = load_pixels(style, style_size or max(shape), net.device)
    targets = net.targets(style_pixels)
    content_target = net.content_targets(content_pixels)
    if init == "content":
        x = content_pixels.clone()
    else:
        x = noise_pixels((1, 3, *shape), seed, net.device)
    history: dict[str, list[float]] = {"content": [], "style": []}

    def terms(pixels: Any) -> tuple[Any, Any]:
        features = net.features(pixels)
        return (
            net.content_loss(features, content_target, per_image=True),
            net.style_loss(net.grams(features), targets, per_image=True),
        )

    def loss(pixels: Any) -> Any:
        content_loss, style_loss = terms(pixels)
        history["content"].append(float(content_loss.detach().mean()))
        history["style"].append(float(style_loss.detach().mean()))
        total = content_weight * content_loss + style_weight * style_loss
        return total + tv_weight * tv_loss(pixels, per_image=True) if tv_weight else total

    with torch.no_grad():
        content_start, style_start = (float(t.mean()) for t in terms(x))
    image = UnitPixels(x, range_weight=max(1e3, content_weight, style_weight))
    run = optimize(image, loss, method, steps=steps, progress=progress)
    pictures = to_pictures(torch.from_numpy(run.best))
    saved = torch.from_numpy(pictures.transpose(0, 3, 1, 2).copy()).float().to(net.device) / 255
    with torch.no_grad():
        content_end, style_end = (float(t.mean()) for t in terms(saved))
        batch = net.preprocess(saved).cpu().numpy().astype(np.float32)
    metrics = {
        "content_loss_start": content_start,
        "content_loss_end": content_end,
        "style_loss_start": style_start,
        "style_loss_end": style_end,
        "content_losses": history["content"][: run.tracker.steps],
        "style_losses": history["style"][: run.tracker.steps],
        "content_layer": net.content_layer,
        "style_layers": list(net.style_layers),
    }
    options = dict(
        content_layer=net.content_layer,
        style_layers=list(net.style_layers),
        style_layer_weights=list(net.style_weights),
        content_weight=content_weight,
        style_weight=style_weight,
        tv_weight=tv_weight,
        init=init,
        optimizer=optimizer,
        steps=steps,
        lr=lr,
        size=list(shape),
        style_size=list(style_pixels.shape[-2:]),
        seed=seed,
    )
    label = f"style transfer ({init} start)"
    return run.result(SynthesisResult, "style-transfer", pictures, batch, metrics, [label], options)
