"""Hostile and broken images: seeded mutants of every format Pillow reads and writes here
(PNG, JPEG, WebP, TIFF, BMP, GIF) decode or give one InputError; decompression bombs are
refused before decoding (the pixel limit is configurable); photos are turned upright by
their EXIF orientation, which the result records."""

from __future__ import annotations

import io

import fuzzing
import numpy as np
import pytest
from PIL import Image

from cnnviz_core import InputError, Preprocess, load_image
from cnnviz_core.preprocess import MAX_PIXELS_ENV, ORIENTATIONS, max_image_pixels, read_image

#: seeded cases a test run (benchmarks/fuzz.py runs 1,000+)
CASES = 36


@pytest.fixture(scope="module")
def runner():
    with fuzzing.Runner(timeout=20.0) as running:
        yield running


@pytest.fixture(scope="module")
def mutants() -> list[fuzzing.Case]:
    return fuzzing.image_cases(seed=19, count=CASES)


@pytest.mark.parametrize("index", range(CASES))
def test_mutated_image_gives_pixels_or_one_clean_error(runner, mutants, index):
    case = mutants[index]
    outcome = runner.run(case)
    assert outcome.verdict in ("ok", "clean"), f"{case.mutation}: {outcome.detail}"


def _encoded(fmt: str, size: tuple[int, int] = (32, 24)) -> bytes:
    rng = np.random.default_rng(0)
    picture = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), np.uint8))
    buffer = io.BytesIO()
    picture.save(buffer, fmt)
    return buffer.getvalue()


@pytest.mark.parametrize("fmt", fuzzing.IMAGE_FORMATS)
def test_truncated_body_behind_a_valid_header_is_an_input_error(tmp_path, fmt):
    data = _encoded(fmt)
    path = tmp_path / f"cut.{fmt.lower()}"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="cannot decode image"):
        load_image(path)


@pytest.mark.parametrize("fmt", fuzzing.IMAGE_FORMATS)
def test_intact_image_of_every_format_loads(tmp_path, fmt):
    path = tmp_path / f"ok.{fmt.lower()}"
    path.write_bytes(_encoded(fmt))
    assert load_image(path).shape == (24, 32, 3)


# ------------------------------------------------------------------ decompression bombs


@pytest.mark.parametrize("side", [20_000, 2**20])
def test_decompression_bomb_is_refused_before_decoding(tmp_path, side):
    path = tmp_path / "bomb.png"
    path.write_bytes(fuzzing.png_declaring(side, side))  # a few bytes declaring side x side
    with pytest.raises(InputError, match=r"too large|over the limit"):
        load_image(path)


def test_pixel_limit_is_configurable(tmp_path, monkeypatch):
    path = tmp_path / "small.png"
    path.write_bytes(_encoded("PNG", (20, 10)))  # 200 pixels
    assert load_image(path, max_pixels=200).shape == (10, 20, 3)
    with pytest.raises(
        InputError, match=f"20x10 = 200 pixels, over the limit of 199.*{MAX_PIXELS_ENV}"
    ):
        load_image(path, max_pixels=199)
    monkeypatch.setenv(MAX_PIXELS_ENV, "150")
    assert max_image_pixels() == 150
    with pytest.raises(InputError, match="over the limit of 150"):
        Preprocess(size=(8, 8))(path)
    monkeypatch.setenv(MAX_PIXELS_ENV, "lots")
    with pytest.raises(InputError, match="not a whole number"):
        load_image(path)


def test_pillow_bomb_warning_becomes_our_error(tmp_path, monkeypatch):
    """Past Pillow's own limit (set low here) its warning is our InputError, not a warning."""
    path = tmp_path / "wide.png"
    path.write_bytes(_encoded("PNG", (30, 20)))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500)  # warns past 500, fails past 1000
    with pytest.raises(InputError, match="too large to decode safely"):
        load_image(path)


# ---------------------------------------------------------------------- EXIF orientation


def _rotated_jpeg(path, orientation: int) -> np.ndarray:
    """A 40x20 JPEG, red on the left half and blue on the right, tagged ``orientation``;
    returns the stored pixels."""
    stored = np.zeros((20, 40, 3), np.uint8)
    stored[:, :20, 0] = 255
    stored[:, 20:, 2] = 255
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(stored).save(path, "JPEG", quality=95, exif=exif.tobytes())
    return stored


def test_exif_rotated_photo_is_loaded_upright_and_the_rotation_recorded(tmp_path):
    path = tmp_path / "portrait.jpg"
    _rotated_jpeg(path, 6)  # the camera was turned: show it rotated 90 degrees clockwise
    loaded = read_image(path)
    assert loaded.orientation == 6 and loaded.transform == "rotated 90 degrees clockwise"
    assert loaded.stored_size == (40, 20) and loaded.pixels.shape == (40, 20, 3)
    top, bottom = loaded.pixels[:18].mean(axis=(0, 1)), loaded.pixels[22:].mean(axis=(0, 1))
    assert top[0] > 200 > top[2] and bottom[2] > 200 > bottom[0]  # the left side is up now
    np.testing.assert_array_equal(load_image(path), loaded.pixels)


@pytest.mark.parametrize("orientation", sorted(ORIENTATIONS))
def test_every_orientation_matches_pillow(tmp_path, orientation):
    from PIL import ImageOps

    path = tmp_path / f"o{orientation}.jpg"
    _rotated_jpeg(path, orientation)
    with Image.open(path) as pil:
        expected = np.asarray(ImageOps.exif_transpose(pil).convert("RGB"))
    loaded = read_image(path)
    assert loaded.orientation == orientation
    np.testing.assert_array_equal(loaded.pixels, expected)
