"""Fast feed-forward style transfer (Johnson et al. 2016): running style networks through
onnxruntime (`stylize`, card-less legacy networks such as fns_candy and trained ones), and
training one with perceptual losses. Small sizes and step counts: the file runs in well
under 40 s on 2 cores."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from cnnviz.synthesis.fast_style_network import (
    CAFFE_BGR_MEAN,
    Convention,
    guess_convention,
    load_style_network,
    stylize,
)
from cnnviz_core import InputError
from cnnviz_core.model import CARD_KEY


def channel_gate(
    size: int | str, gates: tuple[float, float, float], *, scaler: tuple | None = None
) -> onnx.ModelProto:
    """y = x * gates[c] (per channel), optionally after an ImageScaler (opset 7) whose bias is
    then added back, so the gate still sees the raw pixels."""
    nodes, inits = [], [numpy_helper.from_array(np.array(gates, np.float32).reshape(3, 1, 1), "g")]
    source, opset = "x", 18
    if scaler is not None:
        opset = 7
        nodes.append(helper.make_node("ImageScaler", ["x"], ["xs"], bias=list(scaler), scale=1.0))
        inits.append(
            numpy_helper.from_array(-np.array(scaler, np.float32).reshape(3, 1, 1), "unbias")
        )
        nodes.append(helper.make_node("Add", ["xs", "unbias"], ["xr"]))
        source = "xr"
    nodes.append(helper.make_node("Mul", [source, "g"], ["y"]))
    graph = helper.make_graph(
        nodes,
        "gate",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, size, size])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, size, size])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8 if opset >= 9 else 3
    return model


def with_card(model: onnx.ModelProto, card: dict) -> onnx.ModelProto:
    helper.set_model_props(model, {CARD_KEY: json.dumps(card)})
    return model


@pytest.fixture(scope="module")
def picture() -> np.ndarray:
    rng = np.random.default_rng(3)
    return rng.integers(0, 256, (20, 28, 3), dtype=np.uint8)


# ---------------------------------------------------------------------------- conventions


@pytest.mark.parametrize(
    ("bias", "order"),
    [
        (tuple(-v for v in CAFFE_BGR_MEAN), "BGR"),
        (tuple(-v for v in CAFFE_BGR_MEAN[::-1]), "RGB"),
        ((-5.0, 0.0, 5.0), "RGB"),
    ],
)
def test_convention_read_from_the_image_scaler(bias, order) -> None:
    convention = guess_convention(channel_gate(16, (1, 1, 1), scaler=bias))
    assert convention.channel_order == order and convention.value_range == 255.0
    assert convention.size == (16, 16)
    assert convention.source == ("default" if bias[0] == -5.0 else "graph")


@pytest.mark.parametrize(("order", "kept"), [("RGB", 0), ("BGR", 2)])
@pytest.mark.parametrize("value_range", [1.0, 255.0])
def test_card_convention_decides_channels_and_range(picture, order, kept, value_range) -> None:
    # the network keeps its first input channel only: red for RGB networks, blue for BGR
    card = {
        "kind": "fast-style",
        "convention": {"channel_order": order, "value_range": value_range},
    }
    net = load_style_network(with_card(channel_gate("H", (1, 0, 0)), card).SerializeToString())
    assert net.convention == Convention(order, value_range, None, "card")
    (out,) = stylize(net, picture)
    expected = np.zeros_like(picture)
    expected[..., kept] = picture[..., kept]
    np.testing.assert_array_equal(out, expected)


def test_identity_network_round_trips_any_size_exactly(picture) -> None:
    net = load_style_network(channel_gate("H", (1, 1, 1)).SerializeToString())
    assert net.convention.size is None
    other = picture[:13, :9]
    outs = stylize(net, [picture, other, picture[::-1]])
    for out, source in zip(outs, [picture, other, picture[::-1]]):
        np.testing.assert_array_equal(out, source)


def test_fixed_size_network_resizes_in_and_back_out(picture) -> None:
    net = load_style_network(channel_gate(16, (1, 1, 1)).SerializeToString())
    assert net.convention.size == (16, 16)
    (out,) = stylize(net, picture)
    assert out.shape == picture.shape
    (small,) = stylize(net, picture, keep_size=False)
    assert small.shape == (16, 16, 3)
    resized = np.asarray(Image.fromarray(picture).resize((16, 16), Image.Resampling.LANCZOS))
    np.testing.assert_array_equal(small, resized)


def test_overrides_and_bad_values(picture) -> None:
    proto = channel_gate("H", (1, 0, 0)).SerializeToString()
    net = load_style_network(proto, channel_order="BGR", value_range=1)
    assert net.convention == Convention("BGR", 1.0, None, "given")
    with pytest.raises(InputError, match="channel_order"):
        load_style_network(proto, channel_order="HSV")
    with pytest.raises(InputError, match="value_range"):
        load_style_network(proto, value_range=100)
    with pytest.raises(InputError, match="not found"):
        load_style_network("/nonexistent/net.onnx")


# ------------------------------------------------------------------- the fns_candy network


def _candy_input(shared_data) -> np.ndarray:
    """The README's recipe: centre square crop, Lanczos to 720."""
    image = Image.open(shared_data / "reference" / "fns_candy_input.jpg").convert("RGB")
    w, h = image.size
    s = min(w, h)
    left, top = (w - s) // 2, (h - s) // 2
    return np.asarray(image.crop((left, top, left + s, top + s)))


