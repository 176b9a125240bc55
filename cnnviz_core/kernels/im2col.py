"""im2col / col2im, the unfold and fold of a convolution (csrc/cpu/im2col.cpp,
csrc/cuda/im2col.cu)."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from ..geometry import IntPair, Padding, Window, pair
from ._dispatch import (
    Backend,
    FloatArray,
    _native,
    as_float,
    as_float_nchw,
    c_contiguous,
    cuda_run,
    run,
)


def im2col(
    x: ArrayLike,
    kernel_size: IntPair,
    stride: IntPair = 1,
    padding: Padding = 0,
    dilation: IntPair = 1,
    backend: Backend = "auto",
    *,
    out: np.ndarray | None = None,
    num_threads: int = 0,
    device: str = "cpu",
) -> FloatArray:
    """Unfolds x (N, C, H, W) into cols (N, C * kh * kw, Ho * Wo), the layout of
    ``torch.nn.functional.unfold``: row (c * kh + i) * kw + j holds tap (i, j) of channel c, 0 in
    the padding. A convolution is then ``W.reshape(Co, -1) @ cols``; for grouped convolutions
    split the channels and call once per group.

    Args:
        x: input (N, C, H, W).
        kernel_size, stride, dilation: int or (h, w).
        padding: int, (h, w) or (top, left, bottom, right).
        backend, out, num_threads, device: as in :func:`~cnnviz_core.kernels.relu_backward`.
    """
    xa = as_float_nchw(x, "im2col", "x")
    win = Window.of(kernel_size, stride, padding, dilation)
    n, c, h, w = xa.shape
    ho, wo = win.output_size((h, w))
    shape = (n, c * win.kernel[0] * win.kernel[1], ho * wo)
    return run(
        "im2col",
        xa.dtype,
        backend,
        device,
        out,
        shape,
        native=lambda o: _native.im2col(
            c_contiguous(xa), *win.native_args(), out=o, num_threads=num_threads
        ),
        reference=lambda: im2col_reference(xa, kernel_size, stride, padding, dilation),
        cuda=lambda: cuda_run(
            "im2col",
            device,
            [xa],
            [(shape, np.float32)],
            lambda cuda, i, o, s: cuda.im2col(i[0], o[0], n, c, h, w, *win.native_args(), s),
        ),
    )


def im2col_reference(
    x: ArrayLike,
    kernel_size: IntPair,
    stride: IntPair = 1,
    padding: Padding = 0,
    dilation: IntPair = 1,
) -> FloatArray:
    """NumPy reference of :func:`im2col` (the test oracle)."""
    xa = as_float_nchw(x, "im2col_reference", "x")
    win = Window.of(kernel_size, stride, padding, dilation)
    n, c, h, w = xa.shape
    out = win.output_size((h, w))
    (top, left), (bottom, right) = win.begins, win.ends
    padded = np.pad(xa, ((0, 0), (0, 0), (top, bottom), (left, right)))
    taps = win.taps(out)
    cols = np.stack([padded[tap] for tap in taps], axis=2)
    return cols.reshape(n, c * len(taps), out[0] * out[1])


def col2im(
    cols: ArrayLike,
    output_size: IntPair,
    kernel_size: IntPair,
    stride: IntPair = 1,
    padding: Padding = 0,
    dilation: IntPair = 1,
    backend: Backend = "auto",
    *,
    out: np.ndarray | None = None,
    num_threads: int = 0,
    device: str = "cpu",
) -> FloatArray:
    """Folds cols (N, C * kh * kw, Ho * Wo) back into (N, C, H, W), summing the values that land
    on one pixel (the adjoint of :func:`im2col`, ``torch.nn.functional.fold``). The input gradient
    of a convolution is ``col2im(W.reshape(Co, -1).T @ dy.reshape(N, Co, -1), (H, W), ...)``.

    Args:
        cols: (N, C * kh * kw, Ho * Wo).
        output_size: (H, W) of the image.
        kernel_size, stride, padding, dilation, backend, out, num_threads, device: as in
            :func:`im2col`.
    """
    ca = as_float(cols, "col2im", "cols")
    if ca.ndim != 3:
        raise ValueError(f"col2im: cols must be 3-D (N, C * kh * kw, Ho * Wo), got {ca.shape}")
    h, w = size = pair(output_size, "output_size")
    win = Window.of(kernel_size, stride, padding, dilation)
    n, c = ca.shape[0], ca.shape[1] // (win.kernel[0] * win.kernel[1])
    return run(
        "col2im",
        ca.dtype,
        backend,
        device,
        out,
        (n, c, h, w),
        native=lambda o: _native.col2im(
            c_contiguous(ca), size, *win.native_args(), out=o, num_threads=num_threads
        ),
        reference=lambda: col2im_reference(ca, size, kernel_size, stride, padding, dilation),
        cuda=lambda: cuda_run(
            "col2im",
            device,
            [_checked_cols(ca, win, size)],
            [((n, c, h, w), np.float32)],
            lambda cuda, i, o, s: cuda.col2im(i[0], o[0], n, c, h, w, *win.native_args(), s),
        ),
    )


def col2im_reference(
    cols: ArrayLike,
    output_size: IntPair,
    kernel_size: IntPair,
    stride: IntPair = 1,
    padding: Padding = 0,
    dilation: IntPair = 1,
) -> FloatArray:
    """NumPy reference of :func:`col2im` (the test oracle)."""
    ca = as_float(cols, "col2im_reference", "cols")
    h, w = pair(output_size, "output_size")
    win = Window.of(kernel_size, stride, padding, dilation)
    ca = _checked_cols(ca, win, (h, w))
    out = win.output_size((h, w))
    taps = win.taps(out)
    n, c = ca.shape[0], ca.shape[1] // len(taps)
    (top, left), (bottom, right) = win.begins, win.ends
    padded = np.zeros((n, c, h + top + bottom, w + left + right), ca.dtype)
    cols6 = ca.reshape(n, c, len(taps), *out)
    for t, tap in enumerate(taps):
        padded[tap] += cols6[:, :, t]
    return padded[win.inside((h, w))].copy()


def _checked_cols(ca: FloatArray, win: Window, size: tuple[int, int]) -> FloatArray:
    """``ca`` after checking its shape against the window and output size (the CUDA kernel
    cannot check it)."""
    ho, wo = win.output_size(size)
    taps = win.kernel[0] * win.kernel[1]
    if ca.ndim != 3 or ca.shape[1] % taps or ca.shape[2] != ho * wo:
        raise ValueError(
            f"col2im: cols must have shape (N, C * {taps}, {ho * wo}) for this window and "
            f"output_size, got {ca.shape}"
        )
    return ca
