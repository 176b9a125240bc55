"""Native ReLU-family backward kernels against the NumPy reference (cnnviz_core.kernels)."""

from __future__ import annotations

import numpy as np
import pytest

from cnnviz_core import _native, kernels

MODES = ["gradient", "guided", "deconvnet"]
# 0-d, empty, 1 element, odd sizes, batch 1, and 210003 elements: more than 2 x 65536, so that
# two and more threads each get a chunk.
SHAPES = [(), (0, 3), (1,), (7,), (1, 1), (1, 3, 5, 5), (2, 3, 17, 13), (3, 70001)]

# The worked example: ReLU input x, gradient g w.r.t. its output, result per mode.
X = [[1, -1, 5], [2, -5, -7], [-3, 2, 4]]
G = [[-2, 3, -1], [6, -3, 1], [2, -1, 3]]
EXPECTED = {
    "gradient": [[-2, 0, -1], [6, 0, 0], [0, -1, 3]],
    "guided": [[0, 0, 0], [6, 0, 0], [0, 0, 3]],
    "deconvnet": [[0, 3, 0], [6, 0, 1], [2, 0, 3]],
}


def random_pair(shape: tuple[int, ...], seed: int, dtype=np.float32) -> tuple[np.ndarray, ...]:
    """x and g from a seeded normal, with exact zeros and clip bounds mixed into x."""
    rng = np.random.default_rng(seed)
    x = rng.normal(scale=3.0, size=shape).astype(dtype)
    g = rng.normal(size=shape).astype(dtype)
    flat = x.reshape(-1)
    flat[::7] = 0.0
    flat[3::11] = 6.0
    return x, g


@pytest.mark.parametrize("num_threads", [0, 1, 2, 3])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("mode", MODES)
def test_native_matches_reference(mode, shape, num_threads):
    x, g = random_pair(shape, seed=len(shape) + sum(shape))
    got = _native.relu_backward(x, g, mode, num_threads=num_threads)
    assert got.dtype == np.float32 and got.shape == shape
    np.testing.assert_array_equal(got, kernels.relu_backward_reference(x, g, mode))


@pytest.mark.parametrize("slope", [0.01, 0.2, -0.5])
@pytest.mark.parametrize("shape", [(5, 9), (3, 70001)], ids=str)
@pytest.mark.parametrize("mode", MODES)
def test_leaky_matches_reference(mode, shape, slope):
    x, g = random_pair(shape, seed=11)
    got = kernels.relu_backward(x, g, mode, negative_slope=slope, num_threads=2)
    np.testing.assert_array_equal(got, kernels.relu_backward_reference(x, g, mode, slope))


def test_leaky_gradient_scales_blocked_elements():
    x = np.array([2.0, -1.0, 0.0], np.float32)
    g = np.array([3.0, 4.0, -5.0], np.float32)
    got = kernels.relu_backward(x, g, "gradient", negative_slope=0.1)
    np.testing.assert_array_equal(got, np.float32([3.0, 0.4, -0.5]))


@pytest.mark.parametrize(
    ("lo", "hi"), [(0.0, 6.0), (-1.0, 1.0), (-np.inf, 0.5), (0.5, np.inf)], ids=str
)
@pytest.mark.parametrize("shape", [(1,), (4, 7, 3), (3, 70001)], ids=str)
@pytest.mark.parametrize("mode", MODES)
def test_clip_matches_reference(mode, shape, lo, hi):
    x, g = random_pair(shape, seed=5)
    got = _native.relu_backward_clip(x, g, lo, hi, mode, num_threads=2)
    np.testing.assert_array_equal(got, kernels.relu_backward_clip_reference(x, g, lo, hi, mode))


@pytest.mark.parametrize("mode", MODES)
def test_large_outputs_stream_and_match_reference(mode):
    # >= 16 MiB outputs are built in L1 blocks and streamed out: an odd length and an output
    # that starts off a cache line (a view one float in) cover the ragged head and tail.
    x, g = random_pair((4_200_003,), seed=9)
    out = np.empty(x.size + 1, np.float32)[1:]
    got = kernels.relu_backward(x, g, mode, out=out, negative_slope=0.1)
    assert got is out
    np.testing.assert_array_equal(got, kernels.relu_backward_reference(x, g, mode, 0.1))
    got = _native.relu_backward_clip(x, g, 0.0, 1.0, mode, num_threads=2)
    np.testing.assert_array_equal(got, kernels.relu_backward_clip_reference(x, g, 0.0, 1.0, mode))


