"""The one Python face of the native kernels: backward of ReLU-like ops in three modes, max
pooling with switches and max unpooling, im2col / col2im, the occlusion batch builder, and Gram
matrices with their backward. Images are float (N, C, H, W).

Each call picks an implementation: the C++ kernels of :mod:`cnnviz_core._native` for float32
arrays, else the NumPy reference (always for float64, so finite-difference tests stay in
float64). The NumPy references (``*_reference``) are the test oracle of the native kernels.
The CUDA kernels of :mod:`cnnviz_core._native_cuda` work on device pointers (see
:func:`cuda_device_count`); NumPy arrays always run on the CPU.

Modes, for a ReLU-like op y = f(x) and the gradient g = dL/dy (any shape, e.g. N, C, H, W):

- ``gradient``: the true gradient, g * f'(x).
- ``guided``: guided backpropagation (Springenberg et al., 2015, "Striving for Simplicity"):
  the true gradient where g > 0, else 0.
- ``deconvnet``: Zeiler & Fergus (2014), "Visualizing and Understanding Convolutional
  Networks": relu(g); x is not used.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, TypeAlias

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .geometry import IntPair, Padding, Window, pair

try:
    from . import _native
except ImportError as exc:
    raise ImportError(
        "cnnviz_core._native: the native extension was not built; reinstall with "
        "`pip install .` (while developing: "
        "`pip install --no-build-isolation -e . -Ceditable.rebuild=true`)"
    ) from exc

try:
    from . import _native_cuda
except ImportError:  # built without CUDA: only an explicit CUDA request fails
    _native_cuda = None  # type: ignore[assignment]

ReluMode = Literal["gradient", "guided", "deconvnet"]
Backend = Literal["auto", "native", "numpy"]

#: valid ``mode`` values
RELU_MODES: tuple[str, ...] = ("gradient", "guided", "deconvnet")
#: valid ``backend`` values: "auto" = native for float32, NumPy otherwise
BACKENDS: tuple[str, ...] = ("auto", "native", "numpy")

FloatArray: TypeAlias = NDArray[np.floating]


def cuda_device_count() -> int:
    """Number of CUDA devices the native CUDA kernels can use (0 when built without CUDA)."""
    return 0 if _native_cuda is None else _native_cuda.device_count()


def relu_backward(
    x: ArrayLike,
    g: ArrayLike,
    mode: ReluMode = "gradient",
    negative_slope: float = 0.0,
    backend: Backend = "auto",
    *,
    out: np.ndarray | None = None,
    num_threads: int = 0,
) -> FloatArray:
    """Backward of ReLU / LeakyReLU (y = x if x > 0 else negative_slope * x).

    Args:
        x: forward input of the op.
        g: gradient w.r.t. the op's output, same shape as ``x``.
        mode: "gradient", "guided" or "deconvnet" (see the module docstring).
        negative_slope: LeakyReLU alpha (0 for ReLU); scales the gradient where x <= 0.
        backend: "auto" (native for float32, NumPy otherwise), "native" (float32 only) or
            "numpy" (the reference).
        out: optional array of ``x``'s shape and the result dtype to write into.
        num_threads: CPU threads of the native kernel (0 = all hardware threads).

    Returns:
        The gradient w.r.t. ``x`` (``out`` when given), in the promoted float dtype of x and g
        (at least float32).
    """
    xa, ga = _as_floatpair(x, g, mode, "relu_backward")
    if _use_native(xa.dtype, backend, "relu_backward"):
        return _run_native(
            lambda xc, gc, o: _native.relu_backward(
                xc, gc, mode, negative_slope, out=o, num_threads=num_threads
            ),
            xa,
            ga,
            out,
        )
    return _deliver(relu_backward_reference(xa, ga, mode, negative_slope), out)


def relu_backward_clip(
    x: ArrayLike,
    g: ArrayLike,
    lo: float,
    hi: float,
    mode: ReluMode = "gradient",
    backend: Backend = "auto",
    *,
    out: np.ndarray | None = None,
    num_threads: int = 0,
) -> FloatArray:
    """Backward of Clip (ReLU6: lo=0, hi=6): as :func:`relu_backward` with the gate lo < x < hi.

    Args:
        x, g, mode, backend, out, num_threads: as in :func:`relu_backward`.
        lo, hi: the clip bounds (``-np.inf`` / ``np.inf`` for an open side); the gradient is 0
            at the bounds themselves, as in PyTorch.

    Returns:
        The gradient w.r.t. ``x`` (``out`` when given).
    """
    xa, ga = _as_floatpair(x, g, mode, "relu_backward_clip")
    if _use_native(xa.dtype, backend, "relu_backward_clip"):
        return _run_native(
            lambda xc, gc, o: _native.relu_backward_clip(
                xc, gc, lo, hi, mode, out=o, num_threads=num_threads
            ),
            xa,
            ga,
            out,
        )
    return _deliver(relu_backward_clip_reference(xa, ga, lo, hi, mode), out)


def relu_backward_reference(
    x: ArrayLike, g: ArrayLike, mode: ReluMode = "gradient", negative_slope: float = 0.0
) -> FloatArray:
    """NumPy reference of :func:`relu_backward` (the test oracle), in the promoted float dtype."""
    xa, ga = _as_floatpair(x, g, mode, "relu_backward_reference")
    passed = None if mode == "deconvnet" else xa > 0
    return _gated_backward(mode, passed, ga, negative_slope)


def relu_backward_clip_reference(
    x: ArrayLike, g: ArrayLike, lo: float, hi: float, mode: ReluMode = "gradient"
) -> FloatArray:
    """NumPy reference of :func:`relu_backward_clip` (the test oracle)."""
    xa, ga = _as_floatpair(x, g, mode, "relu_backward_clip_reference")
    passed = None
    if mode != "deconvnet":
        # compare in the array's dtype, as the native kernel does with float32 bounds
        lo_t, hi_t = xa.dtype.type(lo), xa.dtype.type(hi)
        passed = (xa > lo_t) & (xa < hi_t)
    return _gated_backward(mode, passed, ga, 0.0)


# --- Max pooling with switches, max unpooling --------------------------------------------------

IndexArray: TypeAlias = NDArray[np.int64]


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
        backend, num_threads: as in :func:`relu_backward`.
        out, switches_out: optional preallocated outputs (float32 / int64, (N, C, Ho, Wo));
            reusing them in a hot loop avoids the page faults of fresh large allocations.

    Returns:
        (y, switches), both (N, C, Ho, Wo); switches are int64 (``out`` and ``switches_out``
        when given).
    """
    xa = _as_float_nchw(x, "max_pool2d", "x")
    win = Window.of(kernel_size, stride, padding, dilation, ceil_mode)
    if out is not None or switches_out is not None:
        shape = (*xa.shape[:2], *win.output_size(xa.shape[2:]))
        if out is not None:
            _check_out(out, shape, xa.dtype)
        if switches_out is not None:
            _check_out(switches_out, shape, np.dtype(np.int64))
    if _use_native(xa.dtype, backend, "max_pool2d"):
        direct = [
            o if o is not None and o.flags.c_contiguous else None for o in (out, switches_out)
        ]
        y, sw = _native.max_pool2d(
            _c_contiguous(xa),
            *win.native_args(),
            win.ceil_mode,
            num_threads=num_threads,
            out=direct[0],
            switches_out=direct[1],
        )
    else:
        y, sw = max_pool2d_reference(xa, kernel_size, stride, padding, dilation, ceil_mode)
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
    xa = _as_float_nchw(x, "max_pool2d_reference", "x")
    win = Window.of(kernel_size, stride, padding, dilation, ceil_mode)
    n, c, h, w = xa.shape
    ho, wo = win.output_size((h, w))
    top, left = win.begins
    # Pad with -inf far enough for every window (ceil mode may reach past the end padding) and
    # track each position's flat index in the plane, -1 in the padding.
    hp = max(h + top, (ho - 1) * win.stride[0] + win.dilation[0] * (win.kernel[0] - 1) + 1)
    wp = max(w + left, (wo - 1) * win.stride[1] + win.dilation[1] * (win.kernel[1] - 1) + 1)
    padded = np.full((n, c, hp, wp), -np.inf, xa.dtype)
    padded[:, :, top : top + h, left : left + w] = xa
    index = np.full((hp, wp), -1, np.int64)
    index[top : top + h, left : left + w] = np.arange(h * w).reshape(h, w)
    values = np.stack([_taps(padded, win, i, j, ho, wo) for i, j in _tap_list(win)])
    ids = np.stack([_taps(index, win, i, j, ho, wo) for i, j in _tap_list(win)])[:, None, None]
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
    output_size: tuple[int, int],
    backend: Backend = "auto",
    *,
    out: np.ndarray | None = None,
    num_threads: int = 0,
) -> FloatArray:
    """Max unpooling: scatter-add g (N, C, Ho, Wo) to the switch positions of a zero
    (N, C, H, W) map. With g = dL/dy this is the max-pooling gradient; in deconvnet mode it is
    the unpooling step of Zeiler & Fergus (2014).

    Args:
        g: signal at the pooled positions (N, C, Ho, Wo).
        switches: from :func:`max_pool2d`, same shape, values in [-1, H * W) (-1 is skipped).
        output_size: (H, W) of the pooled input.
        backend, out, num_threads: as in :func:`relu_backward`.

    Returns:
        The (N, C, H, W) map (``out`` when given).
    """
    ga = _as_float_nchw(g, "max_unpool2d", "g")
    sa = _as_switches(switches, ga.shape, "max_unpool2d")
    size = pair(output_size, "output_size")
    if _use_native(ga.dtype, backend, "max_unpool2d"):
        return _native_into(
            lambda o: _native.max_unpool2d(
                _c_contiguous(ga), _c_contiguous(sa), size, out=o, num_threads=num_threads
            ),
            out,
            (*ga.shape[:2], *size),
        )
    return _deliver(max_unpool2d_reference(ga, sa, size), out)


