"""Adversarial (fooling) images: a small change that makes the model predict a chosen class.

Targeted iterative FGSM (Kurakin, Goodfellow & Bengio 2017) and PGD (Madry et al. 2018,
with a random start): step against the sign of the gradient of the cross-entropy to the
target class, in pixel space (0-255 levels, mapped through the preprocessing's scale, mean
and std inside the graph), projected onto an L-inf ball of ``epsilon`` levels around the
original and onto 0-255; pixels stay whole levels, so the saved PNG is exactly the image
that was checked. Each image stops as soon as the model predicts the target.

    from cnnviz.synthesis import fool
    result = fool(model, "star.png", target="circle")
    result.metrics["steps"], result.metrics["linf"], result.difference    # magnified

Values that work on the shipped shapes model: the defaults (epsilon 8 levels, step 1
level, at most 100 steps) fool it into any class within a few to a few tens of steps.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cnnviz_core import InputError, Model
from cnnviz_core.preprocess import ImageLike
from cnnviz_core.targets import TargetLike, resolve_target, score_tensor

from .base import Progress, SynthesisResult, bridge, require_torch
from .template import Pixels, gradient_steps, optimize


@dataclass
class AdversarialResult(SynthesisResult):
    """A :class:`SynthesisResult` with the originals and the magnified differences.

    Attributes:
        original: (N, H, W, 3) uint8, the images before the change.
        difference: (N, H, W, 3) uint8, ``128 + magnify * (adversarial - original)``.
    """

    original: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, 0, 3), np.uint8))
    difference: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, 0, 3), np.uint8))


def fool(
    model: Model,
    image: ImageLike | Sequence[ImageLike] | np.ndarray,
    target: TargetLike | Sequence[TargetLike],
    *,
    epsilon: float = 8.0,
    step_size: float = 1.0,
    steps: int = 100,
    random_start: bool = False,
    magnify: float = 10.0,
    seed: int = 0,
    progress: Progress | None = None,
) -> AdversarialResult:
    """Change image(s) within ``epsilon`` pixel levels until predicted as ``target``.

    Args:
        model: the model.
        image: the image(s) to change (paths, PIL, HWC arrays).
        target: the class to be predicted (index or label; one, or one per image).
        epsilon: L-inf budget in 0-255 pixel levels (8 = 8/255 of the pixel range).
        step_size: levels per step (1; whole levels keep pixels on the 8-bit grid).
        steps: most steps (100).
        random_start: PGD: start at a random point of the ball (seeded) instead of the
            image (iterative FGSM).
        magnify: factor of the difference picture (10).
        seed: seeds the random start.
        progress: ``progress(step, total, loss)`` after every step (loss: mean
            cross-entropy to the target).

    Returns:
        an :class:`AdversarialResult`; metrics per image: ``success`` (predicted as the
        target by the model), ``steps`` (steps taken until then), ``linf`` and ``l2`` of
        the change in pixel levels, ``linf_fraction`` (linf / 255), ``probability`` of the
        target and ``original_class``.
    """
    torch = require_torch()
    net = bridge(model)
    pre = model.preprocess
    original = pre.invert(model.prepare(image))  # (N, H, W, 3) uint8 as the model sees it
    n = len(original)
    wanted: list[TargetLike]
    if isinstance(target, str) or not isinstance(target, Sequence):
        wanted = [target] * n
    else:
        wanted = list(target)
    resolved = [resolve_target(model, t) for t in wanted]
    classes = [r.class_index for r in resolved if r.class_index is not None]
    if len(classes) != len(resolved):
        labels = ", ".join(r.label for r in resolved if r.class_index is None)
        raise InputError(f"target must be classes (index or label) to fool into, got {labels}")
    goal = torch.tensor(classes, dtype=torch.long)
    scores_name = score_tensor(model)
    base = torch.from_numpy(_model_order(model, original))  # (N, C, H, W) levels
    scale = float(pre.scale)
    mean = torch.tensor(pre.mean, dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(pre.std, dtype=torch.float32).view(1, -1, 1, 1)
    levels = PixelLevels(base, epsilon, step_size)
    if random_start:
        rng = np.random.default_rng(seed)
        noise = rng.integers(-int(epsilon), int(epsilon) + 1, size=tuple(base.shape))
        levels.x = (levels.x + torch.from_numpy(noise.astype(np.float32))).clamp(0, 255)

    def loss(batch: Any) -> Any:
        """Cross-entropy to the target class per image; images predicted as their target
        are done (they stop moving)."""
        x = (batch * scale - mean) / std
        scores = net(x, taps=[scores_name], outputs=False)[scores_name].reshape(n, -1)
        levels.done = levels.done | (scores.argmax(dim=1) == goal).detach()
        return torch.nn.functional.cross_entropy(scores, goal, reduction="none")

    run = optimize(levels, loss, gradient_steps(), steps=steps, progress=progress)
    final = levels.x.detach().numpy() if not run.interrupted else run.best
    final = np.clip(np.rint(final), 0, 255)
    batch = ((final * np.float32(scale) - mean.numpy()) / std.numpy()).astype(np.float32)
    pictures = pre.invert(batch)
    change = pictures.astype(np.float64) - original.astype(np.float64)
    probabilities = model.probabilities(model.prepare(pictures))
    before = model.probabilities(model.prepare(original)).argmax(axis=1)
    linf = np.abs(change).reshape(n, -1).max(axis=1)
    metrics = {
        "success": [bool(row.argmax() == c) for row, c in zip(probabilities, classes)],
        "steps": [int(t) for t in levels.taken],
        "linf": [float(v) for v in linf],
        "linf_fraction": [float(v / 255.0) for v in linf],
        "l2": [float(v) for v in np.sqrt((change**2).reshape(n, -1).sum(axis=1))],
        "probability": [float(row[c]) for row, c in zip(probabilities, classes)],
        "original_class": [int(c) for c in before],
    }
    difference = np.clip(np.rint(128 + magnify * change), 0, 255).astype(np.uint8)
    options = dict(
        epsilon=epsilon,
        step_size=step_size,
        steps=steps,
        random_start=random_start,
        magnify=magnify,
        seed=seed,
    )
    return run.result(
        AdversarialResult,
        "adversarial",
        pictures,
        batch,
        metrics,
        [f"{model.label(o)} -> {model.label(c)}" for o, c in zip(before, classes)],
        options,
        original=original,
        difference=difference,
    )


class PixelLevels(Pixels):
    """Pixel levels (N, C, H, W), 0-255 in the model's channel order, moved by the signed
    gradient (Kurakin et al. 2017): ``step_size`` levels against the sign of the loss
    gradient, projected onto the L-inf ball of ``epsilon`` around ``base`` and onto the
    whole levels 0-255. Images that are ``done`` stop moving; ``taken`` counts each image's
    steps; the run converges when every image is done."""

    fresh = True

    def __init__(self, base: Any, epsilon: float, step_size: float):
        torch = require_torch()
        super().__init__(base.clone())
        self.base, self.epsilon, self.step_size = base, epsilon, step_size
        self.done = torch.zeros(len(base), dtype=torch.bool)
        self.taken = np.zeros(len(base), np.int64)

    def converged(self) -> bool:
        return bool(self.done.all())

    def step(self, grad: Any, step: int) -> None:
        torch = require_torch()
        move = (~self.done).view(-1, 1, 1, 1).float()
        x = self.x - move * self.step_size * grad.sign()
        x = torch.minimum(torch.maximum(x, self.base - self.epsilon), self.base + self.epsilon)
        self.x = x.clamp(0, 255).round()
        self.taken += (~self.done).numpy()


def _model_order(model: Model, rgb: np.ndarray) -> np.ndarray:
    """(N, H, W, 3) uint8 RGB -> float32 (N, C, H, W) levels in the model's channel order."""
    order = model.preprocess.channel_order
    levels = rgb.astype(np.float32)
    if order == "BGR":
        levels = levels[..., ::-1]
    elif order == "L":
        levels = levels @ np.array([0.299, 0.587, 0.114], np.float32)
        levels = np.rint(levels)[..., None]
    return np.ascontiguousarray(levels.transpose(0, 3, 1, 2))
