"""Rules for ops that move values without changing them (reshapes) and reductions."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import onnx

from ...errors import UnsupportedOpError
from ...graph import attributes
from ..registry import Grad, NodeCall, OpRule, register_rule
from .common import pad_maps, reshape_target, slice_index

if TYPE_CHECKING:
    from ...model import Model
    from ..emitter import Emitter


def emit_index_map(
    g: Emitter, grad: str, axis: int, source: np.ndarray, size: int, rank: int, node: str
) -> str:
    """The backward of an index map along ``axis`` (output position j reads input position
    ``source[j]``, -1 for none): a Slice (and Pad) when the read positions are one increasing
    run, else a one-hot matrix product (repeats add up)."""
    if axis % rank == 0 and g.batched:
        raise UnsupportedOpError(
            f"node {node!r} slices or pads the batch axis; compiled graphs keep the batch free "
            "(explain this model with the engine)"
        )
    source = np.asarray(source, np.int64)
    kept = np.flatnonzero(source >= 0)
    run = source[kept]
    contiguous = len(kept) > 0 and np.array_equal(kept, np.arange(kept[0], kept[0] + len(kept)))
    if contiguous and np.array_equal(run, np.arange(run[0], run[0] + len(run))):
        out = grad
        if kept[0] > 0 or kept[-1] + 1 < len(source):
            out = g.op("Slice", out, g.ints([kept[0]]), g.ints([kept[-1] + 1]), g.ints([axis]))
        before, after = int(run[0]), size - int(run[-1]) - 1
        if before or after:
            pads = [0] * (2 * rank)
            pads[axis], pads[rank + axis] = before, after
            out = g.op("Pad", out, g.ints(pads), mode="constant")
        return out
    matrix = np.zeros((size, len(source)), np.float32)
    np.add.at(matrix, (run, kept), 1.0)
    return g.axis_matmul(grad, rank, axis, matrix)


class _SameValues(OpRule):
    """Ops that only change the shape: the cotangent is dy in the input's shape."""

    constant_inputs = (1,)  # the target shape or the axes
    reads_inputs = reads_outputs = False  # shapes only

    def vjp(self, call: NodeCall, grads: Sequence[Grad]) -> list[Grad]:
        dy = grads[0]
        assert dy is not None
        return [dy.reshape(call.inputs[0].shape)] + [None] * (len(call.inputs) - 1)

    def emit(self, call: NodeCall, grads: Sequence[str | None], g: Emitter) -> list[str | None]:
        dy = grads[0]
        assert dy is not None
        dx = g.reshape_like(dy, call.node.input[0])
        return [dx] + [None] * (len(call.inputs) - 1)


@register_rule("Reshape")
class Reshape(_SameValues):
    def forward(self, call: NodeCall) -> list[np.ndarray]:
        x, shape = call.inputs[0], call.inputs[1]
        return [x.reshape(reshape_target(shape, x.shape, call.attrs.get("allowzero", 0)))]


@register_rule("Flatten")
class Flatten(_SameValues):
    def forward(self, call: NodeCall) -> list[np.ndarray]:
        x = call.inputs[0]
        axis = call.attrs.get("axis", 1) % max(x.ndim, 1)
        return [x.reshape(int(np.prod(x.shape[:axis])), -1)]


class _Reduce(OpRule):
    """Shared by the ReduceMean/ReduceSum rules: axes from an attribute (older opsets) or
    from the second input (ReduceSum since 13, ReduceMean since 18)."""

    constant_inputs = (1,)
    reads_inputs = reads_outputs = False  # shapes (and the constant axes) only
    axes_from_input = False
    mean = False

    def check(self, node: onnx.NodeProto, model: Model) -> None:
        """keepdims / noop_with_empty_axes are 0 or 1: onnxruntime keeps the axes only for 1,
        a truth test for any other value would disagree with it."""
        attrs = attributes(node)
        for flag in ("keepdims", "noop_with_empty_axes"):
            if attrs.get(flag, 0) not in (0, 1):
                raise UnsupportedOpError(
                    f"{node.op_type} node {node.name!r}: {flag}={attrs[flag]} is not 0 or 1 "
                    "(the ONNX spec's values); fix the attribute in the model"
                )

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

    def emit(self, call: NodeCall, grads: Sequence[str | None], g: Emitter) -> list[str | None]:
        x, dy = call.inputs[0], grads[0]
        assert dy is not None
        axes = self.axes(call)
        if axes and not call.attrs.get("keepdims", 1):
            dy = g.op("Unsqueeze", dy, g.ints(axes))
        if self.mean and axes:
            dy = g.op("Div", dy, g.scalar(int(np.prod([x.shape[a] for a in axes]))))
        dx = g.op("Expand", dy, g.shape_of(call.node.input[0]))
        return [dx, None][: len(call.inputs)]


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


