"""The gradient-synthesis template: every technique that makes an image by optimizing the
model's input runs through :func:`optimize`, as the CAM family runs through one template.

A technique supplies only its two parts:

- its **loss**: ``loss(batch) -> (N,)``, one value per image, lower is better, computed on
  the bridge's taps (an ascent on an objective passes ``-objective``);
- its **parameterization** (:class:`Parameterization`): the variables the optimizer moves,
  the image batch they make and what keeps that image valid (projection, penalty,
  regularizers). The template offers :class:`SteppedPixels` (normalized gradient steps on
  the model input, with the technique's regularizers), :class:`ClampedPixels` (Adam or
  L-BFGS on the model input in units of its pixel range, kept in that range) and
  :class:`UnitPixels` (RGB pixels in [0, 1] with a smooth range penalty);
  :class:`~.fourier.FourierImage` is a spectrum.

The template owns the rest: the checks of the common options (``steps``, ``optimizer``),
the optimizer (:func:`adam`, :func:`lbfgs`, or :func:`gradient_steps`: the
parameterization's own step, coarse to fine over octaves), jitter (random circular shifts of
the image the loss sees), the ``progress(step, total, loss)`` callback, the best batch so
far per image (:class:`~.base.Tracker`), Ctrl-C (or KeyboardInterrupt raised by
``progress``: the run stops and keeps the best batch so far) and the
:class:`~.base.SynthesisResult` (:meth:`Run.result`). Shapes: batches are (N, C, H, W)
tensors; losses (N,).

torch is imported inside functions only (:func:`~.base.require_torch`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from cnnviz_core import InputError, Model

from .base import (
    Progress,
    Start,
    SynthesisResult,
    Tracker,
    bounds,
    channel_tensor,
    coarse_gradient,
    jitter_shifts,
    normalized,
    octave_sizes,
    require_torch,
)

#: ``loss(batch) -> (N,)`` per-image loss of an (N, C, H, W) batch, lower is better
Loss = Callable[[Any], Any]
#: the optimizers a user may name (``optimizer=``); :func:`gradient_steps` is a technique's own
OPTIMIZERS = ("lbfgs", "adam")

R = TypeVar("R", bound=SynthesisResult)


# ------------------------------------------------------------------------ common options


def check_choice(name: str, value: Any, choices: Sequence[Any]) -> None:
    """InputError naming the parameter unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise InputError(f"{name} must be one of {', '.join(map(str, choices))}, got {value!r}")


def check_steps(steps: int) -> None:
    """InputError unless at least one step is asked for."""
    if steps < 1:
        raise InputError(f"steps must be at least 1, got {steps}")


def start_option(start: Start) -> str:
    """How a start is recorded in a result's options: its name, or ``"image"``."""
    return start if isinstance(start, str) else "image"


# ------------------------------------------------------------------------- optimizers


@dataclass(frozen=True)
class Optimizer:
    """How :func:`optimize` moves the parameters (make one with :func:`adam`,
    :func:`lbfgs`, :func:`minimizer` or :func:`gradient_steps`).

    Attributes:
        name: ``adam``, ``lbfgs`` or ``steps`` (:meth:`Parameterization.step`).
        lr: Adam's learning rate (L-BFGS: 1 with a strong-Wolfe line search, history 20).
        exact_budget: L-BFGS: ``steps`` function evaluations and no early stop on torch's
            tolerances (True), or ``steps`` iterations with torch's default budget and
            tolerances (False).
        octaves, octave_scale: ``steps``: resolutions of the changes, coarse to fine.
    """

    name: str
    lr: float = 1.0
    exact_budget: bool = True
    octaves: int = 1
    octave_scale: float = 1.5


def adam(lr: float) -> Optimizer:
    """Adam (Kingma & Ba 2015) with learning rate ``lr``; ``project`` after each step."""
    return Optimizer("adam", lr)


def lbfgs(*, exact_budget: bool = True) -> Optimizer:
    """L-BFGS (strong-Wolfe line search, history 20); see :attr:`Optimizer.exact_budget`."""
    return Optimizer("lbfgs", exact_budget=exact_budget)


