"""The feature pictures are readable (issue 18, item 10): sizes, labels and legends checked
on the pixels, not by eye."""

from __future__ import annotations

import numpy as np
import pytest

import cnnviz
from cnnviz.data import make_shapes
from cnnviz.features import (
    conv_filters,
    image_grid,
    neighbor_rows,
    render_filters,
    render_top_patches,
    scatter,
    top_patches,
)
from cnnviz.features.projection import CLASS_COLORS, LEGEND_SWATCH
from cnnviz.render.images import TEXT_LINE_HEIGHT
from cnnviz.render.report import _asset
from cnnviz_core import Model


@pytest.fixture(scope="module")
def model() -> Model:
    return cnnviz.load_model("shapes")


def _dark(region: np.ndarray) -> int:
    """Number of text-dark pixels (all channels below 100)."""
    return int((region.reshape(-1, region.shape[-1]) < 100).all(axis=1).sum())


def test_tsne_grid_is_readable_by_default():
    rng = np.random.default_rng(0)
    coords = rng.normal(size=(12, 2))
    images = rng.integers(0, 255, (12, 8, 8, 3), dtype=np.uint8)
    picture, cells = image_grid(coords, images)
    # 4 columns of cells >= 64 px, the grid >= 512 px wide (was 4 * 33 + 1 = 133)
    assert picture.shape[1] >= 512 and picture.shape[0] >= 3 * 64
    assert sorted(cells.tolist()) == sorted(set(cells.tolist()))


def test_first_layer_filters_are_enlarged_nearest_neighbour(model):
    filters = conv_filters(model)
    picture = render_filters(filters)
    assert min(picture.shape[:2]) >= 256
    kh = filters.weights.shape[2]
    count = filters.weights.shape[0]
    columns = int(np.ceil(np.sqrt(count)))
    # a thin separator (1-3 px) between tiles that are the kernel magnified
    layouts = [
        (pad, (picture.shape[1] - (columns + 1) * pad) // (columns * kh))
        for pad in (1, 2, 3)
        if (picture.shape[1] - (columns + 1) * pad) % (columns * kh) == 0
    ]
    assert layouts, f"{picture.shape} is no grid of {columns} tiles with a thin separator"
    pad, factor = layouts[0]
    assert factor * kh >= 24
    # the first tile is constant blocks of factor x factor pixels (nearest neighbour)
    tile = picture[pad : pad + kh * factor, pad : pad + kh * factor]
    blocks = tile.reshape(kh, factor, kh, factor, -1)
    assert (blocks == blocks[:, :1, :, :1]).all()
    assert (picture[:pad] == 255).all() and (picture[:, :pad] == 255).all()


def test_neighbors_have_a_header_naming_the_columns():
    rng = np.random.default_rng(1)
    images = rng.integers(120, 255, (10, 16, 16, 3), dtype=np.uint8)
    rows = [[1, 2, 3, 4], [5, 6, 7, 8]]
    picture = neighbor_rows(images, images[:2], rows, separator_after=2, min_side=64)
    tile, pad = 64, 2
    columns = 1 + 4 + 1
    grid_height = 2 * (tile + pad) + pad
    header = picture.shape[0] - grid_height
    assert header >= TEXT_LINE_HEIGHT
    assert picture.shape[1] == columns * (tile + pad) + pad
    strip = picture[:header]
    for column in range(columns):
        left = pad + column * (tile + pad)
        dark = _dark(strip[:, left : left + tile])
        if column == 3:  # the separator column has no title
            assert dark == 0
        else:
            assert dark > 5, f"column {column} has no title"


@pytest.fixture(scope="module")
def sixteen_channels(model):
    data = make_shapes(24, seed=3)
    return top_patches(model, data, "relu_1", k=2, channels=range(16), batch_size=24)


def test_top_patches_are_labelled_and_wrapped(model, sixteen_channels):
    result = sixteen_channels
    strip = render_top_patches(model, result, min_side=36, label_channels=False, blocks=1)
    row_height = strip.shape[0] // 16
    assert strip.shape[0] == 16 * row_height and row_height >= 36  # one tall strip
    picture = render_top_patches(model, result, min_side=36)
    height, width = picture.shape[:2]
    assert height < strip.shape[0] and height <= 2 * width
    blocks = round(16 * row_height / height)
    assert blocks >= 2
    # every channel row starts with a label (dark text pixels left of its tiles)
    label_width = (width - (blocks - 1) * 8) // blocks - strip.shape[1]
    assert label_width >= 20
    per_block = -(-16 // blocks)
    for row in range(16):
        block, slot = divmod(row, per_block)
        left = block * (label_width + strip.shape[1] + 8)
        top = slot * row_height
        label = picture[top : top + row_height, left : left + label_width]
        assert _dark(label) > 5, f"channel row {row} has no label"


def test_pca_scatter_has_a_class_legend():
    rng = np.random.default_rng(2)
    coords = rng.normal(size=(30, 2))
    labels = np.repeat([0, 2, 5], 10)
    plain = scatter(coords, None, size=300)
    assert plain.shape == (300, 300, 3)
    picture = scatter(coords, labels, size=300, class_names=["cat", "b", "dog", "", "", "fox"])
    assert picture.shape[0] == 300 and picture.shape[1] > 300 + 40
    legend = picture[:, 300:]
    for c in (0, 2, 5):
        swatch = (legend == np.array(CLASS_COLORS[c], np.uint8)).all(axis=-1)
        assert swatch.sum() >= LEGEND_SWATCH**2, f"class {c} has no swatch"
    assert not (legend == np.array(CLASS_COLORS[1], np.uint8)).all(axis=-1).any()
    assert _dark(legend) > 30  # the names
    assert scatter(coords, labels, size=300, legend=False).shape == (300, 300, 3)


def test_prediction_cards_wrap_class_names_at_spaces():
    # "hummingbird" in a narrow card broke as "humm ingbir d": the class column may only
    # break inside a word that does not fit on a line of its own.
    rule = _asset("explorer.css").split("table.topk td:first-child", 1)  # the report's CSS
    assert len(rule) == 2, "no rule for the class column"
    body = rule[1].split("}", 1)[0]
    assert "overflow-wrap: break-word" in body and "word-break: normal" in body
    assert "min-width" in body
