"""Max pooling with switches and max unpooling (cnnviz_core.kernels) against the NumPy reference
and torch (max_pool2d with return_indices, and its gradient)."""

from __future__ import annotations

import numpy as np
import pytest

from cnnviz_core import _native, kernels

torch = pytest.importorskip("torch")
F = torch.nn.functional

# (shape, kernel, stride, padding, dilation, ceil_mode): odd sizes, batch 1, non-square
# kernels, strides and images, overlapping windows, padding, dilation and ceil mode. Torch's
# limits hold (padding <= kernel / 2) so that every case has a torch answer.
CASES = [
    ((1, 1, 5, 5), 2, 2, 0, 1, False),
    ((1, 3, 7, 7), 3, 2, 1, 1, False),
    ((2, 3, 7, 7), 3, 2, 1, 1, True),
    ((2, 4, 13, 9), (3, 2), (2, 1), (1, 0), 1, False),
    ((3, 2, 11, 12), 3, 3, 1, 2, True),
    ((1, 5, 10, 17), (2, 4), (3, 2), (1, 2), (2, 1), True),
    ((2, 2, 9, 8), 3, 1, 1, 1, False),
    ((1, 64, 56, 56), 3, 2, 1, 1, False),
]


def case_id(case) -> str:
    shape, k, s, p, d, ceil = case
    return f"{shape}-k{k}-s{s}-p{p}-d{d}-{'ceil' if ceil else 'floor'}"


