"""What a gradient or a score explains: a class score, a channel's mean activation, one neuron.

Every technique takes ``target=``:

- ``None``: the predicted class of each image;
- an ``int`` or a label name: shorthand for :class:`Class`;
- :class:`Class`, :class:`Channel`, :class:`Neuron` (any object with a ``resolve`` method, see
  :class:`Target`);
- a list with one of the above per image.

The protocol: a target *resolves* against the model to a :class:`ResolvedTarget`, a graph
tensor and the seed of the backward pass on it (the cotangent): one-hot on the pre-softmax
class scores for a class (for a model ending in Softmax, the Softmax's input), the mean over
the channel's map for a channel, one element for a neuron. The target's score is the seed's
dot product with the tensor, so its gradient is the backward pass of that seed.

Beyond a class: :class:`~cnnviz_core.detection.Box` (a box's class score or objectness of a
YOLO-style detector, see :mod:`cnnviz_core.detection`) and :class:`Region` (a class's score
summed over a mask of a segmentation output).

Adding a target form: write a frozen dataclass with ``resolve(model, shape_of) ->
ResolvedTarget``; when its seed is none of the existing kinds, register the seed under a
new kind in :data:`SEEDS`.

Shape convention: (N, C, H, W); shapes given to seeds are one image's, without the batch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, cast, runtime_checkable

import numpy as np

from .errors import TargetError
from .model import Model

#: one image's shape of a graph tensor (without the batch axis), by tensor name
ShapeOf = Callable[[str], tuple[int, ...]]


@runtime_checkable
class Target(Protocol):
    """Anything that resolves to a tensor and a seed: :class:`Class`, :class:`Channel`,
    :class:`Neuron`, :class:`Region`, :class:`~cnnviz_core.detection.Box`."""

    def resolve(self, model: Model, shape_of: ShapeOf) -> ResolvedTarget:
        """Check the target against ``model`` (tensor shapes from ``shape_of``).

        Raises:
            TargetError: an index out of range.
            UnknownLayerError: a layer name the model does not have.
        """
        ...


TargetLike = Target | int | str | None


@dataclass(frozen=True)
class ResolvedTarget:
    """A target checked against a model: the tensor its cotangent seeds, and where.

    Attributes:
        tensor: graph tensor name.
        index: the element(s) of one image's tensor: ``(c,)`` for a class (index into the
            flattened scores), ``(c,)`` for a channel, ``(c, y, x)`` or ``(c,)`` for a neuron.
        kind: the seed's kind, a key of :data:`SEEDS` (``class``, ``channel``, ``neuron``).
        class_index: the class for class targets, else None.
        label: a readable description (``class 3 'star'``, ``relu_3 channel 5``...).
    """

    tensor: str
    index: tuple[int, ...]
    kind: str
    class_index: int | None
    label: str

    def as_target(self) -> Class | Channel | Neuron:
        """The plain target this resolved from (e.g. to re-resolve on a noisy batch)."""
        if self.kind == "class":
            assert self.class_index is not None
            return Class(self.class_index)
        if self.kind == "channel":
            return Channel(self.tensor, self.index[0])
        if self.kind == "neuron":
            return Neuron(self.tensor, *self.index)
        raise TargetError(f"a {self.kind!r} target has no plain form")

    def cotangent(self, shape: Sequence[int]) -> np.ndarray:
        """One image's seed, float32 of ``shape`` (the tensor's shape without the batch)."""
        try:
            seed = SEEDS[self.kind]
        except KeyError:
            raise TargetError(
                f"no seed for target kind {self.kind!r}; register one in SEEDS "
                f"(known: {', '.join(SEEDS)})"
            ) from None
        return seed(self.index, tuple(shape))

    def values(self, tensor: np.ndarray) -> np.ndarray:
        """(B,) float64: the explained value of each row of a batch of this target's tensor
        (the seed's dot product with it): the channel's mean, the neuron's value, the class
        score; kinds without a fast path take the seed's dot product."""
        rows = len(tensor)
        if self.kind == "channel":
            plane = tensor[:, self.index[0]]
            return plane.reshape(rows, -1).mean(axis=1, dtype=np.float64)
        if self.kind == "neuron":
            element: tuple[slice | int, ...] = (slice(None), *self.index)
            return tensor[element].astype(np.float64).reshape(rows)
        if self.kind == "class":
            return tensor.reshape(rows, -1)[:, self.index[0]].astype(np.float64)
        seed = self.cotangent(tensor.shape[1:]).reshape(-1).astype(np.float64)
        return tensor.reshape(rows, -1).astype(np.float64) @ seed


#: one target for every image of a batch, or a list of one per image
Targets = TargetLike | ResolvedTarget | Sequence[TargetLike | ResolvedTarget]


# ---------------------------------------------------------------------------------- seeds


def one_hot_flat(index: tuple[int, ...], shape: tuple[int, ...]) -> np.ndarray:
    """A class seed: 1 at ``index[0]`` of the flattened tensor."""
    seed = np.zeros(shape, np.float32)
    seed.reshape(-1)[index[0]] = 1.0
    return seed


def channel_mean(index: tuple[int, ...], shape: tuple[int, ...]) -> np.ndarray:
    """A channel seed: ``1 / (h w)`` over channel ``index[0]``'s map (its mean)."""
    seed = np.zeros(shape, np.float32)
    plane = seed[index[0], ...]
    plane[...] = 1.0 / max(plane.size, 1)
    return seed


def one_hot(index: tuple[int, ...], shape: tuple[int, ...]) -> np.ndarray:
    """A neuron seed: 1 at ``index`` (``(c, y, x)``, or ``(c,)`` of a vector)."""
    seed = np.zeros(shape, np.float32)
    seed[index] = 1.0
    return seed


def region_sum(index: tuple[int, ...], shape: tuple[int, ...]) -> np.ndarray:
    """A region seed: 1 on class ``index[0]``'s plane at the flat pixel positions
    ``index[1:]`` (the class score summed over the mask)."""
    seed = np.zeros(shape, np.float32)
    seed[index[0]].reshape(-1)[list(index[1:])] = 1.0
    return seed


#: seed (cotangent) of one image by target kind: (index, shape) -> float32 array of shape
SEEDS: dict[str, Callable[[tuple[int, ...], tuple[int, ...]], np.ndarray]] = {
    "class": one_hot_flat,
    "channel": channel_mean,
    "neuron": one_hot,
    "box": one_hot,
    "region": region_sum,
}


# -------------------------------------------------------------------------------- targets


@dataclass(frozen=True)
class Class:
    """A class score before softmax, by index or label name."""

    index: int | str

    def resolve(self, model: Model, shape_of: ShapeOf) -> ResolvedTarget:
        index = model.class_index(self.index)
        scores = score_tensor(model)
        size = int(np.prod(shape_of(scores)))
        if index >= size:
            raise TargetError(f"class {index} is out of range: {scores!r} has {size} scores")
        name = model.label(index)
        return ResolvedTarget(scores, (index,), "class", index, f"class {index} {name!r}")


@dataclass(frozen=True)
class Channel:
    """The mean of one channel's map of a layer (name or alias)."""

    layer: str
    channel: int

    def resolve(self, model: Model, shape_of: ShapeOf) -> ResolvedTarget:
        tensor = model.tensor_name(self.layer)
        _check_channel(self.layer, self.channel, shape_of(tensor))
        label = f"{self.layer} channel {self.channel}"
        return ResolvedTarget(tensor, (self.channel,), "channel", None, label)


@dataclass(frozen=True)
class Neuron:
    """One element of a layer: ``(channel, y, x)`` of a 4-D map, ``channel`` alone for a
    vector (e.g. one logit)."""

    layer: str
    channel: int
    y: int | None = None
    x: int | None = None

    def resolve(self, model: Model, shape_of: ShapeOf) -> ResolvedTarget:
        tensor = model.tensor_name(self.layer)
        shape = shape_of(tensor)
        _check_channel(self.layer, self.channel, shape)
        position = tuple(p for p in (self.y, self.x) if p is not None)
        if len(position) != len(shape) - 1:
            raise TargetError(
                f"a neuron of layer {self.layer!r} (shape {shape}) needs "
                f"{len(shape) - 1} spatial indices; got {len(position)}"
            )
        for axis, (p, size) in enumerate(zip(position, shape[1:])):
            if not 0 <= p < size:
                raise TargetError(
                    f"neuron {'yx'[axis] if len(position) == 2 else 'index'}={p} is out of "
                    f"range: layer {self.layer!r} is {size} wide on that axis (0..{size - 1})"
                )
        index = (self.channel, *position)
        where = ", ".join(map(str, index))
        return ResolvedTarget(tensor, index, "neuron", None, f"{self.layer} neuron ({where})")


def _check_channel(layer: str, channel: int, shape: tuple[int, ...]) -> None:
    channels = shape[0] if shape else 1
    if not 0 <= channel < channels:
        raise TargetError(
            f"channel {channel} is out of range: layer {layer!r} has "
            f"{channels} channels (0..{channels - 1})"
        )


def nearest_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A boolean (H, W) mask resized to ``size`` (h, w) by nearest neighbour (each output
    pixel takes the input pixel under its centre)."""
    rows = ((np.arange(size[0]) + 0.5) * mask.shape[0] / size[0]).astype(int)
    cols = ((np.arange(size[1]) + 0.5) * mask.shape[1] / size[1]).astype(int)
    return np.asarray(mask[np.ix_(rows, cols)], bool)


@dataclass(frozen=True, eq=False)
class Region:
    """A segmentation target: class ``class_index``'s score **summed** over a boolean mask.

    For a segmentation output (N, K, H, W): the seed is the mask on that class's plane, so
    the explained value is ``scores[class_index][mask].sum()``.

    Attributes:
        mask: boolean (H, W) at the output's resolution, or at the model input's (then
            resized to the output's by nearest neighbour).
        class_index: the class plane; None only for a one-channel output (K = 1).
        output: the output tensor (layer name or alias); None: the model's first output.
    """

    mask: np.ndarray
    class_index: int | None = None
    output: str | None = None

    def resolve(self, model: Model, shape_of: ShapeOf) -> ResolvedTarget:
        tensor = model.tensor_name(self.output) if self.output else model.output_names[0]
        shape = shape_of(tensor)
        mask = np.asarray(self.mask, bool)
        if len(shape) != 3:
            raise TargetError(
                f"a Region needs a (K, H, W) output per image; {tensor!r} is {shape}: "
                "pass output= a segmentation map"
            )
        if mask.shape != shape[1:] and mask.shape == tuple(model.input_shape[1:]):
            mask = nearest_mask(mask, (shape[1], shape[2]))
        if mask.shape != shape[1:]:
            raise TargetError(
                f"Region mask is {mask.shape}; output {tensor!r} is {shape[1:]} (H, W) and the "
                f"input {tuple(model.input_shape[1:])}: resize the mask to the output's "
                "resolution"
            )
        if self.class_index is None and shape[0] != 1:
            raise TargetError(f"Region needs class_index: output {tensor!r} has {shape[0]} classes")
        c = 0 if self.class_index is None else self.class_index
        _check_channel(tensor, c, shape)
        pixels = tuple(int(i) for i in np.flatnonzero(mask))
        label = f"class {c} over {len(pixels)} pixels of {tensor}"
        return ResolvedTarget(tensor, (c, *pixels), "region", c, label)


# ----------------------------------------------------------------------------- resolution


def score_tensor(model: Model) -> str:
    """The pre-softmax class scores (e.g. SqueezeNet's flattened global pool)."""
    return model.score_tensor


def tensor_shape(model: Model, tensor: str, batch: np.ndarray | None = None) -> tuple[int, ...]:
    """Per-image shape of a tensor: from shape inference, else from a forward run."""
    try:
        shape = model.layer(tensor).shape
    except KeyError:
        shape = None
    if shape and all(isinstance(d, int) for d in shape[1:]):
        return tuple(int(d) for d in shape[1:])
    if batch is None:
        batch = np.zeros((1, *model.input_shape), np.float32)
    return tuple(model.run(batch[:1], taps=[tensor], outputs=False)[tensor].shape[1:])


def resolve_target(
    model: Model,
    target: TargetLike | ResolvedTarget,
    batch: np.ndarray | None = None,
    values: Mapping[str, np.ndarray] | None = None,
) -> ResolvedTarget:
    """Check one target against the model (see :func:`resolve_targets`; None not allowed).

    Tensor shapes come from ``values`` (a batch's tensors already computed) when they hold
    the tensor, else from shape inference, else from a forward run of ``batch``.
    """
    if isinstance(target, ResolvedTarget):
        return target
    if isinstance(target, np.integer):
        target = int(target)
    if isinstance(target, (int, str)) and not isinstance(target, bool):
        target = Class(target)
    if target is not None and isinstance(target, Target):

        def shape_of(tensor: str) -> tuple[int, ...]:
            if values is not None and tensor in values:
                return tuple(values[tensor].shape[1:])
            return tensor_shape(model, tensor, batch)

        return target.resolve(model, shape_of)
    raise TargetError(
        f"a target must be a class index or label, Class, Channel, Neuron, Box, Region, None "
        f"or a list of those; got {target!r}"
    )


def per_image(target: Targets, n: int) -> list[TargetLike | ResolvedTarget]:
    """One target per image of a batch of ``n``: a list is checked, one target repeated.

    Raises:
        TargetError: a list whose length is not the batch size.
    """
    if isinstance(target, (list, tuple)):
        if len(target) != n:
            raise TargetError(f"{len(target)} targets given for a batch of {n} images")
        return list(target)
    return [cast(TargetLike | ResolvedTarget, target)] * n


def resolve_known(
    model: Model,
    batch: np.ndarray,
    target: Targets,
) -> list[ResolvedTarget | None]:
    """One entry per image of ``batch``: its resolved target, or None where it is the
    predicted class (known only after a forward run). Raises as :func:`resolve_targets`."""
    return [
        None if t is None else resolve_target(model, t, batch)
        for t in per_image(target, len(batch))
    ]


def seed_tensors(model: Model, known: Sequence[ResolvedTarget | None]) -> list[str]:
    """The tensors targets from :func:`resolve_known` seed, before any forward run (the
    score tensor for the predicted class)."""
    return list(dict.fromkeys(score_tensor(model) if t is None else t.tensor for t in known))


def resolve_targets(
    model: Model,
    batch: np.ndarray,
    target: Targets,
    values: Mapping[str, np.ndarray] | None = None,
) -> list[ResolvedTarget]:
    """One resolved target per image of ``batch`` (None: the predicted class).

    Args:
        model: the model.
        batch: preprocessed (N, C, H, W) input.
        target: a target form (see the module doc) or a list of one per image.
        values: tensors of ``batch`` already computed (e.g. a tapped forward's): the score
            tensor there answers None without running the model again.

    Raises:
        TargetError: a class, channel or position out of range, or a list whose length is
            not the batch size.
        UnknownLayerError: a layer name the model does not have.
    """
    wanted = per_image(target, len(batch))
    predicted: np.ndarray | None = None
    if any(t is None for t in wanted):
        scores = score_tensor(model)
        if values is None or scores not in values:
            values = {**(values or {}), **model.run(batch, taps=[scores], outputs=False)}
        predicted = values[scores].reshape(len(batch), -1).argmax(axis=1)
    resolved = []
    for i, t in enumerate(wanted):
        if t is None:
            assert predicted is not None
            t = Class(int(predicted[i]))
        resolved.append(resolve_target(model, t, batch, values))
    return resolved


# ---------------------------------------------------------------------------------- seeds


def cotangents(
    model: Model,
    batch: np.ndarray,
    targets: Sequence[ResolvedTarget],
    values: Mapping[str, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """The batch's seeds: tensor -> (N, ...) float32 array, zero rows for images seeded
    elsewhere (shapes from ``values`` when given, as in :func:`resolve_target`)."""
    seeds: dict[str, np.ndarray] = {}
    shapes: dict[str, tuple[int, ...]] = {}
    for i, t in enumerate(targets):
        if t.tensor not in seeds:
            if values is not None and t.tensor in values:
                shapes[t.tensor] = tuple(values[t.tensor].shape[1:])
            else:
                shapes[t.tensor] = tensor_shape(model, t.tensor, batch)
            seeds[t.tensor] = np.zeros((len(batch), *shapes[t.tensor]), np.float32)
        seeds[t.tensor][i] = t.cotangent(shapes[t.tensor])
    return seeds


def seeded_scores(seeds: Mapping[str, np.ndarray], values: Mapping[str, np.ndarray]) -> np.ndarray:
    """Per image, the explained scalar: the sum over seeded tensors of cotangent x value,
    float64 (N,)."""
    total = np.zeros(len(next(iter(seeds.values()))) if seeds else 0, np.float64)
    for name, seed in seeds.items():
        value = values[name]
        total = total + (seed * value).reshape(len(seed), -1).sum(axis=1, dtype=np.float64)
    return total


def target_scores(
    model: Model,
    batch: np.ndarray,
    target: Targets,
) -> tuple[list[ResolvedTarget], np.ndarray]:
    """The resolved targets of ``batch`` and their scores (N,) float64, from one forward run
    (no backward)."""
    known = resolve_known(model, batch, target)
    values = model.run(batch, taps=seed_tensors(model, known), outputs=False)
    targets = resolve_targets(model, batch, known, values)
    return targets, seeded_scores(cotangents(model, batch, targets, values), values)


__all__ = [
    "SEEDS",
    "Channel",
    "Class",
    "Neuron",
    "Region",
    "ResolvedTarget",
    "ShapeOf",
    "Target",
    "TargetLike",
    "Targets",
    "cotangents",
    "nearest_mask",
    "per_image",
    "resolve_known",
    "resolve_target",
    "resolve_targets",
    "score_tensor",
    "seed_tensors",
    "seeded_scores",
    "target_scores",
    "tensor_shape",
]
