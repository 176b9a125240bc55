"""Feature inversion: the image whose features at a layer match those of a given image.

Mahendran & Vedaldi 2015 ("Understanding deep image representations by inverting them"):
minimize ``||phi(x) - phi(x0)||^2 / ||phi(x0)||^2 + tv * TV_beta(x) + lp * ||x||_p^p``
over the image x, with ``TV_beta`` the total variation (squared differences of neighbours
raised to beta/2) and ``||x||_p^p`` an Lp norm (p = 6 keeps pixels in range), both on the
image in units of its pixel range. Shallow layers keep the picture; deep ones keep what the
classifier needs (:func:`invert_layers` shows the progression).

    from cnnviz.synthesis import invert_layers
    results = invert_layers(model, "star.png")          # ReLU layers, shallow to deep
    [r.metrics["psnr"] for r in results]                 # dB, falls with depth

Values that work on the shipped shapes model: the defaults (L-BFGS, 60 iterations, TV
0.01): the first ReLU reconstructs at about 26 dB PSNR, the first Conv at about 50 dB,
relu_1 to relu_3 at about 8 dB (shape and colour layout kept, textures lost).
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
    bounds,
    bridge,
    pixels,
    psnr,
    require_torch,
    start_batch,
)
from .template import ClampedPixels, minimizer, optimize, start_option

RELU_LIKE = ("Relu", "LeakyRelu", "Clip", "PRelu", "Elu", "Sigmoid", "Tanh")


def default_layers(model: Model) -> list[str]:
    """The ReLU-like layers with feature maps (4-D outputs), shallow to deep."""
    return [
        layer.name
        for layer in model.layers
        if layer.op_type in RELU_LIKE and layer.shape is not None and len(layer.shape) == 4
    ]


def total_variation(x: Any, beta: float = 2.0) -> Any:
    """Per-image TV_beta: mean over pixels of (dx^2 + dy^2)^(beta/2), (N,)."""
    dx = x[:, :, :-1, 1:] - x[:, :, :-1, :-1]
    dy = x[:, :, 1:, :-1] - x[:, :, :-1, :-1]
    return ((dx**2 + dy**2 + 1e-12) ** (beta / 2)).mean(dim=(1, 2, 3))


def invert(
    model: Model,
    image: ImageLike | Sequence[ImageLike] | np.ndarray,
    layer: str,
    *,
    steps: int = 60,
    optimizer: str = "lbfgs",
    lr: float = 0.05,
    tv: float = 0.01,
    beta: float = 2.0,
    lp: float = 1e-3,
    p: float = 6.0,
    start: Start = "noise",
    seed: int = 0,
    progress: Progress | None = None,
) -> SynthesisResult:
    """Reconstruct image(s) from their features at ``layer``.

    Args:
        model: the model.
        image: image(s) whose features to match (paths, PIL, HWC arrays).
        layer: layer name or alias (``cnnviz layers``).
        steps: L-BFGS iterations (60) or Adam steps (Adam needs several hundred).
        optimizer: ``lbfgs`` (default: converges in tens of iterations) or ``adam``.
        lr: Adam's learning rate as a fraction of the pixel range (0.05): the image is
            optimized in units of its range (:class:`~.template.ClampedPixels`), so the
            same values work on 0-1, normalized and 0-255 (Caffe) inputs; L-BFGS uses 1.
        tv: weight of the total variation TV_beta (0.01; raise it, e.g. 0.05, for deep
            layers to get smoother pictures).
        beta: exponent of the total variation (2).
        lp: weight of the Lp norm of the image (1e-3).
        p: exponent of the Lp norm (6, as Mahendran & Vedaldi).
        start: ``"noise"`` (default, as the paper), ``"zeros"`` or image(s).
        seed: seeds the start noise.
        progress: ``progress(step, total, loss)`` after every step.

    Returns:
        a :class:`SynthesisResult`; metrics per image: ``psnr`` (dB, picture against the
        original's), ``feature_error`` (relative L2 error of the features).
    """
    torch = require_torch()
    method = minimizer(optimizer, lr, exact_budget=False)
    net = bridge(model)
    name = model.tensor_name(layer)
    original = model.prepare(image)
    n = len(original)
    with torch.no_grad():
        goal = net(torch.from_numpy(original), taps=[name], outputs=False)[name]
    goal_norm = goal.flatten(1).pow(2).sum(dim=1) + 1e-12
    pixels_in_range = ClampedPixels(model, start_batch(model, start, n, seed))
    low, high = pixels_in_range.low, pixels_in_range.high
    span, middle = high - low, (high + low) / 2

    def loss(x: Any) -> Any:
        features = net(x, taps=[name], outputs=False)[name]
        error = (features - goal).flatten(1).pow(2).sum(dim=1) / goal_norm
        unit = (x - middle) / span
        return (
            error
            + tv * total_variation(unit, beta)
            + lp * ((2 * unit).abs() ** p).mean(dim=(1, 2, 3))
        )

    run = optimize(pixels_in_range, loss, method, steps=steps, progress=progress)
    low_np, high_np = bounds(model)
    best = np.clip(run.best, low_np[:, None, None], high_np[:, None, None])
    pictures, reference = pixels(model, best), pixels(model, original)
    with torch.no_grad():
        seen = net(torch.from_numpy(model.prepare(pictures)), taps=[name], outputs=False)[name]
    error = ((seen - goal).flatten(1).pow(2).sum(dim=1) / goal_norm).sqrt().numpy()
    metrics = {
        "psnr": [psnr(a, b) for a, b in zip(pictures, reference)],
        "feature_error": [float(e) for e in error],
    }
    options = dict(
        layer=layer,
        steps=steps,
        optimizer=optimizer,
        lr=lr,
        tv=tv,
        beta=beta,
        lp=lp,
        p=p,
        start=start_option(start),
        seed=seed,
    )
    return run.result(
        SynthesisResult, "inversion", pictures, best, metrics, [f"{layer}"] * n, options
    )


def invert_layers(
    model: Model,
    image: ImageLike | Sequence[ImageLike] | np.ndarray,
    layers: Sequence[str] | None = None,
    **options: Any,
) -> list[SynthesisResult]:
    """:func:`invert` at several layers, shallow to deep (default :func:`default_layers`);
    ``options`` go to :func:`invert`. An interrupted layer stops the series (its best
    image is the last result)."""
    names = list(layers) if layers is not None else default_layers(model)
    results = []
    for name in names:
        result = invert(model, image, name, **options)
        results.append(result)
        if result.interrupted:
            break
    return results
