"""``Model``: an ONNX file with its onnxruntime sessions, layer table, preprocessing and labels.

The engine's one entry point for forward computation: ``run(batch, taps=[...])`` returns
any intermediate tensors, exposed by graph surgery (one cached session per set of taps),
in batches sized to a memory budget.
"""

from __future__ import annotations

import functools
import json
import math
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.capi import onnxruntime_pybind11_state as ort_state

from . import graph
from .errors import DeviceError, InputError, ModelLoadError, ModelRunError, UnknownLayerError
from .graph import ReceptiveField, Shape
from .labels import labels_from_metadata, load_labels, resolve_class
from .loading import load_onnx
from .preprocess import ImageLike, Preprocess, preset

#: default bound on the activations one forward chunk may hold (bytes)
DEFAULT_MEMORY_BUDGET = 1 << 30
#: metadata key under which a model card (JSON) travels inside an ONNX file
CARD_KEY = "cnnviz.card"

#: what onnxruntime raises when it cannot load, place or run a graph (its own types, none
#: shared; the later ones are absent from older releases)
_ORT_ERRORS: tuple[type[Exception], ...] = tuple(
    getattr(ort_state, name)
    for name in (
        "Fail",
        "InvalidArgument",
        "InvalidGraph",
        "InvalidProtobuf",
        "NotImplemented",
        "RuntimeException",
        "EPFail",
        "EngineError",
        "NoSuchFile",
        "NotFound",
        "NoModel",
    )
    if hasattr(ort_state, name)
)


def run_session(
    session: ort.InferenceSession, fetch: list[str] | None, feed: dict, what: str
) -> list:
    """``session.run(fetch, feed)`` with onnxruntime's failures (a graph that loads but
    cannot compute, an allocation that fails) as :class:`ModelRunError` naming ``what`` ran
    (e.g. "model 'x' on a batch of shape (2, 3, 8, 8)"), onnxruntime's message inside."""
    try:
        return session.run(fetch, feed)
    except _ORT_ERRORS as exc:
        raise ModelRunError(f"onnxruntime cannot run {what}: {exc}") from exc


#: what the batch-rewrite probe may meet: a session that does not load, or a run that fails
_PROBE_ERRORS: tuple[type[Exception], ...] = (ModelLoadError, *_ORT_ERRORS)

_FLOAT_TYPES: dict[int, type[np.floating]] = {
    onnx.TensorProto.FLOAT: np.float32,
    onnx.TensorProto.FLOAT16: np.float16,
    onnx.TensorProto.DOUBLE: np.float64,
}


@dataclass(frozen=True)
class Layer:
    """One node's output as users see it.

    Attributes:
        name: the output tensor's name, what users type (``cnnviz layers`` lists them).
        op_type: ONNX operator, e.g. ``Conv``.
        shape: output shape, batch dim shown as ``N``; None when unknown.
        receptive_field: where each output pixel looks in the input; None for
            non-spatial outputs.
        aliases: other names that resolve to this layer (node name, PyTorch module path).
    """

    name: str
    op_type: str
    shape: Shape | None
    receptive_field: ReceptiveField | None
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class _RunPlan:
    session: ort.InferenceSession
    fetch: list[str]  # tensor names asked of onnxruntime
    results: list[tuple[str, int]]  # (key in the result, index in fetch)


@dataclass(frozen=True)
class Prediction:
    """A class and its probability."""

    index: int
    label: str
    probability: float


@dataclass(frozen=True)
class SessionFactory:
    """Makes the onnxruntime sessions of one device under one options policy.

    Every session of the engine comes from here (a model's own runs, the backward pass's
    adjoints, the incremental engine's steps), so all run where the model does. Factories
    compare by (device, threads): sessions of equal factories are interchangeable (caches
    key on the factory).

    Args:
        device: ``cpu`` or ``cuda`` (``cuda:N`` for another GPU); a GPU that is asked for and
            not available raises :class:`DeviceError` here, never falls back silently.
        threads: onnxruntime intra-op threads (0: onnxruntime's default).
        name: the model's name, for error messages.
    """

    device: str = "cpu"
    threads: int = 0
    name: str = field(default="model", compare=False)
    providers: list[str] = field(init=False, compare=False, repr=False)
    provider_options: list[dict] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        providers, options = _providers(self.device)
        object.__setattr__(self, "providers", providers)
        object.__setattr__(self, "provider_options", options)

    def __call__(
        self, proto: onnx.ModelProto | bytes, *, spin: bool = True
    ) -> ort.InferenceSession:
        """A session running ``proto`` on the device.

        Args:
            proto: the model to run (or its serialized bytes).
            spin: let idle intra-op threads spin; pass False for sessions whose runs alternate
                with NumPy / native work or with many other small sessions (spinning threads
                would steal the cores).

        Raises:
            ModelLoadError: onnxruntime cannot load the graph.
            DeviceError: the session does not run on the device asked for.
        """
        options = ort.SessionOptions()
        # onnxruntime's errors come back inside ours (ModelLoadError, ModelRunError), never
        # as its own lines on stderr
        options.log_severity_level = 4
        if self.threads:
            options.intra_op_num_threads = self.threads
        if not spin:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            session = ort.InferenceSession(
                proto if isinstance(proto, bytes) else proto.SerializeToString(),
                options,
                providers=self.providers,
                provider_options=self.provider_options,
            )
        except _ORT_ERRORS as exc:
            raise ModelLoadError(f"onnxruntime cannot run model {self.name!r}: {exc}") from exc
        if self.providers[0] != "CPUExecutionProvider":
            active = session.get_providers()
            if not active or active[0] != self.providers[0]:
                raise DeviceError(
                    f"{self.providers[0]} was asked for but the session runs on {active}; "
                    "check the CUDA and cuDNN libraries that onnxruntime-gpu needs"
                )
        return session


