"""CPU kernels of cnnviz (private: use :mod:`cnnviz_core.kernels`).

Arrays must be C-contiguous float32 ndarrays (no conversion is done); ``out`` may be ``x`` or ``g``.
"""

import numpy as np
from numpy.typing import NDArray

__version__: str

def relu_backward(
    x: NDArray[np.float32],
    g: NDArray[np.float32],
    mode: str,
    negative_slope: float = 0.0,
    out: NDArray[np.float32] | None = None,
    num_threads: int = 0,
) -> NDArray[np.float32]: ...
def relu_backward_clip(
    x: NDArray[np.float32],
    g: NDArray[np.float32],
    lo: float,
    hi: float,
    mode: str,
    out: NDArray[np.float32] | None = None,
    num_threads: int = 0,
) -> NDArray[np.float32]: ...
def default_num_threads() -> int: ...
def default_compute_threads() -> int: ...
def max_pool2d(
    x: NDArray[np.float32],
    kernel: tuple[int, int],
    stride: tuple[int, int],
    pads: tuple[int, ...],
    dilation: tuple[int, int],
    ceil_mode: bool = False,
    num_threads: int = 0,
    out: NDArray[np.float32] | None = None,
    switches_out: NDArray[np.int64] | None = None,
) -> tuple[NDArray[np.float32], NDArray[np.int64]]: ...
def max_unpool2d(
    g: NDArray[np.float32],
    switches: NDArray[np.int64],
    output_size: tuple[int, int],
    out: NDArray[np.float32] | None = None,
    num_threads: int = 0,
) -> NDArray[np.float32]: ...
def im2col(
    x: NDArray[np.float32],
    kernel: tuple[int, int],
    stride: tuple[int, int],
    pads: tuple[int, ...],
    dilation: tuple[int, int],
    out: NDArray[np.float32] | None = None,
    num_threads: int = 0,
) -> NDArray[np.float32]: ...
def col2im(
    cols: NDArray[np.float32],
    output_size: tuple[int, int],
    kernel: tuple[int, int],
    stride: tuple[int, int],
    pads: tuple[int, ...],
    dilation: tuple[int, int],
    out: NDArray[np.float32] | None = None,
    num_threads: int = 0,
) -> NDArray[np.float32]: ...
def occlusion_batch(
    image: NDArray[np.float32],
    positions: NDArray[np.int64],
    window: tuple[int, int],
    fill: NDArray[np.float32],
    out: NDArray[np.float32] | None = None,
    num_threads: int = 0,
) -> NDArray[np.float32]: ...
def crop_batch(
    source: NDArray[np.float32],
    corners: NDArray[np.int64],
    size: tuple[int, int],
    patch: NDArray[np.float32] | None = None,
    offsets: NDArray[np.int64] | None = None,
    out: NDArray[np.float32] | None = None,
    num_threads: int = 0,
) -> NDArray[np.float32]: ...
def gram(
    features: NDArray[np.float32],
    norm: float,
    out: NDArray[np.float32] | None = None,
    num_threads: int = 0,
) -> NDArray[np.float32]: ...
def gram_backward(
    features: NDArray[np.float32],
    grad: NDArray[np.float32],
    norm: float,
    out: NDArray[np.float32] | None = None,
    num_threads: int = 0,
) -> NDArray[np.float32]: ...
def gram_kernel_name() -> str: ...
def texture_distances(
    sample: NDArray[np.float32],
    queries: NDArray[np.float32],
    weights: NDArray[np.float32],
    out: NDArray[np.float32] | None = None,
    num_threads: int = 0,
) -> NDArray[np.float32]: ...
def texture_match(
    sample: NDArray[np.float32],
    queries: NDArray[np.float32],
    weights: NDArray[np.float32],
    epsilon: float,
    uniforms: NDArray[np.float64],
    num_threads: int = 0,
) -> tuple[NDArray[np.int64], NDArray[np.float32], NDArray[np.float32], NDArray[np.int64]]: ...
def texture_kernel_name() -> str: ...
