"""The one window geometry: ONNX attribute decoding and output sizes against onnxruntime's own
output shapes on one-node graphs, and the one check of a user's occlusion window."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from cnnviz_core.errors import InputError
from cnnviz_core.geometry import Window, occlusion_window, pair, window_output_size


def ort_output_hw(op: str, hw: tuple[int, int], attrs: dict, kernel=(3, 3)) -> tuple[int, ...]:
    """(H, W) of the output onnxruntime computes for a one-node graph on a (1, 2, *hw) input."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, *hw])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    inputs, inits = ["x"], []
    if op in ("Conv", "ConvTranspose"):
        w = np.ones((2, 2, *kernel), np.float32)
        inits.append(onnx.numpy_helper.from_array(w, "w"))
        inputs.append("w")
    else:
        attrs = {**attrs, "kernel_shape": list(kernel)}
    node = helper.make_node(op, inputs, ["y"], **attrs)
    graph = helper.make_graph([node], "g", [x], [y], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {"x": np.ones((1, 2, *hw), np.float32)})
    return tuple(out.shape[2:])


CASES = [
    ("MaxPool", (9, 10), {"strides": [2, 2], "auto_pad": "SAME_UPPER"}),
    ("MaxPool", (9, 10), {"strides": [2, 3], "auto_pad": "SAME_LOWER"}),
    ("AveragePool", (7, 8), {"strides": [2, 2], "auto_pad": "VALID"}),
    ("MaxPool", (7, 8), {"strides": [2, 2], "ceil_mode": 1}),
    ("MaxPool", (6, 6), {"strides": [2, 2], "pads": [1, 1, 1, 1], "ceil_mode": 1}),
    ("AveragePool", (10, 9), {"strides": [3, 2], "pads": [1, 0, 1, 1], "ceil_mode": 1}),
    ("MaxPool", (11, 12), {"strides": [2, 1], "dilations": [2, 3], "ceil_mode": 1}),
    ("Conv", (11, 12), {"strides": [2, 2], "dilations": [2, 2], "pads": [2, 1, 0, 3]}),
    # no dilated SAME case: onnxruntime refuses dilated SAME convolutions, and pads dilated
    # SAME pooling with the undilated kernel (its own shape inference, as the spec, disagrees)
    ("Conv", (9, 12), {"strides": [2, 3], "auto_pad": "SAME_UPPER"}),
    ("Conv", (9, 12), {"strides": [2, 3], "auto_pad": "SAME_LOWER"}),
]


@pytest.mark.parametrize(("op", "hw", "attrs"), CASES)
def test_output_size_matches_onnxruntime(op, hw, attrs):
    win = Window.from_onnx(attrs, (3, 3), hw)
    assert win.output_size(hw) == ort_output_hw(op, hw, attrs)


@pytest.mark.parametrize(
    ("attrs", "begins", "ends"),
    [
        ({"auto_pad": "SAME_UPPER", "strides": [2, 2]}, (1, 0), (1, 1)),  # odd total: extra at end
        ({"auto_pad": "SAME_LOWER", "strides": [2, 2]}, (1, 1), (1, 0)),  # ... at the start
        ({"auto_pad": "VALID", "pads": [5, 5, 5, 5]}, (0, 0), (0, 0)),  # VALID ignores pads
        ({"pads": [1, 2, 3, 4]}, (1, 2), (3, 4)),
    ],
)
def test_auto_pad_split(attrs, begins, ends):
    win = Window.from_onnx(attrs, (3, 3), (9, 10))
    assert (win.begins, win.ends) == (begins, ends)


def test_ceil_mode_drops_a_window_starting_in_the_end_padding():
    # 5 + 1 + 1 = 7 padded; k=2, s=2: floor 3, ceil 4, but window 4 would start at 6 >= 5 + 1
    assert window_output_size(5, 2, 2, 1, 1, 1, ceil_mode=False) == 3
    assert window_output_size(5, 2, 2, 1, 1, 1, ceil_mode=True) == 3
    assert window_output_size(6, 2, 2, 0, 0, 1, ceil_mode=True) == 3
    assert window_output_size(7, 2, 2, 0, 0, 1, ceil_mode=True) == 4
    win = Window.from_onnx({"strides": [2, 2], "ceil_mode": 1}, (2, 2), (7, 7))
    assert win.covering_ends((7, 7)) == (1, 1)  # the last window reaches past the input
    assert win.padded_size((7, 7)) == (8, 8)


@pytest.mark.parametrize(
    "attrs",
    [
        {"strides": [2, 2], "pads": [1, 0, 1, 0]},
        {"strides": [2, 3], "output_padding": [1, 2]},
        {"strides": [2, 2], "auto_pad": "SAME_UPPER"},
        {"strides": [2, 2], "auto_pad": "SAME_LOWER"},
        {"strides": [2, 2], "output_shape": [12, 9]},
        {"strides": [1, 1], "output_shape": [6, 5]},
    ],
)
def test_conv_transpose_output_size_matches_onnxruntime(attrs):
    hw = (5, 4)
    win = Window.from_onnx_transpose(attrs, (3, 3), hw)
    ours = win.transposed_output_size(hw, attrs.get("output_padding"))
    assert ours == ort_output_hw("ConvTranspose", hw, attrs)


def test_pytorch_style_window_and_native_args():
    win = Window.of(3, None, (1, 2), 2)
    assert win.native_args() == ((3, 3), (3, 3), (1, 2, 1, 2), (2, 2))
    assert Window.of((3, 2), 1, (0, 1, 2, 3)).pads == (0, 1, 2, 3)
    with pytest.raises(InputError, match="padding must be an int or 4 or 2 ints"):
        Window.of(3, 1, (1, 2, 3))
    with pytest.raises(InputError, match="auto_pad must be one of"):
        Window.from_onnx({"auto_pad": "SAME"}, (3, 3), (5, 5))
    with pytest.raises(InputError, match="needs the input's spatial size"):
        Window.from_onnx({"auto_pad": "SAME_UPPER"}, (3, 3))


def test_occlusion_window_converts_and_checks_once():
    assert pair(4, "window") == (4, 4)
    assert pair(np.array([3, 5]), "window") == (3, 5)
    assert occlusion_window((8, 9), 4, (2, 3)) == ((4, 4), (2, 3))
    with pytest.raises(InputError, match="window must be an int or 2 ints"):
        occlusion_window((8, 8), (1, 2, 3), 1)
    with pytest.raises(InputError, match="fit the 8x8 image"):
        occlusion_window((8, 8), (9, 2), 1)
    with pytest.raises(InputError, match="at least 1"):
        occlusion_window((8, 8), 0, 1)
    with pytest.raises(InputError, match="stride must be >= 1"):
        occlusion_window((8, 8), 2, (1, 0))
