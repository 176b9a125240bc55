"""The backward pass's op rules, grouped by kind; importing this package registers them."""

from . import (
    activation,
    einsum,
    elementwise,
    gather,
    layout,
    nn,
    normalization,
    quantization,
    resize,
    shape,
)

__all__ = [
    "activation",
    "einsum",
    "elementwise",
    "gather",
    "layout",
    "nn",
    "normalization",
    "quantization",
    "resize",
    "shape",
]
