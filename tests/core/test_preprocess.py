"""Preprocessing presets, decoding errors and labels."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from cnnviz_core import InputError, Preprocess, load_labels
from cnnviz_core.preprocess import PRESETS, preset

RNG = np.random.default_rng(3)


def test_caffe_preset_is_bgr_minus_mean():
    image = RNG.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    batch = preset("caffe").replace(size=(8, 8))(image)
    expected = image[..., ::-1].astype(np.float32).transpose(2, 0, 1)
    expected -= np.array([104, 117, 123], np.float32)[:, None, None]
    np.testing.assert_array_equal(batch[0], expected)


def test_imagenet_preset_formula():
    image = RNG.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    batch = preset("imagenet").replace(size=(5, 7), resize="none")(image)
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    expected = ((image / 255.0 - mean) / std).transpose(2, 0, 1)
    np.testing.assert_allclose(batch[0], expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_invert_round_trips_every_preset(name):
    image = RNG.integers(0, 256, (6, 6, 3), dtype=np.uint8)
    pre = preset(name).replace(size=(6, 6))
    shown = pre.invert(pre(image))[0]
    if pre.channel_order == "L":
        grey = np.asarray(Image.fromarray(image).convert("L"))
        np.testing.assert_array_equal(shown, np.repeat(grey[..., None], 3, axis=-1))
    else:
        np.testing.assert_array_equal(shown, image)


def test_shorter_side_resize_then_centre_crop():
    image = np.zeros((40, 80, 3), np.uint8)
    image[:, 30:50] = 255  # a white centre band, a quarter of the width
    out = Preprocess(size=(20, 20), scale=1.0)(image)[0, 0]
    assert out.shape == (20, 20)
    assert out[:, 6:14].min() > 250 and out[:, :4].max() < 5  # crop kept the band centred


def test_float_arrays_in_0_1_and_grey_arrays():
    grey = RNG.uniform(0, 1, (4, 4))
    batch = Preprocess(size=(4, 4), resize="none", scale=1.0)(grey)
    assert batch.shape == (1, 3, 4, 4)
    np.testing.assert_array_equal(batch[0, 0], np.rint(grey * 255))


def test_undecodable_and_missing_images(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    pre = Preprocess(size=(4, 4))
    with pytest.raises(InputError, match="cannot decode image"):
        pre(bad)
    with pytest.raises(InputError, match="not found"):
        pre(tmp_path / "missing.jpg")
    with pytest.raises(InputError, match="shape"):
        pre(np.zeros((4, 4, 5), np.uint8))
    with pytest.raises(InputError, match="resize='none'"):
        Preprocess(size=(4, 4), resize="none")(np.zeros((5, 4, 3), np.uint8))


def test_bad_preset_and_fields():
    with pytest.raises(InputError, match="imagenet"):
        preset("imagent")
    with pytest.raises(InputError, match="mean needs 3"):
        Preprocess(mean=(1.0, 2.0))
    with pytest.raises(InputError, match="channel_order"):
        Preprocess(channel_order="ARGB")  # RGBA and C<n> are orders now


def test_labels_file_drops_synset_ids(tmp_path):
    path = tmp_path / "labels.txt"
    path.write_text("n01440764 tench, Tinca tinca\nn01443537 goldfish\n\n")
    assert load_labels(path) == ["tench, Tinca tinca", "goldfish"]
    with pytest.raises(InputError, match="not found"):
        load_labels(tmp_path / "none.txt")
