"""Every public result a user displays shows itself (issue 18): ``_repr_png_`` (a PNG of the
result's picture), ``_repr_html_`` (its facts above the picture) and ``plot()`` with
matplotlib, through :class:`cnnviz.render.display.Displayable`, for the result types that
test_display.py does not cover: top patches, the sanity check, PCA, Efros-Leung textures,
deletion / insertion curves, ROAD and faithfulness correlation."""

from __future__ import annotations

import html
import io

import numpy as np
import pytest
from PIL import Image
from test_display import assert_plot_draws_picture

import cnnviz
from cnnviz.attribution import saliency
from cnnviz.attribution.sanity import model_randomization
from cnnviz.attribution.scoring import deletion, faithfulness_correlation, insertion, road
from cnnviz.data import make_shapes
from cnnviz.features import pca, render_top_patches, scatter, top_patches
from cnnviz.features.projection import pca_axes_arrows
from cnnviz.render.charts import SERIES_COLORS, chart
from cnnviz.render.display import Displayable
from cnnviz.synthesis.efros_leung import efros_leung


@pytest.fixture(scope="module")
def made() -> dict[str, tuple[Displayable, np.ndarray | None]]:
    """Each result with the picture its own renderer draws (the expected picture)."""
    model = cnnviz.load_model("shapes")
    data = make_shapes(6, seed=5)
    hits = top_patches(model, data.images, "relu_1", k=3, channels=[0, 5])
    sanity = model_randomization(
        model, data.images[:2], "saliency", layers=["logits", "conv2d_3"], seed=1
    )
    features = np.random.default_rng(0).standard_normal((20, 6))
    components = pca(features, 3)
    sample = np.random.default_rng(1).integers(0, 256, (12, 12, 3), np.uint8)
    texture = efros_leung(sample, size=(10, 14), window=5)
    attribution = saliency(model, data.images[:2])
    deleted = deletion(model, attribution, steps=4)
    inserted = insertion(model, attribution, steps=4)
    roaded = road(model, attribution, percentages=(10.0, 50.0))
    faithful = faithfulness_correlation(model, attribution, runs=6)
    return {
        "top patches": (hits, render_top_patches(model, hits)),
        "sanity": (sanity, sanity.strip()),
        "pca": (
            components,
            scatter(components.coords[:, :2], arrows=pca_axes_arrows(components), size=480),
        ),
        "texture": (texture, texture.image),
        "deletion": (deleted, None),
        "insertion": (inserted, None),
        "road": (roaded, None),
        "faithfulness": (faithful, None),
    }


NAMES = ["top patches", "sanity", "pca", "texture", "deletion", "insertion", "road", "faithfulness"]


@pytest.mark.parametrize("name", NAMES)
def test_repr_png_is_the_picture(made: dict, name: str) -> None:
    result, expected = made[name]
    assert isinstance(result, Displayable)
    picture = result.picture()
    assert picture.dtype == np.uint8 and picture.ndim == 3 and picture.shape[2] == 3
    if expected is not None:  # the result's own renderer
        np.testing.assert_array_equal(picture, expected)
    else:  # a chart
        assert picture.shape == (320, 480, 3)
    with Image.open(io.BytesIO(result._repr_png_())) as png:
        assert png.format == "PNG" and png.size == (picture.shape[1], picture.shape[0])
        np.testing.assert_array_equal(np.asarray(png.convert("RGB")), picture)


@pytest.mark.parametrize("name", NAMES)
def test_repr_html_shows_the_facts(made: dict, name: str) -> None:
    result, _ = made[name]
    facts = result.facts()
    shown = result._repr_html_()
    assert len(facts) >= 2 and shown.count("<tr>") == len(facts)
    for key, value in facts:
        assert html.escape(str(key)) in shown and html.escape(str(value)) in shown
    assert "data:image/png;base64," in shown


@pytest.mark.parametrize("name", NAMES)
def test_plot_with_agg(made: dict, name: str) -> None:
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")

    assert_plot_draws_picture(made[name][0])


def test_facts_carry_the_figures(made: dict) -> None:
    sanity = dict(made["sanity"][0].facts())
    result = made["sanity"][0]
    assert sanity["verdict"].startswith("pass" if result.passed else "FAIL")
    assert sanity["decisive layer"] == result.layers[result.decisive_step]
    deleted, inserted = made["deletion"][0], made["insertion"][0]
    assert deleted.kind == "deletion" and inserted.kind == "insertion"
    assert dict(deleted.facts())["AUC per image"] == ", ".join(f"{a:.3f}" for a in deleted.auc)
    assert "higher AUC" in dict(inserted.facts())["curves"]
    faithful = made["faithfulness"][0]
    assert dict(faithful.facts())["runs x pixels per subset"].startswith("6 x ")
    hits = dict(made["top patches"][0].facts())
    assert hits["layer"] == "relu_1" and hits["channels"] == "0, 5"


def test_top_patches_need_no_model_to_show() -> None:
    """The result records the preprocessing; one without it asks for the model."""
    import dataclasses

    from cnnviz_core import InputError

    model = cnnviz.load_model("shapes")
    hits = top_patches(model, make_shapes(4, seed=2).images, "relu", k=2, channels=[3])
    np.testing.assert_array_equal(hits.pixels(), hits.pixels(model))
    bare = dataclasses.replace(hits, preprocess=None)
    with pytest.raises(InputError, match="pass the model"):
        bare.pixels()


def test_grey_texture_shows_in_rgb() -> None:
    sample = np.random.default_rng(3).integers(0, 256, (10, 10), np.uint8)
    texture = efros_leung(sample, size=8, window=3)
    assert texture.image.ndim == 2
    np.testing.assert_array_equal(texture.picture(), np.repeat(texture.image[..., None], 3, 2))


# ----------------------------------------------------------------------------- the chart


def _where(picture: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    return np.argwhere((picture == np.array(colour, np.uint8)).all(axis=-1))


def test_chart_places_points_on_the_axes() -> None:
    """A point at the data's corners lands at the plot area's corners; a line runs
    between its ends; the legend shows a swatch per named series."""
    corners = ("", np.array([0.0, 1.0]), np.array([0.0, 1.0]))
    picture = chart([corners], points=True, size=(200, 300))
    found = _where(picture, SERIES_COLORS[0])
    # plot area: x 56..288, y 24..160 (margins left 56, top 24, right 12, bottom 40)
    assert abs(found[:, 1].min() - 54) <= 1 and abs(found[:, 1].max() - 290) <= 1
    assert abs(found[:, 0].min() - 22) <= 1 and abs(found[:, 0].max() - 162) <= 1
    line = chart(
        [("up", np.array([0.0, 1.0]), np.array([0.0, 1.0])), ("flat", np.zeros(2), np.ones(2))],
        x_range=(0, 1),
        y_range=(0, 1),
        size=(200, 300),
    )
    up, flat = _where(line, SERIES_COLORS[0]), _where(line, SERIES_COLORS[1])
    assert len(up) > 200 and len(flat) > 20  # the diagonal; the flat one is a dot at x = 0
    with pytest.raises(ValueError, match="at least one series"):
        chart([])


def test_chart_of_nothing_finite_is_an_empty_frame() -> None:
    picture = chart([("nan", np.array([np.nan, 1.0]), np.array([np.nan, np.inf]))])
    assert picture.shape == (320, 480, 3)
    plot_area = picture[26:278, 58:466]  # inside the frame, left of the legend
    assert not len(_where(plot_area[:, :300], SERIES_COLORS[0]))
