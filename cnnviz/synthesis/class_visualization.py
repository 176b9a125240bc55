"""Class-model visualization: the image that maximizes a class score (or one feature).

Gradient ascent on the pre-softmax score of a class (Simonyan, Vedaldi & Zisserman 2014,
"Deep inside convolutional networks"), with an L2 penalty, and the regularizers of
Yosinski et al. 2015 ("Understanding neural networks through deep visualization") that make
it look like the class: jitter (random circular shifts before every step), a Gaussian blur
every few steps, clipping of pixels with a small norm, and normalized (clipped) gradient
steps; multi-scale octaves move coarse spatial frequencies first. Channel and neuron
targets (:class:`~cnnviz.attribution.Channel`, :class:`~cnnviz.attribution.Neuron`)
maximize one feature instead: the mean of a channel's map or one element.

    from cnnviz.synthesis import class_visualization
    result = class_visualization(model, ["star", "ring"], steps=40)
    result.images        # (2, 64, 64, 3) uint8; result.metrics["probability"] per image

Values that work on the shipped shapes model (64x64): the defaults: 30-40 steps give every class a
probability >= 0.9 (0.95-1.0).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from cnnviz_core import Model
from cnnviz_core.targets import ResolvedTarget, TargetLike, resolve_target

from .base import (
    Progress,
    Start,
    SynthesisResult,
    bridge,
    gaussian_blur,
    pixels,
    quantized,
    require_torch,
    start_batch,
)
from .fourier import FourierImage
from .template import (
    Optimizer,
    Parameterization,
    SteppedPixels,
    adam,
    check_choice,
    gradient_steps,
    optimize,
    start_option,
)

PARAMETERIZATIONS = ("pixel", "fourier")


def objective_function(
    net: Any, targets: Sequence[ResolvedTarget], contrast: float = 0.0
) -> Callable[[Any], Any]:
    """The (N,) objective of a batch, image i optimizing targets[i]: its target's class score
    (minus ``contrast`` times the log-sum-exp of the other scores), channel mean or neuron
    value. What does not change between steps (the tensors to tap, the class rows and
    indices, the masks of the other classes) is worked out once, not every step."""
    torch = require_torch()
    tensors = sorted({t.tensor for t in targets})
    n = len(targets)
    classes = []  # per score tensor: its class rows and their class indices
    for tensor in tensors:
        rows = [i for i, t in enumerate(targets) if t.kind == "class" and t.tensor == tensor]
        if rows:
            classes.append((tensor, rows, [targets[i].index[0] for i in rows]))
    features = [(i, t) for i, t in enumerate(targets) if t.kind != "class"]
    made: dict[tuple, tuple[Any, Any]] = {}  # (tensor, device, classes) -> (index, own mask)

    def index_and_mask(tensor: str, index: list[int], scores: Any) -> tuple[Any, Any]:
        key = (tensor, scores.device, scores.shape[1])
        if key not in made:
            at = torch.tensor(index, device=scores.device)
            made[key] = (at, torch.nn.functional.one_hot(at, scores.shape[1]).bool())
        return made[key]

    def objective(x: Any) -> Any:
        values = net(x, taps=tensors, outputs=False)
        out: list[Any] = [None] * n
        for tensor, rows, index in classes:
            scores = values[tensor]
            if len(rows) != len(scores):
                scores = scores[rows]
            scores = scores.reshape(len(rows), -1)
            at, own = index_and_mask(tensor, index, scores)
            value = scores.gather(1, at[:, None])[:, 0]
            if contrast:
                others = scores.masked_fill(own, -torch.inf)
                value = value - contrast * torch.logsumexp(others, dim=1)
            if len(rows) == n:
                return value
            for i, v in zip(rows, value.unbind()):
                out[i] = v
        for i, t in features:
            v = values[t.tensor][i]
            out[i] = v[t.index[0]].mean() if t.kind == "channel" else v[t.index]
        return torch.stack(out)

    return objective


def class_visualization(
    model: Model,
    target: TargetLike | Sequence[TargetLike],
    *,
    steps: int = 40,
    lr: float | None = None,
    l2: float = 0.005,
    jitter: int = 4,
    blur_every: int = 4,
    blur_sigma: float = 0.5,
    pixel_clip: float = 0.0,
    octaves: int = 1,
    octave_scale: float = 1.5,
    contrast: float = 1.0,
    parameterization: str = "pixel",
    decay: float = 1.0,
    start: Start = "zeros",
    seed: int = 0,
    progress: Progress | None = None,
) -> SynthesisResult:
    """Synthesize one image per target by gradient ascent on its objective.

    Every step: shift the image by a random (dy, dx) within ``jitter`` pixels, take the
    gradient of the objective (class score before softmax, channel mean or neuron), divide
    it by its mean absolute value and move ``lr`` times the pixel range along it; then decay
    the image towards zero by ``l2`` (the L2 penalty as weight decay) and clip to the valid
    pixel range. Every ``blur_every`` steps: blur by ``blur_sigma`` pixels and set the pixels
    whose norm lies below the ``pixel_clip`` quantile to zero.

    Args:
        model: the model (its pre-softmax scores are used for class targets).
        target: a class (index, label, :class:`Class`), a :class:`Channel` or
            :class:`Neuron`, or a list of them (one image each, optimized as one batch).
        steps: steps per octave (shapes model: 30-40).
        lr: pixel parameterization: step size as a fraction of the pixel range (default
            0.005: about 1.3 of 255 levels on average; 0.02 overshoots on the shapes model
            and the score oscillates); fourier: Adam's learning rate on the spectrum
            (default 0.05, as Lucid).
        l2: L2 penalty, as the fraction the image decays towards zero per step (0.005).
        jitter: largest random shift in pixels (4; 0 turns jitter off).
        blur_every: blur (and pixel-clip) every this many steps (4; 0: never).
        blur_sigma: Gaussian blur width in pixels (0.5).
        pixel_clip: quantile of per-pixel norms set to zero at each blur (0: off; 0.1
            removes the weakest 10%).
        octaves: resolutions, coarse to fine, by ``octave_scale`` (1: full size only).
        octave_scale: ratio between successive octaves (1.5).
        contrast: class targets maximize ``score - contrast * logsumexp(other scores)``, all
            pre-softmax: 1 (default) is the class's log-odds, 0 the pure score of Simonyan
            et al. On the shapes model the pure score also raises related classes (a
            "triangle" image ends up scoring "star" higher), so 1 is what gives every class
            its own image; channel and neuron targets ignore it.
        parameterization: ``"pixel"`` (default: ascent on the pixels, with the regularizers
            above) or ``"fourier"`` (Olah et al. 2017: Adam on a 1/frequency-scaled spectrum
            of decorrelated colours through a sigmoid, see :mod:`cnnviz.synthesis.fourier`;
            the parameterization is the regularizer, so ``l2``, ``blur_*``, ``pixel_clip``,
            ``octaves`` and ``start`` do not apply; jitter does). Shapes model: 40 steps give
            p >= 0.9.
        decay: fourier only: the spectrum is scaled by 1 / frequency**decay (1).
        start: ``"zeros"`` (the seeds' choice), ``"noise"`` or image(s).
        seed: seeds the start noise and the jitter: same seed, same image.
        progress: ``progress(step, total, loss)`` after every step.

    Returns:
        a :class:`SynthesisResult`; metrics: ``objective`` (per image, on the saved
        picture), ``probability`` of the target class and ``predicted`` class for class
        targets.
    """
    torch = require_torch()
    check_choice("parameterization", parameterization, PARAMETERIZATIONS)
    if lr is None:
        lr = 0.05 if parameterization == "fourier" else 0.005
    wanted: list[TargetLike]
    if isinstance(target, str) or not isinstance(target, Sequence):
        wanted = [target]
    else:
        wanted = list(target)
    targets = [resolve_target(model, t) for t in wanted]
    net = bridge(model)
    n = len(targets)

    def regularize(x: Any, step: int) -> Any:
        x = x * (1.0 - l2)
        if blur_every and (step + 1) % blur_every == 0:
            x = gaussian_blur(x, blur_sigma)
            if pixel_clip > 0:
                norms = x.norm(dim=1, keepdim=True)
                cut = torch.quantile(norms.flatten(1), pixel_clip, dim=1)
                x = x * (norms >= cut.view(-1, 1, 1, 1))
        return x

    objective = objective_function(net, targets, contrast)
    image: Parameterization
    optimizer: Optimizer
    if parameterization == "fourier":
        image, optimizer = FourierImage(model, n, seed, decay), adam(lr)
    else:
        image = SteppedPixels(model, start_batch(model, start, n, seed), lr, regularize)
        optimizer = gradient_steps(octaves, octave_scale)
    run = optimize(
        image,
        lambda batch: -objective(batch),
        optimizer,
        steps=steps,
        jitter=jitter,
        seed=seed,
        progress=progress,
    )
    options = dict(
        steps=steps,
        lr=lr,
        l2=l2,
        jitter=jitter,
        blur_every=blur_every,
        blur_sigma=blur_sigma,
        pixel_clip=pixel_clip,
        octaves=octaves,
        octave_scale=octave_scale,
        contrast=contrast,
        parameterization=parameterization,
        decay=decay,
        start=start_option(start),
        seed=seed,
    )
    return run.result(
        SynthesisResult,
        "class-visualization",
        pixels(model, run.best),
        run.best,
        _metrics(model, net, run.best, targets),
        [t.label for t in targets],
        options,
    )


def _metrics(
    model: Model, net: Any, batch: np.ndarray, targets: Sequence[ResolvedTarget]
) -> dict[str, Any]:
    """Objective, and for class targets probability and prediction, of the saved pictures."""
    torch = require_torch()
    seen = quantized(model, batch)
    with torch.no_grad():
        objective = objective_function(net, targets)(torch.from_numpy(seen)).numpy()
    metrics: dict[str, Any] = {"objective": [float(v) for v in objective]}
    if any(t.kind == "class" for t in targets):
        probabilities = model.probabilities(seen)
        metrics["predicted"] = [int(p.argmax()) for p in probabilities]
        metrics["probability"] = [
            float(p[t.class_index]) if t.class_index is not None else float("nan")
            for p, t in zip(probabilities, targets)
        ]
    return metrics
