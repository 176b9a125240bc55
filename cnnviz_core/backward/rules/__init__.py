"""The backward pass's op rules, grouped by kind; importing this package registers them."""

from . import activation, elementwise, nn, quantization, resize, shape

__all__ = ["activation", "elementwise", "nn", "quantization", "resize", "shape"]
