"""Overlays and notebook display: the opacity ramp leaves the photo alone where the map is
zero, percentile clipping keeps heavy-tailed maps (integrated gradients) visible, signed maps
use both ends of the diverging colormap, and results display in Jupyter / matplotlib."""

from __future__ import annotations

import numpy as np
import pytest

from cnnviz.attribution import Attribution
from cnnviz.render.colormap import apply_colormap, clip_threshold, overlay
from cnnviz_core.targets import ResolvedTarget

SIZE = 32


def photo(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(40, 216, (SIZE, SIZE, 3), dtype=np.uint8)


def attribution(maps: np.ndarray, signed: bool = False, method: str = "saliency") -> Attribution:
    n = len(maps)
    targets = [
        ResolvedTarget("scores", (k,), "class", k, f"class {k} 'thing{k}'") for k in range(n)
    ]
    images = np.stack([photo(k) for k in range(n)])
    return Attribution(maps.astype(np.float32), method, targets, {}, images, signed=signed)


def blob_map() -> np.ndarray:
    heat = np.zeros((SIZE, SIZE), np.float32)
    heat[10:14, 20:24] = np.array([[0.5, 1.0, 1.0, 0.5]] * 4, np.float32)
    return heat


def heavy_tailed(signed: bool, seed: int = 0) -> np.ndarray:
    """An IG-like map: Laplace-distributed values plus a few (0.5 %) spikes 1000x larger."""
    rng = np.random.default_rng(seed)
    magnitude = rng.exponential(1.0, (SIZE, SIZE))
    spikes = rng.choice(SIZE * SIZE, 5, replace=False)
    magnitude.ravel()[spikes] *= 1000.0
    sign = rng.choice([-1.0, 1.0], (SIZE, SIZE)) if signed else 1.0
    return (magnitude * sign).astype(np.float32)


def changed(picture: np.ndarray, original: np.ndarray) -> np.ndarray:
    return (picture != original).any(axis=-1)


# ------------------------------------------------------------------------------ overlay


def test_overlay_leaves_the_photo_unchanged_outside_the_blob() -> None:
    image, heat = photo(), blob_map()
    picture = overlay(image, heat)
    outside = heat == 0
    np.testing.assert_array_equal(picture[outside], image[outside])
    assert changed(picture, image)[heat == 1].all()
    # the old constant blend washed every pixel
    assert changed(overlay(image, heat, alpha=0.5, gamma=None), image)[outside].all()


def test_attribution_render_leaves_zero_pixels_alone() -> None:
    for signed in (False, True):
        result = attribution(blob_map()[None] * (-1 if signed else 1), signed=signed)
        picture = result.render(0)
        outside = blob_map() == 0
        np.testing.assert_array_equal(picture[outside], result.images[0][outside])
        assert changed(picture, result.images[0])[blob_map() == 1].all()


def test_overlay_opacity_ramps_with_the_value() -> None:
    grey = np.full((1, 5, 3), 128, np.uint8)
    ramp = np.linspace(0, 1, 5)[None]
    picture = overlay(grey, ramp, "gray", alpha=1.0, gamma=1.0).astype(int)
    # white colour at opacity v over grey 128: 128 + v * (255 v - 128)
    expected = np.rint(128 + ramp * (255 * ramp - 128))
    np.testing.assert_allclose(picture[0, :, 0], expected[0], atol=1)
    with pytest.raises(ValueError, match="gamma"):
        overlay(grey, ramp, gamma=0.0)


def test_clip_threshold_is_a_percentile_of_the_nonzero_magnitudes() -> None:
    values = np.arange(101, dtype=np.float64)  # 0 is left out: 1..100
    assert clip_threshold(values, 100.0) == 100.0
    assert clip_threshold(values, 50.0) == pytest.approx(50.5)
    assert clip_threshold(np.zeros(4)) == 0.0
    sparse = np.zeros(10_000)
    sparse[:5] = 1.0  # far under 1 % of the pixels: a plain percentile would give 0
    assert clip_threshold(sparse, 99.0) == 1.0
    with pytest.raises(ValueError, match="percentile"):
        clip_threshold(values, 0.0)


@pytest.mark.parametrize("signed", [False, True])
def test_percentile_clipping_makes_heavy_tailed_maps_visible(signed: bool) -> None:
    maps = heavy_tailed(signed)[None]
    result = attribution(maps, signed=signed, method="integrated-gradients")
    nonzero = maps[0] != 0
    clipped = np.median(np.abs(result.normalized()[0])[nonzero])
    by_max = np.median(np.abs(result.normalized(clip_percentile=None)[0])[nonzero])
    assert by_max < 0.01  # what the old scaling showed: an almost invisible map
    assert clipped > 0.05
    # the median pixel's opacity on the picture (alpha * v ** gamma) is visible
    assert 0.7 * clipped**0.75 > 0.1 > 0.7 * by_max**0.75
    assert np.abs(result.normalized()).max() == pytest.approx(1.0)
    # the stored maps are not touched
    np.testing.assert_array_equal(result.maps, maps)


def test_signed_maps_use_both_ends_of_the_diverging_colormap() -> None:
    heat = np.zeros((SIZE, SIZE), np.float32)
    heat[4:8, 4:8], heat[20:24, 20:24] = 1.0, -1.0
    result = attribution(heat[None], signed=True)
    image = np.full((1, SIZE, SIZE, 3), 128, np.uint8)
    result.images = image
    picture = result.render(0, alpha=1.0).astype(int)
    red, blue = apply_colormap(np.array([1.0, 0.0]), "coolwarm").astype(int)
    np.testing.assert_array_equal(picture[5, 5], red)
    np.testing.assert_array_equal(picture[21, 21], blue)
    assert picture[5, 5, 0] > picture[5, 5, 2] and picture[21, 21, 2] > picture[21, 21, 0]
    np.testing.assert_array_equal(picture[0, 0], [128, 128, 128])


def test_render_is_deterministic_and_shaped() -> None:
    result = attribution(np.stack([heavy_tailed(False, 1), blob_map()]))
    first, second = result.render(1), result.render(1)
    np.testing.assert_array_equal(first, second)
    assert first.shape == (SIZE, SIZE, 3) and first.dtype == np.uint8
    assert result.render_map(0).shape == (SIZE, SIZE, 3)


# ---------------------------------------------------------------------- notebook display


def decode(data: bytes):
    import io

    from PIL import Image

    picture = Image.open(io.BytesIO(data))
    picture.load()
    return picture


def test_attribution_repr_png_is_a_grid_of_overlays() -> None:
    result = attribution(np.stack([blob_map()] * 5))
    data = result._repr_png_()
    assert isinstance(data, bytes)
    picture = decode(data)
    # 5 tiles, 4 per row: 2 rows, 2 px padding around and between
    assert picture.size == (4 * (SIZE + 2) + 2, 2 * (SIZE + 2) + 2)
    assert picture.mode == "RGB"
    tile = np.asarray(picture)[2 : 2 + SIZE, 2 : 2 + SIZE]
    np.testing.assert_array_equal(tile, result.render(0))


def test_attribution_repr_html_inlines_the_picture() -> None:
    import base64
    import re

    result = attribution(np.stack([blob_map()] * 2), method="gradcam<x>")
    page = result._repr_html_()
    match = re.search(r"<img src='data:image/png;base64,([A-Za-z0-9+/=]+)'", page)
    assert match is not None
    assert decode(base64.b64decode(match.group(1))).size == (2 * (SIZE + 2) + 2, SIZE + 4)
    assert "gradcam&lt;x&gt;" in page and "<x>" not in page  # escaped
    assert "class 0 &#x27;thing0&#x27;" in page and "class 1" in page


def test_synthesis_result_repr_png() -> None:
    from cnnviz.synthesis.base import SynthesisResult

    images = np.stack([photo(k) for k in range(3)])
    result = SynthesisResult(
        "inversion", images, np.zeros((3, 3, SIZE, SIZE), np.float32), [], {}, 0
    )
    picture = decode(result._repr_png_())
    assert picture.size == (3 * (SIZE + 2) + 2, SIZE + 4)


@pytest.mark.parametrize("signed", [False, True])
def test_plot_draws_the_overlay_with_a_colorbar_on_the_display_scale(signed: bool) -> None:
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    maps = np.stack([heavy_tailed(signed, 3), blob_map()])
    result = attribution(maps, signed=signed, method="integrated-gradients")
    figure, ax = result.plot(0)
    try:
        assert isinstance(figure, Figure) and isinstance(ax, Axes)
        assert "integrated-gradients" in ax.get_title() and "thing0" in ax.get_title()
        bar = figure.axes[-1]
        assert bar is not ax
        limit = np.percentile(np.abs(maps[0])[maps[0] != 0], 99)
        low, high = sorted(bar.get_ylim())
        assert high == pytest.approx(limit, rel=1e-4)
        assert low == pytest.approx(-limit if signed else 0.0, rel=1e-4, abs=1e-6)
        shown = ax.get_images()[0].get_array()
        np.testing.assert_array_equal(np.asarray(shown), result.render(0))
        # drawing on a given axes
        _, (left, right) = plt.subplots(1, 2)
        figure2, drawn = result.plot(1, ax=right, colorbar=False)
        assert drawn is right and len(figure2.axes) == 2 and not left.get_images()
        plt.close(figure2)
        with pytest.raises(IndexError, match="index 5"):
            result.plot(5)
    finally:
        plt.close("all")


def test_plot_without_matplotlib_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    real_import = builtins.__import__

    def no_matplotlib(name: str, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    with pytest.raises(ImportError, match="pip install matplotlib"):
        attribution(blob_map()[None]).plot()
