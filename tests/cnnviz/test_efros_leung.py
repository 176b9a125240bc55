"""Efros-Leung texture synthesis: exact copies checked against the NumPy nearest-neighbour
oracle, both orders fill everything, determinism by seed, interruption, grey samples, the
native and NumPy searches agree, a 64 x 64 -> 128 x 128 growth of a procedural and of a real
texture, and clear errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnviz.synthesis import TextureResult, efros_leung
from cnnviz.synthesis.efros_leung import gaussian_window
from cnnviz_core import InputError, kernels

STYLE = Path(__file__).resolve().parents[3] / "shared" / "data" / "style"


def _sample(h: int = 24, w: int = 24, seed: int = 0) -> np.ndarray:
    """A small colour texture: smooth blobs plus noise, quantized to a few levels."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    base = np.stack(
        [np.sin(xx / 2.5 + c) * np.cos(yy / 3.0 - c) for c in range(3)], axis=-1
    ) + 0.3 * rng.standard_normal((h, w, 3))
    return np.clip((base + 1.5) * 60, 0, 255).astype(np.uint8)


def _check_copied(result: TextureResult, pixels: np.ndarray) -> None:
    """Every filled output pixel equals the sample pixel its source coordinate names."""
    filled = result.filled
    src = result.source[filled]
    assert (src >= 0).all() and (src[:, 0] < pixels.shape[0]).all()
    assert (src[:, 1] < pixels.shape[1]).all()
    np.testing.assert_array_equal(result.image[filled], pixels[src[:, 0], src[:, 1]])


@pytest.mark.parametrize("order", ["onion", "scanline"])
def test_exact_mode_copies_nearest_neighbours(order: str) -> None:
    pixels = _sample()
    window, size = 7, (30, 28)
    result = efros_leung(pixels, size, window, order, epsilon=0.0, seed=3)
    assert not result.interrupted and result.filled.all()
    assert result.image.shape == (*size, 3) and result.image.dtype == np.uint8
    _check_copied(result, pixels)
    # Oracle: replay the known mask each pixel saw (the pixels filled before it) and check with
    # the NumPy reference that the copied window is a nearest neighbour of its neighbourhood.
    r, sample = window // 2, pixels.transpose(2, 0, 1).astype(np.float64) / 255
    canvas = np.zeros((3, size[0] + 2 * r, size[1] + 2 * r))
    canvas[:, r:-r, r:-r] = result.image.transpose(2, 0, 1) / 255
    steps = np.pad(result.fill_step, r, constant_values=np.iinfo(np.int64).max)
    gauss = gaussian_window(window)
    rng = np.random.default_rng(0)
    checked = rng.choice(np.flatnonzero(result.fill_step.ravel() > 0), 40, replace=False)
    for flat in checked:
        y, x = divmod(int(flat), size[1])
        step = result.fill_step[y, x]
        known = steps[y : y + window, x : x + window] < step
        weights = gauss * known
        d = kernels.texture_distances_reference(
            sample, canvas[:, y : y + window, x : x + window], weights
        )
        sy, sx = result.source[y, x]
        assert d.min() == pytest.approx(result.distances[y, x], rel=1e-4, abs=1e-7)
        assert d[sy - r, sx - r] == pytest.approx(d.min(), rel=1e-4, abs=1e-7)


