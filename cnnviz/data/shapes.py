"""Procedural "shapes" data set: one coloured object per image over a cluttered background.

Every image holds exactly one object of a known class together with its exact pixel mask, so
attribution maps can be scored against ground truth. Image ``i`` of seed ``s`` depends only on
``(s, i)`` (its own ``np.random.default_rng([s, i])``), so a data set can be streamed in any
batch size and its first ``k`` images never depend on how many were asked for.

Uses NumPy only (Pillow is not needed, torch is never imported).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

CLASSES: tuple[str, ...] = (
    "circle",
    "square",
    "triangle",
    "star",
    "cross",
    "ring",
    "stripes",
    "checker",
)

_SUPERSAMPLE = 3  # subsamples per pixel side for antialiasing (coverage >= 0.5 is the mask)
_MIN_COLOUR_DISTANCE = 110.0  # RGB distance between the object and the background base colour
_DIAMETER_RANGE = (0.3, 0.7)  # object diameter as a fraction of the image side

Array = np.ndarray
# A shape maps object-local coordinates (u, v; unit radius) to (inside, second-colour pattern).
ShapeFn = Callable[[Array, Array, np.random.Generator], tuple[Array, Array | None]]


@dataclass(frozen=True)
class ShapesBatch:
    """A batch of shapes images.

    Attributes:
        images: uint8 (N, H, W, 3) RGB images.
        labels: int64 (N,) class indices into ``classes``.
        masks: bool (N, H, W) ground-truth object pixels.
        classes: class names.
    """

    images: Array
    labels: Array
    masks: Array
    classes: tuple[str, ...] = CLASSES

    def __len__(self) -> int:
        return len(self.labels)


def _circle(u: Array, v: Array, rng: np.random.Generator) -> tuple[Array, Array | None]:
    return u * u + v * v <= 1.0, None


def _square(u: Array, v: Array, rng: np.random.Generator) -> tuple[Array, Array | None]:
    return np.maximum(np.abs(u), np.abs(v)) <= 0.8, None


def _triangle(u: Array, v: Array, rng: np.random.Generator) -> tuple[Array, Array | None]:
    # Equilateral triangle with circumradius 1.1: inradius 0.55 along three edge normals.
    c, s = np.cos(np.pi / 6), np.sin(np.pi / 6)
    inside = (v <= 0.55) & (-c * u - s * v <= 0.55) & (c * u - s * v <= 0.55)
    return inside, None


def _star(u: Array, v: Array, rng: np.random.Generator) -> tuple[Array, Array | None]:
    # Five-pointed star: fold the angle into one half-sector, then test against the edge
    # from the outer vertex (1, 0) to the inner vertex at angle pi/5.
    half = np.pi / 5
    inner = rng.uniform(0.4, 0.5)
    rho = np.hypot(u, v)
    t = np.mod(np.arctan2(v, u), 2 * half)
    t = np.minimum(t, 2 * half - t)
    x, y = rho * np.cos(t), rho * np.sin(t)
    bx, by = inner * np.cos(half), inner * np.sin(half)
    # Origin side of the line A->B has (B - A) x (p - A) >= 0 (counter-clockwise).
    return (bx - 1.0) * y - by * (x - 1.0) >= 0.0, None


def _cross(u: Array, v: Array, rng: np.random.Generator) -> tuple[Array, Array | None]:
    arm = rng.uniform(0.22, 0.32)
    au, av = np.abs(u), np.abs(v)
    return ((au <= 0.95) & (av <= arm)) | ((au <= arm) & (av <= 0.95)), None


def _ring(u: Array, v: Array, rng: np.random.Generator) -> tuple[Array, Array | None]:
    r2 = u * u + v * v
    return (r2 <= 1.0) & (r2 >= rng.uniform(0.45, 0.65) ** 2), None


def _stripes(u: Array, v: Array, rng: np.random.Generator) -> tuple[Array, Array | None]:
    # A disc painted with parallel bands of two colours, each band 1/k of the radius wide.
    k = rng.integers(2, 5)
    bands = np.floor(u * k + rng.uniform(0.0, 2.0)).astype(np.int64)
    return u * u + v * v <= 1.0, bands % 2 == 1


def _checker(u: Array, v: Array, rng: np.random.Generator) -> tuple[Array, Array | None]:
    # A square patch with an m x m checkerboard of two colours.
    half, m = 0.8, rng.integers(3, 5)
    cell = 2 * half / m
    parity = np.floor((u + half) / cell) + np.floor((v + half) / cell)
    return np.maximum(np.abs(u), np.abs(v)) <= half, parity % 2 == 1


_SHAPES: dict[str, ShapeFn] = {
    "circle": _circle,
    "square": _square,
    "triangle": _triangle,
    "star": _star,
    "cross": _cross,
    "ring": _ring,
    "stripes": _stripes,
    "checker": _checker,
}
assert tuple(_SHAPES) == CLASSES


@lru_cache(maxsize=8)
def _grid(size: int, ss: int) -> tuple[Array, Array]:
    """Pixel and subpixel centre coordinates in pixel units: (size,size) and (size*ss,size*ss)."""
    pix = np.arange(size, dtype=np.float32) + 0.5
    sub = (np.arange(size * ss, dtype=np.float32) + 0.5) / ss
    py, px = np.meshgrid(pix, pix, indexing="ij")
    sy, sx = np.meshgrid(sub, sub, indexing="ij")
    return np.stack([py, px]), np.stack([sy, sx])


def _rgb(rng: np.random.Generator) -> Array:
    """A uniformly random float32 RGB colour in [0, 255]."""
    return rng.uniform(0.0, 255.0, 3).astype(np.float32)


def _contrasting_colour(rng: np.random.Generator, *others: Array) -> Array:
    """A random RGB colour at least ``_MIN_COLOUR_DISTANCE`` from every colour in ``others``."""
    colour = _rgb(rng)
    for _ in range(64):
        if all(np.linalg.norm(colour - o) >= _MIN_COLOUR_DISTANCE for o in others):
            break
        colour = _rgb(rng)
    else:  # practically unreachable: fall back to the complement of the first colour
        colour = 255.0 - others[0]
    return colour


def _upsample(coarse: Array, size: int) -> Array:
    """Bilinear upsampling of a (k, k, C) grid to (size, size, C), corners aligned."""
    k = coarse.shape[0]
    coarse = coarse.astype(np.float32)
    t = np.linspace(0.0, k - 1.0, size, dtype=np.float32)
    i0 = np.minimum(t.astype(np.int64), k - 2)
    w = (t - i0.astype(np.float32))[:, None]
    rows = coarse[i0] * (1 - w[..., None]) + coarse[i0 + 1] * w[..., None]  # (size, k, C)
    return rows[:, i0] * (1 - w[None]) + rows[:, i0 + 1] * w[None]


def _background(rng: np.random.Generator, size: int, base: Array) -> Array:
    """Smooth colour field around ``base`` plus faint distractor lines and blobs (float, HWC)."""
    pix = _grid(size, 1)[0]
    field = base + _upsample(rng.uniform(-40.0, 40.0, (2, 2, 3)), size)
    field += _upsample(rng.uniform(-20.0, 20.0, (5, 5, 3)), size)
    for _ in range(rng.integers(1, 4)):  # thin straight lines crossing the image
        p0, p1 = rng.uniform(-0.2, 1.2, (2, 2)).astype(np.float32) * size
        d = p1 - p0
        rel_y, rel_x = pix[0] - p0[0], pix[1] - p0[1]
        t = np.clip((rel_y * d[0] + rel_x * d[1]) / max(float(d @ d), 1e-6), 0.0, 1.0)
        dist = np.hypot(rel_y - t * d[0], rel_x - t * d[1])
        alpha = rng.uniform(0.2, 0.45) * np.clip(rng.uniform(0.7, 1.6) - dist, 0.0, 1.0)
        field += alpha[..., None] * (_rgb(rng) - field)
    for _ in range(rng.integers(1, 4)):  # soft Gaussian blobs
        cy, cx = rng.uniform(0.0, size, 2).tolist()
        sigma = rng.uniform(2.0, 6.0)
        blob = np.exp(-((pix[0] - cy) ** 2 + (pix[1] - cx) ** 2) / (2 * sigma**2))
        field += (rng.uniform(0.15, 0.35) * blob)[..., None] * (_rgb(rng) - field)
    return field


def _render(seed: int, index: int, size: int) -> tuple[Array, int, Array]:
    """Image ``index`` of data set ``seed``: (uint8 HWC image, label, bool mask)."""
    rng = np.random.default_rng([seed, index])
    label = int(rng.integers(len(CLASSES)))
    base = _rgb(rng)
    image = _background(rng, size, base)

    radius = 0.5 * rng.uniform(*_DIAMETER_RANGE) * size
    cy, cx = rng.uniform(0.85 * radius, size - 0.85 * radius, 2).tolist()
    theta = rng.uniform(0.0, 2 * np.pi)
    # Supersample only the object's bounding box (every shape lies within 1.15 radii).
    reach = 1.15 * radius
    y0, x0 = max(int(cy - reach), 0), max(int(cx - reach), 0)
    y1, x1 = min(int(cy + reach) + 1, size), min(int(cx + reach) + 1, size)
    ss = _SUPERSAMPLE
    sub = _grid(size, ss)[1][:, y0 * ss : y1 * ss, x0 * ss : x1 * ss]
    dy, dx = (sub[0] - cy) / radius, (sub[1] - cx) / radius
    u = np.cos(theta) * dx + np.sin(theta) * dy
    v = -np.sin(theta) * dx + np.cos(theta) * dy
    inside, pattern = _SHAPES[CLASSES[label]](u, v, rng)

    def coverage(hit: Array) -> Array:
        """Fraction of each pixel's subsamples that are ``hit``, as a full-image (H, W, 1)."""
        full = np.zeros((size, size, 1), np.float32)
        full[y0:y1, x0:x1, 0] = hit.reshape(y1 - y0, ss, x1 - x0, ss).mean((1, 3), np.float32)
        return full

    colour = _contrasting_colour(rng, base)
    cover = coverage(inside)
    image = image * (1.0 - cover) + colour * cover
    if pattern is not None:  # second colour on the patterned part of the object
        second = _contrasting_colour(rng, base, colour)
        image += coverage(inside & pattern) * (second - colour)
    image += rng.uniform(3.0, 10.0) * rng.standard_normal(image.shape, np.float32)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), label, cover[..., 0] >= 0.5


def _make_range(seed: int, start: int, stop: int, size: int) -> ShapesBatch:
    images = np.empty((stop - start, size, size, 3), np.uint8)
    labels = np.empty(stop - start, np.int64)
    masks = np.empty((stop - start, size, size), bool)
    for j, i in enumerate(range(start, stop)):
        images[j], labels[j], masks[j] = _render(seed, i, size)
    return ShapesBatch(images, labels, masks)


def make_shapes(n: int, seed: int, size: int = 64) -> ShapesBatch:
    """Generate the first ``n`` images of the shapes data set ``seed``.

    Args:
        n: number of images.
        seed: data set seed; image ``i`` depends only on ``(seed, i)``.
        size: image side in pixels.

    Returns:
        A ``ShapesBatch`` with (N, size, size, 3) uint8 images, labels and masks.
    """
    return _make_range(seed, 0, n, size)


def iter_shapes(n: int, seed: int, size: int = 64, batch: int = 256) -> Iterator[ShapesBatch]:
    """Stream the first ``n`` images of data set ``seed`` in batches of at most ``batch``.

    The concatenation of the batches equals ``make_shapes(n, seed, size)``.
    """
    for start in range(0, n, batch):
        yield _make_range(seed, start, min(start + batch, n), size)
