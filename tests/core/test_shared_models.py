"""The real pretrained models of ../shared/data: predictions as its README lists them."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cnnviz_core import Model

pytestmark = pytest.mark.shared

PRESETS = {  # expected_predictions.json convention -> our preset
    "squeezenet1.1_fp32.onnx": [
        ("bgr_0_255 (WinML convention, oracle-verified)", "bgr255"),
        ("bgr_minus_caffe_mean", "caffe"),
    ],
    "squeezenet1.1_fp16.onnx": [("bgr_0_255 (WinML convention, oracle-verified)", "bgr255")],
    "mnist_cntk.onnx": [
        ("0_255 (model metadata NominalRange_0_255)", "grey255"),
        ("0_1", "grey01"),
    ],
    "cifar10_tutorial_cnn.onnx": [(None, "unit")],
}
CIFAR10 = ["plane", "car", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def cases():
    for model_name, conventions in PRESETS.items():
        for convention, preset in conventions:
            yield pytest.param(model_name, convention, preset, id=f"{model_name}-{preset}")


@pytest.mark.parametrize(("model_name", "convention", "preset"), list(cases()))
def test_top_predictions_match_the_shared_readme(shared_data, model_name, convention, preset):
    expected = json.loads((shared_data / "expected_predictions.json").read_text())
    table = expected["predictions"][model_name]
    if convention is not None:
        table = table[convention]
    labels = {
        "mnist_cntk.onnx": [str(d) for d in range(10)],
        "cifar10_tutorial_cnn.onnx": CIFAR10,
    }.get(model_name, shared_data / "labels" / "imagenet_synset_words.txt")
    model = Model(shared_data / "models" / model_name, preprocess=preset, labels=labels)
    folder = "digits" if model_name.startswith("mnist") else "photos"
    files = sorted(table)
    predictions = model.predict([shared_data / folder / f for f in files], k=3)
    for file, preds in zip(files, predictions):
        want = table[file]
        assert preds[0].label == want[0][0], file
        # probabilities rounded to 4 digits in the file; resizing may differ slightly
        assert preds[0].probability == pytest.approx(want[0][1], abs=0.02), file


@pytest.mark.parametrize(
    ("model_name", "reference"),
    [
        ("squeezenet1.1_fp32.onnx", "squeezenet_fp32_fish_softmax.csv"),
        ("squeezenet1.1_fp16.onnx", "squeezenet_fp16_fish_softmax.csv"),
    ],
)
def test_squeezenet_reproduces_the_winml_oracle(shared_data, model_name, reference):
    model = Model(shared_data / "models" / model_name, preprocess="bgr255")
    probs = model.probabilities(model.prepare(shared_data / "photos" / "fish.png"))[0]
    rows = np.loadtxt(shared_data / "reference" / reference, delimiter=",", skiprows=1)
    want = np.zeros(1000)
    want[rows[:, 0].astype(int)] = rows[:, 1]
    assert probs.dtype == np.float32
    assert np.abs(probs - want).max() < 1e-3


def test_fp16_taps_come_back_as_float32_and_batch(shared_data):
    model = Model(shared_data / "models" / "squeezenet1.1_fp16.onnx", preprocess="caffe")
    images = [shared_data / "photos" / n for n in ("fish.png", "kitten_224.png", "snake.png")]
    batch = model.prepare(images)
    out = model.run(batch, taps=["conv10_2", "fire9/concat_1"])
    assert out["conv10_2"].dtype == np.float32
    assert out["conv10_2"].shape == (3, 1000, 13, 13)
    single = model.run(batch[1:2], taps=["conv10_2"])["conv10_2"]
    # fp16 arithmetic depends on the batch's blocking: compare relative to the map's scale
    assert np.abs(out["conv10_2"][1:2] - single).max() <= 2e-3 * np.abs(single).max()
