"""Targets in the engine: every target form resolves (and the bad ones raise naming what is
wrong), the seeds against NumPy references, the scores against the tensors' values, a new
target form through the protocol, and one forward run per batch for the predicted class."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from conftest import tiny_classifier

from cnnviz_core import Model, Preprocess, TargetError, UnknownLayerError
from cnnviz_core.backward import gradients
from cnnviz_core.targets import (
    SEEDS,
    Channel,
    Class,
    Neuron,
    ResolvedTarget,
    ShapeOf,
    Target,
    TargetLike,
    cotangents,
    per_image,
    resolve_target,
    resolve_targets,
    score_tensor,
    seeded_scores,
    target_scores,
)

LABELS = ["circle", "square", "star", "triangle"]


@pytest.fixture(scope="module")
def model() -> Model:
    proto = tiny_classifier(classes=len(LABELS))
    return Model(proto.SerializeToString(), preprocess=Preprocess(scale=1.0), labels=LABELS)


@pytest.fixture(scope="module")
def batch() -> np.ndarray:
    return np.random.default_rng(5).standard_normal((3, 3, 16, 16)).astype(np.float32)


def _count_runs(model: Model, monkeypatch: pytest.MonkeyPatch) -> list[tuple]:
    """Record every forward run of ``model`` (its taps)."""
    calls: list[tuple] = []
    run = model.run

    def counted(batch: np.ndarray, taps: Any = (), **kwargs: Any) -> dict[str, np.ndarray]:
        calls.append(tuple(taps))
        return run(batch, taps, **kwargs)

    monkeypatch.setattr(model, "run", counted)
    return calls


# ------------------------------------------------------------------------------ resolution


@pytest.mark.parametrize(
    ("target", "index"),
    [(2, 2), (np.int64(2), 2), ("star", 2), (Class(2), 2), (Class("star"), 2)],
)
def test_class_forms_resolve_to_the_score_tensor(model: Model, target, index: int) -> None:
    resolved = resolve_target(model, target)
    assert resolved == ResolvedTarget("logits", (index,), "class", index, "class 2 'star'")
    assert score_tensor(model) == "logits"
    assert resolved.as_target() == Class(index)


@pytest.mark.parametrize(
    ("target", "tensor", "index", "kind", "label"),
    [
        (Channel("relu1", 5), "relu1", (5,), "channel", "relu1 channel 5"),
        (Neuron("conv2", 7, 3, 1), "conv2", (7, 3, 1), "neuron", "conv2 neuron (7, 3, 1)"),
        (Neuron("logits", 1), "logits", (1,), "neuron", "logits neuron (1)"),
    ],
)
def test_layer_forms_resolve(model: Model, target, tensor, index, kind, label) -> None:
    resolved = resolve_target(model, target)
    assert (resolved.tensor, resolved.index, resolved.kind, resolved.label) == (
        tensor,
        index,
        kind,
        label,
    )
    assert resolved.class_index is None
    assert resolve_target(model, resolved) is resolved  # resolved targets pass through
    assert resolve_target(model, resolved.as_target()) == resolved


@pytest.mark.parametrize(
    ("target", "error", "message"),
    [
        (4, TargetError, "out of range"),
        ("zebra", TargetError, "zebra"),
        (Channel("relu1", 6), TargetError, r"channel 6 is out of range.*6 channels"),
        (Neuron("conv2", 0, 3), TargetError, "needs 2 spatial indices; got 1"),
        (Neuron("conv2", 0, 8, 0), TargetError, r"neuron y=8 is out of range"),
        (Neuron("logits", 0, 0), TargetError, "needs 0 spatial indices"),
        (Channel("nope", 0), UnknownLayerError, "nope"),
        (2.5, TargetError, "a target must be"),
        (True, TargetError, "a target must be"),
    ],
)
def test_bad_targets_raise(model: Model, target, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        resolve_target(model, target)


def test_none_is_the_predicted_class_and_lists_go_per_image(model: Model, batch) -> None:
    logits = model.run(batch, taps=["logits"], outputs=False)["logits"]
    predicted = logits.argmax(axis=1)
    resolved = resolve_targets(model, batch, None)
    assert [t.class_index for t in resolved] == predicted.tolist()
    mixed = resolve_targets(model, batch, [None, "circle", Channel("relu2", 3)])
    assert [t.label for t in mixed] == [
        resolved[0].label,
        "class 0 'circle'",
        "relu2 channel 3",
    ]
    # the predicted class read from values already computed: no forward run
    assert resolve_targets(model, batch, None, {"logits": logits}) == resolved
    with pytest.raises(TargetError, match="2 targets given for a batch of 3"):
        resolve_targets(model, batch, [1, 2])
    assert per_image(Class(1), 2) == [Class(1), Class(1)]


# ----------------------------------------------------------------------------------- seeds


def test_seeds_match_numpy_references() -> None:
    shape = (3, 4, 5)
    one_hot = np.zeros(shape, np.float32)
    one_hot.reshape(-1)[17] = 1
    got = ResolvedTarget("t", (17,), "class", 17, "").cotangent(shape)
    np.testing.assert_array_equal(got, one_hot)
    assert got.dtype == np.float32
    mean = np.zeros(shape, np.float32)
    mean[2] = 1 / 20
    np.testing.assert_array_equal(
        ResolvedTarget("t", (2,), "channel", None, "").cotangent(shape), mean
    )
    point = np.zeros(shape, np.float32)
    point[1, 3, 4] = 1
    np.testing.assert_array_equal(
        ResolvedTarget("t", (1, 3, 4), "neuron", None, "").cotangent(shape), point
    )
    with pytest.raises(TargetError, match="no seed for target kind 'ellipse'"):
        ResolvedTarget("t", (0,), "ellipse", None, "").cotangent(shape)


def test_cotangents_and_scores_against_the_tensors(model: Model, batch) -> None:
    targets = resolve_targets(
        model, batch, [Class(3), Channel("relu2", 2), Neuron("conv2", 1, 2, 5)]
    )
    seeds = cotangents(model, batch, targets)
    assert sorted(seeds) == ["conv2", "logits", "relu2"]
    assert seeds["logits"].shape == (3, 4) and seeds["relu2"].shape == (3, 8, 8, 8)
    # each image is seeded on its own tensor only
    assert not seeds["logits"][1:].any() and not seeds["relu2"][[0, 2]].any()
    values = model.run(batch, taps=list(seeds), outputs=False)
    expected = [
        values["logits"][0, 3],
        values["relu2"][1, 2].astype(np.float64).mean(),
        values["conv2"][2, 1, 2, 5],
    ]
    np.testing.assert_allclose(seeded_scores(seeds, values), expected, rtol=1e-6)
    resolved, scores = target_scores(model, batch, targets)
    assert resolved == targets
    np.testing.assert_allclose(scores, expected, rtol=1e-6)


# ----------------------------------------------------------------------- the entry point


@pytest.mark.parametrize("forward", ["onnxruntime", "numpy"])
def test_gradients_of_targets_equal_explicit_cotangents(model: Model, batch, forward) -> None:
    x = batch.astype(np.float64) if forward == "numpy" else batch
    wanted: list[TargetLike] = [Class("square"), Channel("relu2", 2), Neuron("conv2", 1, 2, 5)]
    result = gradients(model, x, wanted, wrt=["relu1"], forward=forward)
    assert [t.label for t in result.targets] == [
        "class 1 'square'",
        "relu2 channel 2",
        "conv2 neuron (1, 2, 5)",
    ]
    explicit = gradients(
        model, x, cotangents(model, x, result.targets), wrt=["relu1"], forward=forward
    )
    assert explicit.targets == []
    for name in ("x", "relu1"):
        np.testing.assert_array_equal(result.grads[name], explicit.grads[name])
    assert result.grads["x"].dtype == x.dtype
    np.testing.assert_allclose(result.scores, explicit.scores, rtol=1e-12)
    reference = target_scores(model, batch, wanted)[1]
    np.testing.assert_allclose(result.scores, reference, rtol=1e-5)


def test_a_layer_off_the_path_gets_zeros_in_the_same_forward(
    model: Model, batch, monkeypatch
) -> None:
    calls = _count_runs(model, monkeypatch)
    result = gradients(model, batch, Channel("relu1", 0), wrt=["conv2"])
    assert len(calls) == 1
    assert result.grads["conv2"].shape == (3, 8, 8, 8) and not result.grads["conv2"].any()
    assert result.values["conv2"].shape == (3, 8, 8, 8)


def test_predicted_class_costs_one_forward(model: Model, batch, monkeypatch) -> None:
    predicted = model.run(batch, taps=["logits"], outputs=False)["logits"].argmax(axis=1)
    calls = _count_runs(model, monkeypatch)
    result = gradients(model, batch, None)
    assert len(calls) == 1
    assert [t.class_index for t in result.targets] == predicted.tolist()
    explicit = gradients(model, batch, [Class(int(k)) for k in predicted])
    np.testing.assert_array_equal(result.grads["x"], explicit.grads["x"])
    np.testing.assert_array_equal(result.scores, explicit.scores)
    calls.clear()
    target_scores(model, batch, None)
    assert len(calls) == 1


# ------------------------------------------------------------------ a new target form


@dataclass(frozen=True)
class Box:
    """A test-only region target: the mean of one channel over a box of a layer."""

    layer: str
    channel: int
    top: int
    left: int
    bottom: int
    right: int

    def resolve(self, model: Model, shape_of: ShapeOf) -> ResolvedTarget:
        tensor = model.tensor_name(self.layer)
        assert len(shape_of(tensor)) == 3
        index = (self.channel, self.top, self.left, self.bottom, self.right)
        return ResolvedTarget(tensor, index, "box", None, f"{self.layer} box {index}")


def box_mean(index: tuple[int, ...], shape: tuple[int, ...]) -> np.ndarray:
    c, top, left, bottom, right = index
    seed = np.zeros(shape, np.float32)
    seed[c, top:bottom, left:right] = 1.0 / ((bottom - top) * (right - left))
    return seed


def test_a_new_target_form_plugs_in(model: Model, batch, monkeypatch) -> None:
    assert isinstance(Box("relu2", 0, 0, 0, 1, 1), Target)
    monkeypatch.setitem(SEEDS, "box", box_mean)
    result = gradients(model, batch, Box("relu2", 4, 1, 2, 5, 7))
    relu2 = model.run(batch, taps=["relu2"], outputs=False)["relu2"]
    expected = relu2[:, 4, 1:5, 2:7].astype(np.float64).mean(axis=(1, 2))
    np.testing.assert_allclose(result.scores, expected, rtol=1e-5)
    assert result.grads["x"].any()


@pytest.mark.parametrize(
    "target",
    [Class(3), Channel("relu2", 2), Neuron("conv2", 1, 2, 5), Box("relu2", 4, 1, 2, 5, 7)],
    ids=["class", "channel", "neuron", "box"],
)
def test_values_equal_the_seed_dot_product(model: Model, batch, target, monkeypatch) -> None:
    """A target's value on a batch (what perturbation methods score) is its seed's dot product
    with the tensor, row by row: the fast paths and the generic one agree with the seeds."""
    monkeypatch.setitem(SEEDS, "box", box_mean)
    resolved = resolve_targets(model, batch, target)[0]
    tensor = model.run(batch, taps=[resolved.tensor], outputs=False)[resolved.tensor]
    seed = resolved.cotangent(tensor.shape[1:]).astype(np.float64)
    expected = (tensor.astype(np.float64) * seed).reshape(len(tensor), -1).sum(axis=1)
    got = resolved.values(tensor)
    assert got.dtype == np.float64 and got.shape == (len(batch),)
    np.testing.assert_allclose(got, expected, rtol=1e-6)