def test_both_orders_fill_everything_and_seed_where_described() -> None:
    pixels = _sample(seed=1)
    size = (21, 25)
    for order in ("onion", "scanline"):
        result = efros_leung(pixels, size, 5, order, epsilon=0.1, seed=0)
        assert result.filled.all() and not np.isnan(result.distances).any()
        assert result.pixels == size[0] * size[1] - 9
        _check_copied(result, pixels)
        seed = np.argwhere(result.fill_step == 0)
        corner = (0, 0) if order == "scanline" else ((size[0] - 3) // 2, (size[1] - 3) // 2)
        assert seed.min(axis=0).tolist() == list(corner) and len(seed) == 9
        # the seed is one 3 x 3 patch of the sample
        src = result.source[corner[0] : corner[0] + 3, corner[1] : corner[1] + 3]
        assert (src - src[0, 0] == np.stack(np.mgrid[:3, :3], -1)).all()
    steps = result.fill_step.ravel()  # scanline: raster order after the seed
    later = steps[steps > 0]
    assert (np.diff(later) == 1).all()


def test_deterministic_by_seed() -> None:
    pixels = _sample(seed=2)
    a = efros_leung(pixels, 20, 5, "onion", epsilon=0.2, seed=7)
    b = efros_leung(pixels, 20, 5, "onion", epsilon=0.2, seed=7)
    c = efros_leung(pixels, 20, 5, "onion", epsilon=0.2, seed=8)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.source, b.source)
    np.testing.assert_array_equal(a.fill_step, b.fill_step)
    assert not np.array_equal(a.source, c.source)


@pytest.mark.parametrize("order", ["onion", "scanline"])
def test_interrupt_returns_partial_result(order: str) -> None:
    calls: list[tuple[int, int, float]] = []

    def progress(step: int, total: int, loss: float) -> None:
        calls.append((step, total, loss))
        if step >= total * 0.3:
            raise KeyboardInterrupt

    pixels = _sample(seed=4)
    result = efros_leung(pixels, (20, 20), 5, order, seed=0, progress=progress)
    assert result.interrupted
    assert 0.3 * 400 <= result.filled.sum() < 0.4 * 400
    unfilled = ~result.filled
    assert (result.source[unfilled] == -1).all() and (result.image[unfilled] == 0).all()
    assert np.isnan(result.distances[unfilled]).all()
    _check_copied(result, pixels)
    steps = [c[0] for c in calls]
    assert steps == sorted(steps) and all(c[1] == 400 for c in calls)
    assert all(np.isfinite(c[2]) and c[2] >= 0 for c in calls)


def test_progress_reaches_the_total() -> None:
    calls: list[int] = []
    efros_leung(_sample(), (15, 15), 5, progress=lambda s, t, loss: calls.append(s))
    assert calls[-1] == 225 and len(calls) >= 50


def test_grey_sample_and_pil_input() -> None:
    grey = _sample(seed=5)[..., 0]
    result = efros_leung(grey, (18, 18), 5, epsilon=0.0, seed=1)
    assert result.image.shape == (18, 18)
    src = result.source.reshape(-1, 2)
    np.testing.assert_array_equal(result.image.ravel(), grey[src[:, 0], src[:, 1]])
    pil = efros_leung(Image.fromarray(grey), (18, 18), 5, epsilon=0.0, seed=1)
    np.testing.assert_array_equal(pil.image, result.image)


def test_native_and_numpy_searches_agree() -> None:
    pixels = _sample(16, 16, seed=6)
    native = efros_leung(pixels, (14, 14), 5, "onion", epsilon=0.1, seed=2)
    numpy = efros_leung(pixels, (14, 14), 5, "onion", epsilon=0.1, seed=2, backend="numpy")
    np.testing.assert_array_equal(native.source, numpy.source)
    np.testing.assert_allclose(native.distances, numpy.distances, rtol=1e-4, atol=1e-7)


def test_periodic_texture_grows_exactly_periodic() -> None:
    # A 64 x 64 sample of period 8 in both axes: every neighbourhood of the growing texture has
    # an exact match, so the 128 x 128 output is exactly periodic and every distance is 0.
    rng = np.random.default_rng(8)
    tile = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    pixels = np.tile(tile, (8, 8, 1))
    result = efros_leung(pixels, (128, 128), 11, "onion", epsilon=0.0, seed=0)
    assert result.filled.all() and (result.distances == 0).all()
    _check_copied(result, pixels)
    np.testing.assert_array_equal(result.image[:, 8:], result.image[:, :-8])
    np.testing.assert_array_equal(result.image[8:], result.image[:-8])


