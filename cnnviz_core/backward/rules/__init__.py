"""The backward pass's op rules, grouped by kind; importing this package registers them."""

from . import elementwise, nn, shape

__all__ = ["elementwise", "nn", "shape"]
