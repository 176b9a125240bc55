"""Gram-matrix texture synthesis and Gatys style transfer (cnnviz.synthesis.texture,
.gatys_transfer) on the shapes model (fast) and SqueezeNet 1.1 at small sizes: the losses the
issue asks to fall, checked against onnxruntime's features and a float64 NumPy Gram; seeds,
interruption, sizes, errors, CLI."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from cnnviz.data import make_shapes  # noqa: E402
from cnnviz.models import load_model  # noqa: E402
from cnnviz.synthesis import gram_texture, style_transfer  # noqa: E402
from cnnviz_core import InputError, Model, UnknownLayerError  # noqa: E402
from cnnviz_core.kernels import gram_reference  # noqa: E402

SQUEEZE_LAYERS = ["conv1_2", "fire2/concat_1", "fire4/concat_1"]


@pytest.fixture(scope="module")
def shapes():
    return load_model("shapes")


@pytest.fixture(scope="module")
def squeezenet(shared_data):
    return Model(shared_data / "models" / "squeezenet1.1_fp32.onnx", preprocess="caffe")


@pytest.fixture(scope="module")
def content() -> np.ndarray:
    return make_shapes(1, seed=3).images[0]


@pytest.fixture(scope="module")
def stripes() -> np.ndarray:
    """A colourful diagonal-stripes texture with some noise (64 x 64)."""
    y, x = np.mgrid[0:64, 0:64]
    phase = (x + 2 * y) / 6.0
    image = np.stack([np.sin(phase), np.sin(phase + 2), np.cos(phase / 2)], axis=-1)
    noise = np.random.default_rng(0).normal(0, 0.1, image.shape)
    return np.clip((image + noise) * 100 + 128, 0, 255).astype(np.uint8)


def onnxruntime_gram_loss(model, picture, sample, layers):
    """The relative Gram loss of a picture against a sample, from onnxruntime's features and
    float64 NumPy Gram matrices (both at the model's input size)."""
    got = model.run(model.prepare(picture), taps=layers, outputs=False)
    want = model.run(model.prepare(sample), taps=layers, outputs=False)
    total = 0.0
    for name in layers:
        f, t = got[name].astype(np.float64), want[name].astype(np.float64)
        norm = np.prod(f.shape[1:])
        g, gt = gram_reference(f, norm), gram_reference(t, norm)
        total += ((g - gt) ** 2).mean() / (gt**2).mean()
    return total


@pytest.fixture(scope="module")
def texture(shapes, stripes):
    return gram_texture(shapes, stripes, steps=30, seed=1)


def test_texture_gram_loss_drops_two_orders(shapes, stripes, texture):
    m = texture.metrics
    assert m["style_loss_end"] <= 1e-2 * m["style_loss_start"], m
    assert m["style_loss_ratio"] == pytest.approx(m["style_loss_end"] / m["style_loss_start"])
    # the reported losses agree with onnxruntime's features and a float64 Gram
    layers = m["layers"]
    assert layers == ["relu", "relu_1", "relu_2", "relu_3"]
    noise = np.random.default_rng(1).uniform(0, 1, (1, 3, 64, 64))  # the start, seed 1
    start_picture = np.rint(noise[0].transpose(1, 2, 0) * 255).astype(np.uint8)
    assert onnxruntime_gram_loss(shapes, texture.image, stripes, layers) == pytest.approx(
        m["style_loss_end"], rel=1e-3
    )
    assert onnxruntime_gram_loss(shapes, start_picture, stripes, layers) == pytest.approx(
        m["style_loss_start"], rel=1e-2
    )
    assert texture.images.shape == (1, 64, 64, 3) and texture.images.dtype == np.uint8
    assert texture.steps == 30 and len(texture.losses) == 30 and len(m["style_losses"]) == 30
    assert texture.batch.shape == (1, 3, 64, 64)
    assert not texture.interrupted and texture.method == "texture"


def test_texture_adam_and_larger_output(shapes, stripes):
    result = gram_texture(
        shapes, stripes, size=(80, 96), sample_size=48, optimizer="adam", steps=40, lr=0.02
    )
    assert result.images.shape == (1, 80, 96, 3)
    assert result.metrics["sample_size"] == [48, 48]
    assert result.metrics["style_loss_end"] <= 0.1 * result.metrics["style_loss_start"]


def test_texture_layers_weights_and_seed(shapes, stripes):
    kw = dict(layers=["relu_1", "relu_2"], layer_weights={"relu_2": 2.0}, steps=4, size=32)
    a, b = gram_texture(shapes, stripes, seed=3, **kw), gram_texture(shapes, stripes, seed=3, **kw)
    c = gram_texture(shapes, stripes, seed=4, **kw)
    np.testing.assert_array_equal(a.images, b.images)
    assert a.losses == b.losses
    assert not np.array_equal(a.images, c.images)
    assert a.metrics["layer_weights"] == [1.0, 2.0]


def test_texture_interruption_keeps_the_best(shapes, stripes):
    def stop(step, total, loss):
        if step == 5:
            raise KeyboardInterrupt

    result = gram_texture(shapes, stripes, steps=30, size=32, progress=stop)
    assert result.interrupted and result.steps == 5
    assert result.images.shape == (1, 32, 32, 3)
    assert result.metrics["style_loss_end"] < result.metrics["style_loss_start"]


def test_bad_arguments(shapes, stripes, content):
    with pytest.raises(UnknownLayerError, match="did you mean 'relu_1'"):
        gram_texture(shapes, stripes, layers=["relu_11"], steps=1)
    with pytest.raises(UnknownLayerError, match="unknown layer"):
        style_transfer(shapes, content, stripes, content_layer="conv9", steps=1)
    with pytest.raises(InputError, match="optimizer must be one of lbfgs, adam"):
        gram_texture(shapes, stripes, optimizer="sgd", steps=1)
    with pytest.raises(InputError, match="init must be one of content, noise"):
        style_transfer(shapes, content, stripes, init="zeros", steps=1)
    with pytest.raises(InputError, match="style_weight must be a finite number"):
        style_transfer(shapes, content, stripes, style_weight=-1.0, steps=1)
    with pytest.raises(InputError, match="steps must be at least 1"):
        gram_texture(shapes, stripes, steps=0)


def test_style_transfer_from_noise_lowers_both_losses(shapes, content, stripes):
    result = style_transfer(shapes, content, stripes, init="noise", steps=25, seed=2)
    m = result.metrics
    assert m["content_loss_end"] < 0.8 * m["content_loss_start"], m
    assert m["style_loss_end"] < 0.1 * m["style_loss_start"], m
    assert result.images.shape == (1, 64, 64, 3) and result.steps == 25
    assert len(m["content_losses"]) == len(m["style_losses"]) == 25


def test_style_transfer_from_content_lowers_style_tenfold(shapes, content, stripes):
    result = style_transfer(shapes, content, stripes, steps=30)
    m = result.metrics
    assert m["content_loss_start"] == pytest.approx(0.0, abs=1e-6)
    assert m["style_loss_end"] <= 0.1 * m["style_loss_start"], m
    # the reported style loss is onnxruntime's on the saved picture
    assert onnxruntime_gram_loss(shapes, result.image, stripes, m["style_layers"]) == (
        pytest.approx(m["style_loss_end"], rel=1e-3)
    )


def test_style_transfer_adam_seed_and_interruption(shapes, content, stripes):
    kw = dict(init="noise", optimizer="adam", steps=6, size=32)
    a = style_transfer(shapes, content, stripes, seed=1, **kw)
    b = style_transfer(shapes, content, stripes, seed=1, **kw)
    np.testing.assert_array_equal(a.images, b.images)
    assert a.images.shape == (1, 32, 32, 3)

    def stop(step, total, loss):
        if step == 3:
            raise KeyboardInterrupt

    c = style_transfer(shapes, content, stripes, steps=20, progress=stop)
    assert c.interrupted and c.steps == 3 and c.images.shape == (1, 64, 64, 3)


@pytest.mark.shared
def test_squeezenet_texture_drops_two_orders(squeezenet, shared_data):
    result = gram_texture(
        squeezenet,
        shared_data / "style" / "starry_night.jpg",
        sample_size=64,
        size=(64, 64),
        layers=SQUEEZE_LAYERS,
        steps=40,
    )
    assert result.metrics["style_loss_end"] <= 1e-2 * result.metrics["style_loss_start"]


@pytest.mark.shared
def test_squeezenet_style_transfer(squeezenet, shared_data):
    photo, painting = (
        shared_data / "photos" / "kitten_224.png",
        shared_data / "style" / "mosaic.jpg",
    )
    from_content = style_transfer(squeezenet, photo, painting, size=64, steps=40)
    m = from_content.metrics
    assert m["style_layers"] == ["conv1_2", "fire2/concat_1", "fire4/concat_1", "fire6/concat_1"]
    assert m["content_layer"] == "fire5/concat_1"
    assert m["style_loss_end"] <= 0.1 * m["style_loss_start"], m
    from_noise = style_transfer(squeezenet, photo, painting, size=64, steps=15, init="noise")
    m = from_noise.metrics
    assert m["style_loss_end"] < m["style_loss_start"] and (
        m["content_loss_end"] < m["content_loss_start"]
    ), m


def test_cli_texture_gram_and_style(tmp_path, capsys, stripes, content):
    from PIL import Image

    from cnnviz.cli import main

    sample, photo = tmp_path / "stripes.png", tmp_path / "photo.png"
    Image.fromarray(stripes).save(sample)
    Image.fromarray(content).save(photo)
    argv = ["texture", sample, "--method", "gram", "--steps", "3", "--size", "40", "48"]
    assert main([str(a) for a in [*argv, "--layer", "relu_1", "--out", tmp_path]]) == 0
    out = capsys.readouterr().out
    assert "gram texture (relu_1): Gram loss" in out
    with Image.open(tmp_path / "stripes-gram.png") as picture:
        assert picture.size == (48, 40)
    argv = ["style", photo, sample, "--steps", "3", "--size", "48", "--out", tmp_path / "st"]
    assert main([str(a) for a in argv]) == 0
    assert "style loss" in capsys.readouterr().out
    with Image.open(tmp_path / "st" / "photo-stripes.png") as picture:
        assert picture.size == (48, 48)
    argv = ["style", photo, sample, "--style-layer", "relu_9", "--out", tmp_path / "bad"]
    assert main([str(a) for a in argv]) != 0
    assert "did you mean" in capsys.readouterr().err


def test_report_sections(tmp_path, shapes, content, stripes):
    from cnnviz.render.report import build_report, sections

    names = [section.key for section in sections()]
    assert {"gram-texture", "style-transfer"} <= set(names)
    options = {"synthesis": {"texture_steps": 5, "style_steps": 5, "style_side": 32}}
    only = ["gram-texture", "style-transfer"]
    path = build_report(shapes, [content, stripes], tmp_path, options=options, sections=only)
    html = path.read_text()
    assert "Texture synthesis (Gram matrices)" in html and "Style transfer (Gatys)" in html
    assert "Gram loss x" in html and "relu_3" in html
