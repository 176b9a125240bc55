"""Non-parametric texture synthesis by Efros & Leung (ICCV 1999, "Texture Synthesis by
Non-parametric Sampling"): grow a texture one pixel at a time, each pixel copied from the centre
of a sample window whose neighbourhood best matches the pixel's known neighbourhood.

The match is the Gaussian-weighted (sigma = window / 6.4) sum of squared differences over the
known pixels of the window, normalised by their total weight, against every window wholly
inside the sample; the pixel is copied from a random one of the candidates within
(1 + epsilon) of the best distance (epsilon = 0.1 as in the paper; 0 picks among exact ties
with the best match only). The search runs in the native kernel
(:func:`cnnviz_core.kernels.texture_match`; ``backend="numpy"`` runs the NumPy reference).

Orders:

- ``"onion"`` (the paper's): a random 3 x 3 patch of the sample seeds the centre; each pass
  takes the unfilled pixels next to the filled region, randomly permuted, then sorted by their
  number of filled neighbours in the window (most first), and fills them in turn.
- ``"scanline"``: the seed sits at the top-left corner and the pixels are filled in raster
  order (causal neighbourhoods).

The paper's MaxErrThreshold (deferring a pixel whose best match is poor to a later pass) is
not used: every pixel is filled when its turn comes. The search time per pixel grows with the
sample's area (every full window is a candidate): samples of about 64 x 64, as in the paper,
grow a 128 x 128 texture in about a second.

No torch: this module needs NumPy and the native kernels only.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from PIL import Image

from cnnviz_core import InputError, kernels
from cnnviz_core.preprocess import ImageLike, load_image

from ..render.display import Displayable

#: valid ``order`` values
ORDERS: tuple[str, ...] = ("onion", "scanline")
#: side of the seed patch (the paper's 3 x 3)
SEED_SIZE = 3

Order = Literal["onion", "scanline"]
Progress = Callable[[int, int, float], None]


@dataclass
class TextureResult(Displayable):
    """A texture grown by :func:`efros_leung`.

    Attributes:
        method: ``"efros-leung"``.
        image: (H, W, 3) uint8 RGB, or (H, W) for a grey sample; unfilled pixels are 0.
        source: (H, W, 2) int64: the sample pixel (y, x) each output pixel was copied from, -1
            where unfilled (an interrupted run).
        fill_step: (H, W) int64: when each pixel was filled (0 for the seed, then 1, 2, ... in
            fill order), -1 where unfilled.
        distances: (H, W) float32: the chosen candidate's match distance (0 for the seed, NaN
            where unfilled), in squared 0-1 pixel units per channel summed over channels.
        interrupted: the run was stopped (Ctrl-C, or KeyboardInterrupt from ``progress``) and
            returned what was grown so far.
        seconds: wall time of the growth.
        options: the parameters used.
    """

    method: str
    image: np.ndarray
    source: np.ndarray
    fill_step: np.ndarray
    distances: np.ndarray
    interrupted: bool
    seconds: float
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def filled(self) -> np.ndarray:
        """(H, W) bool: the pixels grown (all of them unless interrupted)."""
        return self.fill_step >= 0

    @property
    def pixels(self) -> int:
        """Pixels synthesized (the seed not counted)."""
        return int((self.fill_step > 0).sum())

    @property
    def pixels_per_second(self) -> float:
        """Synthesized pixels per second of wall time."""
        return self.pixels / self.seconds if self.seconds > 0 else 0.0

    def picture(self) -> np.ndarray:
        """The texture as (H, W, 3) uint8 (a grey one repeated over 3 channels): what
        Jupyter and ``plot()`` show."""
        image = np.asarray(self.image, np.uint8)
        return np.repeat(image[..., None], 3, axis=2) if image.ndim == 2 else image

    def facts(self) -> list[tuple[str, object]]:
        """Method, size, window, pixels grown and speed, for the HTML display."""
        height, width = self.image.shape[:2]
        grown = f"{self.pixels} in {self.seconds:.2f} s ({self.pixels_per_second:,.0f}/s)"
        return [
            ("method", self.method),
            ("size", f"{height} x {width}"),
            ("window", self.options.get("window", "-")),
            ("pixels grown", grown + (" (interrupted)" if self.interrupted else "")),
        ]


def efros_leung(
    sample: ImageLike | np.ndarray,
    size: tuple[int, int] | int = (128, 128),
    window: int = 11,
    order: Order = "onion",
    epsilon: float = 0.1,
    seed: int = 0,
    progress: Progress | None = None,
    *,
    backend: kernels.Backend = "auto",
    num_threads: int = 0,
) -> TextureResult:
    """Grow a texture of ``size`` from ``sample`` (Efros & Leung, 1999).

    Args:
        sample: the texture sample: image path, PIL image, or (H, W, 3) / (H, W) array
            (uint8, or floats in 0-1). A (H, W) array or a grey ("L") PIL image gives a grey
            texture.
        size: output (height, width), or one int for a square; each >= 3 (the seed).
        window: odd neighbourhood side (>= 3, <= the sample's sides); larger windows keep
            larger structures (the paper uses about the size of the largest texture element).
        order: ``"onion"`` or ``"scanline"`` (see the module docstring).
        epsilon: candidates within (1 + epsilon) of the best match are picked at random;
            0 = exact nearest neighbour (every output pixel is a copy of a best match).
        seed: seeds the seed patch and every random pick: equal seeds give equal textures.
        progress: ``progress(step, total, loss)`` after every 1% of the pixels (and at the
            end): pixels filled, pixels in all, and the mean match distance of the pixels
            filled since the last call. Raising KeyboardInterrupt stops the run like Ctrl-C.
        backend: the neighbourhood search: "auto" / "native" (the C++ kernel) or "numpy"
            (the NumPy reference, same algorithm).
        num_threads: threads of the native search (0 = default).

    Returns:
        A :class:`TextureResult` (``interrupted`` when stopped early: the unfilled pixels are
        marked in ``source`` / ``fill_step``).

    Raises:
        InputError: a sample that cannot be read or is smaller than the window or the seed, an
            even or too small window, an output smaller than the seed, an unknown order, or a
            negative epsilon.
    """
    pixels, grey = _load_sample(sample)
    height, width = _check_size(size)
    _check_window(window, pixels.shape[:2])
    if order not in ORDERS:
        raise InputError(f"efros_leung: unknown order {order!r}; expected one of: {ORDERS}")
    # the kernels compare in float32: (1 + epsilon) must stay finite there
    if not (np.isfinite(epsilon) and 0 <= epsilon < float(np.finfo(np.float32).max) - 1):
        raise InputError(f"efros_leung: epsilon must be finite and >= 0, got {epsilon}")
    if backend not in kernels.BACKENDS:
        raise InputError(f"efros_leung: unknown backend {backend!r}; expected {kernels.BACKENDS}")
    options = {
        "size": (height, width),
        "window": window,
        "order": order,
        "epsilon": float(epsilon),
        "seed": seed,
        "backend": backend,
        "sample_shape": tuple(pixels.shape[:2]),
    }
    grower = _Grower(pixels, (height, width), window, float(epsilon), seed, backend, num_threads)
    start = time.perf_counter()
    interrupted = False
    try:
        grower.grow(order, progress)
    except KeyboardInterrupt:
        interrupted = True
    seconds = time.perf_counter() - start
    image = grower.image[..., 0] if grey else grower.image
    return TextureResult(
        method="efros-leung",
        image=image,
        source=grower.source,
        fill_step=grower.fill_step,
        distances=grower.distances,
        interrupted=interrupted,
        seconds=seconds,
        options=options,
    )


def gaussian_window(window: int) -> np.ndarray:
    """The paper's (window, window) Gaussian weights, sigma = window / 6.4, peak 1."""
    r = window // 2
    sigma = window / 6.4
    axis = np.arange(-r, r + 1, dtype=np.float64)
    g = np.exp(-(axis[:, None] ** 2 + axis[None, :] ** 2) / (2 * sigma * sigma))
    return g.astype(np.float32)


class _Grower:
    """The growing texture: a padded canvas, its known mask and the bookkeeping."""

    def __init__(
        self,
        pixels: np.ndarray,
        size: tuple[int, int],
        window: int,
        epsilon: float,
        seed: int,
        backend: kernels.Backend,
        num_threads: int,
    ) -> None:
        self.pixels = pixels  # (h, w, C) uint8
        self.sample = np.ascontiguousarray(pixels.transpose(2, 0, 1), dtype=np.float32) / 255
        self.size, self.window = size, window
        self.match = kernels.texture_matcher(self.sample, epsilon, backend, num_threads=num_threads)
        self.rng = np.random.default_rng(seed)
        self.r = window // 2
        height, width = size
        channels = pixels.shape[2]
        pad = self.r
        self.canvas = np.zeros((channels, height + 2 * pad, width + 2 * pad), np.float32)
        self.known = np.zeros((height + 2 * pad, width + 2 * pad), np.float32)
        self.gauss = gaussian_window(window)
        self.image = np.zeros((height, width, channels), np.uint8)
        self.source = np.full((height, width, 2), -1, np.int64)
        self.fill_step = np.full((height, width), -1, np.int64)
        self.distances = np.full((height, width), np.nan, np.float32)
        self.step = 0
        self.candidate_width = pixels.shape[1] - window + 1

    # ------------------------------------------------------------------ bookkeeping
    def _put(self, y: int, x: int, sy: int, sx: int, distance: float) -> None:
        pad = self.r
        self.canvas[:, y + pad, x + pad] = self.sample[:, sy, sx]
        self.known[y + pad, x + pad] = 1.0
        self.image[y, x] = self.pixels[sy, sx]
        self.source[y, x] = (sy, sx)
        self.fill_step[y, x] = self.step
        self.distances[y, x] = distance

    def _seed(self, order: str) -> None:
        """A random 3 x 3 patch of the sample at the centre (onion) or top-left (scanline)."""
        h, w = self.pixels.shape[:2]
        sy = int(self.rng.integers(0, h - SEED_SIZE + 1))
        sx = int(self.rng.integers(0, w - SEED_SIZE + 1))
        height, width = self.size
        if order == "onion":
            oy, ox = (height - SEED_SIZE) // 2, (width - SEED_SIZE) // 2
        else:
            oy, ox = 0, 0
        for i in range(SEED_SIZE):
            for j in range(SEED_SIZE):
                self._put(oy + i, ox + j, sy + i, sx + j, 0.0)

    def _fill(self, y: int, x: int, u: float) -> float:
        """Fill output pixel (y, x) from its best-matching sample windows; returns the distance."""
        k = self.window
        query = self.canvas[:, y : y + k, x : x + k]
        weights = self.gauss * self.known[y : y + k, x : x + k]
        index, distance = self.match(query, weights, u)
        cy, cx = divmod(index, self.candidate_width)
        self.step += 1
        self._put(y, x, cy + self.r, cx + self.r, distance)
        return distance

    # ------------------------------------------------------------------ orders
    def grow(self, order: str, progress: Progress | None) -> None:
        self._seed(order)
        height, width = self.size
        total = height * width
        every = max(1, total // 100)
        reporter = _Reporter(progress, total, every)
        reporter.done = SEED_SIZE * SEED_SIZE
        for y, x in self._pixels(order):
            reporter.add(self._fill(y, x, float(self.rng.random())))
        reporter.finish()

    def _pixels(self, order: str) -> Any:
        """The output pixels to fill, in order (the seed excluded)."""
        height, width = self.size
        if order == "scanline":
            for y in range(height):
                for x in range(width):
                    if self.fill_step[y, x] < 0:
                        yield y, x
            return
        while (self.fill_step < 0).any():
            yield from self._onion_layer()

    def _onion_layer(self) -> list[tuple[int, int]]:
        """Unfilled pixels next to the filled region, randomly permuted, then sorted by their
        number of filled neighbours in the window (most first), as in the paper."""
        filled = self.fill_step >= 0
        grown = filled.copy()
        padded = np.pad(filled, 1)
        for dy in (0, 1, 2):
            for dx in (0, 1, 2):
                grown |= padded[dy : dy + filled.shape[0], dx : dx + filled.shape[1]]
        ys, xs = np.nonzero(grown & ~filled)
        k = self.window
        integral = np.zeros((self.known.shape[0] + 1, self.known.shape[1] + 1), np.float64)
        integral[1:, 1:] = self.known.cumsum(0).cumsum(1)
        counts = (
            integral[ys + k, xs + k]
            - integral[ys, xs + k]
            - integral[ys + k, xs]
            + integral[ys, xs]
        )
        perm = self.rng.permutation(len(ys))
        order = perm[np.argsort(-counts[perm], kind="stable")]
        return list(zip(ys[order].tolist(), xs[order].tolist()))


class _Reporter:
    """Calls ``progress`` every ``every`` pixels with the mean distance since the last call."""

    def __init__(self, progress: Progress | None, total: int, every: int) -> None:
        self.progress, self.total, self.every = progress, total, every
        self.done, self.sum, self.count, self.last = 0, 0.0, 0, -1

    def add(self, distance: float) -> None:
        self.done += 1
        self.sum += distance
        self.count += 1
        if self.count >= self.every:
            self._call()

    def _call(self) -> None:
        if self.progress is not None and self.done != self.last:
            self.progress(self.done, self.total, self.sum / max(1, self.count))
        self.last, self.sum, self.count = self.done, 0.0, 0

    def finish(self) -> None:
        self._call()


def _load_sample(sample: ImageLike | np.ndarray) -> tuple[np.ndarray, bool]:
    """(h, w, C) uint8 pixels (C = 1 for a grey sample, else 3) and whether it is grey."""
    grey = (isinstance(sample, np.ndarray) and (sample.ndim == 2 or sample.shape[-1:] == (1,))) or (
        isinstance(sample, Image.Image) and sample.mode in ("L", "I", "F", "1")
    )
    pixels = load_image(sample)
    if grey:
        pixels = pixels[..., :1]
    h, w = pixels.shape[:2]
    if h < SEED_SIZE or w < SEED_SIZE:
        raise InputError(
            f"efros_leung: the sample ({h} x {w}) must be at least {SEED_SIZE} x {SEED_SIZE}"
        )
    return np.ascontiguousarray(pixels), grey


def _check_size(size: tuple[int, int] | int) -> tuple[int, int]:
    try:
        height, width = (size, size) if isinstance(size, (int, np.integer)) else size
        height, width = int(height), int(width)
    except (TypeError, ValueError) as error:
        raise InputError(
            f"efros_leung: size must be an int or (height, width), got {size!r}"
        ) from error
    if height < SEED_SIZE or width < SEED_SIZE:
        raise InputError(
            f"efros_leung: the output ({height} x {width}) is smaller than the "
            f"{SEED_SIZE} x {SEED_SIZE} seed; use a size >= {SEED_SIZE}"
        )
    return height, width


def _check_window(window: int, sample_shape: tuple[int, ...]) -> None:
    h, w = sample_shape
    if not isinstance(window, (int, np.integer)) or window < 3 or window % 2 == 0:
        raise InputError(f"efros_leung: window must be an odd int >= 3, got {window!r}")
    if window > min(h, w):
        largest = min(h, w) if min(h, w) % 2 else min(h, w) - 1
        raise InputError(
            f"efros_leung: the window ({window}) is larger than the sample ({h} x {w}); use "
            f"an odd window <= {largest} or a larger sample"
        )
