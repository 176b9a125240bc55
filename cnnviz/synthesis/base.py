"""The pieces the synthesis techniques share: the result, start images, pixel bounds, jitter,
blur, octaves and the best-so-far bookkeeping (:class:`Tracker`). The loop that puts them
together is the template, :mod:`.template`.

torch is imported inside functions only (:func:`require_torch`), so importing this module
and :mod:`cnnviz.synthesis` works without it. Shape convention: model inputs are float
(N, C, H, W) in the model's channel order; pictures are uint8 (N, H, W, 3) RGB, made with
``model.preprocess.invert``.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cnnviz_core import InputError, Model
from cnnviz_core.preprocess import ImageLike

from ..render.display import Displayable
from ..render.images import tile_grid

#: what to run when torch is missing
INSTALL_HINT = "pip install 'cnnviz[torch]'"

#: ``progress(step, total, loss)``: called after every step (1-based); raising
#: KeyboardInterrupt from it stops the run like Ctrl-C does (the best image so far is kept)
Progress = Callable[[int, int, float], None]
#: a start image: ``"zeros"`` (the all-zero model input, i.e. the preprocessing mean),
#: ``"noise"`` (seeded Gaussian noise around it), or images (paths, PIL, HWC arrays)
Start = str | ImageLike | Sequence[ImageLike] | np.ndarray


def require_torch() -> Any:
    """The ``torch`` module, or an ImportError that says how to install it."""
    try:
        import torch
    except ImportError as error:
        raise ImportError(
            f"cnnviz.synthesis needs PyTorch, which is not installed: {INSTALL_HINT}"
        ) from error
    return torch


@dataclass
class SynthesisResult(Displayable):
    """A synthesized image (or a batch of them) and how it was made.

    Attributes:
        method: ``class-visualization``, ``multifaceted``, ``inversion``, ``deepdream``,
            ``adversarial``, ``texture`` or ``style-transfer``.
        images: (N, H, W, 3) uint8 RGB, the model input made displayable.
        batch: float32 (N, C, H, W) model input the pictures come from (best so far).
        losses: the loss (mean over the batch) after every step, lower is better.
        metrics: figures about the result, per image as lists where they differ per image.
        steps: steps done.
        interrupted: the run was stopped (Ctrl-C) and returned the best image so far.
        labels: one description per image (target, layer...).
        options: the parameters used.
    """

    method: str
    images: np.ndarray
    batch: np.ndarray
    losses: list[float]
    metrics: dict[str, Any]
    steps: int
    interrupted: bool = False
    labels: list[str] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def image(self) -> np.ndarray:
        """The first picture, (H, W, 3) uint8."""
        return self.images[0]

    def __len__(self) -> int:
        return len(self.images)

    def picture(self) -> np.ndarray:
        """The pictures in a grid (up to 8 per row), (H, W, 3) uint8 (what Jupyter and
        ``plot()`` show, see :class:`~cnnviz.render.display.Displayable`)."""
        tiles = list(self.images)
        return tile_grid(tiles, columns=min(8, len(tiles)), pad=2, background=255)

    def facts(self) -> list[tuple[str, object]]:
        """Method, labels, steps, last loss and metrics, for the HTML display."""
        rows: list[tuple[str, object]] = [("method", self.method)]
        if self.labels:
            rows.append(("images", ", ".join(self.labels)))
        rows.append(("steps", f"{self.steps}{' (interrupted)' if self.interrupted else ''}"))
        if self.losses:
            rows.append(("final loss", f"{self.losses[-1]:.4g}"))
        rows += [(key, value) for key, value in self.metrics.items()]
        return rows


# --------------------------------------------------------------------------- the network

_NETS: weakref.WeakKeyDictionary[Model, Any] = weakref.WeakKeyDictionary()


def bridge(model: Model) -> Any:
    """The model as a torch module (converted once per model, gradients off for weights)."""
    require_torch()
    net = _NETS.get(model)
    if net is None:
        from cnnviz_core.torch_bridge import to_torch

        net = to_torch(model).eval()
        for p in net.parameters():
            p.requires_grad_(False)
        _NETS[model] = net
    return net


# ------------------------------------------------------------------------------ pixels


def bounds(model: Model) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel lowest and highest model input (pixel values 0 and 255 preprocessed),
    each float32 (C,)."""
    pre = model.preprocess
    mean = np.asarray(pre.mean, np.float64)
    std = np.asarray(pre.std, np.float64)
    low = (0.0 * pre.scale - mean) / std
    high = (255.0 * pre.scale - mean) / std
    return np.minimum(low, high).astype(np.float32), np.maximum(low, high).astype(np.float32)