def minimizer(name: str, lr: float, *, exact_budget: bool = True) -> Optimizer:
    """The optimizer a user names (``lbfgs`` or ``adam``, see :data:`OPTIMIZERS`)."""
    check_choice("optimizer", name, OPTIMIZERS)
    return adam(lr) if name == "adam" else lbfgs(exact_budget=exact_budget)


def gradient_steps(octaves: int = 1, octave_scale: float = 1.5) -> Optimizer:
    """The parameterization's own gradient step (:meth:`Parameterization.step`), ``steps``
    per octave, coarse to fine (:func:`~.base.coarse_gradient`)."""
    return Optimizer("steps", octaves=octaves, octave_scale=octave_scale)


# --------------------------------------------------------------------- parameterizations


class Parameterization:
    """What an optimizer moves (``params``) and the image batch it makes (``image()``).

    A subclass sets ``params`` and ``image``; the other hooks default to plain pixels.
    """

    #: ``image()`` returns a tensor nothing changes in place later (kept without a copy)
    fresh = False

    @property
    def params(self) -> list[Any]:
        """The tensors Adam or L-BFGS moves."""
        raise NotImplementedError

    def image(self) -> Any:
        """The (N, ...) batch the loss sees, differentiable in ``params``."""
        raise NotImplementedError

    def recorded(self, image: Any) -> Any:
        """What the tracker keeps of an image (default: the image itself)."""
        return image

    def penalty(self, image: Any) -> Any | None:
        """(N,) added to the loss the optimizer minimizes, not to the recorded loss."""
        return None

    def project(self) -> None:
        """After every Adam step, under no_grad (default: nothing)."""

    def settle(self) -> Any:
        """The image to evaluate last, under no_grad (default: ``image()``)."""
        return self.image()

    def step(self, grad: Any, step: int) -> None:
        """:func:`gradient_steps`: move along the loss gradient ``grad`` (step ``step`` of
        the octave), under no_grad."""
        raise NotImplementedError(f"{type(self).__name__} has no gradient step")

    def converged(self) -> bool:
        """:func:`gradient_steps`: stop before recording this step (default: never)."""
        return False


class Pixels(Parameterization):
    """The image batch itself is the variable: ``x``, (N, C, H, W)."""

    def __init__(self, x: Any):
        self.x = x

    @property
    def params(self) -> list[Any]:
        return [self.x]

    def image(self) -> Any:
        return self.x


class ModelPixels(Pixels):
    """Model-input pixels (float32 (N, C, H, W), from the numpy ``start``) with the model's
    per-channel pixel range (:func:`~.base.bounds`) as ``low`` and ``high`` (1, C, 1, 1)."""

    def __init__(self, model: Model, start: np.ndarray):
        torch = require_torch()
        super().__init__(torch.from_numpy(start))
        low, high = bounds(model)
        self.low, self.high = channel_tensor(low, self.x), channel_tensor(high, self.x)

    def clip(self, x: Any) -> Any:
        """``x`` clipped to the pixel range."""
        torch = require_torch()
        return torch.maximum(torch.minimum(x, self.high), self.low)


class SteppedPixels(ModelPixels):
    """Model-input pixels moved by normalized gradient steps (the clipped gradient of
    Yosinski et al. 2015): each step moves ``lr`` of the pixel range against the loss
    gradient divided by its mean absolute value, then ``regularize(x, step)`` (decay, blur:
    the technique's regularizers), then clips to the pixel range.

    Args:
        model: the model (its pixel range).
        start: float32 (N, C, H, W) model-input batch.
        lr: step size as a fraction of the pixel range.
        regularize: ``regularize(x, step) -> x`` after every step, or None.
    """

    fresh = True

    def __init__(
        self,
        model: Model,
        start: np.ndarray,
        lr: float,
        regularize: Callable[[Any, int], Any] | None = None,
    ):
        super().__init__(model, start)
        self.step_size = lr * (self.high - self.low)
        self.regularize = regularize

    def step(self, grad: Any, step: int) -> None:
        x = self.x - self.step_size * normalized(grad)
        if self.regularize is not None:
            x = self.regularize(x, step)
        self.x = self.clip(x)