class Model:
    """An ONNX image model ready to run, inspect and explain.

    Args:
        source: path to an ``.onnx`` file, or its bytes.
        preprocess: a :class:`Preprocess`, a preset name (see ``PRESETS``), or None for the
            model card's (when the file carries one) or plain RGB 0-1.
        labels: class names, or a labels file; None for the model card's.
        device: ``cpu`` or ``cuda`` (``cuda:N`` for another GPU); a GPU that is asked for and
            not available raises :class:`DeviceError`, never falls back silently.
        memory_budget: bytes of activations one forward chunk may use; larger batches run
            in chunks.
        threads: onnxruntime intra-op threads (0: onnxruntime's default).

    Attributes:
        proto: the ONNX model as loaded; ``runnable`` is the graph onnxruntime runs (its
            batch made symbolic when the export fixed it to 1).
        layout: ``NCHW``, or ``NHWC (input transpose removed)``: a channels-last export
            (tf2onnx, Keras: an (N, H, W, C) input read only by a Transpose to NCHW) is
            loaded with that Transpose removed, so ``proto``, :meth:`prepare`,
            :meth:`run` and every map are (N, C, H, W): transpose a raw NHWC batch with
            ``batch.transpose(0, 3, 1, 2)`` before :meth:`run`.
        batched: whether batches run in one call (else one image at a time).
        preprocess_source: where the preprocessing came from: ``given``, ``preset 'NAME'``,
            ``model card`` or ``default (...)``.
        labels_source: where the class names came from: ``given``, ``model card``,
            ``metadata key 'KEY'`` (such as Paddle's ``character``), or None.
        max_batch: images per onnxruntime call under ``memory_budget``.
    """

    def __init__(
        self,
        source: str | Path | bytes,
        *,
        preprocess: Preprocess | str | None = None,
        labels: Sequence[str] | str | Path | None = None,
        device: str = "cpu",
        memory_budget: int = DEFAULT_MEMORY_BUDGET,
        threads: int = 0,
        name: str | None = None,
    ):
        self.proto = load_onnx(source)
        self.name = name or (Path(source).stem if isinstance(source, (str, Path)) else "model")
        self.card: dict = _read_card(self.proto)
        #: ``NCHW``, or ``NHWC (input transpose removed)`` for a channels-last export
        self.layout: str
        self.proto, self.layout = _channels_first(self.proto)
        self.input_name, self.input_dtype, input_shape = _image_input(self.proto)
        self.channels: int = input_shape[1]
        typed = graph.infer_shapes(self.proto)
        self._types = graph.tensor_types(typed)
        self.memory_budget = memory_budget
        self._check_tensor_sizes(input_shape)
        self._fields = graph.receptive_fields(typed, self.input_name, self._types)
        self.layers: list[Layer] = self._layer_table(typed)
        self._aliases = self._alias_table()
        self.output_names = [o.name for o in self.proto.graph.output]
        softmax_input = graph.softmax_input(self.proto, self.output_names[0])
        #: the pre-softmax class scores (logits): the first output or what its Softmax reads
        self.score_tensor = softmax_input or self.output_names[0]
        self.outputs_probabilities = self.card.get("output") == "probabilities" or (
            "output" not in self.card and softmax_input is not None
        )
        #: makes every onnxruntime session of this model (the engine's adjoints and
        #: incremental steps included): the device's providers, one options policy
        self.session_factory = SessionFactory(device, threads, name=self.name)
        self._sessions: dict[tuple[str, ...], ort.InferenceSession] = {}
        self._plans: dict[tuple[tuple[str, ...], bool], _RunPlan] = {}
        self.preprocess = self._resolve_preprocess(preprocess, input_shape)
        assert self.preprocess.size is not None
        _check_windows(self.proto, self.input_name, self.preprocess.size, self.name)
        self.runnable, self.batched = self._batchable_graph(input_shape)
        self.max_batch = self._max_batch(typed) if self.batched else 1
        self.labels = self._resolve_labels(labels)

    # ----------------------------------------------------------------------------- info

    @property
    def device(self) -> str:
        """``cpu`` or ``cuda`` (``cuda:N``): where every session of the model runs."""
        return self.session_factory.device

    @property
    def threads(self) -> int:
        """onnxruntime intra-op threads (0: onnxruntime's default)."""
        return self.session_factory.threads

    @functools.cached_property
    def constants(self) -> dict[str, np.ndarray]:
        """Initializers and Constant-node values of the runnable graph (float16 as float32)."""
        return {
            name: _as_float32(value) for name, value in graph.initializers(self.runnable).items()
        }

    def __repr__(self) -> str:
        return (
            f"Model({self.name!r}, input={self.input_name!r}, {len(self.layers)} layers, "
            f"device={self.device!r})"
        )

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one input image."""
        assert self.preprocess.size is not None
        return (self.channels, *self.preprocess.size)

    @property
    def num_classes(self) -> int:
        """Number of scores in the first output (per image)."""
        shape = self._types.get(self.output_names[0], (0, None))[1] or ()
        dims = [d for d in shape[1:] if isinstance(d, int)]
        if len(dims) != len(shape) - 1:
            return len(self.labels) if self.labels else 0
        return int(np.prod(dims)) if dims else 1

    def layer(self, name: str) -> Layer:
        """The layer with this tensor name or alias; unknown names suggest close ones."""
        layer = self._layer_by_tensor.get(self.tensor_name(name))
        if layer is None:
            raise UnknownLayerError(name, self._layer_by_tensor)
        return layer

    def layer_shape(self, name: str) -> Shape | None:
        """A layer's output shape with the batch as ``N``: from shape inference, or, where
        that left dims symbolic or unknown (a model that accepts any image size), from one
        probe forward of a blank image at the preprocessing size (run once, for every such
        layer together). None for a layer the probe cannot fetch."""
        layer = self.layer(name)
        if layer.shape is not None and all(isinstance(d, int) for d in layer.shape[1:]):
            return layer.shape
        return self._probed_shapes.get(layer.name)

    @functools.cached_property
    def _probed_shapes(self) -> dict[str, Shape]:
        """Shapes of the float layers whose static shape is incomplete, from one forward of
        a blank image at the preprocessing size (a session of its own, not kept)."""
        unknown = [
            layer.name
            for layer in self.layers
            if (layer.shape is None or not all(isinstance(d, int) for d in layer.shape[1:]))
            and self._types.get(layer.name, (onnx.TensorProto.FLOAT, None))[0] in _FLOAT_TYPES
        ]
        if not unknown:
            return {}
        session = self.session_factory(graph.expose(self.runnable, unknown, self._types))
        blank: np.ndarray = np.zeros((1, *self.input_shape), self.input_dtype)
        values = self._ort_run(session, unknown, blank)
        return {name: ("N", *value.shape[1:]) for name, value in zip(unknown, values)}

    def tensor_name(self, name: str) -> str:
        """The graph tensor a layer name or alias refers to."""
        try:
            return self._aliases[name]
        except KeyError:
            raise UnknownLayerError(name, self._aliases) from None

    def tensor_shape(self, name: str, batch: int) -> tuple[int, ...] | None:
        """Static shape of a tensor for a batch of ``batch`` images: dimension 0 of a tensor of
        the image path is the batch; a tensor that does not depend on the input (a weight
        computed in the graph) keeps its own shape. None when shape inference left a dimension
        unknown, or when dimension 0 of an image-path tensor is not the input's batch dimension
        (tokens of several patches per image)."""
        tensor = self.tensor_name(name)
        shape = self._types.get(tensor, (0, None))[1]
        if tensor not in self._input_dependent:
            return tuple(shape) if shape and all(isinstance(d, int) for d in shape) else None
        if not shape or not all(isinstance(d, int) for d in shape[1:]):
            return None
        if shape[0] != (self._types[self.input_name][1] or (None,))[0]:
            return None  # dimension 0 is not the batch (e.g. images x patches of a ViT block)
        return (batch, *shape[1:])

    @functools.cached_property
    def quantization(self) -> str | None:
        """How the image path is quantized: ``qdq`` (QuantizeLinear / DequantizeLinear around
        float ops: gradients pass them as straight-through estimates, an approximation that
        results state), ``qoperator`` (integer ops such as QLinearConv: no gradients; export
        QDQ instead), or None for a float model."""
        ops = {node.op_type for node in graph.data_nodes(self.runnable, self.input_name)}
        if ops & graph.QOPERATOR_OPS:
            return "qoperator"
        return "qdq" if ops & graph.QDQ_OPS else None

    def depends_on_input(self, name: str) -> bool:
        """Whether a tensor (name or alias) is computed from the image input (its values or
        its shape): False for constants and for weights computed in the graph, which are the
        same for every image and have no batch axis."""
        return self._aliases.get(name, name) in self._input_dependent

    @functools.cached_property
    def _input_dependent(self) -> frozenset[str]:
        """Tensors of the runnable graph reached from the input (through Shape ops too)."""
        reached = {self.input_name}
        for node in self.runnable.graph.node:
            if any(i in reached for i in graph.node_reads(node)):
                reached.update(o for o in node.output if o)
        return frozenset(reached)

    def with_graph(self, proto: onnx.ModelProto, name: str | None = None) -> Model:
        """A model of another graph (a modified copy of this one's proto) with this model's
        preprocessing, labels, device, memory budget and threads, built in memory (no file);
        named ``name``, or as this model."""
        return Model(
            proto.SerializeToString(),
            preprocess=self.preprocess,
            labels=self.labels,
            device=self.device,
            memory_budget=self.memory_budget,
            threads=self.threads,
            name=name or self.name,
        )

    def label(self, index: int) -> str:
        return self.labels[index] if self.labels else f"class {index}"

    def class_index(self, target: int | str) -> int:
        """Index of a class given as index or label name (checked against the model)."""
        return resolve_class(target, self.labels, self.num_classes)

    # ------------------------------------------------------------------------------ run

    def prepare(self, images: ImageLike | Sequence[ImageLike] | np.ndarray) -> np.ndarray:
        """A float32 (N, C, H, W) batch: images are preprocessed, a float batch is checked."""
        if (
            isinstance(images, np.ndarray)
            and images.ndim == 4
            and np.issubdtype(images.dtype, np.floating)
            and images.shape[1] == self.channels
        ):
            return self._check_batch(images)
        return self._check_batch(self.preprocess(images))

    def run(
        self, batch: np.ndarray, taps: Sequence[str] = (), *, outputs: bool = True
    ) -> dict[str, np.ndarray]:
        """Forward a preprocessed batch; return the model outputs and the tapped tensors.

        Args:
            batch: float (N, C, H, W) array (see :meth:`prepare`), also for a channels-last
                export (see ``layout``: its input Transpose is removed at load).
            taps: layer names or aliases whose tensors to return too.
            outputs: include the model's own outputs.

        Returns:
            dict from each output name and each tap as given to its float32 array with
            the batch as first axis (a tap that does not depend on the input, such as a
            computed weight, comes as it is, from the first chunk when the batch is split).
        """
        plan = self._plans.get((tuple(taps), outputs)) or self._plan(tuple(taps), outputs)
        if not plan.fetch:
            return {}
        batch = self._check_batch(batch)
        if len(batch) <= self.max_batch:
            values = self._ort_run(plan.session, plan.fetch, batch)
        else:
            session, fetch = plan.session, plan.fetch
            parts = [self._ort_run(session, fetch, chunk) for chunk in self._chunks(batch)]
            values = [
                np.concatenate(column) if self.depends_on_input(name) else column[0]
                for name, column in zip(plan.fetch, zip(*parts))
            ]
        return {key: _as_float32(values[i]) for key, i in plan.results}

    def scores(self, batch: np.ndarray) -> np.ndarray:
        """The first output as (N, num_classes) float32 (logits or probabilities)."""
        out = self.run(batch)[self.output_names[0]]
        return out.reshape(len(out), -1)

    def probabilities(self, batch: np.ndarray) -> np.ndarray:
        """Class probabilities (N, num_classes): the output itself or its softmax; scores
        that are not finite (a corrupted weight or attribute) raise ModelRunError."""
        scores = self.scores(batch)
        if not np.isfinite(scores).all():
            raise ModelRunError(
                f"model {self.name!r} gives scores that are not finite (NaN or infinite) for "
                f"{int((~np.isfinite(scores)).any(axis=1).sum())} of {len(scores)} images: "
                "a corrupted weight or attribute, or inputs far outside the trained range"
            )
        return to_probabilities(scores, self.outputs_probabilities)

    def predict(
        self, images: ImageLike | Sequence[ImageLike] | np.ndarray, k: int = 5
    ) -> list[list[Prediction]]:
        """Top-k predictions for each image."""
        probs = self.probabilities(self.prepare(images))
        k = max(1, min(k, probs.shape[1]))
        top = np.argsort(-probs, axis=1, kind="stable")[:, :k]
        return [
            [Prediction(int(i), self.label(int(i)), float(row[i])) for i in order]
            for row, order in zip(probs, top)
        ]

    # -------------------------------------------------------------------------- helpers

    def _ort_run(self, session: ort.InferenceSession, fetch: list[str], batch: np.ndarray) -> list:
        """``session.run(fetch, {input: batch})`` with onnxruntime's failures (a corrupted
        graph that loads but cannot compute, an allocation that fails) as ModelRunError."""
        what = f"model {self.name!r} on a batch of shape {tuple(batch.shape)}"
        return run_session(session, fetch, {self.input_name: batch}, what)

    def _check_tensor_sizes(self, input_shape: Shape) -> None:
        """Raise before any session exists when one tensor the graph computes (or its input),
        as shape inference sees it for one image, would not fit the memory budget (a hostile
        model declaring a gigantic input or ``ConstantOfShape``, or one far too big for the
        budget). Initializers are not counted: their bytes are in the file, checked against
        their shapes when it was read."""
        batch_dim = (self._types.get(self.input_name, (0, None))[1] or (None,))[0]
        input_elem = onnx.helper.np_dtype_to_tensor_dtype(np.dtype(self.input_dtype))
        tensors = {self.input_name: (input_elem, input_shape), **self._types}
        stored = {init.name for init in self.proto.graph.initializer}  # read already
        for name, (elem, shape) in tensors.items():
            if name in stored or not shape or not all(isinstance(d, int) for d in shape[1:]):
                continue
            dims = [1 if d == batch_dim or not isinstance(d, int) else d for d in shape[:1]]
            dims += list(shape[1:])
            try:
                itemsize = onnx.helper.tensor_dtype_to_np_dtype(elem).itemsize
            except (KeyError, ValueError):
                itemsize = 4
            size = math.prod(dims) * itemsize
            if size > self.memory_budget:
                raise ModelLoadError(
                    f"model {self.name!r}: tensor {name!r} of shape {list(shape)} would take "
                    f"{_human_bytes(size)} for one image, over the memory budget of "
                    f"{_human_bytes(self.memory_budget)}; a corrupted or hostile file, or a "
                    "model that needs a larger memory_budget="
                )

    def _check_batch(self, batch: np.ndarray) -> np.ndarray:
        batch = np.asarray(batch)
        if batch.ndim != 4 or batch.shape[1] != self.channels:
            raise InputError(
                f"expected a batch of shape (N, {self.channels}, H, W) for input "
                f"{self.input_name!r}; got {batch.shape}"
            )
        expected = self.preprocess.size
        if expected is not None and tuple(batch.shape[2:]) != expected and self._fixed_size:
            raise InputError(
                f"model {self.name!r} takes {expected[0]}x{expected[1]} images; "
                f"got {batch.shape[2]}x{batch.shape[3]}"
            )
        return np.ascontiguousarray(batch, dtype=self.input_dtype)

    def _chunks(self, batch: np.ndarray) -> Iterator[np.ndarray]:
        step = self.max_batch
        for start in range(0, len(batch), step):
            yield batch[start : start + step]

    def _plan(self, taps: tuple[str, ...], outputs: bool) -> _RunPlan:
        """What one ``run(taps, outputs)`` fetches from which session (cached per call shape)."""
        tensors = [self.tensor_name(tap) for tap in taps]
        fetch = list(dict.fromkeys([*(self.output_names if outputs else ()), *tensors]))
        keys = [*(self.output_names if outputs else ()), *taps]
        names = [*(self.output_names if outputs else ()), *tensors]
        session = self._session(tuple(sorted(set(tensors) - set(self.output_names))))
        plan = _RunPlan(session, fetch, [(k, fetch.index(n)) for k, n in zip(keys, names)])
        self._plans[(taps, outputs)] = plan
        return plan

    def _session(self, extra: tuple[str, ...]) -> ort.InferenceSession:
        session = self._sessions.get(extra)
        if session is None:
            proto = graph.expose(self.runnable, extra, self._types) if extra else self.runnable
            # tapped runs hand over to NumPy / native work: idle spinning threads would slow it
            session = self.session_factory(proto, spin=not extra)
            self._sessions[extra] = session
        return session

    def _batchable_graph(self, input_shape: Shape) -> tuple[onnx.ModelProto, bool]:
        """The graph to run, and whether it takes batches of any size.

        A model exported with a fixed batch of 1 is rewritten (see
        :func:`graph.make_batch_symbolic`) and checked against the original on a probe
        batch; when that fails it runs one image at a time, with one warning.
        """
        if not isinstance(input_shape[0], int):
            return self.proto, True
        symbolic = graph.make_batch_symbolic(self.proto, self.input_name)
        reason = "the graph cannot be rewritten"
        if symbolic is not None:
            probe_shape = [d if isinstance(d, int) else 8 for d in input_shape]
            rng = np.random.default_rng(0)
            probe: np.ndarray = rng.standard_normal([2, *probe_shape[1:]]).astype(self.input_dtype)
            quiet = ort.RunOptions()
            quiet.log_severity_level = 4  # a failing probe is an answer, not an error to print
            try:
                fixed = self.session_factory(self.proto)
                batched = self.session_factory(symbolic)
                ours = batched.run(None, {self.input_name: probe}, quiet)
                refs = [
                    fixed.run(None, {self.input_name: probe[i : i + 1]}, quiet) for i in range(2)
                ]
            except _PROBE_ERRORS as exc:
                reason = f"onnxruntime cannot run it batched: {exc}"
            else:
                if self._same_outputs(ours, refs):
                    self._sessions[()] = batched
                    return symbolic, True
                reason = "batched outputs differ from single-image runs"
        warnings.warn(
            f"model {self.name!r} has a fixed batch size of {input_shape[0]} that cannot be made "
            f"symbolic ({reason}); images will run one at a time (slower)",
            RuntimeWarning,
            stacklevel=3,
        )
        return self.proto, False

    def _same_outputs(self, batched: list, singles: list[list]) -> bool:
        """Whether a batched run's outputs equal the single-image runs' (to a tolerance
        relative to each output's scale: batch size changes the kernels' blocking)."""
        tol = 1e-2 if self.input_dtype == np.float16 else 1e-3
        for i, single in enumerate(singles):
            for a, b in zip(batched, single):
                a, b = _as_float32(a[i : i + 1]), _as_float32(b)
                if a.shape != b.shape or np.abs(a - b).max() > tol * np.abs(b).max():
                    return False
        return True

    def _max_batch(self, typed: onnx.ModelProto) -> int:
        """Largest chunk whose activations fit the memory budget (a conservative bound:
        the sum of every intermediate tensor of one image)."""
        per_image = 0
        for node in graph.data_nodes(typed, self.input_name):
            for name in node.output:
                elem, shape = self._types.get(name, (0, None))
                if not shape or not all(isinstance(d, int) for d in shape[1:]):
                    continue
                itemsize = np.dtype(_FLOAT_TYPES.get(elem, np.float32)).itemsize
                per_image += int(np.prod(shape[1:], dtype=np.int64)) * itemsize
        return max(1, self.memory_budget // max(per_image, 1))

    @property
    def _fixed_size(self) -> bool:
        shape = self._types[self.input_name][1] or ()
        return len(shape) == 4 and all(isinstance(d, int) for d in shape[2:])

    def _layer_table(self, typed: onnx.ModelProto) -> list[Layer]:
        layers = []
        for node in graph.data_nodes(typed, self.input_name):
            name = node.output[0]
            shape = self._types.get(name, (0, None))[1]
            if shape:
                shape = ("N", *shape[1:])
            aliases = tuple(a for a in (node.name, graph.torch_scope(node)) if a and a != name)
            layers.append(Layer(name, node.op_type, shape, self._fields.get(name), aliases))
        self._layer_by_tensor = {layer.name: layer for layer in layers}
        return layers

    def _alias_table(self) -> dict[str, str]:
        """Every name a user may type -> tensor name. Tensor names win over aliases; a
        module path names the module's last node (its output). Tensors that do not depend
        on the image (e.g. a reshaped weight) resolve too, for taps, but are not layers."""
        table = {o: o for node in self.proto.graph.node for o in node.output if o}
        for layer in self.layers:
            for alias in layer.aliases:
                table[alias] = layer.name
        for layer in self.layers:
            table[layer.name] = layer.name
        return table

    def _resolve_preprocess(self, given: Preprocess | str | None, shape: Shape) -> Preprocess:
        self.preprocess_source = "given"
        if isinstance(given, str):
            given, self.preprocess_source = preset(given), f"preset {given!r}"
        if given is None:
            card = self.card.get("preprocess")
            if card:
                known = {f.name for f in fields(Preprocess)}
                try:
                    given = Preprocess(**{k: v for k, v in card.items() if k in known})
                except InputError as exc:
                    raise ModelLoadError(
                        f"the model card of {self.name!r} has invalid preprocessing: {exc}"
                    ) from exc
                self.preprocess_source = "model card"
            else:
                given = Preprocess.for_channels(self.channels)
                self.preprocess_source = (
                    "default (RGB 0-1; give a preset if the model was trained otherwise)"
                )
        if given.channels != self.channels:
            raise InputError(
                f"preprocessing gives {given.channels}-channel images ({given.channel_order}) "
                f"but model {self.name!r} takes {self.channels} channels"
            )
        model_size = tuple(shape[2:4])
        if all(isinstance(d, int) for d in model_size):
            if given.size is not None and tuple(given.size) != model_size:
                raise InputError(
                    f"preprocessing size {given.size} does not match the model input "
                    f"{model_size[0]}x{model_size[1]}"
                )
            given = given.replace(size=model_size)
        elif given.size is None:
            raise InputError(
                f"model {self.name!r} accepts any image size; give Preprocess(size=(H, W))"
            )
        return given

    def _resolve_labels(self, given: Sequence[str] | str | Path | None) -> list[str] | None:
        """Class names: given, else the model card's, else the ONNX metadata's (see
        :func:`labels_from_metadata`); ``labels_source`` says which."""
        labels: Sequence[str] | None = None
        self.labels = None  # num_classes reads it while this runs
        self.labels_source: str | None = None
        if given is not None:
            labels, self.labels_source = load_labels(given), "given"
        elif self.card.get("classes") is not None:
            labels, self.labels_source = self.card["classes"], "model card"
        else:
            metadata = {prop.key: prop.value for prop in self.proto.metadata_props}
            found = labels_from_metadata(metadata, self.num_classes)
            if found is not None:
                labels, self.labels_source = found[0], f"metadata key {found[1]!r}"
        if labels is not None and self.num_classes and len(labels) != self.num_classes:
            raise InputError(
                f"{len(labels)} class labels given but model {self.name!r} has "
                f"{self.num_classes} outputs"
            )
        return list(labels) if labels is not None else None


# ------------------------------------------------------------------------------ helpers


def to_probabilities(scores: np.ndarray, already: bool) -> np.ndarray:
    """Softmax over the last axis unless the scores are probabilities already."""
    if already:
        return scores
    shifted = scores - scores.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def _as_float32(array: np.ndarray) -> np.ndarray:
    return array.astype(np.float32) if array.dtype == np.float16 else array


def _human_bytes(size: int) -> str:
    """``1.5 GiB`` and the like."""
    if size < 1024:
        return f"{size} bytes"
    value = float(size)
    for unit in ("KiB", "MiB", "GiB", "TiB", "PiB"):
        value /= 1024
        if value < 1024 or unit == "PiB":
            break
    return f"{value:.1f} {unit}"


def _read_card(proto: onnx.ModelProto) -> dict:
    """The model card (JSON) the file carries, checked for the entries cnnviz reads:
    ``classes`` (a list of names), ``preprocess`` (an object), ``output`` (a string)."""
    for prop in proto.metadata_props:
        if prop.key == CARD_KEY:
            try:
                card = json.loads(prop.value)
            except json.JSONDecodeError as exc:
                raise ModelLoadError(f"the model's {CARD_KEY} metadata is not JSON: {exc}") from exc
            if not isinstance(card, dict):
                return {}
            wanted = {"classes": (list, "a list of class names"), "preprocess": (dict, "an object")}
            wanted["output"] = (str, "a string")
            for key, (kind, what) in wanted.items():
                if card.get(key) is not None and not isinstance(card[key], kind):
                    raise ModelLoadError(
                        f"the model's {CARD_KEY} metadata has {key!r} = {card[key]!r:.60}; "
                        f"cnnviz needs {what}"
                    )
            return card
    return {}


def _channels_first(proto: onnx.ModelProto) -> tuple[onnx.ModelProto, str]:
    """``proto`` and ``NCHW``, or for a channels-last export (an (N, H, W, C) input read only
    by Transposes to NCHW, or for one channel by a Reshape to (N, 1, H, W)) the graph without
    those nodes and ``NHWC (input transpose removed)``. An input that looks NHWC (1, 3 or 4
    channels last) read as it is gets a Transpose moved down the graph
    (:func:`graph.channels_first_kept`): ``NHWC (kept in the graph; transposed at load)``."""
    constant = {init.name for init in proto.graph.initializer}
    inputs = [i for i in proto.graph.input if i.name not in constant]
    shape = graph.dims(inputs[0].type) if len(inputs) == 1 else None
    if shape is None or len(shape) != 4:
        return proto, "NCHW"
    name = inputs[0].name
    peeled = graph.peel_channels_last(proto, name)
    if peeled is not None:
        return peeled, "NHWC (input transpose removed)"
    if shape[3] not in (1, 3, 4) or shape[1] in (1, 3, 4):
        return proto, "NCHW"
    return graph.channels_first_kept(proto, name), "NHWC (kept in the graph; transposed at load)"


def _image_input(proto: onnx.ModelProto) -> tuple[str, type, Shape]:
    """The single image input: name, numpy dtype and (N, C, H, W) shape."""
    constant = {init.name for init in proto.graph.initializer}
    inputs = [i for i in proto.graph.input if i.name not in constant]
    if len(inputs) != 1:
        names = ", ".join(repr(i.name) for i in inputs) or "none"
        raise ModelLoadError(
            f"cnnviz needs a model with one image input; this one has {len(inputs)} ({names})"
        )
    info = inputs[0]
    elem = info.type.tensor_type.elem_type
    shape = graph.dims(info.type)
    if elem not in _FLOAT_TYPES or shape is None or len(shape) != 4:
        raise ModelLoadError(
            f"model input {info.name!r} is not an image batch: cnnviz needs a float "
            f"(N, C, H, W) input, got {_element_name(elem)} "
            f"shape {shape}"
        )
    if not isinstance(shape[1], int) or shape[1] < 1:
        raise ModelLoadError(
            f"model input {info.name!r} has shape {shape}: cnnviz needs (N, C, H, W) with a "
            "fixed number of channels C; export the model with a fixed channel dimension"
        )
    return info.name, _FLOAT_TYPES[elem], shape


#: initializers up to this many values travel into the shape check (shape constants)
_SHAPE_CONSTANT_VALUES = 64


def _check_windows(
    proto: onnx.ModelProto, input_name: str, size: tuple[int, int], name: str
) -> None:
    """Raise when a Conv or pooling node would give an empty output for one image of
    ``size``: a window larger than its input (kernel, dilation, padding). onnxruntime does
    not refuse such a graph; it dies running it (a division by zero), so this runs before
    any session. Shapes come from ONNX's inference afresh, never from the file's own
    ``value_info`` (which a corrupted file gets wrong); the check is skipped when ONNX
    cannot infer the graph. Large weights travel as typed inputs (no copy of their bytes)."""
    skeleton = onnx.GraphProto(name=proto.graph.name or "graph")
    skeleton.node.extend(proto.graph.node)
    constants = set()
    for init in proto.graph.initializer:
        if math.prod(init.dims) <= _SHAPE_CONSTANT_VALUES:
            skeleton.initializer.append(init)
        else:
            skeleton.input.append(
                onnx.helper.make_tensor_value_info(init.name, init.data_type, init.dims)
            )
        constants.add(init.name)
    for info in proto.graph.input:
        if info.name == input_name:
            declared = graph.dims(info.type) or ()
            elem = info.type.tensor_type.elem_type
            image = [1, declared[1] if len(declared) > 1 else None, *size]
            skeleton.input.append(onnx.helper.make_tensor_value_info(info.name, elem, image))
        elif info.name not in constants:
            skeleton.input.append(info)
    for info in proto.graph.output:
        elem = info.type.tensor_type.elem_type
        skeleton.output.append(onnx.helper.make_tensor_value_info(info.name, elem, None))
    light = onnx.helper.make_model(skeleton, opset_imports=proto.opset_import)
    light.ir_version = proto.ir_version
    light.functions.extend(proto.functions)
    try:
        inferred = onnx.shape_inference.infer_shapes(light, strict_mode=False, data_prop=True)
    except onnx.shape_inference.InferenceError:
        return  # ONNX cannot infer it afresh: onnxruntime will judge the graph itself
    shapes = {info.name: graph.dims(info.type) for info in inferred.graph.value_info}
    for node in proto.graph.node:
        if node.op_type not in graph.WINDOW_OPS or not node.output:
            continue
        inferred_shape = shapes.get(node.output[0])
        if inferred_shape and any(d == 0 for d in inferred_shape[2:]):
            attrs = graph.attributes(node)
            window = ", ".join(
                f"{key} {attrs[key]}"
                for key in ("kernel_shape", "strides", "pads", "dilations")
                if key in attrs
            )
            raise ModelLoadError(
                f"model {name!r}: {node.op_type} node {node.name!r} gives an empty output "
                f"{list(inferred_shape)} for a {size[0]}x{size[1]} image: its window ({window}) is "
                "larger than its input (a corrupted attribute, or a preprocessing size too "
                "small for the model)"
            )


def _element_name(elem: int) -> str:
    try:
        return str(onnx.TensorProto.DataType.Name(elem))
    except ValueError:
        return f"unknown element type {elem}"


def _providers(device: str) -> tuple[list[str], list[dict]]:
    """onnxruntime providers for a device string; raises when the GPU is absent."""
    kind, _, index = device.partition(":")
    if kind == "cpu":
        return ["CPUExecutionProvider"], [{}]
    if kind == "cuda":
        available = ort.get_available_providers()
        if "CUDAExecutionProvider" not in available:
            raise DeviceError(
                "device 'cuda' was asked for but this onnxruntime has no CUDA provider "
                f"(available: {', '.join(available)}); install onnxruntime-gpu in place of "
                "onnxruntime (never both), or use device='cpu'"
            )
        return ["CUDAExecutionProvider", "CPUExecutionProvider"], [
            {"device_id": int(index or 0)},
            {},
        ]
    raise DeviceError(f"unknown device {device!r}; use 'cpu' or 'cuda' (or 'cuda:N')")
