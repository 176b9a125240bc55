"""The backward pass as ONNX nodes: each rule's :meth:`~.registry.OpRule.emit` writes its VJP
into an :class:`Emitter`, and :class:`GraphBuilder` joins a model's forward nodes, the seeds
of its targets and the emitted backward into one standalone ONNX graph (no cnnviz, no torch
needed to run it).

    builder = GraphBuilder(model)                       # forward at opset >= 17
    x = builder.add_input(model.input_name, TensorProto.FLOAT, ["N", *model.input_shape])
    names = builder.forward(x)                          # model tensor -> graph tensor
    classes = builder.predicted(names)                  # int64 (N,)
    seeds = builder.class_seeds(names, classes)
    grads = builder.backward(names, seeds, [model.input_name], mode="guided")
    builder.add_output("grad", grads[model.input_name])
    proto = builder.to_model()

The same rule table serves both faces: ``vjp`` (NumPy, float64 oracle) and ``emit`` (ONNX).
Emission is shape-specialised: shapes (all but the batch axis) and constant inputs come from
one probe forward of the model, so the graph takes any batch size at the model's image size.
Modes: ``gradient``, ``guided``, ``deconvnet`` (any other raises :class:`UnsupportedOpError`).
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, version_converter

from ..errors import InputError, ModelLoadError, UnsupportedOpError
from ..graph import attributes
from ..model import Model, run_session
from ..targets import (
    ResolvedTarget,
    Targets,
    cotangents,
    resolve_known,
    resolve_targets,
    score_tensor,
    seed_tensors,
    seeded_scores,
)
from .emitter import EMITTED_MODES, MIN_OPSET, Emitter, Name, emitted_mode
from .plan import BackwardPlan, Gradients, check_cotangent, forward_values, plan_backward
from .registry import NodeCall, OpRule


def emit_rule(
    rule: OpRule, call: NodeCall, grads: Sequence[Name | None], emitter: Emitter
) -> list[Name | None]:
    """The rule's emitted VJP, checked to give one name (or None) per input of the node."""
    node = call.node
    if type(rule).emit is OpRule.emit:
        label = f"{node.name!r} " if node.name else ""
        raise UnsupportedOpError(
            f"the backward rule {type(rule).__name__} for ONNX op {node.op_type!r} (node "
            f"{label}making {node.output[0]!r}) has no ONNX emission; explain this model with "
            "the engine (cnnviz.explain) instead of a compiled graph"
        )
    in_grads = rule.emit(call, grads, emitter)
    if len(in_grads) != len(call.inputs):
        raise TypeError(
            f"the emission of {type(rule).__name__} for ONNX op {node.op_type!r} returned "
            f"{len(in_grads)} input cotangents for {len(call.inputs)} inputs"
        )
    return list(in_grads)


def emit_backward(
    emitter: Emitter,
    plan: BackwardPlan,
    values: Mapping[str, np.ndarray],
    seeds: Mapping[str, Name],
    wrt: Sequence[str],
    mode: str = "gradient",
    names: Mapping[str, Name] | None = None,
) -> dict[str, Name]:
    """Emit the backward pass of ``plan`` from ``seeds`` (model tensor -> cotangent tensor in
    the graph) and return the cotangent tensor of each model tensor of ``wrt`` (zeros where
    nothing flows). ``values`` are a probe forward's (shapes, constant inputs); ``names``
    maps model tensors to graph tensors (a renamed forward copy; identity when None)."""
    emitted_mode(mode)
    rename = dict(names or {})

    def graph_name(tensor: str) -> str:
        return rename.get(tensor, tensor) if tensor else tensor

    grads: dict[str, Name] = {}

    def accumulate(tensor: str, grad: Name) -> None:
        grads[tensor] = emitter.op("Add", grads[tensor], grad) if tensor in grads else grad

    for tensor, seed in seeds.items():
        accumulate(tensor, seed)
    for node, rule, out_grads, needs in plan.reverse_steps(grads):
        renamed = onnx.NodeProto()
        renamed.CopyFrom(node)
        renamed.ClearField("input")
        renamed.ClearField("output")
        renamed.input.extend(graph_name(i) for i in node.input)
        renamed.output.extend(graph_name(o) for o in node.output)
        call = NodeCall(
            renamed,
            attributes(node),
            [values.get(i) if i else None for i in node.input],
            [values[o] for o in node.output if o in values],
            needs,
            mode,  # type: ignore[arg-type]  # checked by emitted_mode
            plan.opset,
            plan.sessions,
        )
        for name, grad, need in zip(node.input, emit_rule(rule, call, out_grads, emitter), needs):
            if need and grad is not None:
                accumulate(name, grad)
    result = {}
    for tensor in wrt:
        result[tensor] = (
            grads[tensor] if tensor in grads else emitter.zeros_like(graph_name(tensor))
        )
    return result


