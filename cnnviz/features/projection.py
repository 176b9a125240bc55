"""Feature spaces in 2-D: PCA (explained variance, principal axes as arrows), t-SNE
(van der Maaten & Hinton 2008; scikit-learn, or openTSNE when installed), scatters of
thumbnails coloured by class, and the t-SNE image grid (Karpathy's CNN-codes grid: points
snapped to a regular grid by a linear assignment).
"""

from __future__ import annotations

import importlib.util
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from cnnviz_core import InputError

from ..render.charts import SERIES_COLORS
from ..render.display import Displayable
from ..render.images import TEXT_LINE_HEIGHT, text_width, tile_grid, upscale

log = logging.getLogger(__name__)

TSNE_BACKENDS = ("auto", "sklearn", "opentsne")
#: features are reduced to this many principal components before t-SNE
TSNE_PCA_DIMS = 50
#: distinct class colours (Tableau 10)
CLASS_COLORS = SERIES_COLORS


@dataclass(frozen=True)
class PCAResult(Displayable):
    """A principal component analysis.

    Attributes:
        coords: (N, k) the data in principal coordinates.
        components: (k, D) unit principal axes, by decreasing variance (sign: the largest
            |entry| of each axis is positive).
        explained_variance: (k,) variance along each axis (ddof = 1).
        explained_variance_ratio: (k,) share of the total variance.
        mean: (D,) the data's mean.
    """

    coords: np.ndarray
    components: np.ndarray
    explained_variance: np.ndarray
    explained_variance_ratio: np.ndarray
    mean: np.ndarray

    def picture(self) -> np.ndarray:
        """The points on the first two axes (:func:`scatter`, one axis: along x) with the
        axes' arrows (:func:`pca_axes_arrows`), (H, W, 3) uint8: what Jupyter and
        ``plot()`` show."""
        coords = self.coords[:, :2]
        if coords.shape[1] == 1:
            coords = np.concatenate([coords, np.zeros_like(coords)], axis=1)
        return scatter(coords, arrows=pca_axes_arrows(self), size=480)

    def facts(self) -> list[tuple[str, object]]:
        """Sizes and each axis's share of the variance, for the HTML display."""
        shares = ", ".join(
            f"PC{i + 1} {100 * r:.1f}%" for i, r in enumerate(self.explained_variance_ratio)
        )
        return [
            ("PCA", f"{len(self.coords)} points x {len(self.mean)} features"),
            ("variance explained", shares),
        ]


def pca(features: np.ndarray, n_components: int = 2) -> PCAResult:
    """PCA by the SVD of the centred data (float64).

    Args:
        features: (N, D).
        n_components: k <= min(N, D).

    Returns:
        :class:`PCAResult`.
    """
    x = np.asarray(features, np.float64).reshape(len(features), -1)
    if not 1 <= n_components <= min(x.shape):
        raise InputError(f"n_components must lie in 1..{min(x.shape)}, got {n_components}")
    mean = x.mean(axis=0)
    centred = x - mean
    _, singular, vt = np.linalg.svd(centred, full_matrices=False)
    axes = vt[:n_components]
    signs = np.sign(axes[np.arange(n_components), np.abs(axes).argmax(axis=1)])
    axes = axes * np.where(signs == 0, 1, signs)[:, None]
    variance = singular**2 / max(len(x) - 1, 1)
    total = variance.sum()
    return PCAResult(
        coords=centred @ axes.T,
        components=axes,
        explained_variance=variance[:n_components],
        explained_variance_ratio=variance[:n_components] / (total if total > 0 else 1),
        mean=mean,
    )


def opentsne_available() -> bool:
    return importlib.util.find_spec("openTSNE") is not None


def tsne(
    features: np.ndarray,
    *,
    perplexity: float = 30.0,
    seed: int = 0,
    backend: str = "auto",
    pca_dims: int = TSNE_PCA_DIMS,
) -> np.ndarray:
    """A 2-D t-SNE embedding, (N, 2) float32.

    Args:
        features: (N, D); reduced to ``pca_dims`` principal components first when wider.
        perplexity: effective number of neighbours (capped below N / 3).
        seed: random state.
        backend: ``sklearn``, ``opentsne`` (needs ``openTSNE``) or ``auto`` (openTSNE when
            installed, else scikit-learn).

    Returns:
        (N, 2) coordinates.
    """
    if backend not in TSNE_BACKENDS:
        raise InputError(f"backend must be one of {TSNE_BACKENDS}, got {backend!r}")
    x = np.asarray(features, np.float32).reshape(len(features), -1)
    if len(x) < 4:
        raise InputError(f"t-SNE needs at least 4 points, got {len(x)}")
    if x.shape[1] > pca_dims and len(x) > pca_dims:
        x = pca(x, pca_dims).coords.astype(np.float32)
    perplexity = min(perplexity, (len(x) - 1) / 3)
    if backend == "auto":
        backend = "opentsne" if opentsne_available() else "sklearn"
    if backend == "opentsne":
        if not opentsne_available():
            raise InputError("backend 'opentsne' needs the openTSNE package: pip install openTSNE")
        from openTSNE import TSNE as OpenTSNE

        result = OpenTSNE(perplexity=perplexity, random_state=seed, n_jobs=-1).fit(x)
        return np.asarray(result, np.float32)
    from sklearn.manifold import TSNE

    model = TSNE(n_components=2, perplexity=perplexity, random_state=seed, init="pca")
    return model.fit_transform(x).astype(np.float32)