def random_input(shape: tuple[int, ...], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("num_threads", [1, 2, 3])
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_max_pool_matches_torch_and_reference(case, num_threads):
    shape, k, s, p, d, ceil = case
    x = random_input(shape, seed=sum(shape))
    y, sw = kernels.max_pool2d(x, k, s, p, d, ceil, num_threads=num_threads)
    yt, st = F.max_pool2d(torch.from_numpy(x), k, s, p, d, ceil_mode=ceil, return_indices=True)
    assert y.dtype == np.float32 and sw.dtype == np.int64 and y.shape == tuple(yt.shape)
    np.testing.assert_array_equal(y, yt.numpy())
    np.testing.assert_array_equal(sw, st.numpy())
    yr, sr = kernels.max_pool2d_reference(x, k, s, p, d, ceil)
    np.testing.assert_array_equal(y, yr)
    np.testing.assert_array_equal(sw, sr)


@pytest.mark.parametrize("num_threads", [1, 2])
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_unpool_is_the_max_pool_gradient(case, num_threads):
    shape, k, s, p, d, ceil = case
    x = random_input(shape, seed=7)
    xt = torch.from_numpy(x).requires_grad_()
    yt = F.max_pool2d(xt, k, s, p, d, ceil_mode=ceil)
    g = random_input(tuple(yt.shape), seed=8)
    yt.backward(torch.from_numpy(g))
    _, sw = kernels.max_pool2d(x, k, s, p, d, ceil)
    got = kernels.max_unpool2d(g, sw, shape[2:], num_threads=num_threads)
    np.testing.assert_allclose(got, xt.grad.numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(
        got, kernels.max_unpool2d_reference(g, sw, shape[2:]), rtol=1e-6, atol=1e-6
    )


def test_asymmetric_pads_and_empty_windows():
    # ONNX-style pads larger than torch allows: windows fully in the padding give -inf and -1,
    # and unpooling skips them.
    x = random_input((2, 3, 4, 5), seed=3)
    args = ((2, 2), (2, 3), (6, 0, 1, 3), (2, 1), True)
    y, sw = kernels.max_pool2d(x, *args)
    yr, sr = kernels.max_pool2d_reference(x, *args)
    np.testing.assert_array_equal(y, yr)
    np.testing.assert_array_equal(sw, sr)
    assert (sw == -1).any() and np.isneginf(y[sw == -1]).all()
    g = random_input(y.shape, seed=4)
    np.testing.assert_array_equal(
        kernels.max_unpool2d(g, sw, (4, 5)), kernels.max_unpool2d_reference(g, sw, (4, 5))
    )


def test_ties_nan_and_inf_follow_the_reference():
    x = np.array(
        [[[[1, 1, 1, np.nan], [1, 2, np.nan, 5], [-np.inf, -np.inf, 2, 2], [-np.inf, 0, 2, 2]]]],
        np.float32,
    )
    y, sw = kernels.max_pool2d(x, 2, 2, 1)
    yr, sr = kernels.max_pool2d_reference(x, 2, 2, 1)
    np.testing.assert_array_equal(y, yr)
    np.testing.assert_array_equal(sw, sr)
    np.testing.assert_array_equal(sw[0, 0], [[0, 1, 3], [4, 6, 7], [12, 14, 15]])


def test_float64_uses_the_reference():
    x = random_input((1, 2, 6, 7), seed=5).astype(np.float64)
    y, sw = kernels.max_pool2d(x, 3, 2, 1)
    assert y.dtype == np.float64
    g = np.ones(y.shape)
    assert kernels.max_unpool2d(g, sw, (6, 7)).dtype == np.float64


def test_strided_input_and_out():
    x = random_input((2, 3, 9, 16), seed=6)[..., ::2]
    y, sw = kernels.max_pool2d(x, 2)
    yr, sr = kernels.max_pool2d_reference(x, 2)
    np.testing.assert_array_equal(y, yr)
    np.testing.assert_array_equal(sw, sr)
    out = np.empty((2, 3, 9, 8), np.float32)
    assert kernels.max_unpool2d(y, sw, (9, 8), out=out) is out
    np.testing.assert_array_equal(out, kernels.max_unpool2d_reference(y, sw, (9, 8)))


def test_pool_errors():
    x = random_input((1, 2, 5, 5), seed=1)
    with pytest.raises(ValueError, match=r"x must be 4-D \(N, C, H, W\), got shape \(2, 5, 5\)"):
        kernels.max_pool2d(x[0], 2)
    with pytest.raises(ValueError, match="kernel, stride and dilation must be >= 1"):
        _native.max_pool2d(x, (0, 2), (1, 1), (0, 0, 0, 0), (1, 1))
    with pytest.raises(ValueError, match="dilated kernel 9 is larger than the padded input 7"):
        kernels.max_pool2d(x, 3, dilation=4, padding=1)
    with pytest.raises(ValueError, match="pads must be >= 0"):
        kernels.max_pool2d(x, 2, padding=(0, -1, 0, 0))
    with pytest.raises(ValueError, match="padding must be an int or 4 or 2 ints"):
        kernels.max_pool2d(x, 2, padding=(1, 1, 1))
    with pytest.raises(TypeError, match="x must have dtype float32, got float64"):
        _native.max_pool2d(x.astype(np.float64), (2, 2), (2, 2), (0, 0, 0, 0), (1, 1))
    with pytest.raises(ValueError, match="x must be C-contiguous"):
        _native.max_pool2d(x[..., ::2], (2, 2), (2, 2), (0, 0, 0, 0), (1, 1))
    with pytest.raises(ValueError, match="num_threads must be >= 0"):
        kernels.max_pool2d(x, 2, num_threads=-1)


def test_unpool_errors():
    x = random_input((1, 2, 6, 6), seed=2)
    y, sw = kernels.max_pool2d(x, 2)
    bad = sw.copy()
    bad[0, 1, 2, 2] = 36
    with pytest.raises(ValueError, match=r"switch 36 of plane 1 is outside \[-1, 36\)"):
        kernels.max_unpool2d(y, bad, (6, 6))
    with pytest.raises(ValueError, match=r"switches must lie in \[-1, 36\)"):
        kernels.max_unpool2d(y, bad, (6, 6), backend="numpy")
    with pytest.raises(TypeError, match="switches must have dtype int64, got int32"):
        _native.max_unpool2d(y, sw.astype(np.int32), (6, 6))
    with pytest.raises(ValueError, match="g and switches must have the same shape"):
        _native.max_unpool2d(y, sw[:, :1], (6, 6))
    with pytest.raises(ValueError, match="switches must be integers of g's shape"):
        kernels.max_unpool2d(y, sw.astype(np.float32), (6, 6))
    with pytest.raises(ValueError, match="output_size must be >= 1"):
        _native.max_unpool2d(y, sw, (0, 6))
    with pytest.raises(ValueError, match=r"out must have shape \(1, 2, 6, 6\), got \(1, 2, 6, 5\)"):
        _native.max_unpool2d(y, sw, (6, 6), out=np.empty((1, 2, 6, 5), np.float32))
    with pytest.raises(ValueError, match="out must not overlap an input"):
        buf = np.zeros((1, 2, 6, 6), np.float32)
        _native.max_unpool2d(buf.reshape(-1)[:18].reshape(1, 2, 3, 3), sw, (6, 6), out=buf)


def test_cuda_pool_matches_reference():
    cuda = pytest.importorskip("cnnviz_core._native_cuda", reason="built without CUDA")
    if cuda.device_count() == 0 or not torch.cuda.is_available():
        pytest.skip("needs the CUDA kernels, a CUDA device and a CUDA torch")
    x = random_input((2, 3, 13, 11), seed=9)
    args = ((3, 2), (2, 1), (1, 0, 1, 1), (1, 2), True)
    yr, sr = kernels.max_pool2d_reference(x, *args)
    xt = torch.from_numpy(x).cuda()
    yt = torch.empty(yr.shape, device="cuda")
    st = torch.empty(sr.shape, dtype=torch.int64, device="cuda")
    stream = torch.cuda.current_stream().cuda_stream
    kernel, stride, dilation, ceil = args[0], args[1], args[3], args[4]
    cuda.max_pool2d(
        xt.data_ptr(),
        yt.data_ptr(),
        st.data_ptr(),
        6,
        13,
        11,
        kernel,
        stride,
        args[2],
        dilation,
        ceil,
        stream,
    )
    g = random_input(yr.shape, seed=10)
    gt = torch.from_numpy(g).cuda()
    ut = torch.empty(x.shape, device="cuda")
    cuda.max_unpool2d(
        gt.data_ptr(), st.data_ptr(), ut.data_ptr(), 6, yr.shape[2] * yr.shape[3], 13, 11, stream
    )
    torch.cuda.synchronize()
    np.testing.assert_array_equal(yt.cpu().numpy(), yr)
    np.testing.assert_array_equal(st.cpu().numpy(), sr)
    np.testing.assert_allclose(
        ut.cpu().numpy(), kernels.max_unpool2d_reference(g, sr, (13, 11)), rtol=1e-6, atol=1e-6
    )


# Fast paths (2x2/2, 3x3/2, 3x3/1, 2x2/1 without dilation): rows of >= 16 outputs take the vector
# route with an overlapping last step, narrower ones the scalar one; padding and ceil mode send
# the border windows to the general routine.
FAST_CASES = [
    ((2, 3, 8, 32), 2, 2, 0, False),
    ((1, 2, 9, 67), 2, 2, 0, True),
    ((1, 2, 11, 71), 3, 2, 1, False),
    ((2, 1, 12, 64), 3, 2, 0, True),
    ((1, 2, 7, 53), 3, 1, 1, False),
    ((1, 1, 6, 40), 2, 1, 0, False),
    ((1, 1, 5, 20), (3, 3), (1, 2), 0, False),
]


@pytest.mark.parametrize("case", FAST_CASES, ids=lambda c: f"{c[0]}-k{c[1]}-s{c[2]}-p{c[3]}-{c[4]}")
@pytest.mark.parametrize("data", ["random", "ties", "nan"])
def test_max_pool_fast_paths_match_reference(case, data):
    shape, k, s, p, ceil = case
    rng = np.random.default_rng(3)
    if data == "ties":  # few distinct values: the first maximum in window order must win
        x = rng.integers(0, 3, shape).astype(np.float32)
    else:
        x = rng.standard_normal(shape).astype(np.float32)
        if data == "nan":
            x[rng.random(shape) < 0.05] = np.nan
    y, sw = kernels.max_pool2d(x, k, s, p, 1, ceil)
    yr, sr = kernels.max_pool2d_reference(x, k, s, p, 1, ceil)
    np.testing.assert_array_equal(y, yr)
    np.testing.assert_array_equal(sw, sr)


def test_max_pool_writes_into_given_outputs():
    x = random_input((2, 3, 10, 40), seed=4)
    y0, s0 = kernels.max_pool2d(x, 2)
    y = np.full_like(y0, 7.0)
    sw = np.full_like(s0, 7)
    y1, s1 = kernels.max_pool2d(x, 2, out=y, switches_out=sw)
    assert y1 is y and s1 is sw
    np.testing.assert_array_equal(y, y0)
    np.testing.assert_array_equal(sw, s0)
    # A strided out goes through a temporary; a wrong shape is an error.
    wide = np.zeros((*y0.shape[:3], 2 * y0.shape[3]), np.float32)
    kernels.max_pool2d(x, 2, out=wide[..., ::2])
    np.testing.assert_array_equal(wide[..., ::2], y0)
    with pytest.raises(ValueError, match="out must be"):
        kernels.max_pool2d(x, 2, switches_out=np.zeros((1, 1, 1, 1), np.int64))


@pytest.mark.parametrize("k,s,p", [(2, 2, 0), (3, 2, 1)])
def test_large_outputs_stream_and_match_reference(k, s, p):
    # Outputs >= 16 MiB are built in cache-resident buffers and written with streaming stores:
    # odd row widths put the rows at every alignment, padding sends border windows through the
    # general routine into the same buffers, and the unpool planes fit its plane buffer.
    shape = (4, 24, 246, 250)
    x = random_input(shape, seed=11)
    y, sw = kernels.max_pool2d(x, k, s, p, num_threads=2)
    assert y.nbytes + sw.nbytes >= 16 << 20
    yr, sr = kernels.max_pool2d_reference(x, k, s, p)
    np.testing.assert_array_equal(y, yr)
    np.testing.assert_array_equal(sw, sr)
    g = random_input(y.shape, seed=12)
    got = kernels.max_unpool2d(g, sw, shape[2:], num_threads=2)
    assert got.nbytes >= 16 << 20
    np.testing.assert_array_equal(got, kernels.max_unpool2d_reference(g, sw, shape[2:]))


def test_max_pool_window_larger_than_the_input_is_an_input_error():
    """onnxruntime runs a 2x2 MaxPool on a height-1 map (a fuzzed model did); the kernel's
    Python face refuses it with the geometry's InputError, not the native ValueError."""
    from cnnviz_core import InputError

    x = np.ones((1, 2, 1, 16), np.float32)
    with pytest.raises(InputError, match="dilated kernel 2 is larger than the padded input 1"):
        kernels.max_pool2d(x, (2, 2), (2, 2), (0, 0), (1, 1), False)