def start_batch(model: Model, start: Start, n: int, seed: int, noise: float = 0.1) -> np.ndarray:
    """The float32 (n, C, H, W) batch an optimisation starts from.

    Args:
        start: ``"zeros"`` (the all-zero model input: the preprocessing mean, grey for the
            shapes model; where Simonyan et al. 2014 start), ``"noise"`` (zeros plus Gaussian
            noise of ``noise`` times the pixel range, seeded), or one image (repeated) or n
            images.
        seed: seed of the noise.
    """
    c, h, w = model.input_shape
    if isinstance(start, str) and start in ("zeros", "noise"):
        batch = np.zeros((n, c, h, w), np.float32)
        if start == "noise":
            low, high = bounds(model)
            rng = np.random.default_rng(seed)
            batch += (
                rng.standard_normal(batch.shape).astype(np.float32)
                * (noise * (high - low))[:, None, None]
            )
            batch = np.clip(batch, low[:, None, None], high[:, None, None])
        return batch
    batch = model.prepare(start)
    if len(batch) == 1 and n > 1:
        batch = np.repeat(batch, n, axis=0)
    if len(batch) != n:
        raise InputError(f"{len(batch)} start images given for {n} images to synthesize")
    return batch.astype(np.float32)


def pixels(model: Model, batch: np.ndarray) -> np.ndarray:
    """(N, H, W, 3) uint8 pictures of a model-input batch."""
    return model.preprocess.invert(batch)


def quantized(model: Model, batch: np.ndarray) -> np.ndarray:
    """The batch the pictures decode to (what a saved PNG gives back to the model)."""
    return model.prepare(pixels(model, batch))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB of two uint8 pictures (peak 255)."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(255.0**2 / mse)


# ------------------------------------------------------------------------- torch helpers


def channel_tensor(values: np.ndarray, like: Any) -> Any:
    """A (1, C, 1, 1) tensor of per-channel values with ``like``'s dtype and device."""
    torch = require_torch()
    return torch.as_tensor(values, dtype=like.dtype, device=like.device).view(1, -1, 1, 1)


