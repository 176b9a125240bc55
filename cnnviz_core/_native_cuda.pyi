"""CUDA kernels of cnnviz on raw device pointers (private: use :mod:`cnnviz_core.kernels`);
:class:`DeviceBuffer` carries host arrays to the device and back.

Pointers are device addresses of float32 buffers of ``n`` elements (e.g. ``tensor.data_ptr()``);
``stream`` is a ``cudaStream_t`` as an int (0 = default stream). Calls enqueue work and return
without synchronizing: keep the buffers alive until the stream has run it.
"""

from typing import Any

from numpy.typing import NDArray

__version__: str

def device_count() -> int: ...
def set_device(index: int) -> None: ...

class DeviceBuffer:
    """Device memory of ``nbytes`` bytes, freed with the object."""

    def __init__(self, nbytes: int) -> None: ...
    @staticmethod
    def upload(array: NDArray[Any]) -> DeviceBuffer: ...
    def download(self, array: NDArray[Any]) -> None: ...
    @property
    def ptr(self) -> int: ...
    @property
    def nbytes(self) -> int: ...

def relu_backward(
    x_ptr: int,
    g_ptr: int,
    out_ptr: int,
    n: int,
    mode: str,
    negative_slope: float = 0.0,
    stream: int = 0,
) -> None: ...
def relu_backward_clip(
    x_ptr: int,
    g_ptr: int,
    out_ptr: int,
    n: int,
    lo: float,
    hi: float,
    mode: str,
    stream: int = 0,
) -> None: ...
def max_pool2d(
    x_ptr: int,
    y_ptr: int,
    switches_ptr: int,
    planes: int,
    h: int,
    w: int,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    pads: tuple[int, ...],
    dilation: tuple[int, int],
    ceil_mode: bool = False,
    stream: int = 0,
) -> None: ...
def max_unpool2d(
    g_ptr: int,
    switches_ptr: int,
    out_ptr: int,
    planes: int,
    pooled_size: int,
    h: int,
    w: int,
    stream: int = 0,
) -> None: ...
def im2col(
    x_ptr: int,
    cols_ptr: int,
    n: int,
    c: int,
    h: int,
    w: int,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    pads: tuple[int, ...],
    dilation: tuple[int, int],
    stream: int = 0,
) -> None: ...
def col2im(
    cols_ptr: int,
    x_ptr: int,
    n: int,
    c: int,
    h: int,
    w: int,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    pads: tuple[int, ...],
    dilation: tuple[int, int],
    stream: int = 0,
) -> None: ...
def occlusion_batch(
    image_ptr: int,
    c: int,
    h: int,
    w: int,
    positions_ptr: int,
    count: int,
    window_h: int,
    window_w: int,
    fill_ptr: int,
    fill_kind: str,
    out_ptr: int,
    stream: int = 0,
) -> None: ...
def gram(
    features_ptr: int, out_ptr: int, batch: int, c: int, n: int, norm: float, stream: int = 0
) -> None: ...
def gram_backward(
    features_ptr: int,
    grad_ptr: int,
    out_ptr: int,
    batch: int,
    c: int,
    n: int,
    norm: float,
    workspace_ptr: int = 0,
    stream: int = 0,
) -> None: ...
