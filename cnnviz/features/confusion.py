"""Confusion matrix of predictions against labels, and the most confused class pairs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from cnnviz_core import InputError

from ..render.colormap import apply_colormap


@dataclass(frozen=True)
class ConfusedPair:
    """Images of class ``true`` predicted as ``predicted``: ``count`` of them, ``rate`` of
    the true class's images."""

    true: int
    predicted: int
    count: int
    rate: float


def confusion_matrix(
    true: np.ndarray, predicted: np.ndarray, num_classes: int | None = None
) -> np.ndarray:
    """Counts (C, C): row = true class, column = predicted class.

    Args:
        true, predicted: (N,) class indices.
        num_classes: C (default: one more than the largest index seen).
    """
    true = np.asarray(true, np.int64).ravel()
    predicted = np.asarray(predicted, np.int64).ravel()
    if true.shape != predicted.shape:
        raise InputError(f"{len(true)} labels but {len(predicted)} predictions")
    if len(true) and min(true.min(), predicted.min()) < 0:
        raise InputError("class indices must be >= 0")
    seen = int(max(true.max(initial=-1), predicted.max(initial=-1))) + 1
    classes = seen if num_classes is None else num_classes
    if seen > classes:
        raise InputError(f"class index {seen - 1} >= num_classes {classes}")
    counts = np.bincount(true * classes + predicted, minlength=classes * classes)
    return counts.reshape(classes, classes)


def most_confused(matrix: np.ndarray, k: int = 5) -> list[ConfusedPair]:
    """The k largest off-diagonal cells (count, then rate, descending; zeros left out)."""
    matrix = np.asarray(matrix)
    totals = matrix.sum(axis=1)
    pairs = [
        ConfusedPair(t, p, int(matrix[t, p]), float(matrix[t, p] / max(totals[t], 1)))
        for t in range(len(matrix))
        for p in range(len(matrix))
        if t != p and matrix[t, p] > 0
    ]
    pairs.sort(key=lambda pair: (-pair.count, -pair.rate, pair.true, pair.predicted))
    return pairs[:k]


def render_confusion(
    matrix: np.ndarray, labels: Sequence[str] | None = None, cell: int = 36
) -> np.ndarray:
    """The matrix as a picture: rows normalised to rates (colour), counts written in cells,
    class names along the left and the top.

    Returns:
        uint8 (H, W, 3).
    """
    matrix = np.asarray(matrix)
    n = len(matrix)
    names = list(labels) if labels is not None else [str(i) for i in range(n)]
    rates = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    colours = apply_colormap(rates, "inferno")
    left = 8 + 7 * max(len(name) for name in names)
    top = left
    canvas = Image.new("RGB", (left + n * cell + 4, top + n * cell + 4), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for t in range(n):
        draw.text((4, top + t * cell + cell // 2 - 6), names[t], fill=(0, 0, 0))
        for p in range(n):
            x, y = left + p * cell, top + t * cell
            draw.rectangle((x, y, x + cell - 2, y + cell - 2), fill=tuple(colours[t, p]))
            ink = (0, 0, 0) if rates[t, p] > 0.6 else (255, 255, 255)
            draw.text((x + 4, y + cell // 2 - 6), str(int(matrix[t, p])), fill=ink)
    header = Image.new("RGB", (top, n * cell), (255, 255, 255))
    header_draw = ImageDraw.Draw(header)
    for p in range(n):
        header_draw.text((4, p * cell + cell // 2 - 6), names[p], fill=(0, 0, 0))
    canvas.paste(header.rotate(90, expand=True), (left, 0))
    return np.asarray(canvas)
