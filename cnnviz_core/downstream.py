"""The rest of a graph after one tensor, run on changed values of that tensor.

:class:`Downstream` cuts a model at an intermediate tensor (graph surgery): the nodes that
depend on it become a sub-model whose inputs are that tensor and the image-path tensors
from before the cut that those nodes read (skip connections), fed with one original image's
values repeated per row. What has no batch axis is computed inside the sub-model instead:
shape computations (a ``Shape`` of a tensor after the cut must see the run's batch, not the
original image's) and weights computed from constants. Ablation-CAM runs it on copies of a
layer's activations with one channel zeroed each, without re-running the layers before the
cut.

Shape convention: the batch is the first axis of every tensor.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator, Mapping, Sequence

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper

from . import graph
from .errors import InputError
from .model import Model, run_session

#: sub-models already built, per model and (start, outputs)
_CACHE: weakref.WeakKeyDictionary[Model, dict[tuple, Downstream]] = weakref.WeakKeyDictionary()


class Downstream:
    """The part of ``model`` downstream of tensor ``start`` that computes ``outputs``.

    Args:
        model: the model.
        start: the tensor to cut at (layer name or alias).
        outputs: tensors (layer names or aliases) wanted from changed ``start`` values.

    Attributes:
        start: the cut's tensor name.
        outputs: the asked tensors that depend on ``start`` (the others are unaffected by
            any change of it: :meth:`base` gives their value).
        asked: every asked tensor (graph names).
        side: the image-path tensors from before the cut the sub-model reads (skip
            connections; batch first), taken from the original image.
        max_batch: rows per sub-model run under the model's memory budget.
    """

    def __init__(self, model: Model, start: str, outputs: Sequence[str]) -> None:
        self.model = model
        self.start = model.tensor_name(start)
        asked = list(dict.fromkeys(model.tensor_name(o) for o in outputs))
        proto = model.runnable
        downstream = graph.data_nodes(proto, self.start)
        made = {o for node in downstream for o in node.output if o}
        self.outputs = [o for o in asked if o in made or o == self.start]
        self.asked = asked
        # image-path tensors (batch first): the only ones fed from the original image
        batched = {o for node in graph.data_nodes(proto, model.input_name) for o in node.output}
        batched.add(model.input_name)
        producer = {o: node for node in proto.graph.node for o in node.output if o}
        initializers = {i.name: i for i in proto.graph.initializer}
        needed: dict[int, onnx.NodeProto] = {}
        side: list[str] = []
        stack_outputs = [o for o in self.outputs if o != self.start]  # start: passed through
        stack = list(stack_outputs)
        seen: set[str] = set()
        while stack:
            name = stack.pop()
            if name in seen or not name or name == self.start or name in initializers:
                continue
            seen.add(name)
            if name in made or (name in producer and name not in batched):
                # after the cut, or without a batch axis (shape plumbing, computed weights)
                node = producer[name]
                if id(node) not in needed:
                    needed[id(node)] = node
                    stack.extend(graph.node_reads(node))
            else:  # an image-path tensor from before the cut, or another graph input
                side.append(name)
        self.side = sorted(side)
        nodes = [node for node in proto.graph.node if id(node) in needed]
        used = {n for node in nodes for n in graph.node_reads(node)}
        types = model._types
        inputs = [
            helper.make_tensor_value_info(
                name, types.get(name, (onnx.TensorProto.FLOAT, None))[0], None
            )
            for name in [self.start, *self.side]
        ]
        sub = helper.make_graph(
            nodes,
            "downstream",
            inputs,
            [helper.make_tensor_value_info(o, types[o][0], None) for o in stack_outputs],
            [initializers[n] for n in sorted(used) if n in initializers],
        )
        self.proto = helper.make_model(sub, opset_imports=list(proto.opset_import))
        self.proto.ir_version = proto.ir_version
        self._session: ort.InferenceSession | None = None
        self._base_session: ort.InferenceSession | None = None
        fed = [self.start, *self.side]  # the fed copies count too
        per_row = sum(self._row_bytes(o) for o in [*fed, *(o for n in nodes for o in n.output)])
        # a model that runs one image at a time keeps its fixed batch after the cut too
        self.max_batch = max(1, model.memory_budget // max(per_row, 1)) if model.batched else 1

    @classmethod
    def of(cls, model: Model, start: str, outputs: Sequence[str]) -> Downstream:
        """The cached :class:`Downstream` of ``model`` for (``start``, ``outputs``)."""
        key = (model.tensor_name(start), tuple(sorted({model.tensor_name(o) for o in outputs})))
        per_model = _CACHE.setdefault(model, {})
        if key not in per_model:
            per_model[key] = cls(model, start, outputs)
        return per_model[key]

    def base(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """One forward of the whole model on ``batch``: the cut tensor, the side tensors and
        every asked output (the graph input, when the sub-model reads it, is ``batch``)."""
        batch = self.model.prepare(batch)
        fetch = [
            n
            for n in dict.fromkeys([self.start, *self.side, *self.asked])
            if n != self.model.input_name
        ]
        if self._base_session is None:
            exposed = graph.expose(self.model.runnable, fetch, self.model._types)
            self._base_session = self.model.session_factory(exposed, spin=False)
        values: dict[str, list[np.ndarray]] = {}
        for rows in _chunks(len(batch), self.model.max_batch):
            feed = {self.model.input_name: batch[rows]}
            got = run_session(self._base_session, fetch, feed, f"model {self.model.name!r}")
            for name, value in zip(fetch, got):
                values.setdefault(name, []).append(value)
        result = {
            name: np.concatenate(parts) if self.model.depends_on_input(name) else parts[0]
            for name, parts in values.items()
        }
        result[self.model.input_name] = batch
        return result

    def run(self, start: np.ndarray, base: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The affected outputs (:attr:`outputs`) for each row of ``start`` (B, ...): the
        side tensors come from ``base`` (one image's values, batch 1, as :meth:`base` gives
        them for ``batch[i : i + 1]``), repeated per row.

        Raises:
            InputError: ``base`` lacks a side tensor or holds more than one image.
        """
        for name in self.side:
            if name not in base or len(base[name]) != 1:
                raise InputError(
                    f"Downstream.run needs base[{name!r}] with one image (from base(image)); "
                    f"got {None if name not in base else base[name].shape}"
                )
        fetch = [o for o in self.outputs if o != self.start]
        if self._session is None and fetch:
            self._session = self.model.session_factory(self.proto, spin=False)
        parts: dict[str, list[np.ndarray]] = {o: [] for o in fetch}
        for rows in _chunks(len(start), self.max_batch):
            chunk = np.ascontiguousarray(start[rows])
            feeds = {self.start: chunk}
            feeds.update({s: np.repeat(base[s], len(chunk), axis=0) for s in self.side})
            got = []
            if self._session is not None:
                what = f"model {self.model.name!r} after its layer {self.start!r}"
                got = run_session(self._session, fetch, feeds, what)
            for name, value in zip(fetch, got):
                parts[name].append(value)
        out = {name: np.concatenate(values) for name, values in parts.items()}
        if self.start in self.outputs:
            out[self.start] = start
        return out

    def _row_bytes(self, name: str) -> int:
        elem, shape = self.model._types.get(name, (onnx.TensorProto.FLOAT, None))
        if not self.model.depends_on_input(name):
            return 0  # the same for every row (a computed weight or shape)
        if not shape or not all(isinstance(d, int) for d in shape[1:]):
            return 0
        itemsize = np.dtype(helper.tensor_dtype_to_np_dtype(elem)).itemsize
        return int(np.prod(shape[1:], dtype=np.int64)) * itemsize


def _chunks(total: int, step: int) -> Iterator[slice]:
    for begin in range(0, total, step):
        yield slice(begin, min(begin + step, total))


__all__ = ["Downstream"]
