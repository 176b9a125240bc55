"""LIME: a linear model whose answer is known (the surrogate recovers each segment's exact
contribution), LIME's kernel, segmentation, determinism by seed, top segments, bad input."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from cnnviz import load_model
from cnnviz.attribution import Channel, lime
from cnnviz.attribution.lime import kernel_weights, sample_masks, show_top
from cnnviz.attribution.perturbation import rgb_to_lab, superpixels
from cnnviz.data import make_shapes
from cnnviz_core import InputError, Model, TargetError
from tests.conftest import make_graph_model


@pytest.fixture(scope="module")
def model() -> Model:
    return load_model("shapes")


@pytest.fixture(scope="module")
def sample():
    return make_shapes(2, seed=13)


def test_linear_model_recovers_segment_contributions() -> None:
    """y = mean over pixels of a 1x1 conv: linear in the on/off masks with fill 0, so a
    barely regularised ridge must return each segment's exact share."""
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((1, 3, 1, 1)).astype(np.float32)
    proto = make_graph_model(
        [helper.make_node("Conv", ["x", "w", "b"], ["y"])],
        {"w": weight, "b": np.array([0.3], np.float32)},
        ["N", 3, 16, 16],
        "y",
    )
    tiny = Model(proto.SerializeToString(), preprocess="rgb01")
    x = rng.uniform(0, 1, (1, 3, 16, 16)).astype(np.float32)
    result = lime(
        tiny, x, Channel("y", 0), segmentation="grid", segments=16, samples=300,
        fill=0.0, alpha=1e-9, kernel_width=10.0,
    )  # fmt: skip
    per_pixel = (weight[0, :, 0, 0, None, None] * x[0]).sum(axis=0) / 256
    labels = result.extras["segments"][0]
    expected = np.array([per_pixel[labels == s].sum() for s in range(labels.max() + 1)])
    np.testing.assert_allclose(result.extras["coefficients"][0], expected, rtol=1e-4, atol=1e-7)
    assert result.metrics["r2"][0] > 0.999999
    np.testing.assert_allclose(result.metrics["intercept"][0], 0.3, atol=1e-5)


def test_kernel_matches_lime_formula() -> None:
    masks = sample_masks(10, 50, seed=1)
    d = 1 - masks.sum(axis=1) / (np.linalg.norm(masks, axis=1) * np.sqrt(10))
    np.testing.assert_allclose(kernel_weights(masks, 0.25), np.sqrt(np.exp(-(d**2) / 0.0625)))
    assert (masks[0] == 1).all() and kernel_weights(masks, 0.25)[0] == 1.0


def test_lab_white_and_black() -> None:
    np.testing.assert_allclose(rgb_to_lab(np.array([255, 255, 255])), [100, 0, 0], atol=0.01)
    np.testing.assert_allclose(rgb_to_lab(np.array([0, 0, 0])), [0, 0, 0], atol=1e-9)


@pytest.mark.parametrize("method", ["slic", "grid"])
def test_superpixels_cover_and_follow_colour(sample, method: str) -> None:
    labels = superpixels(sample.images[0], 49, method=method)
    assert labels.shape == (64, 64) and labels.min() == 0
    assert set(np.unique(labels)) == set(range(labels.max() + 1))
    assert 20 <= labels.max() + 1 <= 49
    if method == "slic":  # segments follow the object: most are mostly on or mostly off it
        mask = sample.masks[0]
        purity = [max(mask[labels == s].mean(), 1 - mask[labels == s].mean())
                  for s in range(labels.max() + 1)]  # fmt: skip
        assert np.mean(purity) > 0.9


def test_deterministic_by_seed_and_top(model: Model, sample) -> None:
    a = lime(model, sample.images, None, samples=200, seed=3)
    b = lime(model, sample.images, None, samples=200, seed=3)
    c = lime(model, sample.images, None, samples=200, seed=4)
    np.testing.assert_array_equal(a.maps, b.maps)
    assert not np.array_equal(a.maps, c.maps)
    assert a.signed and a.maps.shape == (2, 64, 64)
    for i in range(2):
        top = a.extras["top"][i]
        assert top.any()
        assert a.maps[i][top].min() > 0
        shown = show_top(a, i)
        assert shown.shape == (64, 64, 3)
        np.testing.assert_array_equal(shown[top], a.images[i][top])
    # the explanation of a confident shapes prediction lies mostly on the object
    inside = [np.maximum(a.maps[i], 0)[sample.masks[i]].sum() / np.maximum(a.maps[i], 0).sum()
              for i in range(2)]  # fmt: skip
    assert min(inside) > 0.5


def test_progress_and_interrupt(model: Model, sample) -> None:
    calls = []
    lime(model, sample.images[:1], 0, samples=100, batch_size=30,
         progress=lambda d, t: calls.append((d, t)))  # fmt: skip
    assert calls == [(30, 100), (60, 100), (90, 100), (100, 100)]

    def stop(done: int, total: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        lime(model, sample.images[:1], 0, samples=100, progress=stop)


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"samples": 1}, InputError),
        ({"keep": 1.0}, InputError),
        ({"segmentation": "watershed"}, InputError),
        ({"fill": np.zeros(4)}, InputError),
        ({"target": 8}, TargetError),
    ],
)
def test_bad_input(model: Model, sample, options, error) -> None:
    options = {"target": 0, **options}
    target = options.pop("target")
    with pytest.raises(error):
        lime(model, sample.images, target, **options)


def test_weighted_ridge_equals_scikit_learn() -> None:
    from sklearn.linear_model import Ridge

    from cnnviz.attribution.lime import weighted_ridge

    rng = np.random.default_rng(5)
    x = sample_masks(12, 80, seed=2)
    y = x @ rng.standard_normal(12) + 0.1 * rng.standard_normal(80)
    w = kernel_weights(x, 0.25)
    beta, intercept, r2 = weighted_ridge(x, y, w, 1.0)
    ridge = Ridge(alpha=1.0).fit(x, y, sample_weight=w)
    np.testing.assert_allclose(beta, ridge.coef_, rtol=1e-7, atol=1e-10)
    np.testing.assert_allclose(intercept, ridge.intercept_, rtol=1e-7)
    np.testing.assert_allclose(r2, ridge.score(x, y, sample_weight=w), rtol=1e-7)
