"""Scoring: deletion / insertion curves against a direct computation, pointing game and
energy inside the mask on hand-made maps, ROAD (its imputation and curves against Quantus'
noisy linear imputation) and faithfulness correlation (against a float64 recomputation), and
the husky-vs-wolf lesson (the confounded model's occlusion and LIME attribution lies off the
object, far more than the clean one's)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.stats

from cnnviz import load_model
from cnnviz.attribution import lime, occlusion, saliency
from cnnviz.attribution.base import make_attribution
from cnnviz.attribution.scoring import (
    IMPUTATION_WEIGHTS,
    deletion,
    energy_inside,
    faithfulness_correlation,
    insertion,
    noisy_linear_imputation,
    pointing_game,
    road,
    score,
)
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


def _imputation_reference(image: np.ndarray, removed: np.ndarray) -> np.ndarray:
    """ROAD's equations solved densely in float64: every removed pixel equals the weighted
    mean of its in-image neighbours."""
    c, h, w = image.shape
    unknown = [(y, x) for y in range(h) for x in range(w) if removed[y, x]]
    var = {p: k for k, p in enumerate(unknown)}
    a = np.zeros((len(unknown), len(unknown)))
    b = np.zeros((len(unknown), c))
    for k, (y, x) in enumerate(unknown):
        for dy, dx, weight in IMPUTATION_WEIGHTS:
            ny, nx = y + dy, x + dx
            if not (0 <= ny < h and 0 <= nx < w):
                continue
            a[k, k] += weight
            if (ny, nx) in var:
                a[k, var[ny, nx]] -= weight
            else:
                b[k] += weight * image[:, ny, nx]
    out = image.astype(np.float64).copy()
    solved = np.linalg.solve(a, b)
    for k, (y, x) in enumerate(unknown):
        out[:, y, x] = solved[k]
    return out


def test_noisy_linear_imputation_against_references(model: Model, sample) -> None:
    batch = model.prepare(sample.images)
    rng = np.random.default_rng(4)
    small = batch[0, :, 10:26, 20:32]  # (3, 16, 12): corners and edges removed too
    removed = rng.random(small.shape[1:]) < 0.6
    removed[0, 0] = removed[-1, -1] = removed[0, 5] = True
    exact = noisy_linear_imputation(small, removed, noise=0)
    np.testing.assert_allclose(exact, _imputation_reference(small, removed), atol=1e-6)
    np.testing.assert_array_equal(exact[:, ~removed], small[:, ~removed])
    noisy = noisy_linear_imputation(small, removed, noise=0.5, rng=np.random.default_rng(1))
    np.testing.assert_array_equal(noisy[:, ~removed], small[:, ~removed])
    assert 0.4 < np.std(noisy[:, removed] - exact[:, removed]) < 0.6
    with pytest.raises(InputError, match="removed mask"):
        noisy_linear_imputation(small, removed[1:])
    perturb = pytest.importorskip("quantus.functions.perturb_func")
    flat = np.sort(rng.choice(64 * 64, 2500, replace=False))
    mask = np.zeros(64 * 64, bool)
    mask[flat] = True
    ours = noisy_linear_imputation(batch[1], mask.reshape(64, 64), noise=0)
    theirs = perturb.noisy_linear_imputation(batch[1].astype(np.float64), flat, noise=0)
    np.testing.assert_allclose(ours, theirs, atol=1e-5)


def test_road_against_quantus_imputation(model: Model, sample) -> None:
    """ROAD's curves as Quantus' ROAD builds them: the top int(H W p / 100) pixels of the
    map (bottom for LeRF) imputed by Quantus' noisy_linear_imputation (noise 0)."""
    perturb = pytest.importorskip("quantus.functions.perturb_func")
    batch = model.prepare(sample.images)
    maps = np.random.default_rng(2).standard_normal((3, 64, 64)).astype(np.float32)
    result = _fixed(model, sample, maps)
    percentages = (10, 45, 90)
    curves = road(model, result, percentages=percentages, noise=0)
    assert curves.morf.shape == curves.lerf.shape == curves.morf_kept.shape == (3, 3)
    for i in range(3):
        k = result.targets[i].class_index
        for j, p in enumerate(percentages):
            count = int(64 * 64 * p / 100)
            for order, scores, kept in (
                (np.argsort(-maps[i].ravel()), curves.morf, curves.morf_kept),
                (np.argsort(maps[i].ravel()), curves.lerf, curves.lerf_kept),
            ):
                x = perturb.noisy_linear_imputation(
                    batch[i].astype(np.float64), order[:count], noise=0
                )
                probs = model.probabilities(x[None].astype(np.float32))[0]
                assert scores[i, j] == pytest.approx(probs[k], rel=1e-4, abs=1e-6)
                assert kept[i, j] == float(probs.argmax() == k)
    np.testing.assert_allclose(curves.morf_mean, curves.morf.mean(axis=1))
    with pytest.raises(InputError, match="percentages"):
        road(model, result, percentages=(50, 100))


