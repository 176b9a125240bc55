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
