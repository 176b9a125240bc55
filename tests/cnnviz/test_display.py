"""Results that display themselves (cnnviz.render.display): Jupyter's _repr_png_ and
_repr_html_, and plot(), on embeddings, Conv filters and synthesis results."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

import cnnviz
from cnnviz.data import make_shapes
from cnnviz.features import conv_filters, extract
from cnnviz.render.display import Displayable
from cnnviz.synthesis.base import SynthesisResult


def results() -> list[Displayable]:
    model = cnnviz.load_model("shapes")
    data = make_shapes(16, seed=4)
    embeddings = extract(model, data.images, "view", labels=data.labels)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, 20, 24, 3), dtype=np.uint8)
    synthesis = SynthesisResult(
        "inversion",
        images,
        np.zeros((3, 3, 20, 24), np.float32),
        losses=[2.0, 1.5],
        metrics={"psnr": [20.1, 19.0, 18.5]},
        steps=2,
        labels=["a", "b", "<c>"],
    )
    return [embeddings, conv_filters(model), synthesis]


@pytest.fixture(scope="module")
def displayable() -> list[Displayable]:
    return results()


@pytest.mark.parametrize("which", [0, 1, 2])
def test_repr_png_and_html(displayable: list[Displayable], which: int) -> None:
    result = displayable[which]
    picture = result.picture()
    assert picture.dtype == np.uint8 and picture.ndim == 3 and picture.shape[2] == 3
    with Image.open(io.BytesIO(result._repr_png_())) as png:
        np.testing.assert_array_equal(np.asarray(png.convert("RGB")), picture)
    shown = result._repr_html_()
    assert shown.count("<tr>") == len(result.facts()) >= 1
    assert "data:image/png;base64," in shown and "<c>" not in shown


@pytest.mark.parametrize("which", [0, 1, 2])
def test_plot(displayable: list[Displayable], which: int) -> None:
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")

    assert_plot_draws_picture(displayable[which])


def assert_plot_draws_picture(result: Displayable) -> None:
    """``plot()`` draws ``picture()`` titled by the first fact, on a new figure or on a
    given axes (matplotlib's Agg backend)."""
    import matplotlib.pyplot as plt

    figure, ax = result.plot()
    assert ax.figure is figure
    try:
        drawn = ax.get_images()[0].get_array()
        np.testing.assert_array_equal(np.asarray(drawn), result.picture())
        name, value = result.facts()[0]
        assert ax.get_title() == f"{name}: {value}"
        _, other = plt.subplots()
        assert result.plot(ax=other)[1] is other
    finally:
        plt.close("all")


def test_synthesis_facts(displayable: list[Displayable]) -> None:
    facts = dict(displayable[2].facts())
    assert facts["method"] == "inversion" and facts["final loss"] == "1.5"
    assert facts["steps"] == "2" and facts["psnr"] == [20.1, 19.0, 18.5]