def test_fns_candy_reproduces_the_reference_output(shared_data) -> None:
    net = load_style_network(shared_data / "models" / "fns_candy.onnx")
    assert (net.convention.channel_order, net.convention.value_range) == ("BGR", 255.0)
    assert net.convention.size == (720, 720)
    square = _candy_input(shared_data)
    (out,) = stylize(net, square, keep_size=False)
    reference = np.asarray(Image.open(shared_data / "reference" / "fns_candy_output.jpg"))
    out, reference = out.astype(np.float64), reference.astype(np.float64)
    assert out.shape == reference.shape == (720, 720, 3)
    assert np.abs(out - reference).mean() <= 12.0
    assert np.corrcoef(out.ravel(), reference.ravel())[0, 1] >= 0.96
    (full,) = stylize(net, square)  # resized back to the image's own size
    assert full.shape == square.shape


def test_fns_candy_onnxruntime_matches_the_torch_bridge(shared_data) -> None:
    torch = pytest.importorskip("torch")
    from cnnviz_core.torch_bridge import to_torch

    net = load_style_network(shared_data / "models" / "fns_candy.onnx")
    rng = np.random.default_rng(0)
    batch = rng.uniform(0, 255, (1, 3, 720, 720)).astype(np.float32)
    ours = net.model.run(batch)[net.model.output_names[0]]
    with torch.no_grad():
        oracle = to_torch(net.model)(torch.from_numpy(batch)).numpy()
    assert ours.shape == oracle.shape == (1, 3, 720, 720)
    assert np.abs(ours - oracle).max() <= 1e-3 * np.abs(oracle).max()


def test_stylize_command_writes_one_picture_per_image(tmp_path, picture, capsys) -> None:
    from cnnviz.cli import main

    network = tmp_path / "gate.onnx"
    network.write_bytes(channel_gate("H", (1, 0, 0)).SerializeToString())
    paths = []
    for i in range(2):
        paths.append(tmp_path / f"in{i}.png")
        Image.fromarray(picture[:, i:]).save(paths[-1])
    argv = ["stylize", str(network), *map(str, paths), "--out", str(tmp_path / "out")]
    assert main([*argv, "--channel-order", "BGR"]) == 0
    for i in range(len(paths)):
        written = np.asarray(Image.open(tmp_path / "out" / f"in{i}-gate.png"))
        expected = np.zeros_like(picture[:, i:])
        expected[..., 2] = picture[:, i:, 2]  # BGR: the first network channel is blue
        np.testing.assert_array_equal(written, expected)
    assert "in1-gate.png" in capsys.readouterr().out


# ------------------------------------------------------------------------------ training