def gaussian_blur(x: Any, sigma: float) -> Any:
    """Separable Gaussian blur of an (N, C, H, W) tensor (reflect padding)."""
    torch = require_torch()
    functional = torch.nn.functional
    if sigma <= 0:
        return x
    radius = max(1, min(int(3 * sigma + 0.5), min(x.shape[-2:]) - 1))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    kernel = torch.exp(-(t**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    c = x.shape[1]
    x = functional.pad(x, (radius, radius, 0, 0), mode="reflect")
    x = functional.conv2d(x, kernel.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    x = functional.pad(x, (0, 0, radius, radius), mode="reflect")
    return functional.conv2d(x, kernel.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


def octave_sizes(size: tuple[int, int], octaves: int, scale: float) -> list[tuple[int, int]]:
    """Coarse-to-fine resolutions of the image's changes: the last is the full size."""
    if octaves < 1:
        raise InputError(f"octaves must be at least 1, got {octaves}")
    if scale <= 1 and octaves > 1:
        raise InputError(f"octave_scale must be above 1, got {scale}")
    h, w = size
    return [
        (max(4, round(h / scale**o)), max(4, round(w / scale**o))) for o in reversed(range(octaves))
    ]


def coarse_gradient(
    objective: Callable[[Any], Any], x: Any, size: tuple[int, int]
) -> tuple[Any, Any]:
    """Value and gradient of ``objective(x)`` (a (N,) tensor) as seen by a change of ``x``
    made at resolution ``size`` and upsampled bilinearly (the octaves of a fixed-size
    model: coarse sizes only move low spatial frequencies). Returns (values, gradient at
    full size)."""
    torch = require_torch()
    functional = torch.nn.functional
    full = tuple(x.shape[-2:])
    if tuple(size) == full:
        x = x.detach().requires_grad_(True)
        values = objective(x)
        (grad,) = torch.autograd.grad(values.sum(), x)
        return values.detach(), grad
    delta = torch.zeros((*x.shape[:2], *size), dtype=x.dtype, device=x.device)
    delta.requires_grad_(True)
    up = functional.interpolate(delta, size=full, mode="bilinear", align_corners=False)
    values = objective(x.detach() + up)
    (grad,) = torch.autograd.grad(values.sum(), delta)
    grad = functional.interpolate(grad, size=full, mode="bilinear", align_corners=False)
    return values.detach(), grad


def jitter_shifts(rng: np.random.Generator, jitter: int) -> tuple[int, int]:
    """A random (dy, dx) in [-jitter, jitter]^2."""
    if jitter <= 0:
        return 0, 0
    dy, dx = rng.integers(-jitter, jitter + 1, size=2)
    return int(dy), int(dx)


def normalized(grad: Any) -> Any:
    """Each image's gradient divided by its mean absolute value (scale-free steps: the
    gradient clipping of Yosinski et al. 2015's ascent)."""
    scale = grad.abs().mean(dim=tuple(range(1, grad.dim())), keepdim=True)
    return grad / (scale + 1e-12)


# ----------------------------------------------------------------------- bookkeeping


class Tracker:
    """Loss history, the best batch so far per image, and the progress callback."""

    def __init__(self, total: int, progress: Progress | None):
        self.total = total
        self.progress = progress
        self.losses: list[float] = []
        self.best_loss: np.ndarray | None = None
        self.steps = 0
        self._held: Any = None  # a batch tensor that is the best of every image (no copy)
        self._best: np.ndarray | None = None  # else the best images, assembled

    @property
    def best(self) -> np.ndarray | None:
        """The best batch so far (N, ...) float32, or None before the first record."""
        if self._held is not None:
            return self._held.cpu().float().numpy()
        return self._best

    def record(self, losses: Any, batch: Any, *, final: bool = False, fresh: bool = False) -> None:
        """Record one step: per-image losses (N,) of ``batch`` (before its update); ``final``
        only offers the last batch as a candidate (no step counted, no progress call).
        ``fresh``: the caller never changes ``batch`` in place afterwards (it rebinds its
        variable to a new tensor each step), so while every image improves the tracker holds
        the tensor itself instead of copying it every step."""
        values = np.asarray(losses.detach().cpu().double().numpy(), np.float64).reshape(-1)
        better = values < self.best_loss if self.best_loss is not None else None
        if better is None or better.all():
            self._held = batch.detach() if fresh else batch.detach().clone()
            self._best = None
            self.best_loss = values.copy()
        elif better.any():  # some images improved: assemble (one masked copy)
            if self._best is None:
                self._best = self.best.copy()  # type: ignore[union-attr]
                self._held = None
            current = batch.detach().cpu().float().numpy()
            np.copyto(self._best, current, where=better.reshape(-1, *[1] * (current.ndim - 1)))
            np.copyto(self.best_loss, values, where=better)  # type: ignore[arg-type]
        if final:
            return
        self.steps += 1
        self.losses.append(float(values.sum()) / len(values))
        if self.progress is not None:
            self.progress(self.steps, self.total, self.losses[-1])
