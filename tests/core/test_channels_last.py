"""Channels-last exports (what tf2onnx and Keras write): an (N, H, W, C) input read only by a
Transpose to NCHW loads with that Transpose removed, so every technique runs in NCHW and maps
are in image coordinates. An NHWC input read as it is elsewhere (NHWC kept through the graph,
transposes around each conv) gets a Transpose that is moved down the graph until it cancels.

The model is a torch module whose forward takes NHWC and permutes it, exported with the dynamo
exporter and the legacy one (opset 17); checked: predictions equal onnxruntime on the original
NHWC graph, the input gradient equals torch autograd, Grad-CAM runs, occlusion ``auto`` equals
``naive``."""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from cnnviz.attribution import gradcam, occlusion
from cnnviz_core import Model, Preprocess
from cnnviz_core.backward import gradients
from cnnviz_core.check import check

torch = pytest.importorskip("torch")
nn = torch.nn
SIZE = 16
CLASSES = 5


class ChannelsLastNet(nn.Module):
    """A small CNN whose input is (N, H, W, 3), permuted to NCHW first (as tf2onnx writes)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, stride=2, padding=1)
        self.head = nn.Linear(8, CLASSES)

    def forward(self, x):
        y = torch.relu(self.conv1(x.permute(0, 3, 1, 2)))
        y = torch.relu(self.conv2(y))
        return self.head(y.mean(dim=(2, 3)))


def export(net: nn.Module, path, dynamo: bool) -> None:
    x = torch.randn(2, SIZE, SIZE, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporters' own notices
        if dynamo:
            pytest.importorskip("onnxscript")
            torch.onnx.export(
                net, (x,), str(path), dynamo=True, verbose=False,
                dynamic_shapes=({0: torch.export.Dim("batch")},),
            )  # fmt: skip
        else:
            torch.onnx.export(
                net, (x,), str(path), dynamo=False, opset_version=17,
                input_names=["x"], dynamic_axes={"x": {0: "batch"}},
            )  # fmt: skip


@pytest.fixture(scope="module", params=["dynamo", "legacy17"])
def exported(request, tmp_path_factory):
    torch.manual_seed(0)
    net = ChannelsLastNet().eval()
    path = tmp_path_factory.mktemp("nhwc") / f"{request.param}.onnx"
    export(net, path, dynamo=request.param == "dynamo")
    return net, path, Model(path, preprocess=Preprocess(scale=1.0))


@pytest.fixture(scope="module")
def batch():
    return np.random.default_rng(0).standard_normal((3, 3, SIZE, SIZE)).astype(np.float32)


def test_loads_channels_first(exported):
    _, path, model = exported
    assert model.layout == "NHWC (input transpose removed)"
    assert model.channels == 3 and model.input_shape == (3, SIZE, SIZE)
    dims = model.proto.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims[1:]] == [3, SIZE, SIZE]
    assert dims[0].dim_param  # the symbolic batch is kept
    original = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in original[1:]] == [SIZE, SIZE, 3]
    readers = [n for n in model.proto.graph.node if model.input_name in n.input]
    assert readers and all(n.op_type != "Transpose" for n in readers)
    prepared = model.prepare(np.zeros((SIZE, SIZE, 3), np.uint8))
    assert prepared.shape == (1, 3, SIZE, SIZE)


def test_predictions_equal_original_graph(exported, batch):
    _, path, model = exported
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    expected = session.run(None, {name: batch.transpose(0, 2, 3, 1)})[0]
    np.testing.assert_allclose(model.scores(batch), expected, rtol=1e-5, atol=1e-5)


def test_input_gradient_equals_torch(exported, batch):
    net, _, model = exported
    seed = np.random.default_rng(1).standard_normal((len(batch), CLASSES)).astype(np.float32)
    ours = gradients(model, batch, {model.output_names[0]: seed}).grads[model.input_name]
    x = torch.tensor(batch.transpose(0, 2, 3, 1).astype(np.float64), requires_grad=True)
    net64 = ChannelsLastNet()
    net64.load_state_dict(net.state_dict())
    net64.double()(x).backward(torch.tensor(seed, dtype=torch.float64))
    expected = x.grad.numpy().transpose(0, 3, 1, 2)  # NHWC -> NCHW
    assert ours.shape == batch.shape
    np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max())


def test_gradcam_and_occlusion(exported, batch):
    _, _, model = exported
    cam = gradcam(model, batch)
    assert cam.maps.shape[0] == len(batch) and np.isfinite(cam.maps).all()
    auto = occlusion(model, batch, 0, window=6, stride=5)
    naive = occlusion(model, batch, 0, window=6, stride=5, engine="naive")
    assert auto.maps.shape == (len(batch), SIZE, SIZE)
    np.testing.assert_allclose(auto.maps, naive.maps, rtol=1e-4, atol=1e-5)


def test_nhwc_input_also_read_as_it_is_loads_channels_first(tmp_path):
    """The NHWC input also feeds a non-Transpose node (a ReduceMean over H, W): a Transpose
    to NHWC is put after the input and moved down until nothing reads NHWC; same scores."""
    perm = helper.make_node("Transpose", ["image"], ["nchw"], perm=[0, 3, 1, 2])
    pool = helper.make_node("GlobalAveragePool", ["nchw"], ["pooled"])
    side = helper.make_node("ReduceMean", ["image"], ["side"], axes=[1, 2], keepdims=0)
    flat = helper.make_node("Flatten", ["pooled"], ["flat"])
    add = helper.make_node("Add", ["flat", "side"], ["scores"])
    g = helper.make_graph(
        [perm, pool, side, flat, add], "nhwc",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 8, 8, 3])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", 3])],
    )  # fmt: skip
    proto = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    path = tmp_path / "kept.onnx"
    onnx.save(proto, str(path))
    model = Model(path, preprocess=Preprocess(scale=1.0))
    assert model.layout == "NHWC (kept in the graph; transposed at load)"
    assert not [n for n in model.proto.graph.node if n.op_type == "Transpose"]
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    expected = session.run(None, {"image": x.transpose(0, 2, 3, 1)})[0]
    np.testing.assert_allclose(model.scores(x), expected, rtol=1e-5, atol=1e-6)


class TransposesAroundEachConv(nn.Module):
    """NHWC kept through the graph: every conv wrapped in permutes (what a converter without
    a transpose optimizer writes), per-channel bias and activations applied in NHWC, a
    residual Add of two NHWC branches, the head pools over H, W of the NHWC map."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bias1, self.bias2 = nn.Parameter(torch.randn(8)), nn.Parameter(torch.randn(8))
        self.head = nn.Linear(8, CLASSES)

    @staticmethod
    def nhwc_conv(conv: nn.Module, x):
        return conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)

    def forward(self, x):
        x = x * 0.5 + 0.1  # input scaling in NHWC (a Keras Rescaling layer)
        y = torch.relu(self.nhwc_conv(self.conv1, x) + self.bias1)
        z = torch.sigmoid(self.nhwc_conv(self.conv2, y) + self.bias2)
        return self.head((y + z).mean(dim=(1, 2)))


