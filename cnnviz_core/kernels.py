"""The one Python face of the native kernels: backward of ReLU-like ops in three modes.

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
from typing import Literal, TypeAlias

import numpy as np
from numpy.typing import ArrayLike, NDArray

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
    xa, ga = _as_float_pair(x, g, mode, "relu_backward")
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
    xa, ga = _as_float_pair(x, g, mode, "relu_backward_clip")
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
    xa, ga = _as_float_pair(x, g, mode, "relu_backward_reference")
    passed = None if mode == "deconvnet" else xa > 0
    return _gated_backward(mode, passed, ga, negative_slope)


def relu_backward_clip_reference(
    x: ArrayLike, g: ArrayLike, lo: float, hi: float, mode: ReluMode = "gradient"
) -> FloatArray:
    """NumPy reference of :func:`relu_backward_clip` (the test oracle)."""
    xa, ga = _as_float_pair(x, g, mode, "relu_backward_clip_reference")
    passed = None
    if mode != "deconvnet":
        # compare in the array's dtype, as the native kernel does with float32 bounds
        lo_t, hi_t = xa.dtype.type(lo), xa.dtype.type(hi)
        passed = (xa > lo_t) & (xa < hi_t)
    return _gated_backward(mode, passed, ga, 0.0)


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


def _as_float_pair(x: ArrayLike, g: ArrayLike, mode: str, fn: str) -> tuple[FloatArray, FloatArray]:
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