class ClampedPixels(Parameterization):
    """Model-input pixels moved by Adam or L-BFGS in units of the pixel range: the variable
    is ``u = (x - low) / (high - low)``, each channel in [0, 1] whatever the preprocessing
    (0-1, ImageNet-normalized or Caffe's BGR 0-255), so learning rates, L-BFGS's first step
    and its tolerances mean the same on every model. ``u`` is projected onto [0, 1] after
    every Adam step and at the end (L-BFGS sees the unconstrained problem).

    Args:
        model: the model (its pixel range, :func:`~.base.bounds`).
        start: float32 (N, C, H, W) model-input batch.
    """

    def __init__(self, model: Model, start: np.ndarray):
        torch = require_torch()
        x = torch.from_numpy(np.ascontiguousarray(start, np.float32))
        low, high = bounds(model)
        self.low, self.high = channel_tensor(low, x), channel_tensor(high, x)
        self.span = self.high - self.low
        self.unit = ((x - self.low) / self.span).requires_grad_(True)

    @property
    def params(self) -> list[Any]:
        return [self.unit]

    def image(self) -> Any:
        """The model-input batch ``low + u * (high - low)``, (N, C, H, W)."""
        return self.low + self.unit * self.span

    def project(self) -> None:
        self.unit.clamp_(0.0, 1.0)

    def settle(self) -> Any:
        self.project()
        return self.image()


def range_penalty(pixels: Any) -> Any:
    """Per image (N,): mean squared distance of pixels outside [0, 1] (zero inside)."""
    above = (pixels - 1.0).clamp(min=0.0)
    below = (-pixels).clamp(min=0.0)
    return (above.pow(2) + below.pow(2)).flatten(1).mean(1)


class UnitPixels(Pixels):
    """RGB pixels in [0, 1], (N, 3, H, W), as free variables with a smooth penalty
    ``range_weight * range_penalty`` for leaving [0, 1]; what is recorded is clipped.

    That keeps the problem smooth and unconstrained, as L-BFGS needs (a projection after
    each step corrupts its curvature pairs; clamping inside the objective zeroes the
    gradient of out-of-range pixels), without the vanishing gradients of a sigmoid
    parameterization at saturated pixels (white or black areas of a content image barely
    move through a sigmoid: style losses fell 2-4x slower in our runs). Adam also projects
    onto [0, 1] after each step.

    Args:
        pixels: the start (optimized in place).
        range_weight: weight of the range penalty (1e3).
    """

    fresh = True

    def __init__(self, pixels: Any, range_weight: float = 1e3):
        super().__init__(pixels)
        self.range_weight = range_weight
        self.x.requires_grad_(True)

    def recorded(self, image: Any) -> Any:
        return image.detach().clamp(0.0, 1.0)

    def penalty(self, image: Any) -> Any:
        return self.range_weight * range_penalty(image)

    def project(self) -> None:
        self.x.clamp_(0.0, 1.0)

    def settle(self) -> Any:
        return self.x.clamp(0.0, 1.0)


# ---------------------------------------------------------------------------- the loop


@dataclass
class Run:
    """What :func:`optimize` leaves: the best batch per image (``best``, float32 numpy, as
    :meth:`Parameterization.recorded` made it), the tracker (losses, steps) and whether
    Ctrl-C stopped the run."""

    best: np.ndarray
    tracker: Tracker
    interrupted: bool

    def result(
        self,
        kind: type[R],
        method: str,
        images: np.ndarray,
        batch: np.ndarray,
        metrics: dict[str, Any],
        labels: list[str],
        options: dict[str, Any],
        **extra: Any,
    ) -> R:
        """The technique's result (``kind``: :class:`~.base.SynthesisResult` or a subclass,
        ``extra`` its own fields) with this run's losses, steps and interruption."""
        return kind(
            method,
            images,
            batch,
            self.tracker.losses,
            metrics,
            self.tracker.steps,
            self.interrupted,
            labels,
            options,
            **extra,
        )


