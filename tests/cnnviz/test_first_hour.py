"""The user's first hour (issue 18): what failed silently on a real ImageNet model with a
0-255 preset (SqueezeNet 1.1, Caffe preprocessing) now works or says what is wrong."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cnnviz_core import Model

pytest.importorskip("torch")


@pytest.fixture(scope="module")
def squeezenet(shared_data: Path) -> Model:
    return Model(
        shared_data / "models" / "squeezenet1.1_fp32.onnx",
        preprocess="caffe",
        labels=shared_data / "labels" / "imagenet_synset_words.txt",
    )


# --------------------------------------------------- 1. synthesis scaled to the input range


def test_inversion_on_caffe_preset_reconstructs_first_block(
    squeezenet: Model, shared_data: Path
) -> None:
    """Before: L-BFGS stopped after 4 evaluations, PSNR 6.7 dB, the picture was the start noise."""
    from cnnviz.synthesis import invert
    from cnnviz.synthesis.base import pixels, start_batch

    result = invert(squeezenet, shared_data / "photos" / "kitten_224.png", "conv1_2", steps=20)
    assert result.metrics["psnr"][0] > 15.0
    start = pixels(squeezenet, start_batch(squeezenet, "noise", 1, 0))
    assert np.abs(result.images.astype(int) - start.astype(int)).mean() > 20


def test_inversion_adam_moves_on_caffe_preset(squeezenet: Model, shared_data: Path) -> None:
    from cnnviz.synthesis import invert

    result = invert(
        squeezenet, shared_data / "photos" / "kitten_224.png", "conv1_2", steps=8, optimizer="adam"
    )
    assert result.losses[-1] < 0.7 * result.losses[0]


def test_class_visualization_on_caffe_preset_is_not_flat(squeezenet: Model) -> None:
    from cnnviz.synthesis import class_visualization

    result = class_visualization(squeezenet, 281, steps=6)
    assert result.images.std() > 4.0
    assert result.losses[-1] < result.losses[0]


# ------------------------------------------------------ 2. SmoothGrad's sigma and the range


def tiny_model(tmp_path: Path, preset: str) -> Model:
    import onnx

    from tests.conftest import tiny_classifier

    path = tmp_path / "tiny.onnx"
    onnx.save(tiny_classifier(), path)
    return Model(path, preprocess=preset)


@pytest.mark.parametrize("preset", ["caffe", "rgb01"])
@pytest.mark.parametrize("contrast", [0, 255])
def test_smoothgrad_noise_is_a_fraction_of_the_input_range(
    tmp_path: Path, preset: str, contrast: int
) -> None:
    """The noise is sigma times the range pixel values 0-255 take after preprocessing,
    whatever the image: a flat grey image got no noise at all before."""
    from cnnviz.attribution import Attribution, saliency
    from cnnviz.attribution.smoothgrad import smooth

    model = tiny_model(tmp_path, preset)
    seen: list[np.ndarray] = []

    def spy(model: Model, images: np.ndarray, target: object = None, **options: object):
        seen.append(np.asarray(images))
        result: Attribution = saliency(model, images, target, **options)
        return result

    image = np.full((16, 16, 3), 128, np.uint8)
    image[:, 8:] = 128 + contrast // 2 - (contrast > 0)
    image[:, :8] = 128 - contrast // 2
    clean = model.prepare(image)
    smooth(spy, n=16, sigma=0.1)(model, image, 0)
    noise = np.concatenate(seen) - clean
    span = 255.0 if preset == "caffe" else 1.0
    assert noise.std() == pytest.approx(0.1 * span, rel=0.15)
