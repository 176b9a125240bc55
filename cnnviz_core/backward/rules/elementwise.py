"""Rules for element-wise ops: activations (with the guided/deconvnet modes) and arithmetic."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ... import kernels
from ..registry import Grad, NodeCall, OpRule, register_rule
from .nn import _unbroadcast


@register_rule("Relu")
class Relu(OpRule):
    """ReLU; its backward is where the modes differ (fused native kernel)."""

    def forward(self, call: NodeCall) -> list[np.ndarray]:
        x = call.inputs[0]
        return [np.maximum(x, np.zeros((), x.dtype))]

    def vjp(self, call: NodeCall, grads: Sequence[Grad]) -> list[Grad]:
        x, dy = call.inputs[0], grads[0]
        assert dy is not None
        return [kernels.relu_backward(x.astype(dy.dtype, copy=False), dy, call.mode)]


@register_rule("Add")
class Add(OpRule):
    def forward(self, call: NodeCall) -> list[np.ndarray]:
        return [call.inputs[0] + call.inputs[1]]

    def vjp(self, call: NodeCall, grads: Sequence[Grad]) -> list[Grad]:
        dy = grads[0]
        assert dy is not None
        return [
            _unbroadcast(dy, np.shape(x)) if need else None
            for x, need in zip(call.inputs, call.needs)
        ]
