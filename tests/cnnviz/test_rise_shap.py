"""RISE, KernelSHAP and GradientSHAP against independent references on a tiny torch CNN
exported to ONNX: RISE against the paper's formula in float64 NumPy (masks from
:func:`rise_masks`, upsampling against SciPy's zoom), KernelSHAP against Captum's
``KernelShap`` fed the same coalitions, GradientSHAP against Captum's ``GradientShap`` with
the same baseline, noise and point draws; plus models with known answers (a region's mean
for RISE, linear models for both SHAPs), determinism and batching, and bad input."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
from onnx import helper

from cnnviz.attribution import REGISTRY, Channel, Neuron
from cnnviz.attribution.gradient_shap import (
    baseline_distribution,
    gradient_shap,
    gradient_shap_draws,
)
from cnnviz.attribution.kernel_shap import (
    ENDPOINT_WEIGHT,
    coalition_weights,
    kernel_shap,
    shapley_coalitions,
    weighted_linear_fit,
)
from cnnviz.attribution.perturbation import superpixels
from cnnviz.attribution.rise import mask_grids, rise, rise_masks, upsample_masks
from cnnviz_core import InputError, Model
from tests.conftest import make_graph_model

SIZE = 16
CLASSES = 4


def _tiny_net(torch):
    """Conv-ReLU-MaxPool-Conv-ReLU-mean-Linear on 3 x 16 x 16, random weights (scaled)."""
    nn = torch.nn
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(8, CLASSES),
    )  # fmt: skip
    with torch.no_grad():  # confident enough that masking moves the probabilities
        net[0].weight.mul_(4.0)
        net[-1].weight.mul_(8.0)
    return net.eval()


@pytest.fixture(scope="module")
def exported():
    """(torch net, the same net as a cnnviz Model)."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnxscript")
    import onnx

    net = _tiny_net(torch)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's own notices
        program = torch.onnx.export(
            net, (torch.zeros(2, 3, SIZE, SIZE),), dynamo=True, verbose=False,
            dynamic_shapes=({0: torch.export.Dim("batch")},),
        )  # fmt: skip
    buffer = io.BytesIO()
    onnx.save(program.model_proto, buffer)
    return net, Model(buffer.getvalue(), preprocess="rgb01", name="tiny")


@pytest.fixture(scope="module")
def batch() -> np.ndarray:
    return np.random.default_rng(7).uniform(0, 1, (2, 3, SIZE, SIZE)).astype(np.float32)


def _probabilities64(net, x: np.ndarray) -> np.ndarray:
    """Class probabilities of the torch net in float64, (B, classes)."""
    import copy

    import torch

    twin = copy.deepcopy(net).double()
    with torch.no_grad():
        return torch.softmax(twin(torch.from_numpy(x.astype(np.float64))), dim=1).numpy()


def _relative(ours: np.ndarray, theirs: np.ndarray) -> float:
    return float(np.abs(ours - theirs).max() / np.abs(theirs).max())


# ---------------------------------------------------------------------------------- RISE


