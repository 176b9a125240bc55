"""The onnxruntime-run float32 adjoints equal the NumPy reference path."""

from __future__ import annotations

import numpy as np
import pytest

from cnnviz_core.backward import adjoint
from cnnviz_core.backward.rules.nn import Conv
from cnnviz_core.geometry import Window
from cnnviz_core.model import SessionFactory


@pytest.mark.parametrize(
    ("c_in", "c_out", "hw", "kernel", "stride", "pads", "dilation", "groups"),
    [
        (3, 4, (9, 9), (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1),
        (4, 6, (10, 7), (3, 2), (2, 1), (0, 1, 1, 0), (1, 1), 2),
        (6, 6, (11, 11), (3, 3), (2, 2), (1, 1, 1, 1), (1, 1), 6),  # depthwise
        (2, 3, (12, 9), (3, 3), (3, 2), (2, 0, 1, 2), (2, 1), 1),  # leftover rows, dilation
        (5, 4, (8, 8), (1, 1), (2, 2), (0, 0, 0, 0), (1, 1), 1),
        # stride 1 runs as a convolution with flipped kernels
        (4, 6, (9, 8), (3, 2), (1, 1), (0, 1, 2, 0), (1, 1), 2),
        (6, 6, (10, 10), (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 6),
        (3, 5, (12, 11), (3, 3), (1, 1), (2, 1, 2, 2), (2, 2), 1),
        (3, 4, (7, 7), (5, 5), (1, 1), (3, 2, 1, 3), (1, 1), 1),  # pad > k-1: ConvTranspose
    ],
)
def test_conv_input_grad_matches_reference(c_in, c_out, hw, kernel, stride, pads, dilation, groups):
    rng = np.random.default_rng(0)
    win = Window.of(kernel, stride, pads, dilation)
    ho, wo = win.output_size(hw)
    w = rng.standard_normal((c_out, c_in // groups, *kernel)).astype(np.float32)
    dy = rng.standard_normal((3, c_out, ho, wo)).astype(np.float32)
    ours = adjoint.conv_input_grad(dy, w, win, groups, hw, SessionFactory())
    reference = Conv.input_grad(dy.astype(np.float64), w, win, groups, hw)
    assert ours.shape == (3, c_in, *hw)
    np.testing.assert_allclose(ours, reference, rtol=1e-4, atol=1e-4 * np.abs(reference).max())


@pytest.mark.parametrize("transpose", [False, True])
def test_matmul_constant_matches_numpy(transpose):
    rng = np.random.default_rng(1)
    w = rng.standard_normal((7, 5)).astype(np.float32)
    dy = rng.standard_normal((3, 5 if transpose else 7)).astype(np.float32)
    expected = dy.astype(np.float64) @ (w.T if transpose else w)
    np.testing.assert_allclose(
        adjoint.matmul_constant(dy, w, SessionFactory(), transpose), expected, rtol=1e-5, atol=1e-5
    )
