"""im2col / col2im (cnnviz_core.kernels) against the NumPy reference and torch: unfold, and the
convolution input gradient as GEMM + col2im against torch autograd."""

from __future__ import annotations

import numpy as np
import pytest

from cnnviz_core import _native, kernels
from cnnviz_core.geometry import Window

torch = pytest.importorskip("torch")
F = torch.nn.functional

# (shape, kernel, stride, pads (top, left, bottom, right), dilation): odd sizes, batch 1,
# non-square images and kernels, strides, asymmetric padding and dilation.
CASES = [
    ((1, 1, 5, 5), 3, 1, (1, 1, 1, 1), 1),
    ((2, 3, 7, 9), 3, 2, (1, 1, 1, 1), 1),
    ((1, 4, 8, 11), (2, 3), (1, 2), (0, 1, 2, 0), 1),
    ((3, 2, 13, 10), 3, (2, 3), (2, 1, 1, 2), (2, 1)),
    ((2, 5, 9, 9), 1, 1, (0, 0, 0, 0), 1),
    ((1, 3, 6, 17), (3, 5), 3, (3, 0, 0, 4), 2),
    ((2, 16, 28, 28), 3, 1, (1, 1, 1, 1), 1),
    # stride_w 1 with stride_h 2 and dilation: col2im's contiguous-run path, rows > 16 wide.
    ((1, 3, 11, 37), (3, 2), (2, 1), (1, 2, 0, 1), (2, 3)),
]
# grouped convolutions where the channels split
GROUPED = [(case, groups) for case in CASES for groups in (1, 2) if case[0][1] % groups == 0]


def case_id(case) -> str:
    shape, k, s, p, d = case
    return f"{shape}-k{k}-s{s}-p{p}-d{d}"


def torch_pad(pads) -> tuple[int, int, int, int]:
    top, left, bottom, right = pads
    return left, right, top, bottom


@pytest.mark.parametrize("num_threads", [1, 2, 3])
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_im2col_matches_unfold(case, num_threads):
    shape, k, s, p, d = case
    x = np.random.default_rng(sum(shape)).standard_normal(shape).astype(np.float32)
    cols = kernels.im2col(x, k, s, p, d, num_threads=num_threads)
    padded = F.pad(torch.from_numpy(x), torch_pad(p))
    expected = F.unfold(padded, k, dilation=d, stride=s).numpy()
    np.testing.assert_array_equal(cols, expected)
    np.testing.assert_array_equal(cols, kernels.im2col_reference(x, k, s, p, d))