@pytest.mark.skipif(not STYLE.is_dir(), reason="shared data not available")
def test_real_texture_64_to_128() -> None:
    photo = np.asarray(Image.open(STYLE / "starry_night.jpg").convert("RGB"))
    crop = photo[:64, :64]
    result = efros_leung(crop, (128, 128), 11, "scanline", epsilon=0.1, seed=0)
    assert result.filled.all() and result.image.shape == (128, 128, 3)
    _check_copied(result, crop)
    # The grown texture keeps the sample's colours (means within 20 of 255 per channel).
    diff = result.image.reshape(-1, 3).mean(0) - crop.reshape(-1, 3).mean(0)
    assert np.abs(diff).max() < 20
    assert result.pixels_per_second > 0 and result.seconds > 0


BAD = [
    ("even window", dict(window=6), "odd"),
    ("tiny window", dict(window=1), "odd"),
    ("window > sample", dict(window=31), "larger than the sample"),
    ("output < seed", dict(size=(2, 10)), "smaller than the"),
    ("size type", dict(size="big"), "size must be"),
    ("order", dict(order="spiral"), "unknown order"),
    ("epsilon", dict(epsilon=-1.0), "epsilon"),
    ("backend", dict(backend="gpu"), "backend"),
]


@pytest.mark.parametrize("name, options, message", BAD, ids=[b[0] for b in BAD])
def test_bad_arguments_raise(name: str, options: dict, message: str) -> None:
    with pytest.raises(InputError, match=message):
        efros_leung(_sample(), **{"size": 10, **options})


def test_bad_samples_raise(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="at least 3 x 3"):
        efros_leung(np.zeros((2, 5, 3), np.uint8), 8, 3)
    with pytest.raises(InputError, match="not found"):
        efros_leung(tmp_path / "missing.png", 8, 3)


def test_module_does_not_import_torch() -> None:
    code = "import sys, cnnviz.synthesis.efros_leung; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)


def test_cli_texture_efros_leung(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from cnnviz.cli import main

    sample = tmp_path / "sample.png"
    Image.fromarray(_sample(seed=9)).save(sample)
    argv = ["texture", "--method", "efros-leung", str(sample), "--size", "20", "22"]
    argv += ["--window", "5", "--order", "scanline", "--out", str(tmp_path / "out")]
    assert main(argv) == 0
    written = tmp_path / "out" / "sample-efros-leung-scanline.png"
    picture = np.asarray(Image.open(written))
    assert picture.shape == (20, 22, 3)
    assert "pixels/s" in capsys.readouterr().out
    crop = ["texture", str(sample), "--crop", "12", "--window", "5", "--size", "16", "16"]
    assert main([*crop, "--out", str(tmp_path / "crop")]) == 0
    written = tmp_path / "crop" / "sample-efros-leung-onion.png"
    assert np.asarray(Image.open(written)).shape == (16, 16, 3)
    assert main(["texture", str(sample), "--window", "4", "--out", str(tmp_path)]) != 0


def test_report_section_grows_a_crop_of_the_first_image(tmp_path: Path) -> None:
    from cnnviz.models import load_model
    from cnnviz.render.report import build_report

    model = load_model("shapes")
    picture = np.kron(_sample(8, 8, seed=10), np.ones((8, 8, 1), np.uint8))  # 64 x 64 blocks
    sections = ["efros-leung"]
    plain = build_report(model, [picture], tmp_path / "plain", sections=sections)
    assert "Efros-Leung" not in plain.read_text()  # opt-in
    options = {"synthesis": {"texture_crop": 16, "texture_window": 5}}
    path = build_report(
        model, [picture], tmp_path / "r", sections=sections, options=options, assets=True
    )
    assert "Texture synthesis (Efros-Leung)" in path.read_text()
    grown = np.asarray(Image.open(tmp_path / "r" / "images" / "efros-leung" / "efros-leung.png"))
    assert grown.shape[0] >= 32 and grown.ndim == 3
