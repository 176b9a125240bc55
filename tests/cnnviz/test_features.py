"""cnnviz.features on the shipped shapes model: filters, activations, embeddings,
neighbours, projections, confusion matrix, clusters and maximally activating patches,
each against an independent NumPy computation or brute force."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from onnx import helper

import cnnviz
from cnnviz.data import iter_shapes, make_shapes
from cnnviz.features import (
    Embeddings,
    RunningTopK,
    confusion_matrix,
    conv_filters,
    extract,
    feature_map_grid,
    high_frequency_energy,
    image_grid,
    kmeans,
    knn_accuracy,
    label_agreement,
    most_confused,
    nearest_neighbors,
    pca,
    projections,
    purity,
    render_filters,
    render_top_patches,
    rgb_tiles,
    signed_and_rectified,
    strongest_channels,
    top_images,
    top_patches,
)
from cnnviz.features.neighbors import pixel_features
from cnnviz.render.images import text_width
from cnnviz_core import Model
from tests.conftest import make_graph_model


@pytest.fixture(scope="module")
def model() -> Model:
    return cnnviz.load_model("shapes")


@pytest.fixture(scope="module")
def shapes400():
    return make_shapes(400, seed=11)


@pytest.fixture(scope="module")
def small(model):
    data = make_shapes(48, seed=5)
    return data, model.prepare(data.images)


# ------------------------------------------------------------------------------ filters


def test_first_layer_filters_render(model):
    filters = conv_filters(model)
    assert filters.layer == "conv2d" and filters.weights.shape == (16, 3, 3, 3)
    np.testing.assert_array_equal(filters.weights, model.constants["features.conv1.weight"])
    tiles = rgb_tiles(filters.weights, "filter")
    assert tiles.shape == (16, 3, 3, 3)
    np.testing.assert_allclose(tiles.reshape(16, -1).min(axis=1), 0, atol=1e-6)
    np.testing.assert_allclose(tiles.reshape(16, -1).max(axis=1), 1, atol=1e-6)
    w = filters.weights
    joint = rgb_tiles(w, "joint")
    expected = ((w - w.min()) / (w.max() - w.min())).transpose(0, 2, 3, 1)
    np.testing.assert_allclose(joint, expected, atol=1e-6)
    picture = render_filters(filters, "filter", tile_side=24)
    # 4 x 4 tiles of 24 px (3x3 kernel x 8), 2 px padding
    assert picture.shape == (4 * 26 + 2, 4 * 26 + 2, 3) and picture.dtype == np.uint8
    assert picture[2:26, 2:26].std() > 0


def test_grouped_and_depthwise_filters():
    rng = np.random.default_rng(0)
    weights = {
        "w1": rng.standard_normal((6, 3, 3, 3)).astype(np.float32),
        "dw": rng.standard_normal((6, 1, 3, 3)).astype(np.float32),
        "gw": rng.standard_normal((4, 3, 3, 3)).astype(np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], "c1", pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["c1", "dw"], ["c2"], "c2", group=6, pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["c2", "gw"], ["c3"], "c3", group=2, pads=[1, 1, 1, 1]),
    ]
    proto = make_graph_model(nodes, weights, ["N", 3, 8, 8], "c3")
    m = Model(proto.SerializeToString(), preprocess=cnnviz.Preprocess(size=(8, 8)))
    depthwise = conv_filters(m, "c2")
    assert depthwise.depthwise and depthwise.groups == 6
    assert render_filters(depthwise, tile_side=9).shape == (2 * 10 + 1, 3 * 10 + 1)
    grouped = conv_filters(m, "c3")
    assert not grouped.depthwise and grouped.groups == 2
    # output filter 3 (group 1) reads input channels 3..5
    assert [grouped.input_channel(3, j) for j in range(3)] == [3, 4, 5]
    assert render_filters(grouped, tile_side=9).shape == (4 * 10 + 1, 3 * 10 + 1)


def test_grouped_filter_grid(model):
    filters = conv_filters(model, "relu_1")  # the ReLU names its Conv
    assert filters.layer == "conv2d_1" and filters.groups == 1
    picture = render_filters(filters, "filter", tile_side=9, max_out=4, max_in=5)
    assert picture.shape == (4 * 10 + 1, 5 * 10 + 1)


def test_high_frequency_energy_ranks_noise_above_smooth():
    y, x = np.mgrid[-2:3, -2:3]
    smooth = np.exp(-(x**2 + y**2) / 4.0)
    checker = (-1.0) ** (x + y)
    noise = np.random.default_rng(1).standard_normal((5, 5))
    scores = high_frequency_energy(np.stack([smooth, noise, checker])[:, None])
    assert scores[0] < 0.1 < scores[1] < scores[2] <= 1
    assert high_frequency_energy(np.zeros((1, 1, 3, 3)))[0] == 0


# -------------------------------------------------------------------------- activations


def _conv_relu_numpy(batch: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    padded = np.pad(batch.astype(np.float64), ((0, 0), (0, 0), (1, 1), (1, 1)))
    n, _, h, wd = batch.shape
    out = np.zeros((n, len(w), h, wd))
    for dy in range(3):
        for dx in range(3):
            out += np.einsum(
                "nchw,oc->nohw", padded[:, :, dy : dy + h, dx : dx + wd], w[:, :, dy, dx]
            )
    return np.maximum(out + b[None, :, None, None], 0)


def test_strongest_channel_matches_numpy(model, small):
    _, batch = small
    w = model.constants["features.conv1.weight"].astype(np.float64)
    b = model.constants["features.conv1.bias"].astype(np.float64)
    expected = _conv_relu_numpy(batch[:4], w, b)
    maps = model.run(batch[:4], taps=["relu"], outputs=False)["relu"]
    np.testing.assert_allclose(maps, expected, atol=1e-4)
    for i in range(4):
        for by, reduce in (("mean", np.mean), ("max", np.max)):
            ours = strongest_channels(maps[i], k=3, by=by)
            ref = np.argsort(-reduce(expected[i].reshape(16, -1), axis=1), kind="stable")[:3]
            assert ours[0] == ref[0]
    grid = feature_map_grid(maps[0], strongest_channels(maps[0], 4), min_side=64, columns=2)
    assert grid.shape == (2 * 66 + 2, 2 * 66 + 2)


def test_signed_maps_are_the_pre_relu_conv(model, small):
    _, batch = small
    pre, post = signed_and_rectified(model, batch[:1], "relu")
    conv = model.run(batch[:1], taps=["conv2d"], outputs=False)["conv2d"][0]
    np.testing.assert_array_equal(pre, conv)
    np.testing.assert_allclose(post, np.maximum(conv, 0))
    assert pre.min() < 0


# --------------------------------------------------------------------------- embeddings


@pytest.mark.parametrize("layer", ["mean", "view"])
def test_knn_agreement_feature_vs_pixel_space(model, shapes400, layer):
    emb = extract(model, shapes400, layer, pooling="flatten", batch_size=128)
    assert emb.features.shape == (400, 96)
    np.testing.assert_array_equal(emb.labels, shapes400.labels)
    features = label_agreement(emb.features, shapes400.labels, k=5)
    pixels = label_agreement(pixel_features(shapes400.images), shapes400.labels, k=5)
    assert features >= 0.9
    assert features >= pixels + 0.3
    assert knn_accuracy(emb.features, shapes400.labels, k=5) >= 0.9


def test_nearest_neighbors_match_brute_force():
    rng = np.random.default_rng(3)
    base, queries = rng.standard_normal((60, 7)), rng.standard_normal((9, 7))
    idx, dist = nearest_neighbors(base, queries, k=4)
    full = np.linalg.norm(queries[:, None] - base[None], axis=2)
    np.testing.assert_array_equal(idx, np.argsort(full, axis=1)[:, :4])
    np.testing.assert_allclose(dist, np.sort(full, axis=1)[:, :4], rtol=1e-5)
    idx, _ = nearest_neighbors(base, queries, k=4, metric="cosine")
    unit = base / np.linalg.norm(base, axis=1, keepdims=True)
    cos = 1 - (queries / np.linalg.norm(queries, axis=1, keepdims=True)) @ unit.T
    np.testing.assert_array_equal(idx, np.argsort(cos, axis=1)[:, :4])
    self_idx, _ = nearest_neighbors(base, k=3)
    assert not (self_idx == np.arange(60)[:, None]).any()


def test_embeddings_round_trip(model, tmp_path):
    from cnnviz.render import save_png

    data = make_shapes(5, seed=2)
    folder = tmp_path / "images"
    for i, image in enumerate(data.images):
        save_png(image, folder / f"{i}.png")
    emb = extract(model, folder, "relu_3", pooling="avg", predictions=True, batch_size=2)
    assert emb.features.shape == (5, 96) and emb.labels is None
    assert [p.split("/")[-1] for p in emb.names] == [f"{i}.png" for i in range(5)]
    direct = model.run(model.prepare(data.images), taps=["relu_3"], outputs=False)["relu_3"]
    np.testing.assert_allclose(emb.features, direct.mean(axis=(2, 3)), atol=1e-5)
    path = emb.save(tmp_path / "emb.npz")
    back = Embeddings.load(path)
    np.testing.assert_array_equal(back.features, emb.features)
    np.testing.assert_array_equal(back.predictions, emb.predictions)
    assert back.names == emb.names and back.layer == "relu_3" and back.pooling == "avg"
    labelled = extract(model, iter_shapes(5, seed=2, batch=2), "view")
    labelled.save(tmp_path / "labelled.npz")
    np.testing.assert_array_equal(Embeddings.load(tmp_path / "labelled.npz").labels, data.labels)


def test_interrupted_save_leaves_no_file(model, tmp_path, monkeypatch):
    emb = extract(model, make_shapes(3, seed=0), "view")

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", interrupt)
    with pytest.raises(KeyboardInterrupt):
        emb.save(tmp_path / "emb.npz")
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------- projection, confusion, clusters


def test_pca_axes_equal_numpy_svd():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((80, 6)) @ rng.standard_normal((6, 6)) + 3.0
    result = pca(x, 3)
    centred = x - x.mean(axis=0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    np.testing.assert_allclose(np.abs(np.sum(result.components * vt[:3], axis=1)), 1, atol=1e-10)
    np.testing.assert_allclose(result.explained_variance, s[:3] ** 2 / 79, rtol=1e-10)
    np.testing.assert_allclose(result.explained_variance_ratio, s[:3] ** 2 / (s**2).sum())
    np.testing.assert_allclose(result.coords, centred @ result.components.T, atol=1e-10)


def test_tsne_grid_is_a_one_to_one_assignment():
    from cnnviz.features import tsne

    rng = np.random.default_rng(5)
    features = np.concatenate([rng.normal(0, 1, (20, 10)), rng.normal(8, 1, (20, 10))])
    coords = tsne(features, perplexity=8, seed=0, backend="sklearn")
    assert coords.shape == (40, 2)
    images = np.zeros((40, 8, 8, 3), np.uint8)
    picture, cells = image_grid(coords, images, columns=7, tile=8)
    assert sorted(cells) == sorted(set(cells.tolist())) and cells.max() < 42
    assert picture.shape == (6 * 9 + 1, 7 * 9 + 1, 3)


def test_confusion_matrix_equals_brute_count():
    rng = np.random.default_rng(6)
    true, pred = rng.integers(0, 5, 300), rng.integers(0, 5, 300)
    matrix = confusion_matrix(true, pred, 6)
    brute = np.zeros((6, 6), np.int64)
    for t, p in zip(true, pred):
        brute[t, p] += 1
    np.testing.assert_array_equal(matrix, brute)
    top = most_confused(matrix, 3)
    off = brute.copy()
    np.fill_diagonal(off, 0)
    assert top[0].count == off.max() and [p.count for p in top] == sorted(off.ravel())[::-1][:3]


def test_kmeans_purity(model, shapes400):
    emb = extract(model, shapes400, "view")
    clustering = kmeans(emb.features, 8, seed=0)
    score = purity(clustering.assignments, shapes400.labels)
    table = np.zeros((8, 8), int)
    for a, y in zip(clustering.assignments, shapes400.labels):
        table[a, y] += 1
    assert score == pytest.approx(table.max(axis=1).sum() / 400)
    assert score > 0.8


# ------------------------------------------------------------------------------ patches


def test_running_topk_equals_sort():
    rng = np.random.default_rng(7)
    values = rng.standard_normal((5, 230)).astype(np.float32)
    top = RunningTopK(5, 6)
    for start in range(0, 230, 37):
        top.update(values[:, start : start + 37], np.arange(start, min(start + 37, 230)))
    order = top.sorted_order()
    rows = np.arange(5)[:, None]
    np.testing.assert_array_equal(top.values[rows, order], -np.sort(-values, axis=1)[:, :6])
    np.testing.assert_array_equal(top.ids[rows, order], np.argsort(-values, axis=1)[:, :6])


@pytest.mark.parametrize("distinct", [True, False])
def test_top_patches_equal_brute_force(model, small, distinct):
    data, batch = small
    result = top_patches(
        model, data, "relu_2", k=5, channels=[0, 3, 17], distinct_images=distinct, batch_size=10
    )
    acts = model.run(batch, taps=["relu_2"], outputs=False)["relu_2"]
    for row, channel in enumerate([0, 3, 17]):
        plane = acts[:, channel]
        flat = plane.max(axis=(1, 2)) if distinct else plane.ravel()
        np.testing.assert_allclose(result.values[row], -np.sort(-flat)[:5], rtol=1e-6)
        for slot in range(5):
            i, (y, x) = result.images[row, slot], result.positions[row, slot]
            assert plane[i, y, x] == pytest.approx(result.values[row, slot], rel=1e-6)
    if distinct:
        assert all(len(set(r)) == 5 for r in result.images)


def test_receptive_field_crops_contain_the_activating_pixels(model, small):
    data, batch = small
    result = top_patches(model, data, "relu_2", k=3, channels=[1, 9], batch_size=16)
    field = model.layer("relu_2").receptive_field
    rng = np.random.default_rng(8)
    for row, channel in enumerate(result.channels):
        for slot in range(3):
            i, (y, x) = result.images[row, slot], result.positions[row, slot]
            top, left, bottom, right = result.windows[row, slot]
            assert (top, left, bottom, right) == tuple(np.clip(field.window(y, x), 0, 63))
            image = batch[i]
            # the stored crop is the input under the window (zero-padded outside the image)
            ft, fl, _, _ = field.window(y, x)
            crop = result.crops[row, slot]
            np.testing.assert_array_equal(
                crop[:, top - ft : bottom - ft + 1, left - fl : right - fl + 1],
                image[:, top : bottom + 1, left : right + 1],
            )
            perturbed = rng.standard_normal(image.shape).astype(np.float32) * 3
            perturbed[:, top : bottom + 1, left : right + 1] = image[
                :, top : bottom + 1, left : right + 1
            ]
            outside = model.run(perturbed[None], taps=["relu_2"], outputs=False)["relu_2"]
            assert outside[0, channel, y, x] == pytest.approx(result.values[row, slot], abs=1e-4)
            shrunk = image.copy()
            shrunk[:, top : bottom + 1, left : right + 1] += 1.0
            inside = model.run(shrunk[None], taps=["relu_2"], outputs=False)["relu_2"]
            assert inside[0, channel, y, x] != pytest.approx(result.values[row, slot], abs=1e-4)


def test_projection_on_the_crop_equals_the_full_image(model, small):
    from cnnviz.attribution import Neuron, guided_backprop

    data, batch = small
    result = top_patches(model, data, "relu_2", k=2, channels=[4], batch_size=16)
    projected = projections(model, result, "guided")
    assert projected.shape == result.crops.shape
    for slot in range(2):
        i, (y, x) = result.images[0, slot], result.positions[0, slot]
        full = guided_backprop(model, batch[i : i + 1], Neuron("relu_2", 4, int(y), int(x))).maps[0]
        top, left, bottom, right = result.windows[0, slot]
        ft, fl, _, _ = result.field_box(0, slot)
        ours = projected[0, slot][:, top - ft : bottom - ft + 1, left - fl : right - fl + 1]
        np.testing.assert_allclose(ours, full[:, top : bottom + 1, left : right + 1], atol=1e-5)
        assert np.abs(full).max() > 0
    plain = render_top_patches(
        model, result, projected=projected, min_side=36, label_channels=False
    )
    assert plain.shape == (36 + 4, 4 * 38 + 2, 3)
    picture = render_top_patches(model, result, projected=projected, min_side=36)
    # the same row after its label ("ch 4") column
    assert picture.shape == (36 + 4, text_width("ch 4") + 8 + 4 * 38 + 2, 3)
    np.testing.assert_array_equal(picture[:, -plain.shape[1] :], plain)


def test_top_images_of_a_fully_connected_unit(model, small):
    data, batch = small
    result = top_images(model, data, "logits", k=4, channels=[2, 6], batch_size=20)
    scores = model.run(batch)["logits"]
    for row, unit in enumerate([2, 6]):
        np.testing.assert_array_equal(result.images[row], np.argsort(-scores[:, unit])[:4])
        np.testing.assert_array_equal(result.crops[row, 0], batch[result.images[row, 0]])
    assert result.kind == "image"


def _peak_of_pass(model: Model, n: int) -> int:
    tracemalloc.start()
    try:
        top_patches(model, iter_shapes(n, seed=1, batch=100), "relu_1", k=4, batch_size=100)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_top_patches_memory_is_flat(model):
    small_peak = _peak_of_pass(model, 200)
    large_peak = _peak_of_pass(model, 2000)
    assert large_peak - small_peak < 3 * 2**20, (small_peak, large_peak)


# ------------------------------------------------------------------------ report and CLI


def test_report_sections(model, tmp_path):
    data = make_shapes(16, seed=9)
    options = {"features": {"labels": list(data.labels), "channels": [0, 1], "k": 3}}
    path = cnnviz.build_report(
        model,
        data.images,
        tmp_path,
        sections=["filters", "activations", "feature-space", "top-patches"],
        options=options,
        assets=True,
    )
    html = path.read_text()
    for key in ("filters", "activations", "feature-space", "top-patches"):
        assert f'id="{key}"' in html
    assert len(list((tmp_path / "images").rglob("*.png"))) >= 8


def test_cli_top_patches_and_filters(tmp_path, capsys):
    from cnnviz.cli import main

    assert main(["filters", "shapes", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "filters-conv2d-filter.png").exists()
    code = main(
        ["top-patches", "shapes", "--shapes", "40", "--layer", "relu_2", "--k", "3",
         "--channel", "2", "--projection", "deconvnet", "--out", str(tmp_path)]
    )  # fmt: skip
    assert code == 0 and (tmp_path / "top-patches.png").exists()
    assert "channel 2:" in capsys.readouterr().out