def optimize(
    image: Parameterization,
    loss: Loss,
    optimizer: Optimizer,
    *,
    steps: int,
    progress: Progress | None,
    jitter: int = 0,
    seed: int = 0,
) -> Run:
    """Minimize ``loss(image.image())`` (per image) over the parameterization.

    Args:
        image: the parameterization (moved in place).
        loss: the technique's loss, (N,) per image, lower is better.
        optimizer: :func:`adam`, :func:`lbfgs` (``steps`` counts function evaluations) or
            :func:`gradient_steps` (``steps`` per octave).
        steps: steps (at least 1).
        progress: ``progress(step, total, loss)`` after every step; raising
            KeyboardInterrupt from it stops the run like Ctrl-C.
        jitter: each step's loss sees the image shifted circularly by a random (dy, dx)
            within ``jitter`` pixels (0: no shift); the last evaluation is unshifted.
        seed: seeds the jitter.

    Returns:
        a :class:`Run`: interrupted or not, ``best`` holds each image's lowest-loss batch
        (the start when no step was recorded).
    """
    torch = require_torch()
    check_steps(steps)
    rng = np.random.default_rng(seed)

    def step_loss() -> Loss:
        if jitter <= 0:
            return loss
        shift = jitter_shifts(rng, jitter)
        return lambda batch: loss(torch.roll(batch, shifts=shift, dims=(2, 3)))

    sizes: list[tuple[int, int]] = []  # gradient steps: the octaves, coarse to fine
    if optimizer.name == "steps":
        h, w = image.image().shape[-2:]
        sizes = octave_sizes((int(h), int(w)), optimizer.octaves, optimizer.octave_scale)
    else:
        check_choice("optimizer", optimizer.name, OPTIMIZERS)
    tracker = Tracker(steps * max(1, len(sizes)), progress)
    interrupted = False
    try:
        converged = False
        if optimizer.name == "adam":
            _adam(image, step_loss, tracker, steps, optimizer.lr)
        elif optimizer.name == "lbfgs":
            _lbfgs(image, step_loss, tracker, steps, optimizer.exact_budget)
        else:
            converged = _gradient_steps(image, step_loss, tracker, steps, sizes)
        if not converged:
            with torch.no_grad():
                last = image.settle()
                tracker.record(loss(last), image.recorded(last), final=True, fresh=image.fresh)
    except KeyboardInterrupt:
        interrupted = True
    best = tracker.best
    if best is None:
        with torch.no_grad():
            best = image.recorded(image.image()).detach().cpu().float().numpy()
    return Run(best, tracker, interrupted)


def _evaluate(
    image: Parameterization, step_loss: Callable[[], Loss], tracker: Tracker, steps: int
) -> Any:
    """One evaluation of Adam or L-BFGS: the step's loss of the current image, recorded
    while the budget lasts (a line search may evaluate past it), plus the penalty, summed
    over the batch and back-propagated. Returns the sum."""
    batch = image.image()
    values = step_loss()(batch)
    if tracker.steps < steps:
        tracker.record(values, image.recorded(batch), fresh=image.fresh)
    penalty = image.penalty(batch)
    total = (values if penalty is None else values + penalty).sum()
    total.backward()
    return total


def _adam(
    image: Parameterization,
    step_loss: Callable[[], Loss],
    tracker: Tracker,
    steps: int,
    lr: float,
) -> None:
    torch = require_torch()
    opt = torch.optim.Adam(image.params, lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        _evaluate(image, step_loss, tracker, steps)
        opt.step()
        with torch.no_grad():
            image.project()


def _lbfgs(
    image: Parameterization,
    step_loss: Callable[[], Loss],
    tracker: Tracker,
    steps: int,
    exact_budget: bool,
) -> None:
    torch = require_torch()
    budget: dict[str, Any] = (
        {"max_eval": steps, "tolerance_grad": 0.0, "tolerance_change": 0.0} if exact_budget else {}
    )
    opt = torch.optim.LBFGS(
        image.params,
        lr=1.0,
        max_iter=steps,
        history_size=20,
        line_search_fn="strong_wolfe",
        **budget,
    )

    def closure() -> Any:
        opt.zero_grad()
        return _evaluate(image, step_loss, tracker, steps)

    opt.step(closure)


def _gradient_steps(
    image: Parameterization,
    step_loss: Callable[[], Loss],
    tracker: Tracker,
    steps: int,
    sizes: Sequence[tuple[int, int]],
) -> bool:
    """The parameterization's own steps, coarse to fine; True when it converged."""
    torch = require_torch()
    for size in sizes:
        for step in range(steps):
            batch = image.image()
            values, grad = coarse_gradient(step_loss(), batch, size)
            if image.converged():
                return True
            tracker.record(values, image.recorded(batch), fresh=image.fresh)
            with torch.no_grad():
                image.step(grad, step)
    return False