@pytest.fixture(scope="module", params=["dynamo", "legacy17"])
def kept(request, tmp_path_factory):
    torch.manual_seed(0)
    net = TransposesAroundEachConv().eval()
    path = tmp_path_factory.mktemp("kept") / f"{request.param}.onnx"
    export(net, path, dynamo=request.param == "dynamo")
    return net, path, Model(path, preprocess=Preprocess(scale=1.0))


def test_transposes_around_each_conv_cancel_at_load(kept, batch):
    _, path, model = kept
    assert model.layout == "NHWC (kept in the graph; transposed at load)"
    assert not [n for n in model.proto.graph.node if n.op_type == "Transpose"]
    conv_fields = [layer.receptive_field for layer in model.layers if layer.op_type == "Conv"]
    assert len(conv_fields) == 2 and all(f is not None for f in conv_fields)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    expected = session.run(None, {name: batch.transpose(0, 2, 3, 1)})[0]
    np.testing.assert_allclose(model.scores(batch), expected, rtol=1e-5, atol=1e-5)


def test_transposes_around_each_conv_gradient_cam_occlusion(kept, batch):
    net, _, model = kept
    seed = np.random.default_rng(1).standard_normal((len(batch), CLASSES)).astype(np.float32)
    ours = gradients(model, batch, {model.output_names[0]: seed}).grads[model.input_name]
    x = torch.tensor(batch.transpose(0, 2, 3, 1).astype(np.float64), requires_grad=True)
    net.double()(x).backward(torch.tensor(seed, dtype=torch.float64))
    net.float()
    expected = x.grad.numpy().transpose(0, 3, 1, 2)
    np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max())
    cam = gradcam(model, batch)
    assert model.tensor_shape(cam.options["layer"], 1)[1] == 8  # an NCHW map of 8 channels
    auto = occlusion(model, batch, 0, window=6, stride=5)
    naive = occlusion(model, batch, 0, window=6, stride=5, engine="naive")
    np.testing.assert_allclose(auto.maps, naive.maps, rtol=1e-4, atol=1e-5)


def test_doctor_reports_layout_and_passes_its_self_test(exported):
    _, _, model = exported
    report = check(model, directions=2)
    assert report.layout.layout == "NHWC (input transpose removed)"
    assert report.layout.shape[1:] == (3, SIZE, SIZE)
    assert not report.problems


class GreyFixedBatchNet(nn.Module):
    """One channel, exported with a fixed batch of 1 (``reshape(1, -1)``)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.head = nn.Linear(4 * (SIZE - 2) ** 2, CLASSES)

    def forward(self, x):
        return self.head(torch.relu(self.conv(x.permute(0, 3, 1, 2))).reshape(1, -1))


def test_grey_fixed_batch_export_runs_batched(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "grey.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            GreyFixedBatchNet().eval(), (torch.randn(1, SIZE, SIZE, 1),), str(path),
            dynamo=False, opset_version=17, input_names=["x"],
        )  # fmt: skip
    model = Model(path, preprocess="grey01")
    assert model.layout == "NHWC (input transpose removed)" and model.batched
    assert model.input_shape == (1, SIZE, SIZE)
    grey = np.random.default_rng(2).standard_normal((4, 1, SIZE, SIZE)).astype(np.float32)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    expected = np.concatenate(
        [session.run(None, {"x": image[None].transpose(0, 2, 3, 1)})[0] for image in grey]
    )
    np.testing.assert_allclose(model.scores(grey), expected, rtol=1e-5, atol=1e-5)
