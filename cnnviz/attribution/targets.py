"""What an explanation explains: a class score, a channel's mean activation, or one neuron.

Every technique takes ``target=``:

- ``None``: the predicted class of each image;
- an ``int`` or a label name: shorthand for :class:`Class`;
- :class:`Class`, :class:`Channel`, :class:`Neuron`;
- a list with one of the above per image.

A target resolves against the model to a tensor and a cotangent (the seed of the backward
pass): one-hot on the pre-softmax class scores for a class (for a model ending in Softmax,
the Softmax's input), the mean over the channel's map for a channel, one element for a
neuron. Shape convention: (N, C, H, W).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cnnviz_core import Model, TargetError
from cnnviz_core.graph import RESHAPE_OPS

#: ops that pass a tensor through without changing its values (walked over to find scores)
PASS_THROUGH = RESHAPE_OPS


@dataclass(frozen=True)
class Class:
    """A class score before softmax, by index or label name."""

    index: int | str


@dataclass(frozen=True)
class Channel:
    """The mean of one channel's map of a layer (name or alias)."""

    layer: str
    channel: int


@dataclass(frozen=True)
class Neuron:
    """One element of a layer: ``(channel, y, x)`` of a 4-D map, ``channel`` alone for a
    vector (e.g. one logit)."""

    layer: str
    channel: int
    y: int | None = None
    x: int | None = None


Target = Class | Channel | Neuron
TargetLike = Target | int | str | None


@dataclass(frozen=True)
class ResolvedTarget:
    """A target checked against a model: the tensor its cotangent seeds, and where.

    Attributes:
        tensor: graph tensor name.
        index: the element(s) of one image's tensor: ``(c,)`` for a class (index into the
            flattened scores), ``(c,)`` for a channel, ``(c, y, x)`` or ``(c,)`` for a neuron.
        kind: ``class``, ``channel`` or ``neuron``.
        class_index: the class for class targets, else None.
        label: a readable description (``class 3 'star'``, ``relu_3 channel 5``...).
    """

    tensor: str
    index: tuple[int, ...]
    kind: str
    class_index: int | None
    label: str

    def as_target(self) -> Target:
        """The plain target this resolved from (e.g. to re-resolve on a noisy batch)."""
        if self.kind == "class":
            assert self.class_index is not None
            return Class(self.class_index)
        if self.kind == "channel":
            return Channel(self.tensor, self.index[0])
        return Neuron(self.tensor, *self.index)

    def cotangent(self, shape: Sequence[int]) -> np.ndarray:
        """One image's seed, float32 of ``shape`` (the tensor's shape without the batch)."""
        seed = np.zeros(shape, np.float32)
        if self.kind == "class":
            seed.reshape(-1)[self.index[0]] = 1.0
        elif self.kind == "channel":
            plane = seed[self.index[0], ...]
            plane[...] = 1.0 / max(plane.size, 1)
        else:
            seed[self.index] = 1.0
        return seed


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


def resolve_targets(
    model: Model,
    batch: np.ndarray,
    target: TargetLike | ResolvedTarget | Sequence[TargetLike | ResolvedTarget],
) -> list[ResolvedTarget]:
    """One resolved target per image of ``batch`` (None: the predicted class).

    Raises:
        TargetError: a class, channel or position out of range, or a list whose length is
            not the batch size.
        UnknownLayerError: a layer name the model does not have.
    """
    n = len(batch)
    if isinstance(target, (list, tuple)):
        if len(target) != n:
            raise TargetError(f"{len(target)} targets given for a batch of {n} images")
        wanted = list(target)
    else:
        wanted = [target] * n
    predicted: np.ndarray | None = None
    if any(t is None for t in wanted):
        predicted = model.scores(batch).argmax(axis=1)
    resolved = []
    for i, t in enumerate(wanted):
        if t is None:
            assert predicted is not None
            t = Class(int(predicted[i]))
        resolved.append(resolve_target(model, t, batch))
    return resolved


def resolve_target(
    model: Model, target: TargetLike | ResolvedTarget, batch: np.ndarray | None = None
) -> ResolvedTarget:
    """Check one target against the model (see :func:`resolve_targets`; None not allowed)."""
    if isinstance(target, ResolvedTarget):
        return target
    if isinstance(target, np.integer):
        target = int(target)
    if isinstance(target, (int, str)) and not isinstance(target, bool):
        target = Class(target)
    if isinstance(target, Class):
        index = model.class_index(target.index)
        scores = score_tensor(model)
        size = int(np.prod(tensor_shape(model, scores, batch)))
        if index >= size:
            raise TargetError(f"class {index} is out of range: {scores!r} has {size} scores")
        name = model.label(index)
        return ResolvedTarget(scores, (index,), "class", index, f"class {index} {name!r}")
    if isinstance(target, (Channel, Neuron)):
        tensor = model.tensor_name(target.layer)
        shape = tensor_shape(model, tensor, batch)
        channels = shape[0] if shape else 1
        if not 0 <= target.channel < channels:
            raise TargetError(
                f"channel {target.channel} is out of range: layer {target.layer!r} has "
                f"{channels} channels (0..{channels - 1})"
            )
        if isinstance(target, Channel):
            label = f"{target.layer} channel {target.channel}"
            return ResolvedTarget(tensor, (target.channel,), "channel", None, label)
        position = tuple(p for p in (target.y, target.x) if p is not None)
        if len(position) != len(shape) - 1:
            raise TargetError(
                f"a neuron of layer {target.layer!r} (shape {shape}) needs "
                f"{len(shape) - 1} spatial indices; got {len(position)}"
            )
        for axis, (p, size) in enumerate(zip(position, shape[1:])):
            if not 0 <= p < size:
                raise TargetError(
                    f"neuron {'yx'[axis] if len(position) == 2 else 'index'}={p} is out of "
                    f"range: layer {target.layer!r} is {size} wide on that axis (0..{size - 1})"
                )
        index = (target.channel, *position)
        where = ", ".join(map(str, index))
        return ResolvedTarget(tensor, index, "neuron", None, f"{target.layer} neuron ({where})")
    raise TargetError(
        f"a target must be a class index or label, Class, Channel, Neuron, None or a list of "
        f"those; got {target!r}"
    )


def cotangents(
    model: Model, batch: np.ndarray, targets: Sequence[ResolvedTarget]
) -> dict[str, np.ndarray]:
    """The batch's seeds: tensor -> (N, ...) array, zero rows for images seeded elsewhere."""
    seeds: dict[str, np.ndarray] = {}
    shapes: dict[str, tuple[int, ...]] = {}
    for i, t in enumerate(targets):
        if t.tensor not in seeds:
            shapes[t.tensor] = tensor_shape(model, t.tensor, batch)
            seeds[t.tensor] = np.zeros((len(batch), *shapes[t.tensor]), np.float32)
        seeds[t.tensor][i] = t.cotangent(shapes[t.tensor])
    return seeds
