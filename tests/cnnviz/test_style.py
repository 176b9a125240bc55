"""The loss network of texture synthesis and style transfer (cnnviz.synthesis.style_losses):
default layers on a VGG-like graph, SqueezeNet 1.1 and the shapes model; preprocessing and
features against the model's own pipeline and onnxruntime; the losses against float64 NumPy."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper

torch = pytest.importorskip("torch")

from cnnviz.models import load_model  # noqa: E402
from cnnviz.synthesis.style_losses import (  # noqa: E402
    LossNetwork,
    default_content_layer,
    default_style_layers,
    fit_size,
    load_pixels,
    to_pictures,
    tv_loss,
)
from cnnviz.synthesis.template import range_penalty  # noqa: E402
from cnnviz_core import InputError, Model, UnknownLayerError  # noqa: E402
from cnnviz_core.kernels import gram_reference  # noqa: E402
from tests.conftest import make_graph_model  # noqa: E402


@pytest.fixture(scope="module")
def shapes():
    return load_model("shapes")


@pytest.fixture(scope="module")
def squeezenet(shared_data):
    return Model(shared_data / "models" / "squeezenet1.1_fp32.onnx", preprocess="caffe")


def vgg_like(naming: str) -> onnx.ModelProto:
    """Five VGG blocks (2 convs each, tiny widths) on 3x32x32; ``naming``: ``vgg`` (convB_I
    -> reluB_I), ``caffe2`` (convB_I_1 -> convB_I_2, as Caffe2's ONNX export) or ``plain``
    (c0 -> r0 ...)."""
    rng = np.random.default_rng(0)
    nodes, weights, x, channels, k = [], {}, "x", 3, 0
    for block in range(1, 6):
        for i in (1, 2):
            if naming == "vgg":
                conv, relu = f"conv{block}_{i}", f"relu{block}_{i}"
            elif naming == "caffe2":
                conv, relu = f"conv{block}_{i}_1", f"conv{block}_{i}_2"
            else:
                conv, relu = f"c{k}", f"r{k}"
            weights[f"w{k}"] = rng.standard_normal((4, channels, 3, 3)).astype(np.float32) * 0.3
            weights[f"b{k}"] = np.zeros(4, np.float32)
            nodes.append(
                helper.make_node("Conv", [x, f"w{k}", f"b{k}"], [conv], conv, pads=[1, 1, 1, 1])
            )
            nodes.append(helper.make_node("Relu", [conv], [relu], relu))
            x, channels, k = relu, 4, k + 1
        if block < 5:
            nodes.append(
                helper.make_node(
                    "MaxPool", [x], [f"pool{block}"], kernel_shape=[2, 2], strides=[2, 2]
                )
            )
            x = f"pool{block}"
    return make_graph_model(nodes, weights, [1, 3, 32, 32], x)


@pytest.mark.parametrize(
    ("naming", "style", "content"),
    [
        ("vgg", [f"relu{b}_1" for b in range(1, 6)], "relu4_2"),
        ("caffe2", [f"conv{b}_1_2" for b in range(1, 6)], "conv4_2_2"),
        # automatic: first ReLU after each downsampling = the same positions; content at stride 8
        ("plain", ["r0", "r2", "r4", "r6", "r8"], "r6"),
    ],
)
def test_default_layers_of_a_vgg_like_graph(naming, style, content):
    model = Model(vgg_like(naming).SerializeToString())
    assert default_style_layers(model) == style
    assert default_content_layer(model) == content


def test_default_layers_of_the_shapes_model(shapes):
    assert default_style_layers(shapes) == ["relu", "relu_1", "relu_2", "relu_3"]
    assert default_content_layer(shapes) == "relu_3"
    strides = [shapes.layer(n).receptive_field.stride for n in default_style_layers(shapes)]
    assert strides == [(1, 1), (2, 2), (4, 4), (8, 8)]


@pytest.mark.shared
def test_default_layers_of_squeezenet(squeezenet):
    assert default_style_layers(squeezenet) == [
        "conv1_2",
        "fire2/concat_1",
        "fire4/concat_1",
        "fire6/concat_1",
    ]
    assert default_content_layer(squeezenet) == "fire5/concat_1"


def test_no_feature_maps_is_a_clear_error():
    node = helper.make_node("Conv", ["x", "w"], ["y"], "conv")
    model = Model(
        make_graph_model(
            [node], {"w": np.ones((2, 3, 1, 1), np.float32)}, [1, 3, 8, 8], "y"
        ).SerializeToString()
    )
    with pytest.raises(InputError, match="no ReLU-like feature maps"):
        default_style_layers(model)


def test_bad_layer_names_suggest_close_ones(shapes):
    with pytest.raises(UnknownLayerError, match="did you mean 'relu_2'"):
        LossNetwork(shapes, style_layers=["relu", "relu_22"])
    with pytest.raises(UnknownLayerError, match="unknown layer 'relu9'"):
        LossNetwork(shapes, content_layer="relu9")
    with pytest.raises(InputError, match="2 style_weights for 4 style layers"):
        LossNetwork(shapes, style_weights=[1, 2])
    with pytest.raises(InputError, match="not style layers"):
        LossNetwork(shapes, style_weights={"logits": 2.0})
    with pytest.raises(InputError, match="style_layers is empty"):
        LossNetwork(shapes, style_layers=[])


def picture(h: int, w: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def as_pixels(image: np.ndarray):
    return torch.from_numpy(image.transpose(2, 0, 1).copy()).float()[None] / 255


def check_against_model(model, tolerance):
    """preprocess == model.prepare, features == onnxruntime's taps."""
    image = picture(*model.input_shape[1:], seed=3)
    net = LossNetwork(model)
    x = net.preprocess(as_pixels(image))
    np.testing.assert_allclose(x.numpy(), model.prepare(image), rtol=1e-5, atol=1e-4)
    features = net.features(as_pixels(image))
    assert set(features) == set(net.layers)
    want = model.run(model.prepare(image), taps=net.layers, outputs=False)
    for name in net.layers:
        got = features[name].numpy()
        scale = np.abs(want[name]).max()
        np.testing.assert_allclose(got, want[name], atol=tolerance * scale, err_msg=name)


def test_preprocess_and_features_match_the_model_shapes(shapes):
    check_against_model(shapes, 1e-5)


@pytest.mark.shared
def test_preprocess_and_features_match_the_model_squeezenet(squeezenet):
    check_against_model(squeezenet, 1e-5)


def test_grey_models_see_luma():
    node = helper.make_node("Relu", ["x"], ["y"], "relu")
    model = Model(
        make_graph_model([node], {}, [1, 1, 4, 4], "y").SerializeToString(), preprocess="grey01"
    )
    image = picture(4, 4, seed=1)
    net = LossNetwork(model, style_layers=["y"], content_layer="y")
    np.testing.assert_allclose(
        net.preprocess(as_pixels(image)).numpy(), model.prepare(image), atol=2.5 / 255
    )


@pytest.mark.shared
@pytest.mark.parametrize("size", [(96, 96), (250, 181)])
def test_free_spatial_size_squeezenet(squeezenet, size):
    net = LossNetwork(squeezenet)
    features = net.features(torch.rand(2, 3, *size, generator=torch.Generator().manual_seed(0)))
    assert features["conv1_2"].shape[:2] == (2, 64)
    assert features["fire6/concat_1"].shape[1] == 384
    assert features["conv1_2"].shape[2] == (size[0] - 3) // 2 + 1


def test_grams_and_losses_match_float64_numpy(shapes):
    weights = {"relu": 0.5, "relu_2": 3.0}
    net = LossNetwork(shapes, style_weights=weights)
    gen = torch.Generator().manual_seed(2)
    x, style, content = (torch.rand(n, 3, 48, 40, generator=gen) for n in (3, 1, 3))
    features = net.features(x)
    grams = net.grams(features)
    targets = net.targets(style)
    content_target = net.content_targets(content)
    f64 = {k: v.double().numpy() for k, v in features.items()}
    t64 = {
        k: gram_reference(v.double().numpy(), np.prod(v.shape[1:]))
        for k, v in net.features(style, content=False).items()
    }
    style_want = np.zeros(3)
    for name in net.style_layers:
        c, h, w = f64[name].shape[1:]
        g = gram_reference(f64[name], c * h * w)
        np.testing.assert_allclose(grams[name].numpy(), g, rtol=1e-4, atol=1e-6)
        err = ((g - t64[name]) ** 2).mean(axis=(1, 2)) / (t64[name] ** 2).mean()
        style_want += weights.get(name, 1.0) * err
    got = net.style_loss(grams, targets, per_image=True)
    np.testing.assert_allclose(got.numpy(), style_want, rtol=1e-4)
    assert float(net.style_loss(grams, targets)) == pytest.approx(style_want.mean(), rel=1e-4)
    # a (C, C) target broadcasts like (1, C, C)
    squeezed = {k: v[0] for k, v in targets.items()}
    torch.testing.assert_close(net.style_loss(grams, squeezed, per_image=True), got)
    name = net.content_layer
    c64 = content_target.double().numpy()
    content_want = ((f64[name] - c64) ** 2).mean(axis=(1, 2, 3)) / (c64**2).mean(axis=(1, 2, 3))
    np.testing.assert_allclose(
        net.content_loss(features, content_target, per_image=True).numpy(), content_want, rtol=1e-4
    )
    plain = LossNetwork(shapes, normalize=False)
    raw = ((f64[name] - c64) ** 2).mean()
    assert float(plain.content_loss(features, {name: content_target})) == pytest.approx(
        raw, rel=1e-4
    )


def test_style_loss_gradient_matches_torch_reference(shapes):
    """Through the bridge and the native Gram: d(style loss)/d(pixels) as torch.bmm gives."""
    net = LossNetwork(shapes)
    gen = torch.Generator().manual_seed(4)
    targets = net.targets(torch.rand(1, 3, 40, 40, generator=gen))
    x = torch.rand(2, 3, 40, 40, generator=gen, requires_grad=True)
    net.style_loss(net.grams(net.features(x, content=False)), targets).backward()
    x_ref = x.detach().clone().requires_grad_(True)
    feats = net.features(x_ref, content=False)
    loss = 0
    for name in net.style_layers:
        f = feats[name].flatten(2)
        g = torch.bmm(f, f.transpose(1, 2)) / f[0].numel()
        t = targets[name]
        loss = loss + ((g - t) ** 2).flatten(1).mean(1) / t.pow(2).mean()
    loss.mean().backward()
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-4, atol=1e-7)