def stripes(size: int = 64) -> np.ndarray:
    """A procedural style: saturated diagonal stripes in three colours plus fine noise."""
    y, x = np.mgrid[:size, :size]
    band = ((x + y) // 5) % 3
    colours = np.array([[230, 40, 30], [250, 210, 20], [20, 60, 200]], np.float64)
    noise = np.random.default_rng(5).normal(0, 12, (size, size, 3))
    return np.clip(colours[band] + noise, 0, 255).astype(np.uint8)


#: a tiny network, a few steps at 32 px on the shapes model: seconds. Johnson's plain
#: network (no input skip) leaves its random start fastest; the CLI test trains the default
TRAIN = {
    "size": 32,
    "steps": 16,
    "batch": 2,
    "width": 8,
    "blocks": 1,
    "lr": 1e-2,
    "style_weight": 20.0,
    "skip": False,
    "seed": 4,
}


@pytest.fixture(scope="module")
def shapes_model():
    pytest.importorskip("torch")
    from cnnviz.models import load_model

    return load_model("shapes")


@pytest.fixture(scope="module")
def trained(shapes_model):
    from cnnviz.synthesis.train_fast_style import train_style

    calls = []
    network = train_style(
        shapes_model, stripes(), None, progress=lambda *a: calls.append(a), **TRAIN
    )
    return network, calls


def test_trained_network_moves_images_towards_the_style(shapes_model, trained) -> None:
    import torch

    from cnnviz.data.shapes import make_shapes
    from cnnviz.synthesis.style_losses import LossNetwork, load_pixels

    network, calls = trained
    assert network.steps == TRAIN["steps"] == len(network.losses) and not network.interrupted
    assert [c[:2] for c in calls] == [(i + 1, TRAIN["steps"]) for i in range(TRAIN["steps"])]
    assert [c[2] for c in calls] == network.losses
    held_out = make_shapes(4, seed=99, size=40).images  # not the training images, another size
    outputs = stylize(network, held_out)
    assert [o.shape for o in outputs] == [(40, 40, 3)] * 4
    loss_net = LossNetwork(shapes_model)
    targets = loss_net.targets(load_pixels(stripes(), 2 * TRAIN["size"]))

    def style_loss(pictures) -> float:
        x = torch.from_numpy(np.stack(pictures).transpose(0, 3, 1, 2) / np.float32(255.0))
        with torch.no_grad():
            return float(loss_net.style_loss(loss_net.grams(loss_net.features(x)), targets))

    before, after = style_loss(held_out), style_loss(outputs)
    assert after < 0.5 * before, (before, after)


def test_onnx_export_matches_torch_in_one_forward_pass(trained) -> None:
    import torch

    network, _ = trained
    proto = onnx.load_from_string(network.onnx_bytes)
    assert [i.name for i in proto.graph.input] == ["pixels"]
    assert len(proto.graph.output) == 1
    card = json.loads({p.key: p.value for p in proto.metadata_props}[CARD_KEY])
    assert card["kind"] == "fast-style" and card["convention"]["value_range"] == 1.0
    assert card["training"]["steps"] == TRAIN["steps"] and card["style"] == "style"
    batch = np.random.default_rng(2).random((3, 3, 24, 44), dtype=np.float32)
    (ours,) = network.model.run(batch).values()  # one onnxruntime call for the batch
    with torch.no_grad():
        reference = network.module(torch.from_numpy(batch)).numpy()
    assert ours.shape == reference.shape == (3, 3, 24, 44)
    assert np.abs(ours - reference).max() <= 1e-4


def test_training_is_deterministic_and_interruptible(shapes_model, trained, tmp_path) -> None:
    from cnnviz.synthesis.train_fast_style import train_style

    network, _ = trained

    def stop_after_five(step: int, total: int, loss: float) -> None:
        if step == 5:
            raise KeyboardInterrupt

    out = tmp_path / "net.onnx"
    partial = train_style(shapes_model, stripes(), None, progress=stop_after_five, out=out, **TRAIN)
    assert partial.interrupted and partial.steps == 5
    assert partial.losses == network.losses[:5]  # same seed: the same run, stopped early
    assert out.read_bytes() == partial.onnx_bytes
    assert json.loads({p.key: p.value for p in onnx.load(out).metadata_props}[CARD_KEY])[
        "training"
    ]["interrupted"]
    (picture,) = stylize(out, stripes(24))
    assert picture.shape == (24, 24, 3)
    other = train_style(shapes_model, stripes(), None, **{**TRAIN, "steps": 2, "seed": 5})
    assert other.losses != network.losses[:2]


def test_train_style_command_writes_a_network_stylize_runs(tmp_path, capsys) -> None:
    pytest.importorskip("torch")
    from cnnviz.cli import main

    style = tmp_path / "stripes.png"
    Image.fromarray(stripes()).save(style)
    out = tmp_path / "net.onnx"
    argv = ["train-style", str(style), "--out", str(out), "--size", "32", "--steps", "2"]
    assert main([*argv, "--batch", "1", "--width", "8", "--blocks", "1"]) == 0
    assert "2 steps" in capsys.readouterr().out
    card = json.loads({p.key: p.value for p in onnx.load(out).metadata_props}[CARD_KEY])
    assert card["style"] == "stripes" and card["loss_network"]["model"] == "shapes"
    assert main(["stylize", str(out), str(style), "--out", str(tmp_path)]) == 0
    assert np.asarray(Image.open(tmp_path / "stripes-net.png")).shape == (64, 64, 3)


def test_report_section_shows_each_image_stylized(tmp_path, picture) -> None:
    from cnnviz.models import load_model
    from cnnviz.render.report import build_report

    network = tmp_path / "gate.onnx"
    network.write_bytes(channel_gate("H", (1, 0, 0)).SerializeToString())
    model = load_model("shapes")
    sections = ["fast-style"]
    plain = build_report(model, [picture], tmp_path / "plain", sections=sections)
    assert "Fast style transfer" not in plain.read_text()
    path = build_report(
        model,
        [picture],
        tmp_path / "r",
        sections=sections,
        options={"fast-style": [network]},
        assets=True,
    )
    assert "Fast style transfer" in path.read_text()
    shown = np.asarray(Image.open(tmp_path / "r" / "images" / "fast-style" / "style-gate-0.png"))
    assert shown.shape[2] == 3 and shown[..., 1:].max() == 0  # only red kept (RGB network)


def test_content_images_from_folders_files_and_arrays(tmp_path, picture) -> None:
    from cnnviz.synthesis.train_fast_style import content_pictures, sample_batch

    folder = tmp_path / "photos"
    folder.mkdir()
    Image.fromarray(picture).save(folder / "a.png")
    Image.fromarray(picture[:, ::-1]).save(folder / "b.jpg")
    (folder / "notes.txt").write_text("not an image")
    pictures = content_pictures([folder, picture[:10]], size=16)
    assert len(pictures) == 3 and all(min(p.shape[:2]) == 20 for p in pictures)
    batch = sample_batch(pictures, 5, 16, np.random.default_rng(0))
    assert batch.shape == (5, 3, 16, 16) and batch.dtype == np.float32
    assert 0.0 <= batch.min() and batch.max() <= 1.0
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no images"):
        content_pictures(tmp_path / "empty", size=16)
