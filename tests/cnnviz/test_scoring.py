"""Scoring: deletion / insertion curves against a direct computation, pointing game and
energy inside the mask on hand-made maps, and the husky-vs-wolf lesson (the confounded
model's occlusion and LIME attribution lies off the object, far more than the clean one's)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cnnviz import load_model
from cnnviz.attribution import lime, occlusion, saliency
from cnnviz.attribution.base import make_attribution
from cnnviz.attribution.scoring import deletion, energy_inside, insertion, pointing_game, score
from cnnviz.data import make_shapes
from cnnviz.data.confounded import (
    SNOW_CLASS,
    confounded_model_path,
    make_confounded,
    on_snow,
)
from cnnviz_core import InputError, Model


@pytest.fixture(scope="module")
def model() -> Model:
    return load_model("shapes")


@pytest.fixture(scope="module")
def sample():
    return make_shapes(3, seed=17)


def _fixed(model: Model, sample, maps: np.ndarray, target=None):
    batch = model.prepare(sample.images)
    return make_attribution(maps, "fixed", saliency(model, batch, target).targets, {}, model, batch)


def test_deletion_insertion_direct(model: Model, sample) -> None:
    batch = model.prepare(sample.images)
    rng = np.random.default_rng(0)
    maps = rng.standard_normal((3, 64, 64)).astype(np.float32)
    result = _fixed(model, sample, maps)
    steps = 8
    curves = deletion(model, result, steps=steps)
    probs = model.probabilities(batch)
    k = [t.class_index for t in result.targets]
    assert curves.scores.shape == (3, steps + 1)
    np.testing.assert_allclose(curves.fractions, np.linspace(0, 1, steps + 1))
    np.testing.assert_allclose(curves.scores[:, 0], probs[np.arange(3), k], rtol=1e-5)
    zeros = model.probabilities(np.zeros_like(batch))
    np.testing.assert_allclose(curves.scores[:, -1], zeros[np.arange(3), k], rtol=1e-5)
    # one middle point by hand: the top 3/8 of pixels set to zero
    i, j = 1, 3
    n_px = round(64 * 64 * j / steps)
    top = np.argsort(-maps[i].ravel(), kind="stable")[:n_px]
    x = batch[i].copy().reshape(3, -1)
    x[:, top] = 0
    expected = model.probabilities(x.reshape(1, 3, 64, 64))[0, k[i]]
    np.testing.assert_allclose(curves.scores[i, j], expected, rtol=1e-5)
    np.testing.assert_allclose(curves.auc, np.trapezoid(curves.scores, curves.fractions, axis=1))
    ins = insertion(model, result, steps=steps)
    np.testing.assert_allclose(ins.scores[:, -1], probs[np.arange(3), k], rtol=1e-5)


def test_object_first_beats_background_first(model: Model, sample) -> None:
    masks = sample.masks.astype(np.float32)
    good = _fixed(model, sample, masks + 0.01 * np.random.default_rng(1).random(masks.shape))
    bad = _fixed(model, sample, 1 - masks)
    assert deletion(model, good).auc.mean() < deletion(model, bad).auc.mean()
    assert insertion(model, good).auc.mean() > insertion(model, bad).auc.mean()
    scores = score(model, good, sample.masks)
    assert scores["pointing_game"] == 1.0 and scores["energy_inside"] > 0.95
    assert score(model, bad, sample.masks)["pointing_game"] == 0.0


def test_pointing_game_and_energy_by_hand(model: Model, sample) -> None:
    maps = np.zeros((3, 64, 64), np.float32)
    masks = np.zeros((3, 64, 64), bool)
    masks[:, 10:20, 10:20] = True
    maps[0, 15, 15] = 2.0  # peak on the object, all energy inside
    maps[1, 30, 30] = 1.0  # peak off the object; 1/3 of the positive energy inside
    maps[1, 12, 12] = 0.5
    maps[1, 5, 5] = -9.0  # negative values do not count
    maps[2, 20, 15] = 1.0  # one pixel below the object: a hit with tolerance 1
    result = _fixed(model, sample, maps)
    np.testing.assert_array_equal(pointing_game(result, masks), [True, False, False])
    np.testing.assert_array_equal(pointing_game(result, masks, tolerance=1), [True, False, True])
    np.testing.assert_allclose(energy_inside(result, masks), [1.0, 1 / 3, 0.0])
    with pytest.raises(InputError, match="do not match"):
        energy_inside(result, masks[:, :10])


def test_confounded_model_card_and_confound() -> None:
    card = json.loads(confounded_model_path().with_suffix(".json").read_text())
    assert card["star_recall_plain"] < 0.2  # on ordinary backgrounds stars are missed
    assert card["non_star_on_snow_called_star"] > 0.7  # snow alone means "star"
    assert confounded_model_path().stat().st_size < 2 << 20
    data = make_confounded(64, seed=5)
    stars = data.labels == SNOW_CLASS
    corner = data.images[:, :3, :3].reshape(64, -1).mean(axis=1)
    assert corner[stars].min() > corner[~stars].max() - 40 or stars.sum() == 0


def test_husky_vs_wolf_attribution_off_the_object() -> None:
    """Non-star shapes on snow: the confounded model calls them stars, and occlusion and
    LIME put far more of their attribution off the object than for the clean model."""
    clean = load_model("shapes")
    confounded = Model(confounded_model_path(), name="shapes_confounded")
    plain = make_shapes(20, seed=31)
    keep = plain.labels != SNOW_CLASS
    snowy = on_snow(plain, 31)
    images, masks = snowy.images[keep][:8], snowy.masks[keep][:8]
    predicted = confounded.scores(confounded.prepare(images)).argmax(axis=1)
    assert (predicted == SNOW_CLASS).mean() >= 0.75
    outside = {}
    for name, m in (("clean", clean), ("confounded", confounded)):
        occ = occlusion(m, images, None, window=8, stride=4, fill="grey")
        lim = lime(m, images, None, samples=300)
        outside[name] = (1 - energy_inside(occ, masks).mean(), 1 - energy_inside(lim, masks).mean())
    assert outside["confounded"][0] > outside["clean"][0] + 0.1, outside
    assert outside["confounded"][1] > outside["clean"][1] + 0.15, outside
