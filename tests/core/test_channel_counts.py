"""Inputs with 1, 4 (RGBA) and 5 (multispectral-like) channels, channels-first and
channels-last, end to end: preprocessing, layers and receptive fields, taps, gradient
methods (= torch autograd), CAM, occlusion with both engines and the grey fill, features.

The models are small torch CNNs exported with the dynamo exporter and the legacy one at
opset 17; the channels-last variant permutes an (N, H, W, C) input first (what tf2onnx
writes; Keras exports are in ``test_exporters_tf_paddle.py``)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from cnnviz.attribution import gradcam, guided_backprop, integrated_gradients, occlusion, saliency
from cnnviz.features import conv_filters, extract, render_filters, top_patches
from cnnviz_core import InputError, Model, Preprocess
from cnnviz_core.backward import gradients
from cnnviz_core.preprocess import load_image

torch = pytest.importorskip("torch")
nn = torch.nn
H, W = 16, 12
CLASSES = 4


class Net(nn.Module):
    def __init__(self, channels: int, channels_last: bool) -> None:
        super().__init__()
        self.channels_last = channels_last
        self.conv1 = nn.Conv2d(channels, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, stride=2, padding=1)
        self.head = nn.Linear(8, CLASSES)

    def forward(self, x):
        if self.channels_last:
            x = x.permute(0, 3, 1, 2)
        y = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        return self.head(y.mean(dim=(2, 3)))


#: name -> (channels, channels-last input, exporter)
CASES = {
    "grey-dynamo": (1, False, "dynamo"),
    "rgba-legacy17": (4, False, 17),
    "five-dynamo": (5, False, "dynamo"),
    "five-legacy17": (5, False, 17),
    "five-nhwc-dynamo": (5, True, "dynamo"),
    "rgba-nhwc-legacy17": (4, True, 17),
}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    folder = tmp_path_factory.mktemp("channels")
    cache: dict[str, tuple] = {}

    def get(name: str):
        if name not in cache:
            channels, last, exporter = CASES[name]
            torch.manual_seed(0)
            net = Net(channels, last).eval()
            shape = (2, H, W, channels) if last else (2, channels, H, W)
            path = folder / f"{name}.onnx"
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the exporters' own notices
                if exporter == "dynamo":
                    pytest.importorskip("onnxscript")
                    torch.onnx.export(
                        net, (torch.randn(shape),), str(path), dynamo=True, verbose=False,
                        dynamic_shapes=({0: torch.export.Dim("batch")},),
                    )  # fmt: skip
                else:
                    torch.onnx.export(
                        net, (torch.randn(shape),), str(path), dynamo=False,
                        opset_version=exporter, input_names=["x"], dynamic_axes={"x": {0: "N"}},
                    )  # fmt: skip
            cache[name] = (net, Model(path))
        return cache[name]

    return get


def _batch(channels: int, n: int = 2) -> np.ndarray:
    return np.random.default_rng(1).standard_normal((n, channels, H, W)).astype(np.float32)


def _torch_grad(net, batch: np.ndarray, seed: np.ndarray) -> np.ndarray:
    net = net.double()
    x = batch.astype(np.float64)
    if net.channels_last:
        x = x.transpose(0, 2, 3, 1)
    xt = torch.tensor(x, requires_grad=True)
    (net(xt) * torch.tensor(seed, dtype=torch.float64)).sum().backward()
    net.float()
    grad = xt.grad.numpy()
    return grad.transpose(0, 3, 1, 2) if net.channels_last else grad


@pytest.mark.torch
@pytest.mark.parametrize("name", sorted(CASES))
def test_loads_with_the_channel_count_and_layout(exported, name):
    channels, last, _ = CASES[name]
    _, model = exported(name)
    assert model.channels == channels and model.input_shape == (channels, H, W)
    assert model.layout == ("NHWC (input transpose removed)" if last else "NCHW")
    assert model.preprocess.channels == channels
    fields = [layer.receptive_field for layer in model.layers if layer.op_type == "Conv"]
    assert fields and all(f is not None for f in fields)


@pytest.mark.torch
@pytest.mark.parametrize("name", sorted(CASES))
def test_gradient_methods_equal_torch_autograd(exported, name):
    channels = CASES[name][0]
    net, model = exported(name)
    batch = _batch(channels)
    seed = np.zeros((len(batch), CLASSES), np.float32)
    seed[:, 1] = 1
    expected = _torch_grad(net, batch, seed)
    ours = gradients(model, batch, {model.output_names[0]: seed}).grads[model.input_name]
    np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-6 * np.abs(expected).max())
    sal = saliency(model, batch, 1)
    np.testing.assert_allclose(sal.maps, np.abs(expected).max(axis=1), rtol=1e-4, atol=1e-7)
    assert guided_backprop(model, batch, 1).maps.shape == batch.shape
    ig = integrated_gradients(model, batch, 1, steps=8)
    assert ig.maps.shape == (len(batch), H, W) and np.isfinite(ig.maps).all()
    cam = gradcam(model, batch, 1)
    assert cam.maps.shape == (len(batch), H, W) and cam.maps.max() > 0
    assert sal.images.shape == (len(batch), H, W, 3)


@pytest.mark.torch
@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("fill", ["grey", "zeros"])
def test_occlusion_engines_agree(exported, name, fill):
    channels = CASES[name][0]
    _, model = exported(name)
    batch = _batch(channels, 1)
    auto = occlusion(model, batch, 0, window=4, stride=3, fill=fill)
    naive = occlusion(model, batch, 0, window=4, stride=3, fill=fill, engine="naive")
    assert auto.maps.shape == (1, H, W)
    np.testing.assert_allclose(auto.maps, naive.maps, rtol=1e-4, atol=1e-5)


@pytest.mark.torch
@pytest.mark.parametrize("name", ["five-dynamo", "rgba-nhwc-legacy17", "grey-dynamo"])
def test_features(exported, name):
    channels = CASES[name][0]
    _, model = exported(name)
    batch = _batch(channels, 6)
    conv = next(layer.name for layer in model.layers if layer.op_type == "Conv")
    filters = conv_filters(model, conv)
    assert filters.weights.shape[1] == channels
    assert render_filters(filters).dtype == np.uint8
    hits = top_patches(model, batch, conv, k=2)
    assert len(hits.channels) > 0
    embedding = extract(model, batch, conv, pooling="avg")
    assert embedding.features.shape[0] == 6


def test_preprocess_keeps_alpha_for_rgba_and_bgra():
    rgba = np.zeros((4, 6, 4), np.uint8)
    rgba[..., 0], rgba[..., 2], rgba[..., 3] = 200, 10, 77
    batch = Preprocess(size=(4, 6), channel_order="RGBA", scale=1.0)(rgba)
    assert batch.shape == (1, 4, 4, 6)
    np.testing.assert_array_equal(batch[0, :, 0, 0], [200, 0, 10, 77])
    bgra = Preprocess(size=(4, 6), channel_order="BGRA", scale=1.0)(rgba)
    np.testing.assert_array_equal(bgra[0, :, 0, 0], [10, 0, 200, 77])
    rgb = np.full((4, 6, 3), 9, np.uint8)  # no alpha: an opaque one is added
    assert (Preprocess(size=(4, 6), channel_order="RGBA")(rgb)[0, 3] == 1.0).all()
    assert load_image(rgba, alpha=True).shape == (4, 6, 4)
    shown = Preprocess(size=(4, 6), channel_order="RGBA", scale=1.0).invert(batch)
    np.testing.assert_array_equal(shown[0, 0, 0], [200, 0, 10])


def test_preprocess_planes_take_arrays_at_the_model_size():
    pre = Preprocess(size=(4, 6), channel_order="C5", scale=1.0, mean=(1.0,), std=(2.0,))
    assert pre.channels == 5 and Preprocess.for_channels(5).channel_order == "C5"
    planes = np.arange(4 * 6 * 5, dtype=np.float32).reshape(4, 6, 5)
    batch = pre(planes)
    np.testing.assert_allclose(batch[0], (planes.transpose(2, 0, 1) - 1.0) / 2.0)
    assert pre.invert(batch).shape == (1, 4, 6, 3)
    np.testing.assert_allclose(pre.grey(), (128.0 - 1.0) / 2.0)
    with pytest.raises(InputError, match=r"C5 takes \(H, W, 5\) arrays"):
        pre(np.zeros((5, 6, 5)))
    with pytest.raises(InputError, match="channel_order"):
        Preprocess(channel_order="C0")


def test_grey_fill_is_the_grey_pixel_preprocessed():
    pre = Preprocess(size=(2, 2), mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.5))
    image = np.full((2, 2, 3), 128, np.uint8)
    np.testing.assert_allclose(pre.grey(), pre(image)[0, :, 0, 0], rtol=1e-6, atol=1e-6)
    rgba = Preprocess(size=(2, 2), channel_order="RGBA")
    np.testing.assert_allclose(rgba.grey()[3], 1.0)
