"""The rule helpers that rule files and the torch bridge share (``backward.rules.common``)."""

from __future__ import annotations

import numpy as np
import pytest

from cnnviz_core.backward.rules.common import pad_maps, reshape_target, slice_index, unbroadcast


@pytest.mark.parametrize(
    ("operand", "result"),
    [((3, 1), (2, 3, 4)), ((1,), (2, 5)), ((2, 5), (2, 5)), ((), (4, 3)), ((1, 1, 4), (2, 3, 4))],
)
def test_unbroadcast_is_the_adjoint_of_broadcasting(operand, result):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(operand)
    dy = rng.standard_normal(result)
    dx = unbroadcast(dy, operand)
    assert dx.shape == np.shape(x)
    # <broadcast(x), dy> == <x, unbroadcast(dy)>
    np.testing.assert_allclose(np.sum(np.broadcast_to(x, result) * dy), np.sum(x * dx))


def test_reshape_target_copies_zero_dims_unless_allowzero():
    assert reshape_target(np.array([0, -1]), (2, 3, 4), 0) == [2, -1]
    assert reshape_target(np.array([0, 12]), (2, 3, 4), 1) == [0, 12]


@pytest.mark.parametrize(
    ("starts", "ends", "axes", "steps"),
    [
        ([1], [-1], None, None),
        ([-100], [100], [1], None),
        ([5], [-100], [0], [-1]),
        ([0, 1], [4, 5], [1, 0], [2, 2]),
        ([-1], [-6], [-1], [-2]),
    ],
)
def test_slice_index_matches_onnx_clamping(starts, ends, axes, steps):
    x = np.arange(6 * 5).reshape(6, 5)
    got = x[slice_index(x.shape, starts, ends, axes, steps)]
    expected = x
    for i, (start, end) in enumerate(zip(starts, ends)):
        axis = (axes[i] if axes is not None else i) % x.ndim
        step = steps[i] if steps is not None else 1
        index = [slice(None)] * x.ndim
        index[axis] = slice(start, end, step)  # Python slices clamp as ONNX Slice does
        expected = expected[tuple(index)]
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("mode", ["constant", "reflect", "edge", "wrap"])
def test_pad_maps_reproduce_np_pad(mode):
    x = np.arange(1, 13).reshape(3, 4)
    y = x
    for axis, source in pad_maps(x.shape, [1, 2, 2, 1], mode, None):
        y = np.take(y, np.maximum(source, 0), axis=axis)
        fill = [slice(None)] * y.ndim
        fill[axis] = source < 0
        y[tuple(fill)] = 0
    np.testing.assert_array_equal(y, np.pad(x, ((1, 2), (2, 1)), mode=mode))


def test_pad_maps_crop_on_negative_pads_and_reject_unknown_modes():
    maps = pad_maps((5,), [-1, -2], "constant", None)
    assert [(axis, list(source)) for axis, source in maps] == [(0, [1, 2])]
    assert pad_maps((3, 4), [0, 0, 0, 0], "constant", None) == []
    with pytest.raises(ValueError, match="unknown mode 'mirror'"):
        pad_maps((3,), [1, 1], "mirror", None)
