"""Rules for ops that move values without changing them (reshapes) and reductions."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..registry import Grad, NodeCall, OpRule, register_rule


def reshape_target(shape: np.ndarray, data_shape: Sequence[int], allowzero: int) -> list[int]:
    """ONNX Reshape's target with 0 ("copy this dim") resolved; -1 is left to NumPy."""
    return [data_shape[i] if d == 0 and not allowzero else int(d) for i, d in enumerate(shape)]


@register_rule("Reshape")
class Reshape(OpRule):
    constant_inputs = (1,)

    def forward(self, call: NodeCall) -> list[np.ndarray]:
        x, shape = call.inputs[0], call.inputs[1]
        return [x.reshape(reshape_target(shape, x.shape, call.attrs.get("allowzero", 0)))]

    def vjp(self, call: NodeCall, grads: Sequence[Grad]) -> list[Grad]:
        dy = grads[0]
        assert dy is not None
        return [dy.reshape(call.inputs[0].shape), None]


@register_rule("Flatten")
class Flatten(OpRule):
    def forward(self, call: NodeCall) -> list[np.ndarray]:
        x = call.inputs[0]
        axis = call.attrs.get("axis", 1) % max(x.ndim, 1)
        return [x.reshape(int(np.prod(x.shape[:axis])), -1)]

    def vjp(self, call: NodeCall, grads: Sequence[Grad]) -> list[Grad]:
        dy = grads[0]
        assert dy is not None
        return [dy.reshape(call.inputs[0].shape)]


class _Reduce(OpRule):
    """Shared by the ReduceMean/ReduceSum rules: axes from an attribute (older opsets) or
    from the second input (ReduceSum since 13, ReduceMean since 18)."""

    constant_inputs = (1,)
    axes_from_input = False
    mean = False

    def axes(self, call: NodeCall) -> tuple[int, ...]:
        x = call.inputs[0]
        if self.axes_from_input:
            given = call.inputs[1] if len(call.inputs) > 1 else None
        else:
            given = call.attrs.get("axes")
        if given is None or len(given) == 0:
            if call.attrs.get("noop_with_empty_axes", 0):
                return ()
            return tuple(range(x.ndim))
        return tuple(sorted(int(a) % x.ndim for a in given))

    def forward(self, call: NodeCall) -> list[np.ndarray]:
        x, axes = call.inputs[0], self.axes(call)
        keep = bool(call.attrs.get("keepdims", 1))
        reduce = np.mean if self.mean else np.sum
        return [reduce(x, axis=axes, keepdims=keep) if axes else x]

    def vjp(self, call: NodeCall, grads: Sequence[Grad]) -> list[Grad]:
        x, dy = call.inputs[0], grads[0]
        assert dy is not None
        axes = self.axes(call)
        if not call.attrs.get("keepdims", 1):
            dy = np.expand_dims(dy, axes)
        if self.mean and axes:
            dy = dy / int(np.prod([x.shape[a] for a in axes]))
        return [np.broadcast_to(dy, x.shape).copy(), None][: len(call.inputs)]


@register_rule("ReduceMean")
class ReduceMean(_Reduce):
    mean = True


@register_rule("ReduceMean", since=18)
class ReduceMean18(_Reduce):
    mean = True
    axes_from_input = True


@register_rule("ReduceSum")
class ReduceSum(_Reduce):
    pass


@register_rule("ReduceSum", since=13)
class ReduceSum13(_Reduce):
    axes_from_input = True