def test_tv_loss_and_pixel_helpers(tmp_path):
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(2, 3, 5, 7, generator=gen)
    a = x.double().numpy()
    want = (np.diff(a, axis=3) ** 2).mean(axis=(1, 2, 3)) + (np.diff(a, axis=2) ** 2).mean(
        axis=(1, 2, 3)
    )
    np.testing.assert_allclose(tv_loss(x, per_image=True).numpy(), want, rtol=1e-5)
    assert float(tv_loss(x)) == pytest.approx(want.mean(), rel=1e-5)
    image = picture(30, 50, seed=0)
    pixels = load_pixels(image)
    assert pixels.shape == (1, 3, 30, 50) and float(pixels.max()) <= 1.0
    np.testing.assert_array_equal(to_pictures(pixels)[0], image)
    assert load_pixels(image, 25).shape == (1, 3, 15, 25)
    assert load_pixels(image, (8, 9)).shape == (1, 3, 8, 9)
    assert fit_size((30, 50), 100) == (60, 100)
    with pytest.raises(InputError, match="size must be positive"):
        fit_size((30, 50), 0)
    outside = torch.tensor([[[[-0.5, 0.0, 0.5, 1.0, 1.25]]]])
    assert float(range_penalty(outside)) == pytest.approx((0.25 + 0.0625) / 5)