@pytest.mark.parametrize(("size", "cells"), [((16, 16), 4), ((64, 48), 7), ((20, 13), (3, 5))])
def test_rise_upsampling_is_scipy_zoom_cropped(size, cells) -> None:
    """Each mask = its grid zoomed bilinearly to (g + 1) * ceil(side / g) with half-pixel
    centres and mirrored edges (scikit-image's resize(order=1, mode='reflect'), the
    authors' code), cropped at its shift."""
    ndimage = pytest.importorskip("scipy.ndimage")
    grids, shifts = mask_grids(5, size, cells, p=0.5, seed=3)
    masks = upsample_masks(grids, shifts, size)
    gh, gw = grids.shape[1:]
    cell = (-(-size[0] // gh), -(-size[1] // gw))
    up = ((gh + 1) * cell[0], (gw + 1) * cell[1])
    for grid, (dy, dx), mask in zip(grids, shifts, masks):
        assert 0 <= dy < cell[0] and 0 <= dx < cell[1]
        zoomed = ndimage.zoom(grid.astype(np.float64), (up[0] / gh, up[1] / gw), order=1,
                              mode="mirror", grid_mode=True)  # fmt: skip
        assert zoomed.shape == up
        np.testing.assert_allclose(mask, zoomed[dy : dy + size[0], dx : dx + size[1]], atol=1e-6)


def test_rise_masks_are_seeded_and_keep_p() -> None:
    masks = rise_masks(400, (32, 32), cells=7, p=0.3, seed=1)
    assert masks.shape == (400, 32, 32) and masks.dtype == np.float32
    assert masks.min() >= 0 and masks.max() <= 1
    assert abs(masks.mean() - 0.3) < 0.03
    np.testing.assert_array_equal(masks, rise_masks(400, (32, 32), cells=7, p=0.3, seed=1))
    assert not np.array_equal(masks, rise_masks(400, (32, 32), cells=7, p=0.3, seed=2))


@pytest.mark.torch
@pytest.mark.parametrize("fill", ["zeros", "mean", 0.25])
def test_rise_equals_the_formula_in_float64(exported, batch: np.ndarray, fill) -> None:
    """S = sum_i f(I . M_i) M_i / (N p), f the class probability, computed here in float64
    with the masks of rise_masks and the torch net; chunks of an odd size."""
    net, model = exported
    count, cells, p, seed = 300, 4, 0.4, 5
    targets = [1, 3]
    result = rise(model, batch, targets, masks=count, cells=cells, p=p, fill=fill, seed=seed,
                  batch_size=37)  # fmt: skip
    masks = rise_masks(count, (SIZE, SIZE), cells, p, seed).astype(np.float64)
    for i, target in enumerate(targets):
        image = batch[i].astype(np.float64)
        if fill == "zeros":
            reference = np.zeros((3, 1, 1))
        elif fill == "mean":
            reference = image.mean(axis=(1, 2))[:, None, None]
        else:
            reference = np.full((3, 1, 1), fill)
        masked = masks[:, None] * image[None] + (1 - masks[:, None]) * reference[None]
        scores = _probabilities64(net, masked)[:, target]
        expected = np.tensordot(scores, masks, axes=1) / (count * p)
        assert _relative(result.maps[i], expected) <= 1e-5
    assert result.options == {"masks": count, "cells": cells, "p": p, "fill": fill,
                              "seed": seed}  # fmt: skip


def _region_model(region: np.ndarray) -> Model:
    """score = mean over the channels and the pixels of ``region`` (a (H, W) bool mask)."""
    weight = (region / (3 * region.sum())).astype(np.float32)[None, None]
    proto = make_graph_model(
        [
            helper.make_node("Mul", ["x", "region"], ["masked"]),
            helper.make_node("ReduceSum", ["masked", "axes"], ["total"], keepdims=1),
            helper.make_node("Flatten", ["total"], ["score"]),
        ],
        {"region": weight, "axes": np.array([1, 2, 3], np.int64)},
        ["N", 3, *region.shape],
        "score",
    )
    return Model(proto.SerializeToString(), preprocess="rgb01")


def test_rise_puts_its_mass_on_the_region_the_score_reads() -> None:
    """A model whose score is the mean of a known region (11 % of the image): RISE's map,
    above its floor far from the region (E[f]), lies inside the region dilated by one grid
    cell (the masks' smoothness), half of it in the region itself; its largest values are
    there."""
    h, w = 48, 48
    region = np.zeros((h, w), bool)
    region[8:24, 26:42] = True
    cell = 8  # 48 / 6 cells
    near = np.zeros((h, w), bool)
    near[8 - cell : 24 + cell, 26 - cell : 42 + cell] = True
    model = _region_model(region)
    image = np.random.default_rng(0).uniform(0.5, 1, (1, 3, h, w)).astype(np.float32)
    result = rise(model, image, Neuron("score", 0), masks=4000, cells=6, seed=0)
    saliency = result.maps[0]
    mass = (saliency - np.median(saliency[~near])).clip(0)
    assert mass[region].sum() / mass.sum() > 0.4
    assert mass[near].sum() / mass.sum() > 0.85
    top = np.argsort(saliency.ravel())[-region.sum() :]
    assert region.ravel()[top].mean() > 0.85
    assert saliency[region].mean() > 1.1 * saliency[~near].mean()


@pytest.mark.torch
def test_rise_is_the_same_alone_in_a_batch_and_in_any_chunks(exported, batch) -> None:
    _, model = exported
    calls = []
    both = rise(model, batch, masks=64, cells=3, batch_size=10,
                progress=lambda done, total: calls.append((done, total)))  # fmt: skip
    alone = rise(model, batch[1:], both.targets[1].as_target(), masks=64, cells=3)
    np.testing.assert_allclose(alone.maps[0], both.maps[1], rtol=1e-5, atol=1e-7)
    assert calls[-1] == (128, 128) and len(calls) == 2 * 7
    assert both.method == "rise" and not both.signed and both.maps.shape == (2, SIZE, SIZE)


@pytest.mark.parametrize(
    ("options", "message"),
    [({"masks": 0}, "masks >= 1"), ({"p": 0}, "0 < p <= 1"), ({"cells": 0}, "cells must"),
     ({"cells": (2, 2, 2)}, "cells must"), ({"batch_size": 0}, "batch_size must")],
)  # fmt: skip
def test_rise_rejects_bad_options(options, message) -> None:
    model = _region_model(np.ones((8, 8), bool))
    with pytest.raises(InputError, match=message):
        rise(model, np.ones((1, 3, 8, 8), np.float32), Neuron("score", 0), **options)


# ----------------------------------------------------------------------------- KernelSHAP


def test_coalitions_follow_the_shapley_kernel() -> None:
    """Endpoints first; sizes distributed as (M - 1) / (k (M - k)); members uniform."""
    m = 8
    coalitions = shapley_coalitions(m, 20002, seed=0)
    assert (coalitions[0] == 1).all() and (coalitions[1] == 0).all()
    sizes = coalitions[2:].sum(axis=1).astype(int)
    assert sizes.min() >= 1 and sizes.max() <= m - 1
    k = np.arange(1, m)
    expected = (m - 1) / (k * (m - k))
    expected /= expected.sum()
    observed = np.bincount(sizes, minlength=m)[1:] / len(sizes)
    np.testing.assert_allclose(observed, expected, atol=0.01)
    np.testing.assert_allclose(coalitions[2:].mean(axis=0), 0.5, atol=0.02)  # symmetric
    np.testing.assert_array_equal(coalitions, shapley_coalitions(m, 20002, seed=0))
    weights = coalition_weights(coalitions)
    assert weights[0] == weights[1] == ENDPOINT_WEIGHT and (weights[2:] == 1).all()
    assert shapley_coalitions(1, 50).tolist() == [[1.0], [0.0]]


def test_weighted_fit_is_scikit_learns() -> None:
    from sklearn.linear_model import LinearRegression

    rng = np.random.default_rng(3)
    x = shapley_coalitions(10, 200, seed=3)
    y = rng.standard_normal(200)
    w = coalition_weights(x)
    coef, intercept = weighted_linear_fit(x, y, w)
    reference = LinearRegression().fit(x, y, sample_weight=w)
    np.testing.assert_allclose(coef, reference.coef_, rtol=1e-7, atol=1e-9)
    assert abs(intercept - reference.intercept_) < 1e-9


def _grid_labels(side: int, cells: int) -> np.ndarray:
    rows = np.minimum(np.arange(side) * cells // side, cells - 1)
    return rows[:, None] * cells + rows[None, :]


def test_kernel_shap_is_exact_on_a_linear_model() -> None:
    """y = mean of a 1x1 conv: a segment's Shapley value is its exact share,
    sum over its pixels of w . (x - fill) / (H W), whatever the draws."""
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
    labels = _grid_labels(16, 4)
    result = kernel_shap(tiny, x, Channel("y", 0), segments=labels, samples=60, fill=0.2)
    per_pixel = (weight[0, :, 0, 0, None, None] * (x[0] - 0.2)).sum(axis=0) / 256
    expected = np.array([per_pixel[labels == s].sum() for s in range(16)])
    np.testing.assert_allclose(result.extras["coefficients"][0], expected, rtol=1e-4, atol=1e-7)
    assert result.metrics["efficiency"][0] < 1e-5
    np.testing.assert_allclose(result.maps[0], expected[labels], rtol=1e-4, atol=1e-7)


@pytest.mark.torch
@pytest.mark.filterwarnings("ignore::UserWarning")  # Captum: one model per example
@pytest.mark.parametrize("fill", [0.0, "mean"])
def test_kernel_shap_equals_captum_with_the_same_coalitions(exported, batch, fill) -> None:
    """Captum's KernelShap fed our coalitions (its perturbation generator replaced by them):
    same feature mask, baselines, sample count and draws: equal to 1e-5 (measured <= 3e-6:
    Captum's torch float32 forward and float32 fit). The same fit in float64 on the torch
    net's float64 scores: equal to 2e-6 (measured <= 5e-7)."""
    torch = pytest.importorskip("torch")
    attr = pytest.importorskip("captum.attr")
    net, model = exported
    labels = _grid_labels(SIZE, 4)
    samples, seed = 120, 4
    targets = [int(t) for t in model.scores(batch).argmax(axis=1)]
    ours = kernel_shap(model, batch, targets, segments=labels, samples=samples, fill=fill,
                       seed=seed, batch_size=50)  # fmt: skip
    coalitions = shapley_coalitions(16, samples, seed)

    def drawn(original, **kwargs):
        for row in coalitions:
            yield torch.from_numpy(row[None].astype(np.int64))

    explainer = attr.KernelShap(lambda x: torch.softmax(net(x), dim=1))
    explainer.perturb_func = drawn
    for i, target in enumerate(targets):
        x = torch.from_numpy(batch[i : i + 1].copy())
        base = batch[i].mean(axis=(1, 2)) if fill == "mean" else np.zeros(3)
        base = base[:, None, None]
        baselines = torch.from_numpy(np.broadcast_to(base, x.shape[1:]).astype(np.float32))
        with torch.no_grad():
            theirs = explainer.attribute(
                x, baselines=baselines[None], target=target, n_samples=samples,
                feature_mask=torch.from_numpy(labels)[None, None].expand(1, 3, SIZE, SIZE),
                perturbations_per_eval=32, return_input_shape=False,
            ).numpy().ravel()  # fmt: skip
        error = _relative(ours.extras["coefficients"][i], theirs)
        assert error <= 1e-5, error
        # the same fit in float64, on scores of the torch net in float64
        keep = coalitions.astype(bool)[:, labels]
        masked = np.where(keep[:, None], batch[i][None], base[None]).astype(np.float64)
        y = _probabilities64(net, masked)[:, target]
        phi, _ = weighted_linear_fit(coalitions, y, coalition_weights(coalitions))
        assert _relative(ours.extras["coefficients"][i], phi) <= 2e-6
        assert abs(ours.metrics["delta"][i] - (y[0] - y[1])) < 1e-6
    assert max(ours.metrics["efficiency"]) < 1e-4


def test_kernel_shap_segments_batching_and_errors() -> None:
    """SLIC segments as LIME cuts them; the same maps in any chunk size; label arrays are
    renumbered; bad options name themselves."""
    region = np.zeros((24, 24), bool)
    region[4:12, 4:12] = True
    model = _region_model(region)
    image = np.random.default_rng(1).uniform(0, 1, (1, 3, 24, 24)).astype(np.float32)
    a = kernel_shap(model, image, Neuron("score", 0), segments=9, samples=40, batch_size=7)
    b = kernel_shap(model, image, Neuron("score", 0), segments=9, samples=40)
    np.testing.assert_allclose(a.maps, b.maps, rtol=1e-6, atol=1e-9)
    pixels = model.preprocess.invert(model.prepare(image))[0]
    np.testing.assert_array_equal(a.extras["segments"][0], superpixels(pixels, 9))
    shifted = kernel_shap(model, image, Neuron("score", 0), samples=40, batch_size=7,
                          segments=a.extras["segments"][0] * 10 + 5)  # fmt: skip
    np.testing.assert_allclose(shifted.maps, a.maps, rtol=1e-6, atol=1e-9)
    assert a.signed and a.method == "kernelshap" and a.options["segments"] == 9
    calls = []
    whole = kernel_shap(
        model,
        image,
        Neuron("score", 0),
        segments=np.zeros((24, 24), np.int64),
        samples=40,
        progress=lambda done, total: calls.append((done, total)),
    )
    assert calls[-1] == (2, 2)  # one segment: only all-on and all-off exist
    np.testing.assert_allclose(whole.maps[0], whole.metrics["delta"][0], rtol=1e-6)
    with pytest.raises(InputError, match="samples >= 2"):
        kernel_shap(model, image, Neuron("score", 0), samples=1)
    with pytest.raises(InputError, match="segments must be"):
        kernel_shap(model, image, Neuron("score", 0), segments=np.zeros((5, 5), np.int64))
    with pytest.raises(InputError, match="unknown segmentation"):
        kernel_shap(model, image, Neuron("score", 0), segmentation="watershed")


# --------------------------------------------------------------------------- GradientSHAP


@pytest.mark.torch
@pytest.mark.parametrize(("stdevs", "target"), [(0.0, None), (0.1, [2, 0])])
def test_gradient_shap_equals_captum_with_shared_draws(
    exported, batch, monkeypatch, stdevs, target
) -> None:
    """Captum's GradientShap with its three draws (np.random.choice for the baselines,
    torch.normal for the noise, np.random.uniform for the points) answered by ours."""
    torch = pytest.importorskip("torch")
    attr = pytest.importorskip("captum.attr")
    net, model = exported
    n_samples, seed = 6, 11
    base = np.random.default_rng(2).uniform(0, 1, (5, 3, SIZE, SIZE)).astype(np.float32)
    ours = gradient_shap(model, batch, target, baselines=base, n_samples=n_samples,
                         stdevs=stdevs, seed=seed, batch_size=5)  # fmt: skip
    draws = [gradient_shap_draws(image, len(base), n_samples, seed) for image in batch]
    index = np.concatenate([d[0] for d in draws])  # image-major, as repeat_interleave
    points = np.concatenate([d[1] for d in draws]).astype(np.float64)
    noise = np.float32(stdevs) * np.concatenate([d[2] for d in draws])

    def choice(count, size):
        assert count == len(base) and size == len(index)
        return index.copy()

    def uniform(low, high, size):
        assert (low, high, size) == (0.0, 1.0, len(points))
        return points.copy()

    def normal(mean, std):
        assert tuple(std.shape) == noise.shape
        return torch.from_numpy(noise.copy())

    monkeypatch.setattr(np.random, "choice", choice)
    monkeypatch.setattr(np.random, "uniform", uniform)
    monkeypatch.setattr(torch, "normal", normal)
    classes = [t.class_index for t in ours.targets]
    theirs = attr.GradientShap(net).attribute(
        torch.from_numpy(batch.copy()), baselines=torch.from_numpy(base), n_samples=n_samples,
        stdevs=stdevs, target=classes,
    ).detach().numpy()  # fmt: skip
    monkeypatch.undo()
    error = _relative(ours.extras["attributions"], theirs)
    assert error <= 1e-5, error
    summed = ours.extras["attributions"].sum(axis=1)
    np.testing.assert_allclose(ours.maps, summed, atol=1e-6 * np.abs(summed).max())
    if target is None:
        assert classes == [int(c) for c in model.scores(batch).argmax(axis=1)]


def test_gradient_shap_sums_to_the_expected_delta_on_a_linear_model() -> None:
    """Linear f: each draw's (x - b) . grad is f(x) - f(b) exactly, so the attributions sum
    to f(x) - mean f(drawn b)."""
    rng = np.random.default_rng(4)
    weight = rng.standard_normal((1, 3, 1, 1)).astype(np.float32)
    proto = make_graph_model(
        [helper.make_node("Conv", ["x", "w", "b"], ["y"])],
        {"w": weight, "b": np.array([0.3], np.float32)},
        ["N", 3, 8, 8],
        "y",
    )
    tiny = Model(proto.SerializeToString(), preprocess="rgb01")
    x = rng.uniform(0, 1, (2, 3, 8, 8)).astype(np.float32)
    result = gradient_shap(tiny, x, Channel("y", 0), n_samples=9, baseline_count=4)
    np.testing.assert_allclose(result.metrics["sum"], result.metrics["expected_delta"],
                               rtol=1e-5, atol=1e-6)  # fmt: skip
    alone = gradient_shap(tiny, x[1:], Channel("y", 0), n_samples=9, baseline_count=4)
    np.testing.assert_allclose(alone.maps[0], result.maps[1], rtol=1e-6, atol=1e-8)
    assert result.extras["baselines"].shape == (4, 3, 8, 8)


def test_gradient_shap_baselines_and_errors() -> None:
    model = _region_model(np.ones((8, 8), bool))
    uniform = baseline_distribution(model, (3, 8, 8), "uniform", 3, seed=0)
    assert uniform.shape == (3, 3, 8, 8) and 0 <= uniform.min() and uniform.max() <= 1
    np.testing.assert_array_equal(baseline_distribution(model, (3, 8, 8), "zeros", 3, 0), 0)
    single = baseline_distribution(model, (3, 8, 8), np.ones((3, 8, 8)), 3, 0)
    assert single.shape == (1, 3, 8, 8)
    with pytest.raises(InputError, match="unknown baselines"):
        baseline_distribution(model, (3, 8, 8), "blur", 3, 0)
    with pytest.raises(InputError, match=r"baselines must have shape \(B, 3, 8, 8\)"):
        baseline_distribution(model, (3, 8, 8), np.ones((2, 8, 8)), 3, 0)
    with pytest.raises(InputError, match="n_samples >= 1"):
        gradient_shap(model, np.ones((1, 3, 8, 8), np.float32), Neuron("score", 0), n_samples=0)


def test_registered_with_family_and_paper() -> None:
    assert REGISTRY["rise"].family == "perturbation" and "Petsiuk" in REGISTRY["rise"].paper
    assert REGISTRY["kernelshap"].family == "perturbation"
    assert REGISTRY["gradientshap"].family == "gradient"
    assert all("Lundberg & Lee 2017" in REGISTRY[n].paper for n in ("kernelshap", "gradientshap"))
