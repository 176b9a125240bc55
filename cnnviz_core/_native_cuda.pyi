"""CUDA kernels of cnnviz on raw device pointers (private: use :mod:`cnnviz_core.kernels`).

Pointers are device addresses of float32 buffers of ``n`` elements (e.g. ``tensor.data_ptr()``);
``stream`` is a ``cudaStream_t`` as an int (0 = default stream). Calls enqueue work and return
without synchronizing: keep the buffers alive until the stream has run it.
"""

__version__: str

def device_count() -> int: ...
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
