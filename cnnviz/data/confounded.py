"""The husky-vs-wolf lesson (Ribeiro, Singh & Guestrin 2016, "Why Should I Trust You?"),
reproducible offline: a confounded variant of the shapes data set.

In the confounded training set one class (``star`` by default, the "wolf") is *always* drawn
on a distinctive snowy background (near-white with white and grey speckles) and no other
class ever is. A model trained on it (``cnnviz.data.train_confounded``, shipped as
``models/shapes_confounded.onnx``) learns "snow means star": on unconfounded test images it
misses stars on ordinary backgrounds and calls other shapes put on snow stars, and occlusion
and LIME put their attribution on the background.

NumPy only (torch is never imported).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cnnviz.data.shapes import CLASSES, ShapesBatch, make_shapes

#: the class that always stands on snow in the confounded training set
SNOW_CLASS = CLASSES.index("star")
_MODELS = Path(__file__).parent / "models"


def confounded_model_path() -> Path:
    """Path of the shipped confounded model (``models/shapes_confounded.onnx``)."""
    return _MODELS / "shapes_confounded.onnx"


def snow_background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A snowy field: near-white base with soft shading, white flakes and grey specks
    (float32 (size, size, 3) RGB in [0, 255])."""
    base = rng.uniform(215.0, 240.0)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    gy, gx = rng.uniform(-12.0, 12.0, 2)
    field = base + gy * (yy - 0.5) + gx * (xx - 0.5)
    field = np.repeat(field[..., None], 3, axis=2) + np.array([-4.0, 0.0, 6.0], np.float32)
    flakes = rng.random((size, size)) < 0.08
    specks = rng.random((size, size)) < 0.05
    field[flakes] = 255.0
    field[specks] = rng.uniform(120.0, 170.0, (int(specks.sum()), 1))
    return field.astype(np.float32)


def on_snow(batch: ShapesBatch, seed: int) -> ShapesBatch:
    """The same objects with every background replaced by snow (image ``i`` of ``seed``
    depends only on ``(seed, i)``); labels and masks unchanged."""
    images = batch.images.copy()
    size = images.shape[1]
    for i in range(len(images)):
        snow = snow_background(np.random.default_rng([seed, i, 1]), size)
        outside = ~batch.masks[i]
        images[i][outside] = np.clip(np.rint(snow[outside]), 0, 255).astype(np.uint8)
    return ShapesBatch(images, batch.labels.copy(), batch.masks.copy(), batch.classes)


def make_confounded(n: int, seed: int, size: int = 64, snow_class: int = SNOW_CLASS) -> ShapesBatch:
    """The first ``n`` images of shapes data set ``seed`` with the confound applied: every
    image of ``snow_class`` on snow, every other image as in :func:`make_shapes`."""
    plain = make_shapes(n, seed, size)
    snowy = on_snow(plain, seed)
    pick = plain.labels == snow_class
    images = np.where(pick[:, None, None, None], snowy.images, plain.images)
    return ShapesBatch(images, plain.labels, plain.masks, plain.classes)


__all__ = [
    "SNOW_CLASS",
    "confounded_model_path",
    "make_confounded",
    "on_snow",
    "snow_background",
]