def _to_canvas(coords: np.ndarray, size: int, margin: int) -> np.ndarray:
    """2-D points to pixel positions inside a size x size canvas (y grows downwards)."""
    xy = np.asarray(coords, np.float64)[:, :2]
    low, high = xy.min(axis=0), xy.max(axis=0)
    span = np.where(high - low > 0, high - low, 1.0)
    unit = (xy - low) / span.max()
    unit += (1 - span / span.max()) / 2  # keep the aspect, centred
    pixels = margin + unit * (size - 2 * margin)
    pixels[:, 1] = size - pixels[:, 1]
    return pixels


def scatter(
    coords: np.ndarray,
    labels: np.ndarray | None = None,
    *,
    images: np.ndarray | None = None,
    size: int = 720,
    thumb: int = 24,
    arrows: Sequence[tuple[np.ndarray, np.ndarray, str]] = (),
    class_names: Sequence[str] | None = None,
    legend: bool = True,
) -> np.ndarray:
    """A scatter plot of 2-D points: dots, or thumbnails framed in their class colour, with
    a class legend (colour swatch and name per class present) right of the plot when
    ``labels`` are given.

    Args:
        coords: (N, 2).
        labels: (N,) class indices (colours), or None.
        images: (N, h, w, 3) uint8 thumbnails to draw instead of dots.
        size: canvas side in pixels.
        thumb: thumbnail side.
        arrows: (start, end, text) in data coordinates, drawn over the points.
        class_names: legend text per class index (default ``class 3``).
        legend: draw the class legend (only with ``labels``).

    Returns:
        uint8 (size, size + legend width, 3); the legend width is 0 without one.
    """
    coords = np.asarray(coords, np.float64)
    margin = thumb if images is not None else 12
    all_points = np.concatenate([coords[:, :2], *[np.stack([s, e]) for s, e, _ in arrows]])
    placed = _to_canvas(all_points, size, margin)
    points, ends = placed[: len(coords)], placed[len(coords) :]
    canvas = Image.new("RGB", (size, size), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for i, (px, py) in enumerate(points):
        color = CLASS_COLORS[int(labels[i]) % len(CLASS_COLORS)] if labels is not None else (0,) * 3
        if images is None:
            draw.ellipse((px - 3, py - 3, px + 3, py + 3), fill=color)
            continue
        tile = Image.fromarray(images[i]).resize((thumb, thumb), Image.Resampling.BILINEAR)
        left, top = int(px - thumb / 2), int(py - thumb / 2)
        draw.rectangle((left - 2, top - 2, left + thumb + 1, top + thumb + 1), fill=color)
        canvas.paste(tile, (left, top))
    for n, (_, _, text) in enumerate(arrows):
        (x0, y0), (x1, y1) = ends[2 * n], ends[2 * n + 1]
        _arrow(draw, x0, y0, x1, y1)
        draw.text((x1 + 4, y1 - 6), text, fill=(0, 0, 0))
    if labels is None or not legend:
        return np.asarray(canvas)
    return np.concatenate([np.asarray(canvas), _legend(labels, class_names, size)], axis=1)


LEGEND_SWATCH = 12
"""Side of a legend's colour swatch in pixels."""
_LEGEND_MAX_ENTRIES = 40


def _legend(labels: np.ndarray, class_names: Sequence[str] | None, height: int) -> np.ndarray:
    """A white (height, W, 3) panel listing each class present: swatch, then its name."""
    present = [int(c) for c in np.unique(np.asarray(labels).astype(np.int64))]
    shown = present[:_LEGEND_MAX_ENTRIES]
    names = [
        class_names[c] if class_names is not None and 0 <= c < len(class_names) else f"class {c}"
        for c in shown
    ]
    if len(present) > len(shown):
        names.append(f"+{len(present) - len(shown)} more")
    width = LEGEND_SWATCH + 16 + max(text_width(name) for name in names) + 8
    panel = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(panel)
    step = TEXT_LINE_HEIGHT + 4
    for n, name in enumerate(names):
        top = 12 + n * step
        if n < len(shown):
            color = CLASS_COLORS[shown[n] % len(CLASS_COLORS)]
            draw.rectangle((8, top, 8 + LEGEND_SWATCH - 1, top + LEGEND_SWATCH - 1), fill=color)
        draw.text((8 + LEGEND_SWATCH + 6, top), name, fill=(0, 0, 0))
    return np.asarray(panel)


def _arrow(draw: ImageDraw.ImageDraw, x0: float, y0: float, x1: float, y1: float) -> None:
    draw.line((x0, y0, x1, y1), fill=(0, 0, 0), width=3)
    angle = math.atan2(y1 - y0, x1 - x0)
    head = [
        (x1, y1),
        (x1 - 12 * math.cos(angle - 0.4), y1 - 12 * math.sin(angle - 0.4)),
        (x1 - 12 * math.cos(angle + 0.4), y1 - 12 * math.sin(angle + 0.4)),
    ]
    draw.polygon(head, fill=(0, 0, 0))


def pca_axes_arrows(
    result: PCAResult, scale: float = 2.0
) -> list[tuple[np.ndarray, np.ndarray, str]]:
    """Arrows of the first two principal axes in PCA coordinates: from the mean (origin),
    ``scale`` standard deviations long, labelled with their share of the variance."""
    arrows = []
    for axis in range(min(2, len(result.explained_variance))):
        end = np.zeros(2)
        end[axis] = scale * math.sqrt(result.explained_variance[axis])
        text = f"PC{axis + 1} {100 * result.explained_variance_ratio[axis]:.1f}%"
        arrows.append((np.zeros(2), end, text))
    return arrows


def grid_assignment(coords: np.ndarray, rows: int, columns: int) -> np.ndarray:
    """Snap 2-D points to a rows x columns grid, one point per cell, minimising the total
    squared distance (scipy's ``linear_sum_assignment``).

    Args:
        coords: (N, 2) with N <= rows * columns.

    Returns:
        int64 (N,) cell index (row * columns + column) of each point.
    """
    from scipy.optimize import linear_sum_assignment

    xy = np.asarray(coords, np.float64)[:, :2]
    if len(xy) > rows * columns:
        raise InputError(f"{len(xy)} points do not fit a {rows} x {columns} grid")
    low, high = xy.min(axis=0), xy.max(axis=0)
    unit = (xy - low) / np.where(high - low > 0, high - low, 1)
    gy, gx = np.meshgrid(np.linspace(0, 1, rows), np.linspace(0, 1, columns), indexing="ij")
    cells = np.stack([gx.ravel(), 1 - gy.ravel()], axis=1)
    cost = ((unit[:, None, :] - cells[None, :, :]) ** 2).sum(axis=2)
    points, assigned = linear_sum_assignment(cost)
    out = np.empty(len(xy), np.int64)
    out[points] = assigned
    return out


MIN_GRID_TILE = 64
"""Default smallest cell side of the t-SNE image grid in pixels."""
MIN_GRID_SIDE = 512
"""Default smallest width of the t-SNE image grid in pixels."""


def image_grid(
    coords: np.ndarray, images: np.ndarray, columns: int | None = None, tile: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The t-SNE image grid: every image in the cell its point snaps to.

    Args:
        coords: (N, 2) embedding.
        images: (N, H, W, 3) uint8.
        columns: grid width (default: the smallest square that holds N).
        tile: tile side in pixels; default at least ``MIN_GRID_TILE`` and enough for the
            grid to be at least ``MIN_GRID_SIDE`` px wide.

    Returns:
        (grid picture uint8, cell index per image).
    """
    columns = columns or math.ceil(math.sqrt(len(coords)))
    rows = math.ceil(len(coords) / columns)
    if tile is None:
        tile = max(MIN_GRID_TILE, math.ceil(MIN_GRID_SIDE / columns))
    cells = grid_assignment(coords, rows, columns)
    blank = np.full((tile, tile, 3), 255, np.uint8)
    tiles = [blank] * (rows * columns)
    for i, cell in enumerate(cells):
        tiles[int(cell)] = _fit(images[i], tile)
    return tile_grid(tiles, columns=columns, pad=1, background=255), cells


def _fit(image: np.ndarray, side: int) -> np.ndarray:
    if image.shape[0] == side and image.shape[1] == side:
        return image
    return upscale(image, size=(side, side), nearest=False)
