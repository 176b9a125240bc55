"""The procedural shapes data set: determinism, streaming, masks, class balance, dtypes."""

from __future__ import annotations

import numpy as np
import pytest

from cnnviz.data import CLASSES, ShapesBatch, iter_shapes, make_shapes


@pytest.fixture(scope="module")
def batch() -> ShapesBatch:
    return make_shapes(400, seed=7)


def _assert_same(a: ShapesBatch, b: ShapesBatch) -> None:
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.masks, b.masks)


def _dilate(mask: np.ndarray, r: int) -> np.ndarray:
    """Binary dilation by a (2r+1)^2 square."""
    h, w = mask.shape
    padded = np.pad(mask, r)
    out = np.zeros_like(mask)
    for dy in range(2 * r + 1):
        for dx in range(2 * r + 1):
            out |= padded[dy : dy + h, dx : dx + w]
    return out


def test_classes() -> None:
    assert len(CLASSES) >= 8
    assert {"circle", "square", "triangle", "star", "cross", "ring", "stripes", "checker"} <= set(
        CLASSES
    )


@pytest.mark.parametrize("size", [32, 64, 96])
def test_dtypes_and_shapes(size: int) -> None:
    b = make_shapes(6, seed=0, size=size)
    assert b.images.shape == (6, size, size, 3) and b.images.dtype == np.uint8
    assert b.labels.shape == (6,) and b.labels.dtype == np.int64
    assert b.masks.shape == (6, size, size) and b.masks.dtype == np.bool_
    assert b.classes == CLASSES and len(b) == 6
    assert ((b.labels >= 0) & (b.labels < len(CLASSES))).all()
    assert b.masks.any(axis=(1, 2)).all()


def test_same_seed_is_identical() -> None:
    _assert_same(make_shapes(16, seed=3), make_shapes(16, seed=3))


def test_image_i_does_not_depend_on_n() -> None:
    short, long = make_shapes(5, seed=3), make_shapes(20, seed=3)
    _assert_same(short, ShapesBatch(long.images[:5], long.labels[:5], long.masks[:5]))


@pytest.mark.parametrize("chunk", [1, 8, 64])
def test_streaming_equals_one_batch(chunk: int) -> None:
    parts = list(iter_shapes(23, seed=3, batch=chunk))
    assert all(len(p) <= chunk for p in parts)
    joined = ShapesBatch(
        np.concatenate([p.images for p in parts]),
        np.concatenate([p.labels for p in parts]),
        np.concatenate([p.masks for p in parts]),
    )
    _assert_same(joined, make_shapes(23, seed=3))


def test_different_seeds_differ() -> None:
    a, b = make_shapes(16, seed=3), make_shapes(16, seed=4)
    assert not np.array_equal(a.labels, b.labels)
    assert all(not np.array_equal(x, y) for x, y in zip(a.images, b.images))


def test_mask_area_matches_object_size(batch: ShapesBatch) -> None:
    # Diameter 30-70% of the side; the thinnest shapes (star, ring) cover ~40% of their disc.
    area = batch.masks.mean(axis=(1, 2))
    assert area.min() > 0.02
    assert area.max() < 0.45


def test_object_contrasts_with_its_surroundings(batch: ShapesBatch) -> None:
    # Mean distance of object pixels to the mean colour of a 3-pixel band around the mask.
    images = batch.images.astype(np.float64)
    for image, mask in zip(images, batch.masks):
        band = _dilate(mask, 3) & ~mask
        distance = np.linalg.norm(image[mask] - image[band].mean(axis=0), axis=1).mean()
        assert distance > 50.0


def test_masks_follow_the_object_edges(batch: ShapesBatch) -> None:
    # Colour jumps across the mask boundary far more than inside the background.
    images = batch.images.astype(np.float64)
    jump_edge, jump_bg = [], []
    for image, mask in zip(images, batch.masks):
        step = np.linalg.norm(np.diff(image, axis=1), axis=-1)
        crosses = mask[:, 1:] != mask[:, :-1]
        background = ~_dilate(mask, 2)[:, 1:] & ~_dilate(mask, 2)[:, :-1]
        jump_edge.append(step[crosses].mean())
        jump_bg.append(step[background].mean())
    assert np.median(jump_edge) > 4 * np.median(jump_bg)


def test_classes_are_balanced() -> None:
    n = 1600
    counts = np.bincount(make_shapes(n, seed=11).labels, minlength=len(CLASSES))
    expected = n / len(CLASSES)  # binomial std ~13 at 200
    assert counts.min() > 0.7 * expected
    assert counts.max() < 1.3 * expected