def test_road_and_faithfulness_rank_a_good_map_above_a_bad_one(model: Model, sample) -> None:
    masks = sample.masks.astype(np.float32)
    good = _fixed(model, sample, masks + 0.01 * np.random.default_rng(1).random(masks.shape))
    bad = _fixed(model, sample, 1 - masks)
    good_road, bad_road = road(model, good), road(model, bad)
    assert good_road.morf_mean.mean() < bad_road.morf_mean.mean()
    assert good_road.lerf_mean.mean() > bad_road.lerf_mean.mean()
    good_fc = faithfulness_correlation(model, good).correlation
    bad_fc = faithfulness_correlation(model, bad).correlation
    assert good_fc.mean() > 0 > bad_fc.mean()


def test_faithfulness_correlation_float64_reference(model: Model, sample) -> None:
    batch = model.prepare(sample.images)
    maps = np.random.default_rng(3).standard_normal((3, 64, 64)).astype(np.float32)
    result = _fixed(model, sample, maps)
    runs, subset = 12, 0.1
    fc = faithfulness_correlation(model, result, runs=runs, subset=subset, fill="zeros")
    size = round(subset * 64 * 64)
    assert fc.subsets.shape == (3, runs, size)
    logits = model.scores(batch).astype(np.float64)
    for i in range(3):
        k = result.targets[i].class_index
        assert all(len(set(s)) == size for s in fc.subsets[i])
        x = np.repeat(batch[i][None], runs, axis=0).reshape(runs, 3, -1)
        for r in range(runs):
            x[r][:, fc.subsets[i, r]] = 0.0
        drops = logits[i, k] - model.scores(x.reshape(runs, 3, 64, 64))[:, k]
        sums = maps[i].astype(np.float64).ravel()[fc.subsets[i]].sum(axis=1)
        np.testing.assert_allclose(fc.drops[i], drops, rtol=1e-4, atol=1e-7)
        np.testing.assert_allclose(fc.attribution_sums[i], sums, rtol=1e-6)
        assert fc.correlation[i] == pytest.approx(scipy.stats.pearsonr(sums, drops)[0], abs=1e-4)
    with pytest.raises(InputError, match="runs"):
        faithfulness_correlation(model, result, runs=1)
    with pytest.raises(InputError, match="subset"):
        faithfulness_correlation(model, result, subset=1.5)


def test_quality_table_has_the_road_and_faithfulness_columns(model: Model) -> None:
    from cnnviz.attribution.quality import quality_table

    held = make_shapes(2, seed=2)
    rows = quality_table(model, held.images, held.masks, ("saliency", "gradcam"), steps=4)
    assert [row["method"] for row in rows] == ["saliency", "Grad-CAM"]
    for row in rows:
        assert 0 <= row["ROAD MoRF (lower better)"] <= 1
        assert 0 <= row["ROAD LeRF (higher better)"] <= 1
        assert -1 <= row["faithfulness corr. (higher better)"] <= 1
    json.dumps(rows)  # the benchmark writes them as JSON


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
