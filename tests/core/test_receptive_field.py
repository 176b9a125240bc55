"""Receptive fields against brute force: perturb single input pixels, see which outputs move."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import make_graph_model
from onnx import helper

from cnnviz_core import Model, Preprocess


def observed_boxes(model: Model, layer: str, size: int, sign: float = 1.0) -> np.ndarray:
    """For every pixel (i, j) of ``layer``: (top, left, bottom, right) of the input pixels
    whose perturbation changes any channel there (-1 where none does)."""
    base = np.random.default_rng(0).uniform(0, 1, (1, model.channels, size, size))
    base = base.astype(np.float32)
    batch = np.repeat(base, size * size, axis=0)
    rows, cols = np.divmod(np.arange(size * size), size)
    batch[np.arange(size * size), :, rows, cols] += np.float32(sign * 1000)
    ref = model.run(base, taps=[layer], outputs=False)[layer][0]
    out = model.run(batch, taps=[layer], outputs=False)[layer]
    changed = (np.abs(out - ref) > 1e-3 * (1 + np.abs(ref))).any(axis=1)  # (P, h, w)
    h, w = changed.shape[1:]
    boxes = np.full((h, w, 4), -1)
    for i in range(h):
        for j in range(w):
            hits = np.flatnonzero(changed[:, i, j])
            if hits.size:
                r, c = rows[hits], cols[hits]
                boxes[i, j] = r.min(), c.min(), r.max(), c.max()
    return boxes


def expected_box(model: Model, layer: str, i: int, j: int, size: int) -> tuple:
    top, left, bottom, right = model.layer(layer).receptive_field.window(i, j)
    return max(top, 0), max(left, 0), min(bottom, size - 1), min(right, size - 1)


def geometry_model() -> Model:
    """Conv/pool/pad/branch geometry with positive weights, so every pixel in a window
    (including through MaxPool) moves the output when pushed up."""
    rng = np.random.default_rng(1)

    def positive(*shape):
        return rng.uniform(0.1, 1.0, shape).astype(np.float32)

    w = {
        "w1": positive(4, 3, 3, 3),
        "w2": positive(4, 4, 3, 3),
        "w3": positive(4, 4, 4, 4),
        "w4": positive(4, 4, 1, 1),
        "w5": positive(4, 4, 3, 3),
        "pads": np.array([0, 0, 1, 0, 0, 0, 0, 1], np.int64),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["a"], pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["a", "w2"], ["b"], strides=[2, 2], dilations=[2, 2]),
        helper.make_node(
            "MaxPool", ["b"], ["c"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]
        ),
        helper.make_node("Pad", ["c", "pads"], ["d"]),
        helper.make_node("AveragePool", ["d"], ["e"], kernel_shape=[2, 2]),
        helper.make_node("Conv", ["e", "w3"], ["f"], auto_pad="SAME_UPPER", strides=[2, 2]),
        helper.make_node("Conv", ["f", "w4"], ["g1"]),
        helper.make_node("Conv", ["f", "w5"], ["g2"], pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["g1", "g2"], ["h"]),
        helper.make_node("Relu", ["h"], ["y"]),
    ]
    proto = make_graph_model(nodes, w, ["N", 3, 48, 48], "y")
    return Model(proto.SerializeToString(), preprocess=Preprocess(scale=1.0))


@pytest.mark.parametrize("layer", ["a", "b", "c", "d", "e", "f", "h", "y"])
def test_receptive_fields_equal_brute_force(layer):
    model = geometry_model()
    boxes = observed_boxes(model, layer, 48)
    h, w = boxes.shape[:2]
    for i in range(h):
        for j in range(w):
            if boxes[i, j, 0] < 0:  # only the rows/cols that Pad adds see no input pixel
                assert layer == "d" and (i == 0 or j == w - 1), (i, j)
                continue
            assert tuple(boxes[i, j]) == expected_box(model, layer, i, j, 48), (i, j)


def test_receptive_field_numbers():
    model = geometry_model()
    field = model.layer("f").receptive_field
    # a: 3, b: +2*2*1=7 stride 2, c: +2*2=11 stride 4, e: +1*4=15, f: +3*4=27 stride 8
    assert field.size == (27, 27) and field.stride == (8, 8)
    assert model.layer("h").receptive_field.size == (27 + 2 * 8, 27 + 2 * 8)


@pytest.mark.shared
@pytest.mark.parametrize(
    ("name", "preset", "layers"),
    [
        (
            "mnist_cntk.onnx",
            "grey255",
            ["ReLU32_Output_0", "Pooling66_Output_0", "Pooling160_Output_0"],
        ),
        ("cifar10_tutorial_cnn.onnx", "unit", ["36", "37", "43"]),
    ],
)
def test_real_models_fields_contain_and_match_influence(shared_data, name, preset, layers):
    model = Model(shared_data / "models" / name, preprocess=preset)
    size = model.input_shape[1]
    for layer in layers:
        boxes = np.maximum(
            observed_boxes(model, layer, size, +1.0), observed_boxes(model, layer, size, -1.0)
        )
        h, w = boxes.shape[:2]
        for i in range(h):
            for j in range(w):
                top, left, bottom, right = boxes[i, j]
                if top < 0:
                    continue
                e_top, e_left, e_bottom, e_right = expected_box(model, layer, i, j, size)
                assert e_top <= top and e_left <= left and bottom <= e_bottom and right <= e_right
        # ReLUs and max-pooling can hide pixels; at least the centre outputs see the full window
        ci, cj = h // 2, w // 2
        assert tuple(boxes[ci, cj]) == expected_box(model, layer, ci, cj, size), layer