@register_rule("Transpose")
class Transpose(OpRule):
    def forward(self, call: NodeCall) -> list[np.ndarray]:
        x = call.inputs[0]
        return [np.transpose(x, self._perm(call, x.ndim))]

    def vjp(self, call: NodeCall, grads: Sequence[Grad]) -> list[Grad]:
        dy = grads[0]
        assert dy is not None
        return [np.transpose(dy, np.argsort(self._perm(call, dy.ndim)))]

    def emit(self, call: NodeCall, grads: Sequence[str | None], g: Emitter) -> list[str | None]:
        dy = grads[0]
        assert dy is not None
        perm = np.argsort(self._perm(call, np.ndim(call.inputs[0])))
        return [g.op("Transpose", dy, perm=[int(p) for p in perm])]

    @staticmethod
    def _perm(call: NodeCall, ndim: int) -> list[int]:
        return list(call.attrs.get("perm", range(ndim - 1, -1, -1)))


def _given_axes(call: NodeCall, from_input: bool) -> list[int] | None:
    """``axes`` from the attribute (older opsets) or the optional second input."""
    if from_input:
        given = call.inputs[1] if len(call.inputs) > 1 else None
    else:
        given = call.attrs.get("axes")
    return None if given is None else [int(a) for a in np.asarray(given).ravel()]


class _Squeeze(_SameValues):
    axes_from_input = False

    def forward(self, call: NodeCall) -> list[np.ndarray]:
        x = call.inputs[0]
        axes = _given_axes(call, self.axes_from_input)
        if axes is None or not axes:
            return [np.squeeze(x)]
        return [np.squeeze(x, axis=tuple(a % x.ndim for a in axes))]


@register_rule("Squeeze")
class Squeeze(_Squeeze):
    pass


@register_rule("Squeeze", since=13)
class Squeeze13(_Squeeze):
    axes_from_input = True


class _Unsqueeze(_SameValues):
    axes_from_input = False

    def forward(self, call: NodeCall) -> list[np.ndarray]:
        x = call.inputs[0]
        axes = _given_axes(call, self.axes_from_input) or []
        rank = x.ndim + len(axes)
        return [np.expand_dims(x, tuple(sorted(a % rank for a in axes)))]


@register_rule("Unsqueeze")
class Unsqueeze(_Unsqueeze):
    pass


@register_rule("Unsqueeze", since=13)
class Unsqueeze13(_Unsqueeze):
    axes_from_input = True


@register_rule("Concat")
class Concat(OpRule):
    def forward(self, call: NodeCall) -> list[np.ndarray]:
        return [np.concatenate(call.inputs, axis=call.attrs["axis"])]

    def vjp(self, call: NodeCall, grads: Sequence[Grad]) -> list[Grad]:
        dy = grads[0]
        assert dy is not None
        axis = call.attrs["axis"] % dy.ndim
        bounds = np.cumsum([x.shape[axis] for x in call.inputs])[:-1]
        parts = np.split(dy, bounds, axis=axis)
        return [p if need else None for p, need in zip(parts, call.needs)]

    def emit(self, call: NodeCall, grads: Sequence[str | None], g: Emitter) -> list[str | None]:
        dy = grads[0]
        assert dy is not None
        rank = np.ndim(call.inputs[0])
        axis = call.attrs["axis"] % rank
        sizes = [np.shape(x)[axis] for x in call.inputs]
        if len(sizes) == 1:
            return [dy if call.needs[0] else None]
        parts = g.add("Split", [dy, g.ints(sizes)], len(sizes), axis=axis)
        return [p if need else None for p, need in zip(parts, call.needs)]