# ------------------------------------------------------------------------------ the graph


def _default_opset(proto: onnx.ModelProto) -> int:
    return next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 13)


#: converted copies of models older than the emission's opset, by (model, opset)
_converted: weakref.WeakKeyDictionary[Model, dict[int, Model]] = weakref.WeakKeyDictionary()


def at_least_opset(model: Model, opset: int = MIN_OPSET) -> Model:
    """``model`` itself when its opset is at least ``opset``, else a copy converted with
    ``onnx.version_converter`` (same preprocessing, labels and device; made once per model)."""
    if _default_opset(model.runnable) >= opset:
        return model
    known = _converted.setdefault(model, {})
    if opset not in known:
        known[opset] = _convert(model, opset)
    return known[opset]


def _convert(model: Model, opset: int) -> Model:
    proto = model.runnable
    if proto.ir_version < 4:
        # before IR 4 every initializer must also be a graph input, and the converter
        # checks that (Model's symbolic-batch shapes are initializers only); the file
        # format of IR 4 holds the same graph
        proto = onnx.ModelProto()
        proto.CopyFrom(model.runnable)
        proto.ir_version = 4
    try:
        converted = version_converter.convert_version(proto, opset)
    except Exception as error:  # the converter raises bare RuntimeErrors / ValueErrors
        raise UnsupportedOpError(
            f"model {model.name!r} is opset {_default_opset(model.runnable)}; compiled graphs "
            f"need opset {opset} or later and onnx.version_converter could not convert it "
            f"({error}); re-export the model at opset {opset}"
        ) from error
    return model.with_graph(converted)


