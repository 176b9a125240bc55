"""Max pooling with argmax switches and max unpooling (csrc/cpu/pool.cpp, csrc/cuda/pool.cu)."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from ..geometry import IntPair, Padding, Window, pair
from ._dispatch import (
    Backend,
    FloatArray,
    IndexArray,
    _native,
    as_float_nchw,
    c_contiguous,
    check_out,
    cuda_run,
    run,
    use_native,
)


def max_pool2d(
    x: ArrayLike,
    kernel_size: IntPair,
    stride: IntPair | None = None,
    padding: Padding = 0,
    dilation: IntPair = 1,
    ceil_mode: bool = False,
    backend: Backend = "auto",
    *,
    num_threads: int = 0,
    out: np.ndarray | None = None,
    switches_out: np.ndarray | None = None,
    device: str = "cpu",
) -> tuple[FloatArray, IndexArray]:
    """Max pooling of x (N, C, H, W) that also returns the argmax switches.

    The switch of an output is the flat index ih * W + iw of its maximum in its input plane
    (PyTorch's ``return_indices`` convention; ONNX MaxPool ``Indices`` also count the earlier
    planes). Padding never wins; ties go to the first tap in row-major window order; NaN
    propagates (the first NaN wins); a window with no tap inside the plane gives -inf and -1.

    Args:
        x: input (N, C, H, W).
        kernel_size, stride, dilation: int or (h, w); ``stride=None`` means the kernel size.
        padding: int, (h, w) or (top, left, bottom, right).
        ceil_mode: round the output size up (PyTorch / ONNX ``ceil_mode``).
        backend, num_threads, device: as in :func:`~cnnviz_core.kernels.relu_backward`.
        out, switches_out: optional preallocated outputs (float32 / int64, (N, C, Ho, Wo));
            reusing them in a hot loop avoids the page faults of fresh large allocations.

    Returns:
        (y, switches), both (N, C, Ho, Wo); switches are int64 (``out`` and ``switches_out``
        when given).
    """
    xa = as_float_nchw(x, "max_pool2d", "x")
    win = Window.of(kernel_size, stride, padding, dilation, ceil_mode)
    n, c, h, w = xa.shape
    # the output's shape; worked out first, it refuses a window larger than the padded input
    # with an InputError (onnxruntime runs such a MaxPool; the native kernel would raise)
    shape = (n, c, *win.output_size((h, w)))
    if out is not None:
        check_out(out, shape, xa.dtype)
    if switches_out is not None:
        check_out(switches_out, shape, np.dtype(np.int64))
    if not use_native(xa.dtype, backend, "max_pool2d"):
        y, sw = max_pool2d_reference(xa, kernel_size, stride, padding, dilation, ceil_mode)
    elif device != "cpu":
        y, sw = cuda_run(
            "max_pool2d",
            device,
            [xa],
            [(shape, np.float32), (shape, np.int64)],
            lambda cuda, i, o, s: cuda.max_pool2d(
                i[0], o[0], o[1], n * c, h, w, *win.native_args(), win.ceil_mode, s
            ),
        )
    else:
        direct = [
            o if o is not None and o.flags.c_contiguous else None for o in (out, switches_out)
        ]
        y, sw = _native.max_pool2d(
            c_contiguous(xa),
            *win.native_args(),
            win.ceil_mode,
            num_threads=num_threads,
            out=direct[0],
            switches_out=direct[1],
        )
    if out is not None and y is not out:
        np.copyto(out, y)
        y = out
    if switches_out is not None and sw is not switches_out:
        np.copyto(switches_out, sw)
        sw = switches_out
    return y, sw


def max_pool2d_reference(
    x: ArrayLike,
    kernel_size: IntPair,
    stride: IntPair | None = None,
    padding: Padding = 0,
    dilation: IntPair = 1,
    ceil_mode: bool = False,
) -> tuple[FloatArray, IndexArray]:
    """NumPy reference of :func:`max_pool2d` (the test oracle)."""
    xa = as_float_nchw(x, "max_pool2d_reference", "x")
    win = Window.of(kernel_size, stride, padding, dilation, ceil_mode)
    n, c, h, w = xa.shape
    out = win.output_size((h, w))
    # Pad with -inf far enough for every window (ceil mode may reach past the end padding) and
    # track each position's flat index in the plane, -1 in the padding.
    padded = np.full((n, c, *win.padded_size((h, w))), -np.inf, xa.dtype)
    padded[win.inside((h, w))] = xa
    index = np.full(win.padded_size((h, w)), -1, np.int64)
    index[win.inside((h, w))] = np.arange(h * w).reshape(h, w)
    values = np.stack([padded[tap] for tap in win.taps(out)])
    ids = np.stack([index[tap] for tap in win.taps(out)])[:, None, None]
    valid = ids >= 0
    best = np.max(np.where(valid, values, -np.inf), axis=0)
    hit = valid & ((values == best) | (np.isnan(values) & np.isnan(best)))
    first = np.argmax(hit, axis=0)[None]
    found = hit.any(axis=0)
    switches = np.where(found, np.take_along_axis(np.broadcast_to(ids, hit.shape), first, 0)[0], -1)
    return np.where(found, best, -np.inf).astype(xa.dtype), switches.astype(np.int64)


def max_unpool2d(
    g: ArrayLike,
    switches: ArrayLike,
    output_size: IntPair,
    backend: Backend = "auto",
    *,
    out: np.ndarray | None = None,
    num_threads: int = 0,
    device: str = "cpu",
) -> FloatArray:
    """Max unpooling: scatter-add g (N, C, Ho, Wo) to the switch positions of a zero
    (N, C, H, W) map. With g = dL/dy this is the max-pooling gradient; in deconvnet mode it is
    the unpooling step of Zeiler & Fergus (2014).

    Args:
        g: signal at the pooled positions (N, C, Ho, Wo).
        switches: from :func:`max_pool2d`, same shape, values in [-1, H * W) (-1 is skipped).
        output_size: (H, W) of the pooled input.
        backend, out, num_threads, device: as in :func:`~cnnviz_core.kernels.relu_backward`.

    Returns:
        The (N, C, H, W) map (``out`` when given).
    """
    ga = as_float_nchw(g, "max_unpool2d", "g")
    sa = _as_switches(switches, ga.shape, "max_unpool2d")
    size = pair(output_size, "output_size")
    n, c, ho, wo = ga.shape
    shape = (n, c, *size)
    return run(
        "max_unpool2d",
        ga.dtype,
        backend,
        device,
        out,
        shape,
        native=lambda o: _native.max_unpool2d(
            c_contiguous(ga), c_contiguous(sa), size, out=o, num_threads=num_threads
        ),
        reference=lambda: max_unpool2d_reference(ga, sa, size),
        cuda=lambda: cuda_run(
            "max_unpool2d",
            device,
            [ga, sa],
            [(shape, np.float32)],
            lambda cuda, i, o, s: cuda.max_unpool2d(
                i[0], i[1], o[0], n * c, ho * wo, size[0], size[1], s
            ),
        ),
    )


def max_unpool2d_reference(g: ArrayLike, switches: ArrayLike, output_size: IntPair) -> FloatArray:
    """NumPy reference of :func:`max_unpool2d` (the test oracle)."""
    ga = as_float_nchw(g, "max_unpool2d_reference", "g")
    sa = _as_switches(switches, ga.shape, "max_unpool2d_reference")
    h, w = pair(output_size, "output_size")
    n, c = ga.shape[:2]
    flat_s = sa.reshape(n * c, -1)
    if flat_s.size and (flat_s.min() < -1 or flat_s.max() >= h * w):
        raise ValueError(
            f"max_unpool2d: switches must lie in [-1, {h * w}) for output_size {(h, w)}"
        )
    out = np.zeros((n * c, h * w), ga.dtype)
    plane = np.broadcast_to(np.arange(n * c)[:, None], flat_s.shape)
    keep = flat_s >= 0
    np.add.at(out, (plane[keep], flat_s[keep]), ga.reshape(n * c, -1)[keep])
    return out.reshape(n, c, h, w)


def _as_switches(switches: ArrayLike, shape: tuple[int, ...], fn: str) -> IndexArray:
    sa = np.asarray(switches)
    if sa.dtype.kind not in "iu" or sa.shape != shape:
        raise ValueError(
            f"{fn}: switches must be integers of g's shape {shape}, got {sa.dtype} {sa.shape}"
        )
    return sa.astype(np.int64, copy=False)