def max_unpool2d_reference(
    g: ArrayLike, switches: ArrayLike, output_size: tuple[int, int]
) -> FloatArray:
    """NumPy reference of :func:`max_unpool2d` (the test oracle)."""
    ga = _as_float_nchw(g, "max_unpool2d_reference", "g")
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


# --- im2col / col2im -------------------------------------------------------------------------


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
) -> FloatArray:
    """Unfolds x (N, C, H, W) into cols (N, C * kh * kw, Ho * Wo), the layout of
    ``torch.nn.functional.unfold``: row (c * kh + i) * kw + j holds tap (i, j) of channel c, 0 in
    the padding. A convolution is then ``W.reshape(Co, -1) @ cols``; for grouped convolutions
    split the channels and call once per group.

    Args:
        x: input (N, C, H, W).
        kernel_size, stride, dilation: int or (h, w).
        padding: int, (h, w) or (top, left, bottom, right).
        backend, out, num_threads: as in :func:`relu_backward`.
    """
    xa = _as_float_nchw(x, "im2col", "x")
    win = Window.of(kernel_size, stride, padding, dilation)
    if _use_native(xa.dtype, backend, "im2col"):
        ho, wo = win.output_size(xa.shape[2:])
        shape = (xa.shape[0], xa.shape[1] * win.kernel[0] * win.kernel[1], ho * wo)
        return _native_into(
            lambda o: _native.im2col(
                _c_contiguous(xa), *win.native_args(), out=o, num_threads=num_threads
            ),
            out,
            shape,
        )
    return _deliver(im2col_reference(xa, kernel_size, stride, padding, dilation), out)