def test_relu6_gate_excludes_the_bounds():
    x = np.array([-1.0, 0.0, 3.0, 6.0, 7.0], np.float32)
    g = np.full(5, 2.0, np.float32)
    got = kernels.relu_backward_clip(x, g, 0.0, 6.0, "gradient")
    np.testing.assert_array_equal(got, np.float32([0, 0, 2, 0, 0]))


@pytest.mark.parametrize("backend", ["auto", "native", "numpy"])
@pytest.mark.parametrize("mode", MODES)
def test_worked_example(mode, backend):
    x, g = np.array(X, np.float32), np.array(G, np.float32)
    got = kernels.relu_backward(x, g, mode, backend=backend)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, EXPECTED[mode])


@pytest.mark.parametrize("mode", MODES)
def test_float64_stays_float64(mode):
    x, g = random_pair((4, 6), seed=3, dtype=np.float64)
    got = kernels.relu_backward(x, g, mode)
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got, kernels.relu_backward_reference(x, g, mode))
    np.testing.assert_array_equal(kernels.relu_backward(X, G, mode), EXPECTED[mode])


def test_native_backend_rejects_float64():
    x, g = random_pair((4,), seed=3, dtype=np.float64)
    with pytest.raises(ValueError, match="backend='native' computes in float32, got float64"):
        kernels.relu_backward(x, g, backend="native")


@pytest.mark.parametrize("mode", MODES)
def test_strided_inputs(mode):
    x, g = random_pair((6, 10, 9), seed=8)
    xs, gs = x[:5, ::2, :4], g.transpose(1, 0, 2)[:5, :5, :4]
    assert not xs.flags.c_contiguous and not gs.flags.c_contiguous
    got = kernels.relu_backward(xs, gs, mode)
    np.testing.assert_array_equal(got, kernels.relu_backward_reference(xs, gs, mode))


@pytest.mark.parametrize("mode", MODES)
def test_special_values_match_reference(mode):
    x = np.array([-1.0, -1.0, 1.0, np.nan, 0.0, -0.0, np.inf], np.float32)
    g = np.array([np.inf, np.nan, np.nan, 2.0, -np.inf, 3.0, -1.0], np.float32)
    got = _native.relu_backward(x, g, mode)
    np.testing.assert_array_equal(got, kernels.relu_backward_reference(x, g, mode))
    if mode == "gradient":
        assert got[0] == 0 and got[1] == 0  # blocked inf / nan gradients are exact zeros


@pytest.mark.parametrize("mode", MODES)
def test_out_and_in_place(mode):
    x, g = random_pair((3, 70001), seed=21)
    expected = kernels.relu_backward_reference(x, g, mode)
    out = np.empty_like(x)
    assert _native.relu_backward(x, g, mode, out=out) is out
    np.testing.assert_array_equal(out, expected)
    g_copy = g.copy()
    assert _native.relu_backward(x, g_copy, mode, out=g_copy) is g_copy
    np.testing.assert_array_equal(g_copy, expected)
    strided_out = np.empty((3, 70001, 2), np.float32)[..., 0]
    assert kernels.relu_backward(x, g, mode, out=strided_out) is strided_out
    np.testing.assert_array_equal(strided_out, expected)
    out64 = np.empty(x.shape)
    kernels.relu_backward(x.astype(np.float64), g, mode, out=out64)
    np.testing.assert_array_equal(
        out64, kernels.relu_backward_reference(x.astype(np.float64), g, mode)
    )


def test_native_rejects_float64_naming_the_argument():
    x, g = random_pair((2, 3), seed=1)
    with pytest.raises(
        TypeError, match=r"g must have dtype float32, got float64 with shape \(2, 3\)"
    ):
        _native.relu_backward(x, g.astype(np.float64), "gradient")


def test_native_rejects_non_arrays():
    with pytest.raises(TypeError, match=r"x must be a numpy\.ndarray of float32, got list"):
        _native.relu_backward([1.0], np.ones(1, np.float32), "gradient")