class GraphBuilder(Emitter):
    """One standalone ONNX graph built from a model: inputs, forward copies, seeds, backward
    passes, outputs (see the module doc).

    Args:
        model: the model (converted to :data:`MIN_OPSET` when older: see :func:`at_least_opset`).
        probe_batch: images per probe forward (shapes and constants for the emission).
        image_shape: (C, H, W) the graph is specialised to (default: the model's input
            shape at its preprocessing size).

    Raises:
        InputError: a model that is not float32.
    """

    def __init__(
        self,
        model: Model,
        probe_batch: int = 2,
        image_shape: Sequence[int] | None = None,
    ):
        half = [
            t.name
            for t in model.runnable.graph.initializer
            if t.data_type in (TensorProto.FLOAT16, TensorProto.BFLOAT16, TensorProto.DOUBLE)
        ]
        if np.dtype(model.input_dtype) != np.float32 or half:
            raise InputError(
                f"model {model.name!r} computes in {np.dtype(model.input_dtype).name} (input) "
                f"{'with non-float32 weights such as ' + repr(half[0]) if half else ''}; "
                "compiled graphs are float32: convert the model to float32 first (e.g. "
                "onnxconverter_common.float16.convert_float16_to_float32), or explain it with "
                "the engine"
            )
        self.model = at_least_opset(model)
        #: the model as given (its tensor names are the ones targets name)
        self.given = model
        #: (C, H, W) of one input image the graph is specialised to
        self.image_shape = tuple(image_shape or self.model.input_shape)
        proto = self.model.runnable
        taken = [t for n in proto.graph.node for t in [*n.input, *n.output]]
        taken += [i.name for i in proto.graph.initializer] + [i.name for i in proto.graph.input]
        super().__init__(_default_opset(proto), "cnnviz", taken, self.model.constants)
        self.batched = True
        self.inputs: list[onnx.ValueInfoProto] = []
        self.outputs: list[onnx.ValueInfoProto] = []
        self._forwards = 0
        self._probe_batch = probe_batch
        self._probes: dict[tuple[str, ...], tuple[BackwardPlan, dict[str, np.ndarray]]] = {}
        self._dims: dict[str, list[int | str]] = {}
        self._constants_added = False

    # ------------------------------------------------------------------------ interface

    def add_input(self, name: str, elem_type: int, shape: Sequence[int | str]) -> Name:
        """A graph input (``elem_type`` a TensorProto type)."""
        self.inputs.append(helper.make_tensor_value_info(name, elem_type, list(shape)))
        self._taken.add(name)
        return name

    def add_output(
        self,
        name: str,
        tensor: Name,
        elem_type: int = TensorProto.FLOAT,
        shape: Sequence | None = None,
    ) -> None:
        """A graph output named ``name`` holding ``tensor`` (an Identity when they differ)."""
        if name != tensor:
            self.add_node("Identity", [tensor], [name])
        self.outputs.append(helper.make_tensor_value_info(name, elem_type, shape))

    def forward(self, x: Name) -> dict[str, Name]:
        """The model's nodes applied to ``x`` (N, C, H, W): the first copy keeps the model's
        tensor names, later ones are renamed. Returns model tensor -> graph tensor."""
        proto = self.model.runnable
        self._add_constants()
        first = self._forwards == 0
        self._forwards += 1
        names: dict[str, Name] = {self.model.input_name: x}
        constants = {i.name for i in proto.graph.initializer}
        for node in proto.graph.node:
            for tensor in node.output:
                if tensor and tensor not in names:
                    if first or tensor in constants or not self.model.depends_on_input(tensor):
                        names[tensor] = tensor
                    else:
                        names[tensor] = self.fresh(f"f{self._forwards}/{tensor.split('/')[-1]}")
        for node in proto.graph.node:
            if first or any(self.model.depends_on_input(o) for o in node.output if o):
                copy = onnx.NodeProto()
                copy.CopyFrom(node)
                copy.ClearField("input")
                copy.ClearField("output")
                copy.input.extend(names.get(i, i) if i else i for i in node.input)
                copy.output.extend(names.get(o, o) if o else o for o in node.output)
                if not first:
                    copy.name = self.fresh(f"f{self._forwards}_node")
                self.nodes.append(copy)
                self.ops.add(copy.op_type)
        return names

    def score_tensor(self) -> str:
        """The class-score tensor, as the given model names it (an opset conversion may put
        a Flatten before the softmax, whose output holds the same scores under a new name;
        :func:`_check_names_kept` refuses a conversion that drops the tensor)."""
        return score_tensor(self.given)

    def predicted(self, names: Mapping[str, Name]) -> Name:
        """int64 (N,): the argmax of the class scores (the first maximum, as NumPy)."""
        scores = names[self.score_tensor()]
        flat = self.op("Reshape", scores, self.ints([0, -1]))
        return self.op("ArgMax", flat, axis=1, keepdims=0, select_last_index=0)

    def constant_classes(self, like: Name, index: int) -> Name:
        """int64 (N,) filled with ``index``, N from the batch of ``like``."""
        n = self.op("Slice", self.shape_of(like), self.ints([0]), self.ints([1]))
        return self.op("Expand", self.const([index], np.int64, "class"), n)

    def class_seeds(self, names: Mapping[str, Name], classes: Name) -> dict[str, Name]:
        """The seeds of class targets ``classes`` (int64 (N,)): one-hot on the flattened
        class scores (:func:`~cnnviz_core.targets.one_hot_flat`)."""
        tensor = self.score_tensor()
        _, values = self.probe([tensor])
        depth = int(np.prod(values[tensor].shape[1:]))
        hot = self.op(
            "OneHot", classes, self.const(depth, np.int64, "depth"), self.const([0.0, 1.0]), axis=-1
        )
        return {tensor: self.reshape_like(hot, names[tensor])}

    def target_seeds(self, names: Mapping[str, Name], target: ResolvedTarget) -> dict[str, Name]:
        """The seed of one resolved target, the same for every image (a constant broadcast
        over the batch): a channel, a neuron, a box or a region."""
        _, values = self.probe([target.tensor])
        seed = target.cotangent(values[target.tensor].shape[1:])[None]
        graph_tensor = names[target.tensor]
        return {
            target.tensor: self.op(
                "Expand", self.const(seed, hint="seed"), self.shape_of(graph_tensor)
            )
        }

    def probe(
        self, seeds: Sequence[str], keep: Sequence[str] = ()
    ) -> tuple[BackwardPlan, dict[str, np.ndarray]]:
        """The plan from ``seeds`` back to the input and a probe forward's values (cached by
        seeds; ``keep``: other tensors the first probe also reads, for :meth:`dims`)."""
        key = tuple(sorted(seeds))
        if key not in self._probes:
            plan = plan_backward(self.model, list(key))
            batch = np.zeros((self._probe_batch, *self.image_shape), np.float32)
            batch += np.linspace(-1, 1, batch[0].size, dtype=np.float32).reshape(batch.shape[1:])
            kept = [*key, *(self.model.tensor_name(t) for t in keep if t != self.model.input_name)]
            values = forward_values(self.model, batch, plan, keep=kept)
            self._probes[key] = (plan, values)
        return self._probes[key]

    def dims(self, tensor: str) -> list[int | str]:
        """A model tensor's shape with the batch as ``N`` (from a probe forward, else from
        a forward run of its own)."""
        if tensor == self.model.input_name:
            return ["N", *self.image_shape]
        for _, values in self._probes.values():
            if tensor in values:
                return ["N", *values[tensor].shape[1:]]
        if tensor not in self._dims:
            batch = np.zeros((1, *self.image_shape), np.float32)
            value = self.model.run(batch, taps=[tensor], outputs=False)[tensor]
            self._dims[tensor] = ["N", *value.shape[1:]]
        return self._dims[tensor]

    def backward(
        self,
        names: Mapping[str, Name],
        seeds: Mapping[str, Name],
        wrt: Sequence[str],
        mode: str = "gradient",
    ) -> dict[str, Name]:
        """Emit a backward pass over the forward copy ``names`` from ``seeds`` (model tensor ->
        cotangent) to the model tensors ``wrt`` (layer names or aliases allowed)."""
        tensors = {w: w if w == self.model.input_name else self.model.tensor_name(w) for w in wrt}
        plan, values = self.probe(list(seeds))
        grads = emit_backward(self, plan, values, seeds, list(tensors.values()), mode, names)
        return {w: grads[t] for w, t in tensors.items()}

    def to_model(
        self,
        metadata: Mapping[str, str] | None = None,
        name: str = "explainer",
        full_check: bool = True,
        check: bool = True,
    ) -> onnx.ModelProto:
        """The ModelProto, checked by ``onnx.checker.check_model`` (``full_check``: with
        shape inference, which needs every output's rank; ``check=False``: not checked, for
        graphs that only onnxruntime loads, which checks them itself)."""
        graph = helper.make_graph(self.nodes, name, self.inputs, self.outputs, self.initializers)
        proto = helper.make_model(
            graph,
            opset_imports=[helper.make_opsetid("", self.opset)],
            producer_name="cnnviz",
        )
        opsets = [helper.make_opsetid("", self.opset)]
        proto.ir_version = max(helper.find_min_ir_version_for(opsets), 8)
        for key, value in (metadata or {}).items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        if check:
            onnx.checker.check_model(proto, full_check=full_check)
        return proto

    def _add_constants(self) -> None:
        if not self._constants_added:
            self.initializers.extend(self.model.runnable.graph.initializer)
            self._constants_added = True