def im2col_reference(
    x: ArrayLike,
    kernel_size: IntPair,
    stride: IntPair = 1,
    padding: Padding = 0,
    dilation: IntPair = 1,
) -> FloatArray:
    """NumPy reference of :func:`im2col` (the test oracle)."""
    xa = _as_float_nchw(x, "im2col_reference", "x")
    win = Window.of(kernel_size, stride, padding, dilation)
    n, c, h, w = xa.shape
    ho, wo = win.output_size((h, w))
    top, left, bottom, right = win.pads
    padded = np.pad(xa, ((0, 0), (0, 0), (top, bottom), (left, right)))
    cols = np.stack([_taps(padded, win, i, j, ho, wo) for i, j in _tap_list(win)], axis=2)
    return cols.reshape(n, c * len(_tap_list(win)), ho * wo)


def col2im(
    cols: ArrayLike,
    output_size: tuple[int, int],
    kernel_size: IntPair,
    stride: IntPair = 1,
    padding: Padding = 0,
    dilation: IntPair = 1,
    backend: Backend = "auto",
    *,
    out: np.ndarray | None = None,
    num_threads: int = 0,
) -> FloatArray:
    """Folds cols (N, C * kh * kw, Ho * Wo) back into (N, C, H, W), summing the values that land
    on one pixel (the adjoint of :func:`im2col`, ``torch.nn.functional.fold``). The input gradient
    of a convolution is ``col2im(W.reshape(Co, -1).T @ dy.reshape(N, Co, -1), (H, W), ...)``.

    Args:
        cols: (N, C * kh * kw, Ho * Wo).
        output_size: (H, W) of the image.
        kernel_size, stride, padding, dilation, backend, out, num_threads: as in :func:`im2col`.
    """
    ca = _as_float(cols, "col2im", "cols")
    if ca.ndim != 3:
        raise ValueError(f"col2im: cols must be 3-D (N, C * kh * kw, Ho * Wo), got {ca.shape}")
    size = pair(output_size, "output_size")
    win = Window.of(kernel_size, stride, padding, dilation)
    if _use_native(ca.dtype, backend, "col2im"):
        taps = win.kernel[0] * win.kernel[1]
        return _native_into(
            lambda o: _native.col2im(
                _c_contiguous(ca), size, *win.native_args(), out=o, num_threads=num_threads
            ),
            out,
            (ca.shape[0], ca.shape[1] // taps, *size),
        )
    return _deliver(col2im_reference(ca, size, kernel_size, stride, padding, dilation), out)


def col2im_reference(
    cols: ArrayLike,
    output_size: tuple[int, int],
    kernel_size: IntPair,
    stride: IntPair = 1,
    padding: Padding = 0,
    dilation: IntPair = 1,
) -> FloatArray:
    """NumPy reference of :func:`col2im` (the test oracle)."""
    ca = _as_float(cols, "col2im_reference", "cols")
    h, w = pair(output_size, "output_size")
    win = Window.of(kernel_size, stride, padding, dilation)
    ho, wo = win.output_size((h, w))
    taps = _tap_list(win)
    if ca.ndim != 3 or ca.shape[1] % len(taps) or ca.shape[2] != ho * wo:
        raise ValueError(
            f"col2im: cols must have shape (N, C * {len(taps)}, {ho * wo}) for this window and "
            f"output_size, got {ca.shape}"
        )
    n, c = ca.shape[0], ca.shape[1] // len(taps)
    top, left, bottom, right = win.pads
    padded = np.zeros((n, c, h + top + bottom, w + left + right), ca.dtype)
    cols6 = ca.reshape(n, c, len(taps), ho, wo)
    for t, (i, j) in enumerate(taps):
        _taps(padded, win, i, j, ho, wo)[...] += cols6[:, :, t]
    return padded[:, :, top : top + h, left : left + w].copy()


# --- Occlusion batch builder ------------------------------------------------------------------

Fill: TypeAlias = "float | ArrayLike"


def occlusion_batch(
    image: ArrayLike,
    positions: ArrayLike,
    window: IntPair,
    fill: Fill = 0.0,
    backend: Backend = "auto",
    *,
    out: np.ndarray | None = None,
    num_threads: int = 0,
) -> FloatArray:
    """The batch of occluded copies of one image that occlusion sensitivity feeds to a model
    (Zeiler & Fergus, 2014, "Visualizing and Understanding Convolutional Networks").

    Output image p is ``image`` with rows [top, top + h) and columns [left, left + w) replaced
    by the fill, (top, left) = ``positions[p]``; windows are clipped to the image (a position
    may lie partly or wholly outside it).

    Args:
        image: (C, H, W).
        positions: integers (P, 2), the (top, left) corner of each window.
        window: (h, w) of the window, or an int for a square one.
        fill: a number (constant fill), a (C,) vector (e.g. the per-channel mean) or a
            (C, H, W) fill image (e.g. a blurred copy of ``image``).
        backend, out, num_threads: as in :func:`relu_backward`.

    Returns:
        (P, C, H, W) in the promoted float dtype of image and fill (``out`` when given).
    """
    ia, pa, fa, win = _occlusion_args(image, positions, window, fill, "occlusion_batch")
    if _use_native(ia.dtype, backend, "occlusion_batch"):
        return _native_into(
            lambda o: _native.occlusion_batch(
                _c_contiguous(ia),
                _c_contiguous(pa),
                win,
                _c_contiguous(fa),
                out=o,
                num_threads=num_threads,
            ),
            out,
            (pa.shape[0], *ia.shape),
        )
    return _deliver(occlusion_batch_reference(ia, pa, win, fa), out)


def occlusion_batch_reference(
    image: ArrayLike, positions: ArrayLike, window: IntPair, fill: Fill = 0.0
) -> FloatArray:
    """NumPy reference of :func:`occlusion_batch` (the test oracle): a window mask per position,
    then one ``np.where``."""
    ia, pa, fa, (wh, ww) = _occlusion_args(image, positions, window, fill, "occlusion_batch")
    _, h, w = ia.shape
    top, left = pa[:, 0, None], pa[:, 1, None]
    rows = (np.arange(h) >= top) & (np.arange(h) < top + wh)  # (P, H)
    cols = (np.arange(w) >= left) & (np.arange(w) < left + ww)  # (P, W)
    inside = rows[:, None, :, None] & cols[:, None, None, :]  # (P, 1, H, W)
    fill_b = fa if fa.ndim != 1 else fa[:, None, None]
    return np.where(inside, fill_b, ia).astype(ia.dtype, copy=False)


def _occlusion_args(
    image: ArrayLike, positions: ArrayLike, window: IntPair, fill: Fill, fn: str
) -> tuple[FloatArray, IndexArray, FloatArray, tuple[int, int]]:
    ia = np.asarray(image)
    fa = np.asarray(fill)
    # a scalar fill takes the image's dtype (a Python float must not promote float32 to float64)
    dtype = np.result_type(ia.dtype, np.float32, *([fa.dtype] if fa.ndim else []))
    if dtype.kind != "f" or fa.dtype.kind not in "fiub":
        raise ValueError(f"{fn}: image and fill must be real numbers, got {ia.dtype}, {fa.dtype}")
    ia, fa = ia.astype(dtype, copy=False), fa.astype(dtype, copy=False)
    if ia.ndim != 3:
        raise ValueError(f"{fn}: image must be 3-D (C, H, W), got shape {ia.shape}")
    if fa.shape not in ((), (ia.shape[0],), ia.shape):
        raise ValueError(
            f"{fn}: fill must be a number, ({ia.shape[0]},) per channel or the image shape "
            f"{ia.shape}, got shape {fa.shape}"
        )
    pa = _index_pairs(positions, fn, "positions", "(P, 2) (top, left)")
    win = pair(window, "window")
    if min(win) < 0:
        raise ValueError(f"{fn}: window must be >= 0, got {win}")
    return ia, pa, fa, win


def _index_pairs(value: ArrayLike, fn: str, name: str, layout: str) -> IndexArray:
    """``value`` as int64 (N, 2), or a ValueError naming ``name`` and its ``layout``."""
    a = np.asarray(value)
    if a.dtype.kind not in "iu" or a.ndim != 2 or a.shape[1] != 2:
        raise ValueError(
            f"{fn}: {name} must be integers of shape {layout}, got {a.dtype} {a.shape}"
        )
    return a.astype(np.int64, copy=False)


# --- Crop batch builder (incremental occlusion) -----------------------------------------------


def crop_batch(
    source: ArrayLike,
    corners: ArrayLike,
    size: IntPair,
    patch: ArrayLike | None = None,
    offsets: ArrayLike | None = None,
    backend: Backend = "auto",
    *,
    out: np.ndarray | None = None,
    num_threads: int = 0,
) -> FloatArray:
    """Crops of one map, each with its own patch written over it: incremental occlusion's
    gather step (a cached feature map cut around each window's changed region, with the
    region's recomputed values in place).

    Args:
        source: (C, H, W).
        corners: integers (B, 2), the (row, column) of each crop's first element; every crop
            lies inside ``source``.
        size: (h, w) of the crops, or an int for square ones.
        patch: (B, C, ph, pw) or None (plain crops).
        offsets: integers (B, 2), where ``patch[b]`` goes in crop b (clipped to the crop).
        backend, out, num_threads: as in :func:`relu_backward`.

    Returns:
        (B, C, h, w) in the promoted float dtype of source and patch (``out`` when given).
    """
    sa, ca, pa, oa, hw = _crop_args(source, corners, size, patch, offsets)
    if _use_native(sa.dtype, backend, "crop_batch"):
        return _native_into(
            lambda o: _native.crop_batch(
                _c_contiguous(sa),
                _c_contiguous(ca),
                hw,
                None if pa is None else _c_contiguous(pa),
                None if oa is None else _c_contiguous(oa),
                out=o,
                num_threads=num_threads,
            ),
            out,
            (len(ca), sa.shape[0], *hw),
        )
    return _deliver(crop_batch_reference(sa, ca, hw, pa, oa), out)


def crop_batch_reference(
    source: ArrayLike,
    corners: ArrayLike,
    size: IntPair,
    patch: ArrayLike | None = None,
    offsets: ArrayLike | None = None,
) -> FloatArray:
    """NumPy reference of :func:`crop_batch` (the test oracle): one slice copy per crop and
    per clipped patch."""
    sa, ca, pa, oa, (h, w) = _crop_args(source, corners, size, patch, offsets)
    out = np.empty((len(ca), sa.shape[0], h, w), sa.dtype)
    for b, (y, x) in enumerate(ca):
        out[b] = sa[:, y : y + h, x : x + w]
        if pa is not None and oa is not None:
            py, px = oa[b]
            r0, r1 = max(py, 0), min(py + pa.shape[2], h)
            c0, c1 = max(px, 0), min(px + pa.shape[3], w)
            if r1 > r0 and c1 > c0:
                out[b, :, r0:r1, c0:c1] = pa[b, :, r0 - py : r1 - py, c0 - px : c1 - px]
    return out


def _crop_args(
    source: ArrayLike,
    corners: ArrayLike,
    size: IntPair,
    patch: ArrayLike | None,
    offsets: ArrayLike | None,
) -> tuple[FloatArray, IndexArray, FloatArray | None, IndexArray | None, tuple[int, int]]:
    fn = "crop_batch"
    sa = np.asarray(source)
    pa = None if patch is None else np.asarray(patch)
    dtype = np.result_type(sa.dtype, np.float32, *([pa.dtype] if pa is not None else []))
    if dtype.kind != "f":
        raise ValueError(f"{fn}: source and patch must be real numbers, got {dtype}")
    sa = sa.astype(dtype, copy=False)
    if sa.ndim != 3:
        raise ValueError(f"{fn}: source must be 3-D (C, H, W), got shape {sa.shape}")

    ca = _index_pairs(corners, fn, "corners", "(B, 2) (row, column)")
    hw = pair(size, "size")
    if min(hw) < 0:
        raise ValueError(f"{fn}: size must be >= 0, got {hw}")
    inside = (
        (ca >= 0).all(axis=1)
        & (ca[:, 0] + hw[0] <= sa.shape[1])
        & (ca[:, 1] + hw[1] <= sa.shape[2])
    )
    if len(ca) and not inside.all():
        b = int(np.flatnonzero(~inside)[0])
        raise ValueError(
            f"{fn}: crop {b} at {tuple(int(v) for v in ca[b])} of size {hw} is outside the "
            f"{sa.shape[1:]} source"
        )
    oa = None
    if pa is not None:
        pa = pa.astype(dtype, copy=False)
        if pa.ndim != 4 or pa.shape[:2] != (len(ca), sa.shape[0]):
            raise ValueError(
                f"{fn}: patch must have shape ({len(ca)}, {sa.shape[0]}, h, w) (one per crop, "
                f"the source's channels), got {pa.shape}"
            )
        if offsets is None:
            raise ValueError(f"{fn}: a patch needs its offsets")
        oa = _index_pairs(offsets, fn, "offsets", "(B, 2) (row, column)")
        if len(oa) != len(ca):
            raise ValueError(
                f"{fn}: offsets must have one row per crop ({len(ca)}), got {oa.shape}"
            )
    return sa, ca, pa, oa, hw


# --- Gram matrices -----------------------------------------------------------------------------


def gram(
    features: ArrayLike,
    norm: float,
    backend: Backend = "auto",
    *,
    out: np.ndarray | None = None,
    num_threads: int = 0,
) -> FloatArray:
    """Gram matrices G = F F^T / norm, the style statistic of Gatys et al. (2015, "Texture
    Synthesis Using Convolutional Neural Networks" / "A Neural Algorithm of Artistic Style").

    Args:
        features: F as (B, C, N), (B, C, H, W) (flattened to N = H * W) or (C, N).
        norm: the divisor, e.g. C * N or N; nonzero.
        backend, out, num_threads: as in :func:`relu_backward`.

    Returns:
        (B, C, C), or (C, C) for a 2-D input (``out`` when given); exactly symmetric.
    """
    fa = _as_gram_features(features, "gram")
    f3 = fa.reshape(-1, *fa.shape[-2:]) if fa.ndim == 2 else fa.reshape(*fa.shape[:2], -1)
    shape = (*fa.shape[:-1], fa.shape[-2]) if fa.ndim == 2 else (*fa.shape[:2], fa.shape[1])
    _check_norm(norm, "gram")
    if _use_native(fa.dtype, backend, "gram"):
        return _native_into(
            lambda o: _native.gram(
                _c_contiguous(f3),
                float(norm),
                out=None if o is None else o.reshape(f3.shape[0], f3.shape[1], f3.shape[1]),
                num_threads=num_threads,
            ).reshape(shape),
            out,
            shape,
        )
    return _deliver(gram_reference(fa, norm), out)


def gram_reference(features: ArrayLike, norm: float) -> FloatArray:
    """NumPy reference of :func:`gram` (the test oracle)."""
    fa = _as_gram_features(features, "gram_reference")
    _check_norm(norm, "gram_reference")
    f3 = fa.reshape(-1, *fa.shape[-2:]) if fa.ndim == 2 else fa.reshape(*fa.shape[:2], -1)
    g = np.matmul(f3, f3.transpose(0, 2, 1)) / fa.dtype.type(norm)
    return g[0] if fa.ndim == 2 else g


def gram_backward(
    features: ArrayLike,
    grad: ArrayLike,
    norm: float,
    backend: Backend = "auto",
    *,
    out: np.ndarray | None = None,
    num_threads: int = 0,
) -> FloatArray:
    """Backward of :func:`gram`: dL/dF = (dG + dG^T) F / norm for grad = dL/dG.

    Args:
        features: F as given to :func:`gram`.
        grad: dL/dG, the shape :func:`gram` returns (need not be symmetric).
        norm, backend, out, num_threads: as in :func:`gram`.

    Returns:
        dL/dF in the shape of ``features`` (``out`` when given).
    """
    fa = _as_gram_features(features, "gram_backward")
    ga = _as_float(grad, "gram_backward", "grad")
    _check_norm(norm, "gram_backward")
    f3 = fa.reshape(-1, *fa.shape[-2:]) if fa.ndim == 2 else fa.reshape(*fa.shape[:2], -1)
    want = (f3.shape[1], f3.shape[1]) if fa.ndim == 2 else (f3.shape[0], f3.shape[1], f3.shape[1])
    if ga.shape != want:
        raise ValueError(f"gram_backward: grad must have shape {want}, got {ga.shape}")
    dtype = np.result_type(fa.dtype, ga.dtype)
    fa, ga = fa.astype(dtype, copy=False), ga.astype(dtype, copy=False)
    f3 = f3.astype(dtype, copy=False)
    if _use_native(dtype, backend, "gram_backward"):
        g3 = ga.reshape(f3.shape[0], f3.shape[1], f3.shape[1])
        return _native_into(
            lambda o: _native.gram_backward(
                _c_contiguous(f3),
                _c_contiguous(g3),
                float(norm),
                out=None if o is None else o.reshape(f3.shape),
                num_threads=num_threads,
            ).reshape(fa.shape),
            out,
            fa.shape,
        )
    return _deliver(gram_backward_reference(fa, ga, norm), out)


def gram_backward_reference(features: ArrayLike, grad: ArrayLike, norm: float) -> FloatArray:
    """NumPy reference of :func:`gram_backward` (the test oracle)."""
    fa = _as_gram_features(features, "gram_backward_reference")
    ga = _as_float(grad, "gram_backward_reference", "grad")
    _check_norm(norm, "gram_backward_reference")
    dtype = np.result_type(fa.dtype, ga.dtype)
    f3 = fa.reshape(-1, *fa.shape[-2:]) if fa.ndim == 2 else fa.reshape(*fa.shape[:2], -1)
    g3 = ga.reshape(f3.shape[0], f3.shape[1], f3.shape[1])
    sym = (g3 + g3.transpose(0, 2, 1)).astype(dtype, copy=False)
    return (np.matmul(sym, f3.astype(dtype, copy=False)) / dtype.type(norm)).reshape(fa.shape)


def _as_gram_features(features: ArrayLike, fn: str) -> FloatArray:
    fa = _as_float(features, fn, "features")
    if fa.ndim not in (2, 3, 4):
        raise ValueError(
            f"{fn}: features must be (B, C, N), (B, C, H, W) or (C, N), got shape {fa.shape}"
        )
    return fa


def _check_norm(norm: float, fn: str) -> None:
    if not np.isfinite(norm) or norm == 0:
        raise ValueError(f"{fn}: norm must be finite and nonzero, got {norm}")


def _gated_backward(
    mode: str, passed: NDArray[np.bool_] | None, g: FloatArray, slope: float
) -> FloatArray:
    """Backward given the forward gate ``passed``; blocked elements get slope * g (exact 0)."""
    zero = g.dtype.type(0)
    if mode == "deconvnet":
        return np.where(g > 0, g, zero)
    assert passed is not None, "gradient and guided modes need the forward gate"
    blocked = g * g.dtype.type(slope) if slope != 0 else zero
    local = np.where(passed, g, blocked)
    if mode == "guided":
        local = np.where(g > 0, local, zero)
    return local


def _as_floatpair(x: ArrayLike, g: ArrayLike, mode: str, fn: str) -> tuple[FloatArray, FloatArray]:
    """Checks the mode and shapes; returns x and g as arrays of their promoted float dtype."""
    if mode not in RELU_MODES:
        raise ValueError(
            f"{fn}: unknown ReLU mode {mode!r}; expected one of: {', '.join(RELU_MODES)}"
        )
    xa, ga = np.asarray(x), np.asarray(g)
    if xa.shape != ga.shape:
        raise ValueError(f"{fn}: x and g must have the same shape, got {xa.shape} and {ga.shape}")
    dtype = np.result_type(xa.dtype, ga.dtype, np.float32)
    if dtype.kind != "f":
        raise ValueError(f"{fn}: x and g must be real numbers, got {xa.dtype} and {ga.dtype}")
    return xa.astype(dtype, copy=False), ga.astype(dtype, copy=False)


def _use_native(dtype: np.dtype, backend: str, fn: str) -> bool:
    if backend not in BACKENDS:
        raise ValueError(
            f"{fn}: unknown backend {backend!r}; expected one of: {', '.join(BACKENDS)}"
        )
    if backend == "native" and dtype != np.float32:
        raise ValueError(
            f"{fn}: backend='native' computes in float32, got {dtype} inputs; cast them with "
            ".astype(np.float32) or use backend='auto' or 'numpy'"
        )
    return backend != "numpy" and dtype == np.float32


def _c_contiguous(a: np.ndarray) -> np.ndarray:
    # np.ascontiguousarray would turn a 0-d array into 1-d
    return a if a.flags.c_contiguous else a.copy(order="C")


def _run_native(
    kernel: Callable[[np.ndarray, np.ndarray, np.ndarray | None], np.ndarray],
    x: np.ndarray,
    g: np.ndarray,
    out: np.ndarray | None,
) -> FloatArray:
    """Runs a native kernel on C-contiguous copies of strided inputs; writes into ``out``."""
    xc, gc = _c_contiguous(x), _c_contiguous(g)
    if out is None:
        return kernel(xc, gc, None)
    _check_out(out, x.shape, x.dtype)
    if out.flags.c_contiguous:
        return kernel(xc, gc, out)
    np.copyto(out, kernel(xc, gc, None))
    return out


def _deliver(result: FloatArray, out: np.ndarray | None) -> FloatArray:
    if out is None:
        return result
    _check_out(out, result.shape, result.dtype)
    np.copyto(out, result)
    return out


def _check_out(out: object, shape: tuple[int, ...], dtype: np.dtype) -> None:
    if not isinstance(out, np.ndarray) or out.shape != shape or out.dtype != dtype:
        got = f"{out.dtype} {out.shape}" if isinstance(out, np.ndarray) else type(out).__name__
        raise ValueError(f"out must be a {dtype} array of shape {shape}, got {got}")
    if not out.flags.writeable:
        raise ValueError("out is read-only")


def _tap_list(win: Window) -> list[tuple[int, int]]:
    return [(i, j) for i in range(win.kernel[0]) for j in range(win.kernel[1])]


def _taps(padded: np.ndarray, win: Window, i: int, j: int, ho: int, wo: int) -> np.ndarray:
    """View of tap (i, j) at every output position of a padded (..., Hp, Wp) array."""
    r0, c0 = i * win.dilation[0], j * win.dilation[1]
    rows = slice(r0, r0 + (ho - 1) * win.stride[0] + 1, win.stride[0])
    cols = slice(c0, c0 + (wo - 1) * win.stride[1] + 1, win.stride[1])
    return padded[..., rows, cols]


def _as_float(a: ArrayLike, fn: str, name: str) -> FloatArray:
    arr = np.asarray(a)
    dtype = np.result_type(arr.dtype, np.float32)
    if dtype.kind != "f":
        raise ValueError(f"{fn}: {name} must be real numbers, got {arr.dtype}")
    return arr.astype(dtype, copy=False)


def _as_float_nchw(a: ArrayLike, fn: str, name: str) -> FloatArray:
    arr = _as_float(a, fn, name)
    if arr.ndim != 4:
        raise ValueError(f"{fn}: {name} must be 4-D (N, C, H, W), got shape {arr.shape}")
    return arr


def _as_switches(switches: ArrayLike, shape: tuple[int, ...], fn: str) -> IndexArray:
    sa = np.asarray(switches)
    if sa.dtype.kind not in "iu" or sa.shape != shape:
        raise ValueError(
            f"{fn}: switches must be integers of g's shape {shape}, got {sa.dtype} {sa.shape}"
        )
    return sa.astype(np.int64, copy=False)


def _native_into(
    kernel: Callable[[np.ndarray | None], np.ndarray],
    out: np.ndarray | None,
    shape: tuple[int, ...],
) -> FloatArray:
    """Runs a native kernel into ``out`` (via a temporary when ``out`` is strided)."""
    if out is None:
        return kernel(None)
    _check_out(out, shape, np.dtype(np.float32))
    if out.flags.c_contiguous:
        return kernel(out)
    np.copyto(out, kernel(None))
    return out


# --- Efros-Leung neighbourhood search ----------------------------------------------------------


@dataclass(frozen=True)
class TextureMatch:
    """Picks of :func:`texture_match`, one per query (arrays of shape (B,)).

    Attributes:
        index: flat candidate index y * (W - kw + 1) + x of the chosen window; its centre is
            sample pixel (y + kh // 2, x + kw // 2).
        best: smallest distance over all candidates.
        distance: distance of the chosen candidate (<= (1 + epsilon) * best).
        candidates: number of candidates within (1 + epsilon) * best.
    """

    index: IndexArray
    best: FloatArray
    distance: FloatArray
    candidates: IndexArray


def texture_distances(
    sample: ArrayLike,
    queries: ArrayLike,
    weights: ArrayLike,
    backend: Backend = "auto",
    *,
    num_threads: int = 0,
) -> FloatArray:
    """Neighbourhood distances of Efros & Leung (1999, "Texture Synthesis by Non-parametric
    Sampling"): the weighted sum of squared differences of each query window against every
    window wholly inside the sample, summed over channels and divided by the query's weight sum.

    Args:
        sample: (C, H, W).
        queries: (B, C, kh, kw), or one query (C, kh, kw). Values at unknown taps are ignored.
        weights: (B, kh, kw) (or (kh, kw)), finite and >= 0: a Gaussian times the known-pixel
            mask (0 = unknown tap), with a positive sum for every query.
        backend: "auto" (native for float32, NumPy otherwise), "native" or "numpy".
        num_threads: CPU threads of the native kernel (0 = one per physical core; a search too
            small to pay for a thread runs on one).

    Returns:
        (B, H - kh + 1, W - kw + 1), or (H - kh + 1, W - kw + 1) for one query.
    """
    sa, qa, wa, single = _texture_args(sample, queries, weights, "texture_distances")
    if _use_native(np.result_type(sa, qa, wa), backend, "texture_distances"):
        d = _native.texture_distances(
            _c_contiguous(sa), _c_contiguous(qa), _c_contiguous(wa), num_threads=num_threads
        )
    else:
        d = texture_distances_reference(sa, qa, wa)
    return d[0] if single else d


def texture_distances_reference(
    sample: ArrayLike, queries: ArrayLike, weights: ArrayLike
) -> FloatArray:
    """NumPy reference of :func:`texture_distances` (the test oracle): a loop over the known
    taps, each vectorised over every candidate position, in the inputs' float dtype."""
    sa, qa, wa, single = _texture_args(sample, queries, weights, "texture_distances_reference")
    dtype = np.result_type(sa, qa, wa)
    sa, qa, wa = (a.astype(dtype, copy=False) for a in (sa, qa, wa))
    _check_texture_weights(wa, "texture_distances_reference")
    b, _, kh, kw = qa.shape
    h, w = sa.shape[1:]
    ph, pw = h - kh + 1, w - kw + 1
    out = np.zeros((b, ph, pw), dtype)
    for q in range(b):
        acc = out[q]
        for i, j in zip(*np.nonzero(wa[q])):
            diff = sa[:, i : i + ph, j : j + pw] - qa[q, :, i, j, None, None]
            acc += wa[q, i, j] * np.einsum("chw,chw->hw", diff, diff)
        acc /= wa[q].sum(dtype=np.float64)
    return out[0] if single else out


def texture_match(
    sample: ArrayLike,
    queries: ArrayLike,
    weights: ArrayLike,
    epsilon: float = 0.0,
    uniforms: ArrayLike = 0.0,
    backend: Backend = "auto",
    *,
    num_threads: int = 0,
) -> TextureMatch:
    """Efros-Leung match: :func:`texture_distances`, then for each query a pick among the
    candidates within (1 + epsilon) of its best distance (threshold in float64): the k-th in
    index order with k = min(floor(u * count), count - 1), u from ``uniforms``.

    Args:
        sample, queries, weights, backend, num_threads: as in :func:`texture_distances`.
        epsilon: >= 0; 0 picks among exact ties with the best match only.
        uniforms: one number in [0, 1] per query ((B,)), or one for all.

    Returns:
        A :class:`TextureMatch` of (B,) arrays (B = 1 for a single query).
    """
    sa, qa, wa, _ = _texture_args(sample, queries, weights, "texture_match")
    ua = _texture_uniforms(uniforms, qa.shape[0], "texture_match")
    _check_epsilon(epsilon, "texture_match")
    if _use_native(np.result_type(sa, qa, wa), backend, "texture_match"):
        index, best, distance, count = _native.texture_match(
            _c_contiguous(sa),
            _c_contiguous(qa),
            _c_contiguous(wa),
            float(epsilon),
            ua,
            num_threads=num_threads,
        )
        return TextureMatch(index, best, distance, count)
    return texture_match_reference(sa, qa, wa, epsilon, ua)


def texture_match_reference(
    sample: ArrayLike,
    queries: ArrayLike,
    weights: ArrayLike,
    epsilon: float = 0.0,
    uniforms: ArrayLike = 0.0,
) -> TextureMatch:
    """NumPy reference of :func:`texture_match` (the test oracle)."""
    sa, qa, wa, _ = _texture_args(sample, queries, weights, "texture_match_reference")
    ua = _texture_uniforms(uniforms, qa.shape[0], "texture_match_reference")
    _check_epsilon(epsilon, "texture_match_reference")
    distances = texture_distances_reference(sa, qa, wa)
    picks = []
    flat = distances.reshape(len(distances), distances.shape[1] * distances.shape[2])
    for d, u in zip(flat, ua):
        if np.isnan(d).any():
            raise ValueError("texture_match_reference: a distance is NaN (a NaN in the sample?)")
        best = d.min()
        inside = np.flatnonzero(d.astype(np.float64) <= float(best) * (1.0 + float(epsilon)))
        pick = inside[min(int(u * len(inside)), len(inside) - 1)]
        picks.append((pick, best, d[pick], len(inside)))
    index, best, distance, count = zip(*picks) if picks else ((), (), (), ())
    return TextureMatch(
        np.asarray(index, np.int64),
        np.asarray(best, distances.dtype),
        np.asarray(distance, distances.dtype),
        np.asarray(count, np.int64),
    )


def texture_matcher(
    sample: ArrayLike,
    epsilon: float = 0.0,
    backend: Backend = "auto",
    *,
    num_threads: int = 0,
) -> Callable[[np.ndarray, np.ndarray, float], tuple[int, float]]:
    """:func:`texture_match` prepared for many single queries against one sample (the pixel
    loop of texture synthesis): the sample, epsilon and backend are checked once, so a call
    costs little more than the search itself.

    Args:
        sample: (C, H, W); the backend is picked from its dtype as in :func:`texture_match`.
        epsilon, backend, num_threads: as in :func:`texture_match`.

    Returns:
        ``match(query, weights, u) -> (index, distance)`` for a query (C, kh, kw), weights
        (kh, kw) and a uniform u in [0, 1]: the flat candidate index and its distance, as
        :func:`texture_match` picks them.
    """
    sa = _as_float(sample, "texture_matcher", "sample")
    if sa.ndim != 3:
        raise ValueError(f"texture_matcher: sample must be 3-D (C, H, W), got shape {sa.shape}")
    _check_epsilon(epsilon, "texture_matcher")
    if _use_native(sa.dtype, backend, "texture_matcher"):
        sc, eps = _c_contiguous(sa), float(epsilon)

        def match_native(query: np.ndarray, weights: np.ndarray, u: float) -> tuple[int, float]:
            q = np.ascontiguousarray(query, dtype=np.float32)[None]
            w = np.ascontiguousarray(weights, dtype=np.float32)[None]
            index, _, distance, _ = _native.texture_match(
                sc, q, w, eps, np.array([u], np.float64), num_threads=num_threads
            )
            return int(index[0]), float(distance[0])

        return match_native

    def match_numpy(query: np.ndarray, weights: np.ndarray, u: float) -> tuple[int, float]:
        m = texture_match_reference(sa, query[None], weights[None], epsilon, u)
        return int(m.index[0]), float(m.distance[0])

    return match_numpy


def _texture_args(
    sample: ArrayLike, queries: ArrayLike, weights: ArrayLike, fn: str
) -> tuple[FloatArray, FloatArray, FloatArray, bool]:
    """Checks shapes; returns sample (C, H, W), queries (B, C, kh, kw), weights (B, kh, kw) and
    whether a single query was given."""
    sa = _as_float(sample, fn, "sample")
    qa = _as_float(queries, fn, "queries")
    wa = _as_float(weights, fn, "weights")
    if sa.ndim != 3:
        raise ValueError(f"{fn}: sample must be 3-D (C, H, W), got shape {sa.shape}")
    single = qa.ndim == 3
    if single:
        qa, wa = qa[None], wa[None]
    if qa.ndim != 4 or qa.shape[1] != sa.shape[0]:
        raise ValueError(
            f"{fn}: queries must be (B, C, kh, kw) or (C, kh, kw) with the sample's "
            f"C = {sa.shape[0]} channels, got shape {np.shape(queries)}"
        )
    b, _, kh, kw = qa.shape
    if wa.shape != (b, kh, kw):
        raise ValueError(
            f"{fn}: weights must have shape {(b, kh, kw)[1 if single else 0 :]} to match the "
            f"queries, got {np.shape(weights)}"
        )
    h, w = sa.shape[1:]
    if not (1 <= kh <= h and 1 <= kw <= w):
        raise ValueError(
            f"{fn}: the window {kh} x {kw} must be >= 1 and fit in the sample {h} x {w}"
        )
    return sa, qa, wa, single


def _check_texture_weights(wa: FloatArray, fn: str) -> None:
    if not np.isfinite(wa).all() or (wa < 0).any():
        raise ValueError(f"{fn}: weights must be finite and >= 0")
    empty = np.flatnonzero(wa.sum(axis=(1, 2)) <= 0)
    if len(empty):
        raise ValueError(
            f"{fn}: query {empty[0]} has no known tap (all weights are 0): at least one "
            "neighbour must be known"
        )


def _texture_uniforms(uniforms: ArrayLike, batch: int, fn: str) -> NDArray[np.float64]:
    ua = np.asarray(uniforms, dtype=np.float64)
    if ua.ndim == 0:
        ua = np.full(batch, float(ua))
    if ua.shape != (batch,):
        raise ValueError(
            f"{fn}: uniforms must be one number or one per query ({batch},), got {ua.shape}"
        )
    if not ((ua >= 0) & (ua <= 1)).all():
        raise ValueError(f"{fn}: uniforms must be in [0, 1], got {ua}")
    return np.ascontiguousarray(ua)


def _check_epsilon(epsilon: float, fn: str) -> None:
    if not (np.isfinite(epsilon) and epsilon >= 0):
        raise ValueError(f"{fn}: epsilon must be finite and >= 0, got {epsilon}")