@pytest.mark.parametrize("num_threads", [1, 2])
@pytest.mark.parametrize(
    ("case", "groups"), GROUPED, ids=lambda v: str(v) if isinstance(v, int) else case_id(v)
)
def test_conv_input_gradient_is_gemm_plus_col2im(case, groups, num_threads):
    shape, k, s, p, d = case
    n, c, h, w = shape
    rng = np.random.default_rng(3)
    kh, kw = (k, k) if isinstance(k, int) else k
    co = 4 * groups
    weight = rng.standard_normal((co, c // groups, kh, kw)).astype(np.float32)
    xt = torch.zeros(shape, requires_grad=True)
    yt = F.conv2d(F.pad(xt, torch_pad(p)), torch.from_numpy(weight), None, s, 0, d, groups)
    dy = rng.standard_normal(tuple(yt.shape)).astype(np.float32)
    yt.backward(torch.from_numpy(dy))
    # Per group: cols = W_g^T @ dy_g, then col2im into that group's channels.
    dy_g = dy.reshape(n, groups, co // groups, -1)
    w_g = weight.reshape(groups, co // groups, -1)
    dx = np.concatenate(
        [
            kernels.col2im(w_g[g].T @ dy_g[:, g], (h, w), k, s, p, d, num_threads=num_threads)
            for g in range(groups)
        ],
        axis=1,
    )
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("num_threads", [1, 2, 3])
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_col2im_matches_reference_and_fold(case, num_threads):
    shape, k, s, p, d = case
    cols = kernels.im2col(np.zeros(shape, np.float32), k, s, p, d)
    cols = np.random.default_rng(5).standard_normal(cols.shape).astype(np.float32)
    got = kernels.col2im(cols, shape[2:], k, s, p, d, num_threads=num_threads)
    np.testing.assert_allclose(
        got, kernels.col2im_reference(cols, shape[2:], k, s, p, d), rtol=1e-6, atol=1e-5
    )
    if p[0] == p[2] and p[1] == p[3]:  # torch's fold pads symmetrically only
        folded = F.fold(torch.from_numpy(cols), shape[2:], k, d, p[:2], s).numpy()
        np.testing.assert_allclose(got, folded, rtol=1e-6, atol=1e-5)


def test_col2im_is_the_adjoint_of_im2col():
    rng = np.random.default_rng(8)
    x = rng.standard_normal((2, 3, 9, 7))
    args = ((3, 2), (2, 1), (1, 2, 0, 1), (1, 2))
    cols = kernels.im2col(x, *args)
    c = rng.standard_normal(cols.shape)
    assert cols.dtype == np.float64  # float64 runs the reference
    np.testing.assert_allclose((cols * c).sum(), (x * kernels.col2im(c, (9, 7), *args)).sum())


def test_out_and_strided_input():
    x = np.random.default_rng(2).standard_normal((2, 3, 8, 12)).astype(np.float32)[..., ::2]
    cols = np.empty((2, 27, 48), np.float32)
    assert kernels.im2col(x, 3, 1, 1, out=cols) is cols
    np.testing.assert_array_equal(cols, kernels.im2col_reference(x, 3, 1, 1))
    back = np.empty((2, 6, 8, 6), np.float32)[:, ::2]
    assert kernels.col2im(cols, (8, 6), 3, 1, 1, out=back) is back
    np.testing.assert_allclose(back, kernels.col2im_reference(cols, (8, 6), 3, 1, 1), atol=1e-5)


def test_errors():
    x = np.zeros((1, 2, 5, 5), np.float32)
    window = ((3, 3), (1, 1), (0, 0, 0, 0), (1, 1))
    with pytest.raises(ValueError, match=r"x must be 4-D \(N, C, H, W\), got shape \(5, 5\)"):
        kernels.im2col(x[0, 0], 3)
    with pytest.raises(ValueError, match="dilated kernel 7 is larger than the padded input 5"):
        kernels.im2col(x, 3, dilation=3)
    with pytest.raises(ValueError, match="kernel, stride and dilation must be >= 1"):
        _native.im2col(x, (3, 3), (0, 1), (0, 0, 0, 0), (1, 1))
    with pytest.raises(ValueError, match="kernel_size must be an int or 2 ints"):
        kernels.im2col(x, (3, 3, 3))
    with pytest.raises(TypeError, match="cols must have dtype float32, got int64"):
        _native.col2im(np.zeros((1, 18, 9), np.int64), (5, 5), *window)
    with pytest.raises(ValueError, match=r"cols must have shape \(N, C \* 9, 9\)"):
        _native.col2im(np.zeros((1, 18, 10), np.float32), (5, 5), *window)
    with pytest.raises(ValueError, match=r"cols must have shape \(N, C \* 9, 9\)"):
        kernels.col2im(np.zeros((1, 17, 9)), (5, 5), 3)
    with pytest.raises(ValueError, match=r"cols must be 3-D"):
        kernels.col2im(np.zeros((18, 9), np.float32), (5, 5), 3)
    with pytest.raises(ValueError, match="input size must be >= 1"):
        _native.col2im(np.zeros((1, 18, 9), np.float32), (0, 5), *window)
    with pytest.raises(ValueError, match=r"out must have shape \(1, 18, 9\)"):
        _native.im2col(x, *window, out=np.empty((1, 18, 8), np.float32))
    with pytest.raises(ValueError, match="out must not overlap an input"):
        buf = np.zeros(50 + 162, np.float32)
        _native.im2col(buf[:50].reshape(x.shape), *window, out=buf[40:202].reshape(1, 18, 9))


def test_cuda_im2col_col2im_match_reference():
    cuda = pytest.importorskip("cnnviz_core._native_cuda", reason="built without CUDA")
    if cuda.device_count() == 0 or not torch.cuda.is_available():
        pytest.skip("needs the CUDA kernels, a CUDA device and a CUDA torch")
    shape, k, s, p, d = CASES[3]
    window = Window.of(k, s, p, d)
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    cols_ref = kernels.im2col_reference(x, k, s, p, d)
    stream = torch.cuda.current_stream().cuda_stream
    xt = torch.from_numpy(x).cuda()
    ct = torch.empty(cols_ref.shape, device="cuda")
    cuda.im2col(xt.data_ptr(), ct.data_ptr(), *shape, *window.native_args(), stream)
    back = torch.empty(shape, device="cuda")
    cuda.col2im(ct.data_ptr(), back.data_ptr(), *shape, *window.native_args(), stream)
    torch.cuda.synchronize()
    np.testing.assert_array_equal(ct.cpu().numpy(), cols_ref)
    np.testing.assert_allclose(
        back.cpu().numpy(), kernels.col2im_reference(cols_ref, shape[2:], k, s, p, d), atol=1e-5
    )
