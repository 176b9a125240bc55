"""Backward of ReLU-like ops in three modes (csrc/cpu/relu.cpp, csrc/cuda/relu.cu).

Modes, for a ReLU-like op y = f(x) and the gradient g = dL/dy (any shape, e.g. N, C, H, W):

- ``gradient``: the true gradient, g * f'(x).
- ``guided``: guided backpropagation (Springenberg et al., 2015, "Striving for Simplicity"):
  the true gradient where g > 0, else 0.
- ``deconvnet``: Zeiler & Fergus (2014), "Visualizing and Understanding Convolutional
  Networks": relu(g); x is not used.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ._dispatch import Backend, FloatArray, _native, c_contiguous, cuda_run, run

ReluMode = Literal["gradient", "guided", "deconvnet"]
#: valid ``mode`` values
RELU_MODES: tuple[str, ...] = ("gradient", "guided", "deconvnet")


def relu_backward(
    x: ArrayLike,
    g: ArrayLike,
    mode: ReluMode = "gradient",
    negative_slope: float = 0.0,
    backend: Backend = "auto",
    *,
    out: np.ndarray | None = None,
    num_threads: int = 0,
    device: str = "cpu",
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
        device: where the model runs: "cpu", or "cuda" / "cuda:N" for the CUDA kernels.

    Returns:
        The gradient w.r.t. ``x`` (``out`` when given), in the promoted float dtype of x and g
        (at least float32).
    """
    xa, ga = _as_float_pair(x, g, mode, "relu_backward")
    return run(
        "relu_backward",
        xa.dtype,
        backend,
        device,
        out,
        xa.shape,
        native=lambda o: _native.relu_backward(
            c_contiguous(xa), c_contiguous(ga), mode, negative_slope, out=o, num_threads=num_threads
        ),
        reference=lambda: relu_backward_reference(xa, ga, mode, negative_slope),
        cuda=lambda: cuda_run(
            "relu_backward",
            device,
            [xa, ga],
            [(xa.shape, np.float32)],
            lambda cuda, i, o, s: cuda.relu_backward(
                i[0], i[1], o[0], xa.size, mode, negative_slope, s
            ),
        ),
    )


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
    device: str = "cpu",
) -> FloatArray:
    """Backward of Clip (ReLU6: lo=0, hi=6): as :func:`relu_backward` with the gate lo < x < hi.

    Args:
        x, g, mode, backend, out, num_threads, device: as in :func:`relu_backward`.
        lo, hi: the clip bounds (``-np.inf`` / ``np.inf`` for an open side); the gradient is 0
            at the bounds themselves, as in PyTorch.

    Returns:
        The gradient w.r.t. ``x`` (``out`` when given).
    """
    xa, ga = _as_float_pair(x, g, mode, "relu_backward_clip")
    return run(
        "relu_backward_clip",
        xa.dtype,
        backend,
        device,
        out,
        xa.shape,
        native=lambda o: _native.relu_backward_clip(
            c_contiguous(xa), c_contiguous(ga), lo, hi, mode, out=o, num_threads=num_threads
        ),
        reference=lambda: relu_backward_clip_reference(xa, ga, lo, hi, mode),
        cuda=lambda: cuda_run(
            "relu_backward_clip",
            device,
            [xa, ga],
            [(xa.shape, np.float32)],
            lambda cuda, i, o, s: cuda.relu_backward_clip(
                i[0], i[1], o[0], xa.size, lo, hi, mode, s
            ),
        ),
    )


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
