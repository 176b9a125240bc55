"""Hostile and broken ONNX files: seeded mutants of the shipped model never crash, hang or
leak a raw exception or onnxruntime's own logging; external data never leaves the model's
folder; declared or inferred gigantic tensors are refused before anything is allocated."""

from __future__ import annotations

import os
from pathlib import Path

import fuzzing
import numpy as np
import onnx
import pytest
from conftest import make_graph_model, tiny_classifier
from onnx import TensorProto, helper, numpy_helper

from cnnviz_core import Model, ModelLoadError
from cnnviz_core import loading as loading_module
from cnnviz_core.model import SessionFactory

#: seeded cases a test run (benchmarks/fuzz.py runs 1,000+)
CASES = 40


@pytest.fixture(scope="module")
def runner():
    with fuzzing.Runner(timeout=30.0) as running:
        yield running


@pytest.fixture(scope="module")
def mutants() -> list[fuzzing.Case]:
    return fuzzing.model_cases(seed=19, count=CASES)


@pytest.mark.parametrize("index", range(CASES))
def test_mutated_model_gives_a_result_or_one_clean_error(runner, mutants, index):
    case = mutants[index]
    outcome = runner.run(case)
    assert outcome.verdict in ("ok", "clean"), f"{case.mutation}: {outcome.detail}"


# -------------------------------------------------------------------------- external data


def _save_external(folder: Path, location: str = "weights.bin") -> Path:
    path = folder / "model.onnx"
    onnx.save(
        tiny_classifier(),
        str(path),
        save_as_external_data=True,
        location=location,
        size_threshold=0,
    )
    return path


def _relocate(path: Path, location: str) -> None:
    """Point every external tensor of the model at ``path`` to ``location``."""
    model = onnx.load(str(path), load_external_data=False)
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = location
    path.write_bytes(model.SerializeToString())


@pytest.fixture
def no_external_reads(monkeypatch):
    """Fail the test if onnx's external-data reader is reached."""

    def refuse(*args, **kwargs):
        raise AssertionError("external data was read")

    monkeypatch.setattr(loading_module, "load_external_data_for_model", refuse)