def test_native_rejects_shape_mismatch():
    x, g = random_pair((2, 3), seed=1)
    with pytest.raises(ValueError, match=r"same shape, got \(2, 3\) and \(3, 2\)"):
        _native.relu_backward(x, g.reshape(3, 2), "gradient")
    with pytest.raises(ValueError, match=r"x and g must have the same shape"):
        kernels.relu_backward(x, g.reshape(3, 2))


def test_native_rejects_non_contiguous():
    x, g = random_pair((4, 6), seed=1)
    with pytest.raises(ValueError, match="x must be C-contiguous"):
        _native.relu_backward(x[:, ::2], g[:, :3], "guided")


def test_native_rejects_byte_swapped():
    x, g = random_pair((4,), seed=1)
    with pytest.raises(TypeError, match="must have dtype float32"):
        _native.relu_backward(x.astype(">f4"), g, "gradient")


@pytest.mark.parametrize("call", ["native", "kernels"])
def test_bad_mode_lists_valid_modes(call):
    x, g = random_pair((4,), seed=1)
    fn = _native.relu_backward if call == "native" else kernels.relu_backward
    with pytest.raises(ValueError, match="expected one of: gradient, guided, deconvnet"):
        fn(x, g, "Guided")


def test_bad_backend_and_dtype():
    x, g = random_pair((4,), seed=1)
    with pytest.raises(ValueError, match="unknown backend 'cuda'"):
        kernels.relu_backward(x, g, backend="cuda")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="real numbers"):
        kernels.relu_backward(x.astype(np.complex64), g)


def test_bad_out():
    x, g = random_pair((4, 5), seed=1)
    with pytest.raises(ValueError, match="out must have the same shape"):
        _native.relu_backward(x, g, "gradient", out=np.empty(20, np.float32))
    with pytest.raises(ValueError, match=r"out must be a float32 array of shape \(4, 5\)"):
        kernels.relu_backward(x, g, out=np.empty((4, 5)))
    read_only = np.empty_like(x)
    read_only.flags.writeable = False
    with pytest.raises(ValueError, match="out is read-only"):
        _native.relu_backward(x, g, "gradient", out=read_only)
    buf = np.zeros(21, np.float32)
    with pytest.raises(ValueError, match="partially overlaps"):
        _native.relu_backward(buf[:20], buf[:20], "gradient", out=buf[1:])


def test_bad_num_threads():
    x, g = random_pair((4,), seed=1)
    with pytest.raises(ValueError, match="num_threads must be >= 0"):
        _native.relu_backward(x, g, "gradient", num_threads=-1)


def test_module_info():
    assert isinstance(_native.__version__, str) and _native.__version__
    assert _native.default_num_threads() >= 1
    assert 1 <= _native.default_compute_threads() <= _native.default_num_threads()
    assert kernels.cuda_device_count() >= 0


@pytest.mark.parametrize("mode", MODES)
def test_cuda_matches_reference(mode):
    cuda = pytest.importorskip("cnnviz_core._native_cuda", reason="built without CUDA")
    if cuda.device_count() == 0:
        pytest.skip("no CUDA device")
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch cannot use the CUDA device")
    x, g = random_pair((3, 70001), seed=4)
    xt, gt = torch.from_numpy(x).cuda(), torch.from_numpy(g).cuda()
    stream = torch.cuda.current_stream().cuda_stream
    out = torch.empty_like(gt)
    cuda.relu_backward(xt.data_ptr(), gt.data_ptr(), out.data_ptr(), x.size, mode, 0.1, stream)
    clip_out = torch.empty_like(gt)
    cuda.relu_backward_clip(
        xt.data_ptr(), gt.data_ptr(), clip_out.data_ptr(), x.size, 0.0, 6.0, mode, stream
    )
    torch.cuda.synchronize()
    np.testing.assert_array_equal(
        out.cpu().numpy(), kernels.relu_backward_reference(x, g, mode, 0.1)
    )
    np.testing.assert_array_equal(
        clip_out.cpu().numpy(), kernels.relu_backward_clip_reference(x, g, 0.0, 6.0, mode)
    )