# --------------------------------------------------------------- the engine's fast path


@dataclass(frozen=True)
class CompiledPass:
    """One compiled forward + backward pass of a model, as an onnxruntime session.

    Attributes:
        session: runs the graph on the model's device.
        proto: the graph.
        classes: whether the seeds are class targets fed as ``classes`` int64 (N,) (-1: the
            predicted class, computed in the graph); else one cotangent input per seeded
            tensor (``cotangent_inputs``).
        seeds: the seeded tensors.
        wrt: the tensors whose gradients come out (the input first).
        values: the tensors whose values come out (seeds and layers).
        cotangent_inputs: the graph inputs of the seeds' cotangents (``classes`` False).
        cotangent_shapes: their shapes without the batch axis.
    """

    session: Any
    proto: onnx.ModelProto
    classes: bool
    seeds: tuple[str, ...]
    wrt: tuple[str, ...]
    values: tuple[str, ...]
    cotangent_inputs: tuple[str, ...]
    cotangent_shapes: tuple[tuple[int, ...], ...]

    def run(
        self, batch: np.ndarray, feed: np.ndarray | Sequence[np.ndarray]
    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """(gradients by wrt tensor, values by tensor) of one batch; ``feed``: the classes
        (int64 (N,)) or the cotangents (one per seed)."""
        inputs = {self.session.get_inputs()[0].name: np.ascontiguousarray(batch, np.float32)}
        if self.classes:
            inputs["classes"] = np.asarray(feed, np.int64)
        else:
            for name, value, shape, seed in zip(
                self.cotangent_inputs, feed, self.cotangent_shapes, self.seeds
            ):
                check_cotangent(seed, np.asarray(value), (len(batch), *shape))
                inputs[name] = np.ascontiguousarray(value, np.float32)
        what = f"the compiled pass {self.proto.graph.name!r} on a batch of shape {batch.shape}"
        outputs = run_session(self.session, None, inputs, what)
        grads = dict(zip(self.wrt, outputs[: len(self.wrt)]))
        return grads, dict(zip(self.values, outputs[len(self.wrt) :]))


#: compiled passes per model, by (seeds, wrt, mode, image shape, classes)
_passes: weakref.WeakKeyDictionary[Model, dict[tuple, CompiledPass]] = weakref.WeakKeyDictionary()
#: why a pass could not be compiled, by the same keys (error type and message)
_refused: weakref.WeakKeyDictionary[Model, dict[tuple, tuple[type[Exception], str]]] = (
    weakref.WeakKeyDictionary()
)


def compiled_pass(
    model: Model,
    seeds: Sequence[str] | None,
    wrt: Sequence[str],
    mode: str = "gradient",
    image_shape: Sequence[int] | None = None,
) -> CompiledPass:
    """The compiled pass of ``model`` (made once per model, seeds, wrt tensors, mode and image
    shape; cached): seeds None means class targets fed as ``classes``.

    Raises:
        UnsupportedOpError: an op without an emission, or a mode without one.
        ModelLoadError: onnxruntime cannot load the graph.
    """
    emitted_mode(mode)
    shape = tuple(image_shape or model.input_shape)
    key = (None if seeds is None else tuple(seeds), tuple(wrt), mode, shape)
    cache = _passes.setdefault(model, {})
    refused = _refused.setdefault(model, {})
    if key in refused:  # building again would fail again, after the same work
        kind, message = refused[key]
        raise kind(message)
    if key not in cache:
        try:
            cache[key] = _build_pass(model, seeds, tuple(wrt), mode, shape)
        except (UnsupportedOpError, InputError, ModelLoadError) as error:
            refused[key] = (type(error), str(error))
            raise
    return cache[key]


def _build_pass(
    model: Model,
    seeds: Sequence[str] | None,
    wrt: tuple[str, ...],
    mode: str,
    shape: tuple[int, ...],
) -> CompiledPass:
    builder = GraphBuilder(model, image_shape=shape)
    builder.portable = False  # run by onnxruntime only: MaxUnpool is allowed
    seeded = [builder.score_tensor()] if seeds is None else list(seeds)
    _check_names_kept(model, builder.model, seeded, wrt)
    builder.probe(seeded, keep=wrt)  # one probe forward for every shape the pass needs
    x = builder.add_input(model.input_name, TensorProto.FLOAT, ["N", *shape])
    names = builder.forward(x)
    cotangents: list[str] = []
    shapes: list[tuple[int, ...]] = []
    if seeds is None:
        given = builder.add_input("classes", TensorProto.INT64, ["N"])
        negative = builder.op("Less", given, builder.const(0, np.int64, "zero"))
        classes = builder.where(negative, builder.predicted(names), given)
        seed_names = builder.class_seeds(names, classes)
    else:
        seed_names = {}
        for k, tensor in enumerate(seeds):
            _, values = builder.probe(list(seeds))
            cotangent = builder.add_input(
                f"cotangent_{k}", TensorProto.FLOAT, ["N", *values[tensor].shape[1:]]
            )
            seed_names[tensor] = cotangent
            cotangents.append(cotangent)
            shapes.append(tuple(values[tensor].shape[1:]))
    grads = builder.backward(names, seed_names, list(wrt), mode)
    for k, tensor in enumerate(wrt):
        dims = builder.dims(tensor)
        builder.add_output(f"cnnviz_grad_{k}", grads[tensor], TensorProto.FLOAT, dims)
    shown = tuple(dict.fromkeys([*seed_names, *(t for t in wrt if t != model.input_name)]))
    for k, tensor in enumerate(shown):
        dims = builder.dims(tensor)
        builder.add_output(f"cnnviz_value_{k}", names[tensor], TensorProto.FLOAT, dims)
    proto = builder.to_model({"cnnviz.mode": mode}, name=f"{model.name}_backward", check=False)
    session = model.session_factory(proto)
    return CompiledPass(
        session,
        proto,
        seeds is None,
        tuple(seed_names),
        wrt,
        shown,
        tuple(cotangents),
        tuple(shapes),
    )


def _check_names_kept(
    model: Model, converted: Model, seeds: Sequence[str], wrt: Sequence[str]
) -> None:
    """Raise :class:`UnsupportedOpError` when the opset conversion of ``model`` (see
    :func:`at_least_opset`) lost a tensor the pass seeds or reads (onnx's adapters rebuild
    some nodes)."""
    if converted is model:
        return
    kept = {t for n in converted.runnable.graph.node for t in n.output}
    kept |= {i.name for i in converted.runnable.graph.input}
    lost = [t for t in [*seeds, *wrt] if t not in kept]
    if lost:
        raise UnsupportedOpError(
            f"converting model {model.name!r} to opset {MIN_OPSET} for a compiled graph "
            f"renames tensor {lost[0]!r}; re-export the model at opset {MIN_OPSET} or later, "
            "or use the engine (forward='onnxruntime')"
        )


def compiled_gradients(
    model: Model,
    batch: np.ndarray,
    target: Targets | Mapping[str, np.ndarray] = None,
    *,
    wrt: Sequence[str] = (),
    mode: object = "gradient",
) -> Gradients:
    """:func:`~.engine.gradients` through one compiled forward + backward graph run by
    onnxruntime (``forward="compiled"``): float32, one session call per batch chunk, no
    separate forward for the predicted class. ``Gradients.values`` holds the seeded tensors
    and the ``wrt`` layers (not every tensor on the path)."""
    checked_mode = emitted_mode(mode)
    batch = np.ascontiguousarray(batch, np.float32)
    layers = {w: model.tensor_name(w) for w in wrt}
    sources = tuple(dict.fromkeys([model.input_name, *layers.values()]))
    shape = tuple(batch.shape[1:])
    resolved: list[ResolvedTarget] = []
    if isinstance(target, Mapping):
        given = {model.tensor_name(k): np.asarray(v, np.float32) for k, v in target.items()}
        compiled = compiled_pass(model, tuple(given), sources, checked_mode, shape)
        grads, values = _run_chunks(model, compiled, batch, list(given.values()))
        seeds = given
    else:
        known = resolve_known(model, batch, target)
        scores = score_tensor(model)
        if all(t is None or (t.kind == "class" and t.tensor == scores) for t in known):
            compiled = compiled_pass(model, None, sources, checked_mode, shape)
            classes = np.array([-1 if t is None else t.class_index for t in known], np.int64)
            grads, values = _run_chunks(model, compiled, batch, classes)
            resolved = resolve_targets(model, batch, known, values)
        else:
            seeded = tuple(seed_tensors(model, known))
            compiled = compiled_pass(model, seeded, sources, checked_mode, shape)
            # the seeded tensors' shapes from the pass's probe (no forward run to read them)
            shaped = {
                t: np.broadcast_to(np.float32(0), (len(batch), *s))
                for t, s in zip(compiled.seeds, compiled.cotangent_shapes)
            }
            resolved = resolve_targets(model, batch, known, shaped)
            seeds_in = cotangents(model, batch, resolved, shaped)
            feed = [seeds_in[t] for t in compiled.seeds]
            grads, values = _run_chunks(model, compiled, batch, feed)
        seeds = cotangents(model, batch, resolved, values)
    values = {**values, model.input_name: batch}
    out = {model.input_name: grads[model.input_name]}
    for w, t in layers.items():
        out[w] = grads[t]
    return Gradients(out, seeded_scores(seeds, values), resolved, seeds, values, forward="compiled")


def _run_chunks(
    model: Model, compiled: CompiledPass, batch: np.ndarray, feed: Any
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The compiled pass over the batch in chunks of the model's ``max_batch``."""
    step = max(1, model.max_batch)
    parts = []
    for start in range(0, max(len(batch), 1), step):
        part = slice(start, start + step)
        chunk_feed = feed[part] if isinstance(feed, np.ndarray) else [f[part] for f in feed]
        parts.append(compiled.run(batch[part], chunk_feed))
    if len(parts) == 1:
        return parts[0]
    grads = {k: np.concatenate([p[0][k] for p in parts]) for k in parts[0][0]}
    values = {k: np.concatenate([p[1][k] for p in parts]) for k in parts[0][1]}
    return grads, values


__all__ = [
    "EMITTED_MODES",
    "MIN_OPSET",
    "CompiledPass",
    "Emitter",
    "GraphBuilder",
    "at_least_opset",
    "compiled_gradients",
    "compiled_pass",
    "emit_backward",
    "emit_rule",
    "emitted_mode",
]
