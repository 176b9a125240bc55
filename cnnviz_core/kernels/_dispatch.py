"""Private: which implementation runs a kernel call, and the argument checks the kernel families
share.

A call runs on one of three implementations:

- the CUDA kernels of :mod:`cnnviz_core._native_cuda`, for float32 work of a model on a CUDA
  ``device`` (host arrays are copied to the device and back) or on arrays that already live
  on a CUDA device (objects with ``__cuda_array_interface__``, e.g. torch CUDA tensors);
- the C++ kernels of :mod:`cnnviz_core._native`, for float32 work on the CPU;
- the NumPy reference (``backend="numpy"``, and always for float64 so finite-difference tests
  stay in float64), the test oracle of both.

:func:`run` is the one helper every kernel goes through; the choice is a few attribute reads,
so the CPU hot paths pay nothing for the CUDA route.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal, TypeAlias

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ..errors import DeviceError

try:
    from .. import _native  # noqa: F401  (the family modules import it from here)
except ImportError as exc:
    raise ImportError(
        "cnnviz_core._native: the native extension was not built; reinstall with "
        "`pip install .` (while developing: "
        "`pip install --no-build-isolation -e . -Ceditable.rebuild=true`)"
    ) from exc

try:
    from .. import _native_cuda
except ImportError:  # built without CUDA: only an explicit CUDA request fails
    _native_cuda = None  # type: ignore[assignment]

Backend = Literal["auto", "native", "numpy"]
#: valid ``backend`` values: "auto" = native for float32, NumPy otherwise
BACKENDS: tuple[str, ...] = ("auto", "native", "numpy")

FloatArray: TypeAlias = NDArray[np.floating]
IndexArray: TypeAlias = NDArray[np.int64]
#: ``launch(cuda_module, input_pointers, output_pointers, stream)`` enqueues one CUDA kernel
Launch: TypeAlias = Callable[[Any, list[int], list[int], int], None]


def cuda_device_count() -> int:
    """Number of CUDA devices the native CUDA kernels can use (0 when built without CUDA)."""
    return 0 if _native_cuda is None else _native_cuda.device_count()


def on_device(a: object) -> bool:
    """Whether ``a`` lives in CUDA device memory (``__cuda_array_interface__``)."""
    return hasattr(a, "__cuda_array_interface__")


def run(
    fn: str,
    dtype: np.dtype,
    backend: str,
    device: str,
    out: Any,
    shape: tuple[int, ...],
    *,
    native: Callable[[np.ndarray | None], np.ndarray],
    reference: Callable[[], np.ndarray],
    cuda: Callable[[], np.ndarray] | None = None,
) -> Any:
    """Runs one kernel call on the implementation it belongs to, into ``out`` when given.

    Args:
        fn: the public function's name (for errors).
        dtype: the computation's dtype (float32 runs natively).
        backend: "auto", "native" or "numpy" (see :data:`BACKENDS`).
        device: where the model runs: "cpu", "cuda" or "cuda:N".
        out: None, or the array to write the ``shape`` result into.
        native: the CPU kernel; takes a C-contiguous ``out`` to write into, or None.
        reference: the NumPy reference.
        cuda: the CUDA twin (see :func:`cuda_run`), or None when there is none.

    Returns:
        The result (``out`` when given).
    """
    if out is not None and not on_device(out):
        check_out(out, shape, dtype)
    if not use_native(dtype, backend, fn):
        result = reference()
    elif cuda is not None and (device != "cpu" or on_device(out)):
        result = cuda()
    elif out is not None and out.flags.c_contiguous:
        return native(out)
    else:
        result = native(None)
    if out is None or result is out:
        return result
    np.copyto(out, result)
    return out


def cuda_run(
    fn: str,
    device: str,
    inputs: Sequence[Any],
    outputs: Sequence[tuple[tuple[int, ...], type]],
    launch: Launch,
    out: Any = None,
    stream: int = 0,
) -> Any:
    """Runs a CUDA kernel: host inputs are copied to the device (device arrays are used in
    place), the kernel is enqueued, and host outputs are copied back (which waits for it).

    Args:
        fn: the public function's name (for errors).
        device: "cuda" or "cuda:N" (the device of host-array work).
        inputs: arrays (host or device); None for an absent optional input (pointer 0).
        outputs: (shape, dtype) of each result.
        launch: enqueues the kernel given the CUDA module, the input and output device pointers
            and the stream.
        out: a device array for the first output (required when the inputs live on a device).
        stream: a ``cudaStream_t`` as an int, for device arrays (0 = the default stream).

    Returns:
        The first output, or the list of outputs when there are several: host arrays, or
        ``out`` itself for device work.
    """
    cuda = require_cuda(fn)
    device_inputs = [on_device(a) for a in inputs if a is not None]
    if on_device(out):
        if not all(device_inputs):
            raise ValueError(f"{fn}: out is on a CUDA device, so the inputs must be too")
        launch(cuda, [_pointer(a) for a in inputs], [_pointer(out)], stream)
        return out
    if any(device_inputs):
        raise ValueError(f"{fn}: inputs on a CUDA device need an out array on the device too")
    cuda.set_device(_device_index(device, fn))
    held = [None if a is None else cuda.DeviceBuffer.upload(c_contiguous(a)) for a in inputs]
    results: list[np.ndarray] = [np.empty(s, dtype) for s, dtype in outputs]
    buffers = [cuda.DeviceBuffer(r.nbytes) for r in results]
    launch(cuda, [0 if b is None else b.ptr for b in held], [b.ptr for b in buffers], 0)
    for buffer, result in zip(buffers, results):
        buffer.download(result)
    return results[0] if len(results) == 1 else results


def require_cuda(fn: str) -> Any:
    """The CUDA module, or a DeviceError saying how to get it."""
    if _native_cuda is None:
        raise DeviceError(
            f"{fn}: the model runs on CUDA but cnnviz was built without its CUDA kernels; "
            "rebuild with nvcc available (CNNVIZ_CUDA=ON) or load the model with device='cpu'"
        )
    return _native_cuda


def _device_index(device: str, fn: str) -> int:
    kind, _, index = device.partition(":")
    if kind != "cuda" or not (index.isdigit() or index == ""):
        raise DeviceError(f"{fn}: unknown device {device!r}; use 'cpu' or 'cuda' (or 'cuda:N')")
    return int(index or 0)


def _pointer(a: Any) -> int:
    if a is None:
        return 0
    return int(a.__cuda_array_interface__["data"][0])


def use_native(dtype: np.dtype, backend: str, fn: str) -> bool:
    """Whether a call of this dtype and backend runs a native kernel (CPU or CUDA)."""
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


def c_contiguous(a: np.ndarray) -> np.ndarray:
    """``a`` itself when C-contiguous, else a C-contiguous copy (0-d arrays stay 0-d)."""
    # np.ascontiguousarray would turn a 0-d array into 1-d
    return a if a.flags.c_contiguous else a.copy(order="C")


def check_out(out: object, shape: tuple[int, ...], dtype: np.dtype) -> None:
    """Raises unless ``out`` is a writeable ndarray of this shape and dtype."""
    if not isinstance(out, np.ndarray) or out.shape != shape or out.dtype != dtype:
        got = f"{out.dtype} {out.shape}" if isinstance(out, np.ndarray) else type(out).__name__
        raise ValueError(f"out must be a {dtype} array of shape {shape}, got {got}")
    if not out.flags.writeable:
        raise ValueError("out is read-only")


def as_float(a: ArrayLike, fn: str, name: str) -> FloatArray:
    """``a`` as an array of its float dtype (at least float32), or a ValueError."""
    arr = np.asarray(a)
    dtype = np.result_type(arr.dtype, np.float32)
    if dtype.kind != "f":
        raise ValueError(f"{fn}: {name} must be real numbers, got {arr.dtype}")
    return arr.astype(dtype, copy=False)


def as_float_nchw(a: ArrayLike, fn: str, name: str) -> FloatArray:
    """:func:`as_float` of a 4-D (N, C, H, W) array."""
    arr = as_float(a, fn, name)
    if arr.ndim != 4:
        raise ValueError(f"{fn}: {name} must be 4-D (N, C, H, W), got shape {arr.shape}")
    return arr


def index_pairs(value: ArrayLike, fn: str, name: str, layout: str) -> IndexArray:
    """``value`` as int64 (N, 2), or a ValueError naming ``name`` and its ``layout``."""
    a = np.asarray(value)
    if a.dtype.kind not in "iu" or a.ndim != 2 or a.shape[1] != 2:
        raise ValueError(
            f"{fn}: {name} must be integers of shape {layout}, got {a.dtype} {a.shape}"
        )
    return a.astype(np.int64, copy=False)
