"""Small raster charts (PIL, no matplotlib): curves or point clouds on labelled axes, for
results whose picture is a graph (deletion / insertion and ROAD curves, faithfulness
correlation) in Jupyter and the report.

A chart is uint8 (H, W, 3) RGB: white background, a frame with the data range's ticks at
both ends and the middle, one colour per series (Tableau 10, :data:`SERIES_COLORS`) and a
legend in the top-right corner.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

#: distinct series / class colours (Tableau 10)
SERIES_COLORS: tuple[tuple[int, int, int], ...] = (
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
)

#: plot-area margins in pixels: left (tick labels), top, right, bottom (ticks, axis title)
_LEFT, _TOP, _RIGHT, _BOTTOM = 56, 24, 12, 40


def _tick(value: float) -> str:
    return f"{value:.3g}"


def _limits(values: np.ndarray) -> tuple[float, float]:
    """(low, high) of the finite values, widened when equal; (0, 1) when there are none."""
    finite = values[np.isfinite(values)]
    if not finite.size:
        return 0.0, 1.0
    low, high = float(finite.min()), float(finite.max())
    if high - low <= 1e-12 * max(1.0, abs(high)):
        low, high = low - 0.5, high + 0.5
    return low, high


def chart(
    series: Sequence[tuple[str, np.ndarray, np.ndarray]],
    *,
    x_label: str = "",
    y_label: str = "",
    points: bool = False,
    x_range: tuple[float, float] | None = None,
    y_range: tuple[float, float] | None = None,
    size: tuple[int, int] = (320, 480),
) -> np.ndarray:
    """Series drawn on shared axes.

    Args:
        series: ``(name, x, y)`` per series (1-D arrays of one length; NaN points are
            skipped), coloured in order from :data:`SERIES_COLORS`; a name ``""`` has no
            legend entry.
        x_label, y_label: axis titles.
        points: draw each point as a dot instead of joining them with lines.
        x_range, y_range: the axes' limits (default: the data's).
        size: (height, width) of the picture.

    Returns:
        uint8 (height, width, 3).
    """
    height, width = size
    if not series:
        raise ValueError("chart needs at least one series")
    xs = np.concatenate([np.asarray(x, np.float64).ravel() for _, x, _ in series])
    ys = np.concatenate([np.asarray(y, np.float64).ravel() for _, _, y in series])
    x0, x1 = x_range or _limits(xs)
    y0, y1 = y_range or _limits(ys)
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    left, top, right, bottom = _LEFT, _TOP, width - _RIGHT, height - _BOTTOM

    def place(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        px = left + (x - x0) / (x1 - x0) * (right - left)
        py = bottom - (y - y0) / (y1 - y0) * (bottom - top)
        return px, py

    draw.rectangle((left, top, right, bottom), outline=(0, 0, 0))
    for fraction in (0.0, 0.5, 1.0):
        px = left + fraction * (right - left)
        draw.line((px, bottom, px, bottom + 4), fill=(0, 0, 0))
        text = _tick(x0 + fraction * (x1 - x0))
        draw.text((px - draw.textlength(text, font=font) / 2, bottom + 6), text, (0, 0, 0), font)
        py = bottom - fraction * (bottom - top)
        draw.line((left - 4, py, left, py), fill=(0, 0, 0))
        text = _tick(y0 + fraction * (y1 - y0))
        draw.text((left - 6 - draw.textlength(text, font=font), py - 6), text, (0, 0, 0), font)
    if x_label:
        middle = (left + right - draw.textlength(x_label, font=font)) / 2
        draw.text((middle, bottom + 22), x_label, (0, 0, 0), font)
    if y_label:
        draw.text((4, 4), y_label, (0, 0, 0), font)
    named = []
    for k, (name, x, y) in enumerate(series):
        colour = SERIES_COLORS[k % len(SERIES_COLORS)]
        xs_at, ys_at = place(np.asarray(x, np.float64).ravel(), np.asarray(y, np.float64).ravel())
        keep = np.isfinite(xs_at) & np.isfinite(ys_at)
        coords = list(zip(xs_at[keep].tolist(), ys_at[keep].tolist()))
        if points:
            for cx, cy in coords:
                draw.ellipse((cx - 2, cy - 2, cx + 2, cy + 2), fill=colour)
        elif len(coords) > 1:
            draw.line(coords, fill=colour, width=2)
        elif coords:
            cx, cy = coords[0]
            draw.ellipse((cx - 2, cy - 2, cx + 2, cy + 2), fill=colour)
        if name:
            named.append((name, colour))
    for row, (name, colour) in enumerate(named[:12]):
        text_left = right - 8 - draw.textlength(name, font=font)
        line_top = top + 6 + 14 * row
        draw.rectangle((text_left - 16, line_top + 2, text_left - 6, line_top + 10), fill=colour)
        draw.text((text_left, line_top), name, (0, 0, 0), font)
    return np.asarray(canvas)


__all__ = ["SERIES_COLORS", "chart"]