class _Split(OpRule):
    """Split along ``axis``: sizes from the ``split`` attribute (before 13), the second input
    (13 on), or ``num_outputs`` (18 on; the last part may be smaller); else equal parts."""

    constant_inputs = (1,)
    split_from_input = False

    def sizes(self, call: NodeCall, length: int) -> list[int]:
        count = len(call.node.output)
        given = call.inputs[1] if self.split_from_input and len(call.inputs) > 1 else None
        if not self.split_from_input:
            given = call.attrs.get("split")
        if given is not None and len(given):
            return [int(s) for s in np.asarray(given).ravel()]
        if "num_outputs" in call.attrs:
            part = -(-length // call.attrs["num_outputs"])
            return [min(part, length - i * part) for i in range(call.attrs["num_outputs"])]
        return [length // count] * count

    def forward(self, call: NodeCall) -> list[np.ndarray]:
        x = call.inputs[0]
        axis = call.attrs.get("axis", 0) % x.ndim
        return np.split(x, np.cumsum(self.sizes(call, x.shape[axis]))[:-1], axis=axis)

    def vjp(self, call: NodeCall, grads: Sequence[Grad]) -> list[Grad]:
        x = call.inputs[0]
        axis = call.attrs.get("axis", 0) % x.ndim
        dtype = next(g.dtype for g in grads if g is not None)
        parts = []
        for size, g in zip(self.sizes(call, x.shape[axis]), grads):
            shape = list(x.shape)
            shape[axis] = size
            parts.append(np.zeros(shape, dtype) if g is None else g)
        return [np.concatenate(parts, axis=axis), None][: len(call.inputs)]

    def emit(self, call: NodeCall, grads: Sequence[str | None], g: Emitter) -> list[str | None]:
        axis = call.attrs.get("axis", 0) % np.ndim(call.inputs[0])
        parts = [
            grad if grad is not None else g.zeros_like(output)
            for grad, output in zip(grads, call.node.output)
        ]
        dx = parts[0] if len(parts) == 1 else g.op("Concat", *parts, axis=axis)
        return [dx, None][: len(call.inputs)]


@register_rule("Split", since=2)
class Split(_Split):
    pass


@register_rule("Split", since=13)
class Split13(_Split):
    split_from_input = True


@register_rule("Split", since=18)
class Split18(_Split):
    """As in opset 13, plus ``num_outputs``."""

    split_from_input = True


class _Slice(OpRule):
    constant_inputs = (1, 2, 3, 4)

    def index(self, call: NodeCall) -> tuple[slice, ...]:
        raise NotImplementedError

    def forward(self, call: NodeCall) -> list[np.ndarray]:
        return [call.inputs[0][self.index(call)]]

    def vjp(self, call: NodeCall, grads: Sequence[Grad]) -> list[Grad]:
        x, dy = call.inputs[0], grads[0]
        assert dy is not None
        dx = np.zeros(x.shape, dy.dtype)
        dx[self.index(call)] = dy
        return [dx] + [None] * (len(call.inputs) - 1)

    def emit(self, call: NodeCall, grads: Sequence[str | None], g: Emitter) -> list[str | None]:
        x, dy = call.inputs[0], grads[0]
        assert dy is not None
        shape = np.shape(x)
        out = dy
        for axis, part in enumerate(self.index(call)):
            source = np.arange(shape[axis])[part]
            if len(source) != shape[axis] or not np.array_equal(source, np.arange(shape[axis])):
                out = emit_index_map(g, out, axis, source, shape[axis], len(shape), call.node.name)
        return [out] + [None] * (len(call.inputs) - 1)


@register_rule("Slice")
class Slice(_Slice):
    """Slice with ``starts`` / ``ends`` / ``axes`` attributes (before opset 10)."""

    def index(self, call: NodeCall) -> tuple[slice, ...]:
        a = call.attrs
        return slice_index(call.inputs[0].shape, a["starts"], a["ends"], a.get("axes"), None)


@register_rule("Slice", since=10)
class Slice10(_Slice):
    """Slice with ``starts`` / ``ends`` / ``axes`` / ``steps`` inputs (opset 10 on)."""

    def index(self, call: NodeCall) -> tuple[slice, ...]:
        x, starts, ends, *rest = call.inputs
        axes, steps = [*rest, None, None][:2]
        return slice_index(x.shape, starts, ends, axes, steps)


class _Pad(OpRule):
    """Pad (modes constant / reflect / edge, wrap from opset 19), one axis at a time through
    index maps; the backward scatter-adds through the same maps in reverse."""

    constant_inputs = (1, 2, 3)

    def params(self, call: NodeCall) -> tuple[Sequence[int], float, Sequence[int] | None]:
        raise NotImplementedError

    def forward(self, call: NodeCall) -> list[np.ndarray]:
        x = call.inputs[0]
        pads, value, axes = self.params(call)
        y = x
        for axis, source in pad_maps(x.shape, pads, call.attrs.get("mode", "constant"), axes):
            y = np.take(y, np.maximum(source, 0), axis=axis)
            if (source < 0).any():
                fill: list[slice | np.ndarray] = [slice(None)] * y.ndim
                fill[axis] = source < 0
                y[tuple(fill)] = value
        return [y]

    def vjp(self, call: NodeCall, grads: Sequence[Grad]) -> list[Grad]:
        x, dy = call.inputs[0], grads[0]
        assert dy is not None
        pads, _, axes = self.params(call)
        maps = pad_maps(x.shape, pads, call.attrs.get("mode", "constant"), axes)
        g = dy
        for axis, source in reversed(maps):
            moved = np.moveaxis(g, axis, 0)
            out = np.zeros((x.shape[axis], *moved.shape[1:]), dy.dtype)
            keep = source >= 0
            np.add.at(out, source[keep], moved[keep])
            g = np.moveaxis(out, 0, axis)
        return [g] + [None] * (len(call.inputs) - 1)

    def emit(self, call: NodeCall, grads: Sequence[str | None], g: Emitter) -> list[str | None]:
        x, dy = call.inputs[0], grads[0]
        assert dy is not None
        pads, _, axes = self.params(call)
        shape = np.shape(x)
        maps = pad_maps(shape, pads, call.attrs.get("mode", "constant"), axes)
        out = dy
        for axis, source in reversed(maps):
            out = emit_index_map(g, out, axis, source, shape[axis], len(shape), call.node.name)
        return [out] + [None] * (len(call.inputs) - 1)


@register_rule("Pad", since=2)
class Pad(_Pad):
    """Pad with ``pads`` and ``value`` attributes (opset 2-10)."""

    def params(self, call: NodeCall) -> tuple[Sequence[int], float, Sequence[int] | None]:
        return call.attrs["pads"], float(call.attrs.get("value", 0.0)), None


@register_rule("Pad", since=11)
class Pad11(_Pad):
    """Pad with ``pads``, optional ``constant_value`` and (opset 18 on) ``axes`` inputs."""

    def params(self, call: NodeCall) -> tuple[Sequence[int], float, Sequence[int] | None]:
        pads, *rest = call.inputs[1:]
        value, axes = [*rest, None, None][:2]
        fill = 0.0 if value is None or np.size(value) == 0 else float(np.asarray(value).ravel()[0])
        pad_list = [int(p) for p in np.asarray(pads).ravel()]
        axis_list = None if axes is None else [int(a) for a in np.asarray(axes).ravel()]
        return pad_list, fill, axis_list


@register_rule("Gather")
class Gather(OpRule):
    """Gather on a data tensor (taking rows / channels); the backward scatter-adds (repeated
    indices sum). Gathers on shapes never reach the backward pass."""

    constant_inputs = (1,)

    def forward(self, call: NodeCall) -> list[np.ndarray]:
        x, indices = call.inputs
        axis = call.attrs.get("axis", 0) % x.ndim
        return [np.take(x, self._indices(indices, x.shape[axis]), axis=axis)]

    def vjp(self, call: NodeCall, grads: Sequence[Grad]) -> list[Grad]:
        (x, indices), dy = call.inputs, grads[0]
        assert dy is not None
        axis = call.attrs.get("axis", 0) % x.ndim
        index = self._indices(indices, x.shape[axis])
        dx = np.zeros(x.shape, dy.dtype)
        moved = np.moveaxis(dy, list(range(axis, axis + index.ndim)), list(range(index.ndim)))
        np.add.at(np.moveaxis(dx, axis, 0), index, moved)
        return [dx, None]

    def emit(self, call: NodeCall, grads: Sequence[str | None], g: Emitter) -> list[str | None]:
        (x, indices), dy = call.inputs, grads[0]
        assert dy is not None
        rank = np.ndim(x)
        axis = call.attrs.get("axis", 0) % rank
        index = self._indices(indices, np.shape(x)[axis]).reshape(-1)
        if np.ndim(indices) == 0:
            dy = g.op("Unsqueeze", dy, g.ints([axis]))
        elif np.ndim(indices) > 1:
            target = [0] * axis + [len(index)] + list(np.shape(x)[axis + 1 :])
            dy = g.op("Reshape", dy, g.ints(target))
        return [emit_index_map(g, dy, axis, index, np.shape(x)[axis], rank, call.node.name), None]

    @staticmethod
    def _indices(indices: np.ndarray, dim: int) -> np.ndarray:
        index = np.asarray(indices).astype(np.int64)
        return np.where(index < 0, index + dim, index)