def test_external_data_beside_the_model_loads(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    path = _save_external(folder)
    batch = np.random.default_rng(0).standard_normal((2, 3, 16, 16)).astype(np.float32)
    reference = Model(tiny_classifier().SerializeToString()).run(batch)["logits"]
    np.testing.assert_array_equal(Model(path).run(batch)["logits"], reference)


def test_external_data_in_a_subfolder_loads(tmp_path):
    path = _save_external(tmp_path)
    (tmp_path / "sub").mkdir()
    (tmp_path / "weights.bin").rename(tmp_path / "sub" / "weights.bin")
    _relocate(path, "sub/weights.bin")
    assert Model(path).num_classes == 4


@pytest.mark.parametrize("escape", ["dotdot", "absolute", "symlink"])
def test_external_data_outside_the_folder_is_refused_before_reading(
    tmp_path, no_external_reads, escape
):
    folder = tmp_path / "model"
    folder.mkdir()
    path = _save_external(folder)
    outside = tmp_path / "secret.bin"
    (folder / "weights.bin").rename(outside)
    location = {
        "dotdot": "../secret.bin",
        "absolute": str(outside),
        "symlink": "link.bin",
    }[escape]
    if escape == "symlink":
        os.symlink(outside, folder / "link.bin")
    _relocate(path, location)
    with pytest.raises(ModelLoadError) as error:
        Model(path)
    message = str(error.value)
    assert "'w1'" in message and location in message  # names the tensor and the path
    assert "absolute" in message if escape == "absolute" else "outside" in message


@pytest.mark.parametrize(
    ("offset", "length", "message"),
    [("-4", None, "negative"), ("0", "99999999", "holds"), ("x", None, "whole numbers")],
)
def test_external_data_beyond_the_file_is_refused(tmp_path, offset, length, message):
    path = _save_external(tmp_path)
    model = onnx.load(str(path), load_external_data=False)
    tensor = model.graph.initializer[0]
    kept = [e for e in tensor.external_data if e.key not in ("offset", "length")]
    del tensor.external_data[:]
    tensor.external_data.extend(kept)
    tensor.external_data.add(key="offset", value=offset)
    if length is not None:
        tensor.external_data.add(key="length", value=length)
    path.write_bytes(model.SerializeToString())
    with pytest.raises(ModelLoadError, match=message):
        Model(path)


def test_a_device_is_no_model_file():
    with pytest.raises(ModelLoadError, match="not a regular file"):
        Model("/dev/zero")


def test_bytes_with_external_data_never_touch_the_file_system(
    tmp_path, monkeypatch, no_external_reads
):
    path = _save_external(tmp_path)
    data = path.read_bytes()
    monkeypatch.chdir(tmp_path)  # the weights file would be found relative to the cwd
    with pytest.raises(ModelLoadError, match=r"given as bytes .* external file"):
        Model(data)


# ----------------------------------------------------------------------- resource limits


def _add_giant_initializer(model: onnx.ModelProto, dims: list[int]) -> onnx.ModelProto:
    tensor = helper.make_tensor("giant", TensorProto.FLOAT, [1], [0.0])
    del tensor.dims[:]
    tensor.dims.extend(dims)
    model.graph.initializer.append(tensor)
    return model


def test_declared_gigantic_initializer_is_refused(monkeypatch):
    monkeypatch.setattr(SessionFactory, "__call__", _no_session)
    proto = _add_giant_initializer(tiny_classifier(), [2**20, 2**20])
    with pytest.raises(ModelLoadError, match=r"'giant' declares shape \[1048576, 1048576\]"):
        Model(proto.SerializeToString())


def _no_session(self, proto, **options):
    raise AssertionError("a session was made for a model that should be refused")


@pytest.mark.parametrize("dims", [[2**20, 2**20], [1, 3, 2**16, 2**16]])
def test_inferred_gigantic_tensor_is_refused_before_any_session(monkeypatch, dims):
    monkeypatch.setattr(SessionFactory, "__call__", _no_session)
    nodes = [
        helper.make_node("ConstantOfShape", ["shape"], ["fill"], "fill"),
        helper.make_node("Conv", ["x", "w"], ["y"], "conv"),
        helper.make_node("ReduceSum", ["fill"], ["total"], "total", keepdims=0),
        helper.make_node("Add", ["y", "total"], ["out"], "add"),
    ]
    weights = {"shape": np.array(dims, np.int64), "w": np.ones((2, 3, 1, 1), np.float32)}
    proto = make_graph_model(nodes, weights, ["N", 3, 8, 8], "out")
    with pytest.raises(ModelLoadError, match=r"'fill'.*over the memory budget"):
        Model(proto.SerializeToString())


def test_gigantic_input_is_refused_and_the_budget_is_configurable():
    huge = tiny_classifier()
    dims = huge.graph.input[0].type.tensor_type.shape.dim
    dims[2].dim_value = dims[3].dim_value = 10**6
    with pytest.raises(ModelLoadError, match=r"'x' of shape .*over the memory budget"):
        Model(huge.SerializeToString())
    small = tiny_classifier().SerializeToString()
    assert Model(small).num_classes == 4
    with pytest.raises(ModelLoadError, match="memory_budget="):
        Model(small, memory_budget=1000)  # conv1's 6x16x16 floats are 6 KiB


# ------------------------------------------------------------------- corrupted contents


def test_window_larger_than_its_input_is_refused_before_any_session(monkeypatch):
    """A dilation flipped to 17 empties MaxPool's output: onnxruntime would die running it
    (SIGFPE, found by the fuzzer), even though the file's own value_info says 8x8."""
    monkeypatch.setattr(SessionFactory, "__call__", _no_session)
    proto = onnx.shape_inference.infer_shapes(tiny_classifier())  # value_info: pool1 8x8
    pool = next(node for node in proto.graph.node if node.op_type == "MaxPool")
    pool.attribute.append(helper.make_attribute("dilations", [17, 1]))
    with pytest.raises(ModelLoadError, match=r"MaxPool node 'pool1' gives an empty output"):
        Model(proto.SerializeToString())


def test_preprocessing_size_too_small_for_a_model_of_any_size(monkeypatch):
    from cnnviz_core import Preprocess

    nodes = [
        helper.make_node("MaxPool", ["x"], ["pool"], "pool", kernel_shape=[3, 3]),
        helper.make_node("GlobalAveragePool", ["pool"], ["gap"], "gap"),
        helper.make_node("Flatten", ["gap"], ["out"], "flat"),
    ]
    proto = make_graph_model(nodes, {}, ["N", 3, "H", "W"], "out").SerializeToString()
    assert Model(proto, preprocess=Preprocess(size=(3, 3))).num_classes == 3
    monkeypatch.setattr(SessionFactory, "__call__", _no_session)
    with pytest.raises(ModelLoadError, match=r"'pool' gives an empty output .* for a 2x2 image"):
        Model(proto, preprocess=Preprocess(size=(2, 2)))


def test_metadata_that_is_not_utf8_is_a_clean_error():
    proto = tiny_classifier()
    proto.metadata_props.add(key="cnnviz.card", value="MARKER-MARKER")
    data = proto.SerializeToString().replace(b"MARKER-MARKER", b"\xff\xfe" * 6 + b"\x80")
    with pytest.raises(ModelLoadError, match=r"metadata_props.*not UTF-8"):
        Model(data)


def test_attribute_of_the_wrong_type_names_node_and_attribute():
    proto = tiny_classifier()
    conv = proto.graph.node[0]
    kernel = helper.make_attribute("kernel_shape", 3.0)
    conv.attribute.append(kernel)
    with pytest.raises(ModelLoadError, match=r"'conv1' \(Conv\).*'kernel_shape'.*FLOAT.*INTS"):
        Model(proto.SerializeToString())


def test_card_of_the_wrong_shape_is_a_clean_error():
    proto = tiny_classifier()
    proto.metadata_props.add(key="cnnviz.card", value='{"preprocess": {"size": [16]}}')
    with pytest.raises(ModelLoadError, match="invalid preprocessing: size"):
        Model(proto.SerializeToString())
    proto.metadata_props[0].value = '{"classes": 4}'
    with pytest.raises(ModelLoadError, match=r"'classes'.*list of class names"):
        Model(proto.SerializeToString())


def test_run_failure_is_a_clean_error_without_onnxruntime_logging(capfd):
    from cnnviz_core import ModelRunError

    nodes = [helper.make_node("Reshape", ["x", "shape"], ["y"], "reshape")]
    proto = make_graph_model(nodes, {"shape": np.array([-1, 5], np.int64)}, ["N", 3, 4, 4], "y")
    model = Model(proto.SerializeToString())
    with pytest.raises(ModelRunError, match="onnxruntime cannot run model"):
        model.run(np.zeros((1, 3, 4, 4), np.float32))  # 48 values are no multiple of 5
    assert ":onnxruntime:" not in capfd.readouterr().err


def test_non_finite_scores_are_a_clean_error():
    from cnnviz_core import ModelRunError

    proto = tiny_classifier()
    for init in proto.graph.initializer:
        if init.name == "fc_b":
            init.CopyFrom(numpy_helper.from_array(np.full(4, np.nan, np.float32), "fc_b"))
    model = Model(proto.SerializeToString())
    with pytest.raises(ModelRunError, match="not finite"):
        model.predict(np.zeros((16, 16, 3), np.uint8))
