"""Rules for ops that pick, place, select or repeat values: GatherND / ScatterND (what the
dynamo exporter writes for some adaptive-pool heads and index assignments), Where, Expand and
Tile. Indices, conditions, shapes and repeats are constants of the pass (no gradient)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import onnx

from ...errors import UnsupportedOpError
from ..registry import Grad, NodeCall, OpRule, register_rule
from .common import unbroadcast

if TYPE_CHECKING:
    from ..emitter import Emitter


def nd_index(shape: Sequence[int], indices: np.ndarray, batch_dims: int = 0) -> tuple:
    """GatherND / ScatterND indices (..., k) as a NumPy index into a tensor of ``shape``: the
    first ``batch_dims`` axes pair up with those of ``indices``, the next k are indexed (negative
    entries count from the end); the result has shape indices.shape[:-1] + shape[batch_dims+k:]."""
    index = np.asarray(indices).astype(np.int64)
    k, lead = index.shape[-1], index.ndim - 1
    parts: list[np.ndarray] = []
    for axis in range(batch_dims):
        along = [1] * lead
        along[axis] = shape[axis]
        parts.append(np.arange(shape[axis]).reshape(along))
    for m in range(k):
        dim = shape[batch_dims + m]
        part = index[..., m]
        parts.append(np.where(part < 0, part + dim, part))
    return tuple(parts)


def _full_index(
    shape: Sequence[int], indices: np.ndarray, batch_dims: int, g: Emitter, call: NodeCall
) -> np.ndarray:
    """GatherND / ScatterND indices with ``batch_dims`` spelled out and negatives resolved:
    (..., batch_dims + k) int64 for ScatterND / GatherND with batch_dims 0."""
    if g.batched:
        raise UnsupportedOpError(
            f"{call.node.op_type} node {call.node.name!r} indexes a data tensor with constant "
            "indices of a fixed batch; compiled graphs keep the batch free (explain this model "
            "with the engine)"
        )
    parts = nd_index(shape, indices, batch_dims)
    lead = np.shape(indices)[:-1]
    return np.stack([np.broadcast_to(p, lead) for p in parts], axis=-1).astype(np.int64)


@register_rule("GatherND", since=11)
class GatherND(OpRule):
    """y = data[indices] with ``batch_dims`` (opset 12 on; 0 before); the backward scatter-adds
    (repeated indices sum)."""

    constant_inputs = (1,)

    def forward(self, call: NodeCall) -> list[np.ndarray]:
        data, indices = call.inputs
        return [data[nd_index(data.shape, indices, call.attrs.get("batch_dims", 0))]]

    def vjp(self, call: NodeCall, grads: Sequence[Grad]) -> list[Grad]:
        (data, indices), dy = call.inputs, grads[0]
        assert dy is not None
        dx = np.zeros(np.shape(data), dy.dtype)
        np.add.at(dx, nd_index(dx.shape, indices, call.attrs.get("batch_dims", 0)), dy)
        return [dx, None]

    def emit(self, call: NodeCall, grads: Sequence[str | None], g: Emitter) -> list[str | None]:
        (data, indices), dy = call.inputs, grads[0]
        assert dy is not None
        index = _full_index(np.shape(data), indices, call.attrs.get("batch_dims", 0), g, call)
        zeros = g.zeros_like(call.node.input[0])
        return [g.op("ScatterND", zeros, g.const(index, np.int64, "nd"), dy, reduction="add"), None]


@register_rule("ScatterND", since=11)
class ScatterND(OpRule):
    """y = data with y[indices] = updates (``reduction`` none) or += updates (add, opset 16 on).
    The backward: data gets dy where nothing was written over it (everywhere for add), the
    updates get dy at their indices. Other reductions (mul, max, min) raise."""

    constant_inputs = (1,)

    def forward(self, call: NodeCall) -> list[np.ndarray]:
        data, indices, updates = call.inputs
        add = self._adds(call)
        y = np.array(data, copy=True)
        index = nd_index(y.shape, indices)
        if add:
            np.add.at(y, index, updates)
        else:
            y[index] = updates
        return [y]

    def vjp(self, call: NodeCall, grads: Sequence[Grad]) -> list[Grad]:
        (_, indices, updates), dy = call.inputs, grads[0]
        assert dy is not None
        index = nd_index(dy.shape, indices)
        out: list[Grad] = [None, None, None]
        if call.needs[0]:
            d_data = np.array(dy, copy=True)
            if not self._adds(call):
                d_data[index] = 0
            out[0] = d_data
        if call.needs[2]:
            out[2] = dy[index].reshape(np.shape(updates))
        return out

    def emit(self, call: NodeCall, grads: Sequence[str | None], g: Emitter) -> list[str | None]:
        (data, indices, _), dy = call.inputs, grads[0]
        assert dy is not None
        index = g.const(_full_index(np.shape(data), indices, 0, g, call), np.int64, "nd")
        out: list[str | None] = [None, None, None]
        if call.needs[0]:
            out[0] = dy
            if not self._adds(call):
                out[0] = g.op("ScatterND", dy, index, g.zeros_like(call.node.input[2]))
        if call.needs[2]:
            out[2] = g.op("GatherND", dy, index)
        return out

    @staticmethod
    def _adds(call: NodeCall) -> bool:
        reduction = call.attrs.get("reduction", "none")
        if reduction not in ("none", "add"):
            raise UnsupportedOpError(
                f"ScatterND node {call.node.name!r} with reduction={reduction!r}: the backward "
                "pass covers reduction 'none' and 'add'"
            )
        return reduction == "add"


@register_rule("Where", since=9)
class Where(OpRule):
    """y = X where the (constant) condition holds, else Y, broadcast; each branch gets dy where
    it was chosen."""

    constant_inputs = (0,)

    def forward(self, call: NodeCall) -> list[np.ndarray]:
        condition, x, y = call.inputs
        return [np.where(np.asarray(condition, bool), x, y)]

    def vjp(self, call: NodeCall, grads: Sequence[Grad]) -> list[Grad]:
        (condition, x, y), dy = call.inputs, grads[0]
        assert dy is not None
        chosen = np.asarray(condition, bool)
        zero = np.zeros((), dy.dtype)
        out: list[Grad] = [None, None, None]
        if call.needs[1]:
            out[1] = unbroadcast(np.where(chosen, dy, zero), np.shape(x))
        if call.needs[2]:
            out[2] = unbroadcast(np.where(chosen, zero, dy), np.shape(y))
        return out

    def emit(self, call: NodeCall, grads: Sequence[str | None], g: Emitter) -> list[str | None]:
        dy = grads[0]
        assert dy is not None
        shape = np.broadcast_shapes(*(np.shape(v) for v in call.inputs))
        chosen = g.op("Cast", call.node.input[0], to=onnx.TensorProto.BOOL)
        out: list[str | None] = [None, None, None]
        if call.needs[1]:
            out[1] = g.unbroadcast(g.masked(dy, chosen), shape, np.shape(call.inputs[1]))
        if call.needs[2]:
            out[2] = g.unbroadcast(
                g.masked(dy, g.op("Not", chosen)), shape, np.shape(call.inputs[2])
            )
        return out


@register_rule("Expand", since=8)
class Expand(OpRule):
    """x broadcast (both ways, as NumPy) with the constant ``shape``; the backward sums the
    cotangent back over the broadcast axes."""

    constant_inputs = (1,)

    def forward(self, call: NodeCall) -> list[np.ndarray]:
        x, shape = call.inputs
        target = np.broadcast_shapes(np.shape(x), tuple(int(d) for d in np.ravel(shape)))
        return [np.broadcast_to(x, target).copy()]

    def vjp(self, call: NodeCall, grads: Sequence[Grad]) -> list[Grad]:
        dy = grads[0]
        assert dy is not None
        return [unbroadcast(dy, np.shape(call.inputs[0])), None]

    def emit(self, call: NodeCall, grads: Sequence[str | None], g: Emitter) -> list[str | None]:
        dy = grads[0]
        assert dy is not None
        x, shape = call.inputs
        out = np.broadcast_shapes(np.shape(x), tuple(int(d) for d in np.ravel(shape)))
        return [g.unbroadcast(dy, out, np.shape(x)), None]


@register_rule("Tile", since=6)
class Tile(OpRule):
    """x repeated ``repeats[i]`` times along each axis i; the backward sums the copies."""

    constant_inputs = (1,)

    def forward(self, call: NodeCall) -> list[np.ndarray]:
        x, repeats = call.inputs
        return [np.tile(x, [int(r) for r in np.ravel(repeats)])]

    def vjp(self, call: NodeCall, grads: Sequence[Grad]) -> list[Grad]:
        (x, repeats), dy = call.inputs, grads[0]
        assert dy is not None
        shape = np.shape(x)
        split = [n for r, d in zip(np.ravel(repeats), shape) for n in (int(r), d)]
        summed = dy.reshape(split).sum(axis=tuple(range(0, 2 * len(shape), 2)))
        return [summed.reshape(shape), None]

    def emit(self, call: NodeCall, grads: Sequence[str | None], g: Emitter) -> list[str | None]:
        (x, repeats), dy = call.inputs, grads[0]
        assert dy is not None
        shape = np.shape(x)
        split = [n for r, d in zip(np.ravel(repeats), shape) for n in (int(r), d)]
        if g.batched:
            split[1] = -1  # the batch stays free
        summed = g.reduce_sum(
            g.op("Reshape", dy, g.ints(split)), list(range(0, 2 * len(shape), 2)), keepdims=False
        )
        return [summed, None]


class _Predicate(OpRule):
    """A comparison or logic op: a boolean output (a Where's condition computed from the image,
    a mask) that carries no gradient; its inputs get none."""

    fn = staticmethod(np.equal)

    def forward(self, call: NodeCall) -> list[np.ndarray]:
        return [np.asarray(self.fn(*call.inputs))]

    def vjp(self, call: NodeCall, grads: Sequence[Grad]) -> list[Grad]:
        return [None] * len(call.inputs)

    def emit(self, call: NodeCall, grads: Sequence[str | None], g: Emitter) -> list[str | None]:
        return [None] * len(call.inputs)


for _op, _since, _fn in (
    ("Equal", 11, np.equal),
    ("Greater", 9, np.greater),
    ("Less", 9, np.less),
    ("GreaterOrEqual", 12, np.greater_equal),
    ("LessOrEqual", 12, np.less_equal),
    ("Not", 1, np.logical_not),
    ("And", 7, np.logical_and),
    ("Or", 7, np.logical_or),
):
    register_rule(_op, since=_since)(type(_op, (_Predicate,), {"fn": staticmethod(_fn)}))
