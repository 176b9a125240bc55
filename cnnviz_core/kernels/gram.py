"""Gram matrices and their backward, the style statistic of Gatys et al. (csrc/cpu/gram.cpp,
csrc/cuda/gram.cu)."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from ._dispatch import (
    Backend,
    FloatArray,
    _native,
    as_float,
    c_contiguous,
    cuda_run,
    on_device,
    run,
)


def gram(
    features: ArrayLike,
    norm: float,
    backend: Backend = "auto",
    *,
    out: Any = None,
    num_threads: int = 0,
    device: str = "cpu",
    stream: int = 0,
) -> Any:
    """Gram matrices G = F F^T / norm, the style statistic of Gatys et al. (2015, "Texture
    Synthesis Using Convolutional Neural Networks" / "A Neural Algorithm of Artistic Style").

    Args:
        features: F as (B, C, N), (B, C, H, W) (flattened to N = H * W) or (C, N); or a
            C-contiguous float32 (B, C, N) array on a CUDA device (``__cuda_array_interface__``,
            e.g. a torch CUDA tensor), which runs the CUDA kernel on ``stream`` into ``out``.
        norm: the divisor, e.g. C * N or N; nonzero.
        backend, out, num_threads, device: as in :func:`~cnnviz_core.kernels.relu_backward`
            (``out`` is required, on the device, for device features).
        stream: the ``cudaStream_t`` (as an int) of device work; 0 = the default stream.

    Returns:
        (B, C, C), or (C, C) for a 2-D input (``out`` when given); exactly symmetric.
    """
    _check_norm(norm, "gram")
    if on_device(features):
        b, c, n = _device_features(features, "gram")
        return cuda_run(
            "gram",
            device,
            [features],
            [],
            lambda cuda, i, o, s: cuda.gram(i[0], o[0], b, c, n, float(norm), s),
            out=out,
            stream=stream,
        )
    fa = _as_gram_features(features, "gram")
    f3 = _as_batched(fa)
    b, c, n = f3.shape
    shape = (c, c) if fa.ndim == 2 else (b, c, c)
    return run(
        "gram",
        fa.dtype,
        backend,
        device,
        out,
        shape,
        native=lambda o: _native.gram(
            c_contiguous(f3),
            float(norm),
            out=None if o is None else o.reshape(b, c, c),
            num_threads=num_threads,
        ).reshape(shape),
        reference=lambda: gram_reference(fa, norm),
        cuda=lambda: cuda_run(
            "gram",
            device,
            [f3],
            [((b, c, c), np.float32)],
            lambda cuda, i, o, s: cuda.gram(i[0], o[0], b, c, n, float(norm), s),
        ).reshape(shape),
    )


def gram_reference(features: ArrayLike, norm: float) -> FloatArray:
    """NumPy reference of :func:`gram` (the test oracle)."""
    fa = _as_gram_features(features, "gram_reference")
    _check_norm(norm, "gram_reference")
    f3 = _as_batched(fa)
    g = np.matmul(f3, f3.transpose(0, 2, 1)) / fa.dtype.type(norm)
    return g[0] if fa.ndim == 2 else g


def gram_backward(
    features: ArrayLike,
    grad: ArrayLike,
    norm: float,
    backend: Backend = "auto",
    *,
    out: Any = None,
    num_threads: int = 0,
    device: str = "cpu",
    stream: int = 0,
) -> Any:
    """Backward of :func:`gram`: dL/dF = (dG + dG^T) F / norm for grad = dL/dG.

    Args:
        features: F as given to :func:`gram` (a device array too).
        grad: dL/dG, the shape :func:`gram` returns (need not be symmetric); on the device
            when the features are.
        norm, backend, out, num_threads, device, stream: as in :func:`gram`.

    Returns:
        dL/dF in the shape of ``features`` (``out`` when given).
    """
    _check_norm(norm, "gram_backward")
    if on_device(features):
        b, c, n = _device_features(features, "gram_backward")
        return cuda_run(
            "gram_backward",
            device,
            [features, grad],
            [],
            lambda cuda, i, o, s: cuda.gram_backward(i[0], i[1], o[0], b, c, n, float(norm), 0, s),
            out=out,
            stream=stream,
        )
    fa = _as_gram_features(features, "gram_backward")
    ga = as_float(grad, "gram_backward", "grad")
    f3 = _as_batched(fa)
    b, c, n = f3.shape
    want = (c, c) if fa.ndim == 2 else (b, c, c)
    if ga.shape != want:
        raise ValueError(f"gram_backward: grad must have shape {want}, got {ga.shape}")
    dtype = np.result_type(fa.dtype, ga.dtype)
    fa, ga = fa.astype(dtype, copy=False), ga.astype(dtype, copy=False)
    f3, g3 = f3.astype(dtype, copy=False), ga.reshape(b, c, c)
    return run(
        "gram_backward",
        dtype,
        backend,
        device,
        out,
        fa.shape,
        native=lambda o: _native.gram_backward(
            c_contiguous(f3),
            c_contiguous(g3),
            float(norm),
            out=None if o is None else o.reshape(f3.shape),
            num_threads=num_threads,
        ).reshape(fa.shape),
        reference=lambda: gram_backward_reference(fa, ga, norm),
        cuda=lambda: cuda_run(
            "gram_backward",
            device,
            [f3, g3],
            [(f3.shape, np.float32)],
            lambda cuda, i, o, s: cuda.gram_backward(i[0], i[1], o[0], b, c, n, float(norm), 0, s),
        ).reshape(fa.shape),
    )


def gram_backward_reference(features: ArrayLike, grad: ArrayLike, norm: float) -> FloatArray:
    """NumPy reference of :func:`gram_backward` (the test oracle)."""
    fa = _as_gram_features(features, "gram_backward_reference")
    ga = as_float(grad, "gram_backward_reference", "grad")
    _check_norm(norm, "gram_backward_reference")
    dtype = np.result_type(fa.dtype, ga.dtype)
    f3 = _as_batched(fa)
    g3 = ga.reshape(f3.shape[0], f3.shape[1], f3.shape[1])
    sym = (g3 + g3.transpose(0, 2, 1)).astype(dtype, copy=False)
    return (np.matmul(sym, f3.astype(dtype, copy=False)) / dtype.type(norm)).reshape(fa.shape)


def _as_gram_features(features: ArrayLike, fn: str) -> FloatArray:
    fa = as_float(features, fn, "features")
    if fa.ndim not in (2, 3, 4):
        raise ValueError(
            f"{fn}: features must be (B, C, N), (B, C, H, W) or (C, N), got shape {fa.shape}"
        )
    return fa


def _check_norm(norm: float, fn: str) -> None:
    if not np.isfinite(norm) or norm == 0:
        raise ValueError(f"{fn}: norm must be finite and nonzero, got {norm}")


def _as_batched(fa: FloatArray) -> FloatArray:
    """F as (B, C, N): a 2-D (C, N) gets B = 1, a 4-D (B, C, H, W) is flattened."""
    return fa.reshape(-1, *fa.shape[-2:]) if fa.ndim == 2 else fa.reshape(*fa.shape[:2], -1)


def _device_features(features: Any, fn: str) -> tuple[int, int, int]:
    """(B, C, N) of C-contiguous float32 features on a CUDA device, or a ValueError."""
    spec = features.__cuda_array_interface__
    shape = tuple(spec["shape"])
    if spec["typestr"] != "<f4" or len(shape) != 3 or spec.get("strides") is not None:
        raise ValueError(
            f"{fn}: device features must be C-contiguous float32 (B, C, N), got "
            f"{spec['typestr']} {shape} with strides {spec.get('strides')}"
        )
    b, c, n = shape
    return b, c, n
