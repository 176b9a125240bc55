"""The user's first hour (issue 18): what failed silently on a real ImageNet model with a
0-255 preset (SqueezeNet 1.1, Caffe preprocessing) now works or says what is wrong."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cnnviz_core import Model

pytest.importorskip("torch")


@pytest.fixture(scope="module")
def squeezenet(shared_data: Path) -> Model:
    return Model(
        shared_data / "models" / "squeezenet1.1_fp32.onnx",
        preprocess="caffe",
        labels=shared_data / "labels" / "imagenet_synset_words.txt",
    )


# --------------------------------------------------- 1. synthesis scaled to the input range


def test_inversion_on_caffe_preset_reconstructs_first_block(
    squeezenet: Model, shared_data: Path
) -> None:
    """Before: L-BFGS stopped after 4 evaluations, PSNR 6.7 dB, the picture was the start noise."""
    from cnnviz.synthesis import invert
    from cnnviz.synthesis.base import pixels, start_batch

    result = invert(squeezenet, shared_data / "photos" / "kitten_224.png", "conv1_2", steps=20)
    assert result.metrics["psnr"][0] > 15.0
    start = pixels(squeezenet, start_batch(squeezenet, "noise", 1, 0))
    assert np.abs(result.images.astype(int) - start.astype(int)).mean() > 20


def test_inversion_adam_moves_on_caffe_preset(squeezenet: Model, shared_data: Path) -> None:
    from cnnviz.synthesis import invert

    result = invert(
        squeezenet, shared_data / "photos" / "kitten_224.png", "conv1_2", steps=8, optimizer="adam"
    )
    assert result.losses[-1] < 0.7 * result.losses[0]


def test_class_visualization_on_caffe_preset_is_not_flat(squeezenet: Model) -> None:
    from cnnviz.synthesis import class_visualization

    result = class_visualization(squeezenet, 281, steps=6)
    assert result.images.std() > 4.0
    assert result.losses[-1] < result.losses[0]


# ------------------------------------------------------ 2. SmoothGrad's sigma and the range


def tiny_model(tmp_path: Path, preset: str) -> Model:
    import onnx
    from conftest import tiny_classifier

    path = tmp_path / "tiny.onnx"
    onnx.save(tiny_classifier(), path)
    return Model(path, preprocess=preset)


@pytest.mark.parametrize("preset", ["caffe", "rgb01"])
@pytest.mark.parametrize("contrast", [0, 255])
def test_smoothgrad_noise_is_a_fraction_of_the_input_range(
    tmp_path: Path, preset: str, contrast: int
) -> None:
    """The noise is sigma times the range pixel values 0-255 take after preprocessing,
    whatever the image: a flat grey image got no noise at all before."""
    from cnnviz.attribution import Attribution, saliency
    from cnnviz.attribution.smoothgrad import smooth

    model = tiny_model(tmp_path, preset)
    seen: list[np.ndarray] = []

    def spy(model: Model, images: Any, target: Any = None) -> Attribution:
        seen.append(np.asarray(images))
        return saliency(model, images, target)

    image = np.full((16, 16, 3), 128, np.uint8)
    image[:, 8:] = 128 + contrast // 2 - (contrast > 0)
    image[:, :8] = 128 - contrast // 2
    clean = model.prepare(image)
    smooth(spy, n=16, sigma=0.1)(model, image, 0)
    noise = np.concatenate(seen) - clean
    span = 255.0 if preset == "caffe" else 1.0
    assert noise.std() == pytest.approx(0.1 * span, rel=0.15)


# ------------------------------------------------------- 3. Ctrl-C in synthesis commands


def _shapes_picture(tmp_path: Path) -> Path:
    from cnnviz.models import load_model
    from cnnviz.render.images import save_png
    from cnnviz.synthesis.base import pixels, start_batch

    model = load_model("shapes")
    return save_png(pixels(model, start_batch(model, "noise", 1, 3))[0], tmp_path / "in.png")


def _synthesis_argv(command: str, tmp_path: Path) -> list[str]:
    picture = str(_shapes_picture(tmp_path))
    out = str(tmp_path / "out")
    return {
        "visualize-class": ["visualize-class", "shapes", "--target", "star", "--steps", "20"],
        "invert": ["invert", "shapes", picture, "--layer", "relu", "--steps", "20"],
        "style": ["style", picture, picture, "--steps", "20", "--size", "32"],
        "train-style": [
            "train-style",
            picture,
            "--content",
            picture,
            "--steps",
            "20",
            "--size",
            "32",
            "--batch",
            "1",
            "--width",
            "4",
            "--blocks",
            "1",
            "--out",
            str(tmp_path / "out" / "net.onnx"),
        ],
    }[command] + ([] if command == "train-style" else ["--out", out])


@pytest.mark.parametrize("command", ["visualize-class", "invert", "style", "train-style"])
@pytest.mark.parametrize("keep", [False, True])
def test_ctrl_c_in_synthesis_exits_130_without_complete_results(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
    command: str,
    keep: bool,
) -> None:
    """Before: exit 0 and files named as complete results ("kept the best image so far")."""
    import cnnviz.cli.synthesis as cli_synthesis
    from cnnviz.cli import main

    def interrupting(name: str):
        def progress(step: int, total: int, loss: float) -> None:
            if step == 2:
                raise KeyboardInterrupt

        return progress

    monkeypatch.setattr(cli_synthesis, "steps_progress", interrupting)
    argv = _synthesis_argv(command, tmp_path) + (["--keep-partial"] if keep else [])
    (tmp_path / "out").mkdir(exist_ok=True)
    assert main(argv) == 130
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    if keep:
        assert written and all("-partial" in name for name in written), written
    else:
        assert written == []
    assert "interrupted" in capsys.readouterr().err


def test_visualize_class_needs_a_target_or_an_image(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """Before: every class, silently (1000 of them on an ImageNet model)."""
    from cnnviz.cli import main
    from cnnviz.models import load_model

    out = tmp_path / "out"
    assert main(["visualize-class", "shapes", "--steps", "2", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "--target" in err and "--image" in err and "Traceback" not in err
    picture = _shapes_picture(tmp_path)
    argv = ["visualize-class", "shapes", "--image", str(picture), "--steps", "2"]
    assert main([*argv, "--out", str(out)]) == 0
    predicted = load_model("shapes").predict([picture], k=1)[0][0]
    assert predicted.label in capsys.readouterr().out
    assert [p.name for p in out.iterdir()] == ["class-0.png"]


# ------------------------------------------------------ 4. 16-bit greyscale and alpha


def test_16_bit_grey_png_is_scaled_not_clipped(tmp_path: Path) -> None:
    """Before: every value above 255 became 255 (the picture nearly white)."""
    from PIL import Image

    from cnnviz_core import load_image

    ramp = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
    path = tmp_path / "ramp16.png"
    Image.fromarray(ramp).save(path)
    with Image.open(path) as saved:
        assert saved.mode.startswith("I")
    loaded = load_image(path)
    expected = np.rint(ramp / 257.0).astype(np.uint8)
    assert loaded.shape == (64, 64, 3)
    np.testing.assert_array_equal(loaded[..., 0], expected)
    np.testing.assert_array_equal(load_image(ramp)[..., 1], expected)


def test_alpha_is_composited_on_the_background_with_a_warning(tmp_path: Path) -> None:
    """Before: the alpha channel was dropped (transparent black stayed black)."""
    from PIL import Image

    from cnnviz_core import load_image

    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:4, :, 3] = 255  # top half opaque red-ish, bottom half fully transparent
    path = tmp_path / "alpha.png"
    Image.fromarray(rgba, "RGBA").save(path)
    with pytest.warns(UserWarning, match="transparent"):
        loaded = load_image(path)
    np.testing.assert_array_equal(loaded[0, 0], [200, 0, 0])
    np.testing.assert_array_equal(loaded[7, 7], [255, 255, 255])
    with pytest.warns(UserWarning, match="transparent"):
        np.testing.assert_array_equal(load_image(rgba), loaded)
    opaque = rgba.copy()
    opaque[..., 3] = 255
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_array_equal(load_image(opaque)[7, 7], [200, 0, 0])


# ------------------------------------------------ 5. preprocessing hints from the graph


def test_no_preset_warns_with_the_likely_preset(
    shared_data: Path, capsys: pytest.CaptureFixture
) -> None:
    """Before: RGB 0-1 silently ("class 669" for every photo)."""
    from cnnviz.cli import main

    photo = shared_data / "photos" / "both.png"
    models = shared_data / "models"
    assert main(["predict", str(models / "squeezenet1.1_fp32.onnx"), str(photo)]) == 0
    err = capsys.readouterr().err
    assert "warning" in err and "--preset caffe" in err and "data_0" in err
    assert "--labels" in err
    argv = ["predict", str(models / "squeezenet1.1_fp32.onnx"), str(photo), "--preset", "caffe"]
    assert main(argv) == 0
    assert "warning" not in capsys.readouterr().err
    main(["layers", str(models / "mnist_cntk.onnx")])
    assert "--preset grey255" in capsys.readouterr().err


def test_mean_constants_in_the_graph_suggest_a_preset(tmp_path: Path) -> None:
    import argparse

    import onnx
    from conftest import make_graph_model, tiny_classifier
    from onnx import helper

    from cnnviz.cli.common import open_model

    base = tiny_classifier()
    nodes = [helper.make_node("Sub", ["x", "mean"], ["centred"], "sub")]
    for node in base.graph.node:
        node.input[:] = ["centred" if i == "x" else i for i in node.input]
        nodes.append(node)
    weights = {i.name: onnx.numpy_helper.to_array(i) for i in base.graph.initializer}
    weights["mean"] = np.array([103.939, 116.779, 123.68], np.float32).reshape(1, 3, 1, 1)
    path = tmp_path / "bgr.onnx"
    onnx.save(make_graph_model(nodes, weights, ["N", 3, 16, 16], "logits"), path)
    from cnnviz.cli.common import preset_hint

    args = argparse.Namespace(model=str(path), preset=None, labels=None, device="cpu")
    hint = preset_hint(open_model(args))
    assert hint is not None and "--preset bgr255" in hint and "'mean'" in hint


# --------------------------------------------------------------- 7. fool's main output


def test_fool_main_output_is_the_exact_adversarial_image(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """Before: OUT/<image>-adversarial.png was an upscale that need not fool the model."""
    from cnnviz.cli import main
    from cnnviz.models import load_model

    picture = _shapes_picture(tmp_path)
    model = load_model("shapes")
    predicted = model.predict([picture], k=2)[0]
    target = predicted[1].label
    out = tmp_path / "out"
    argv = ["fool", "shapes", str(picture), "--target", target, "--steps", "40"]
    assert main([*argv, "--epsilon", "32", "--out", str(out)]) == 0
    stdout = capsys.readouterr().out
    main_output = out / "in-adversarial.png"
    assert str(main_output) in stdout and "fools the model" in stdout
    assert "fooled" in stdout and "NOT fooled" not in stdout
    assert model.predict([main_output], k=1)[0][0].label == target
    from PIL import Image

    with Image.open(main_output) as saved:
        assert saved.size == model.input_shape[1:][::-1]


# ------------------------------------------------- 9. names, --version, progress, predict


def test_layer_names_with_slashes_make_no_subfolders() -> None:
    from cnnviz.cli.common import safe_name

    assert safe_name("fire2/squeeze1x1_1") == "fire2_squeeze1x1_1"
    assert safe_name("../a b:c") == "a_b_c"
    assert "/" not in safe_name("/") and safe_name("/")


def test_invert_with_a_slashed_layer_writes_one_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import cnnviz.cli.synthesis as cli_synthesis
    from cnnviz.cli import main
    from cnnviz.synthesis.base import SynthesisResult

    def fake_invert_layers(model, image, layers, **options):
        picture = np.zeros((1, 8, 8, 3), np.uint8)
        metrics = {"psnr": [20.0], "feature_error": [0.1]}
        options = {"layer": "fire2/squeeze1x1_1"}
        return [SynthesisResult("inversion", picture, picture, [], metrics, 1, options=options)]

    monkeypatch.setattr(cli_synthesis, "invert_layers", fake_invert_layers)
    out = tmp_path / "out"
    picture = _shapes_picture(tmp_path)
    assert main(["invert", "shapes", str(picture), "--steps", "1", "--out", str(out)]) == 0
    assert [p.name for p in out.iterdir()] == ["invert-fire2_squeeze1x1_1.png"]


def test_version(capsys: pytest.CaptureFixture) -> None:
    import cnnviz
    from cnnviz.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert f"cnnviz {cnnviz.__version__}" in capsys.readouterr().out


def test_progress_in_a_log_has_no_carriage_returns(capsys: pytest.CaptureFixture) -> None:
    from cnnviz.cli.common import steps_progress

    report = steps_progress("invert")
    for step in range(1, 101):
        report(step, 100, 1.0 / step)
    err = capsys.readouterr().err
    assert "\r" not in err
    lines = err.splitlines()
    assert 5 <= len(lines) <= 12 and lines[-1].startswith("invert: step 100/100")


def test_predict_on_a_style_network_says_it_is_no_classifier(
    shared_data: Path, capsys: pytest.CaptureFixture
) -> None:
    """Before: "class 1273297"."""
    from cnnviz.cli import main

    argv = ["predict", str(shared_data / "models" / "fns_candy.onnx")]
    assert main([*argv, str(shared_data / "photos" / "both.png"), "--preset", "bgr255"]) == 1
    err = capsys.readouterr().err
    assert "not a classifier" in err and "stylize" in err and "Traceback" not in err


# ------------------------------------------------------------- 6. output-path problems


@pytest.mark.parametrize(
    "argv",
    [
        ["explain", "shapes", "{photo}", "--method", "saliency"],
        ["report", "shapes", "{photo}"],
        ["demo"],
    ],
)
def test_existing_file_as_out_folder_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture, argv: list[str]
) -> None:
    """Before: a FileExistsError traceback."""
    from cnnviz.cli import main

    photo = _shapes_picture(tmp_path)
    taken = tmp_path / "taken"
    taken.write_text("")
    assert main([a.format(photo=photo) for a in argv] + ["--out", str(taken)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--out" in err and "existing file" in err


def test_embed_out_a_folder_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Before: an IsADirectoryError traceback."""
    from cnnviz.cli import main

    argv = ["embed", "shapes", "--shapes", "4", "--layer", "relu", "--out", str(tmp_path)]
    assert main(argv) == 1
    err = capsys.readouterr().err
    (line,) = [line for line in err.splitlines() if "error" in line]  # others: progress
    assert str(tmp_path) in line and "directory" in line and "Traceback" not in err


def test_nearest_neighbors_of_embeddings_says_what_to_pass() -> None:
    """Before: a TypeError from numpy."""
    from cnnviz.features import Embeddings, nearest_neighbors
    from cnnviz_core import InputError

    found = Embeddings(np.eye(3, 4, dtype=np.float32), "relu", "avg", ["a", "b", "c"])
    with pytest.raises(InputError, match=r"features= .*\.features"):
        nearest_neighbors(found, k=1)  # type: ignore[arg-type]  # the mistake under test
    indices, _ = nearest_neighbors(found.features, k=1)
    assert indices.shape == (3, 1)


# ------------------------------------------------------ 8. explain takes method parameters


def test_explain_passes_each_methods_parameters(tmp_path: Path) -> None:
    """Before: explain() had no way to set a window, a sample count, sigma or steps."""
    from cnnviz.attribution import explain
    from cnnviz.attribution.methods import parameters
    from cnnviz.models import load_model

    model = load_model("shapes")
    image = np.random.default_rng(0).integers(0, 256, (64, 64, 3), np.uint8)
    coarse = explain(model, image, "occlusion", window=32, stride=32)
    assert coarse.options["window"] in (32, (32, 32)) and coarse.options["stride"] in (32, (32, 32))
    smooth = explain(model, image, "smoothgrad", samples=2, sigma=0.05)
    assert smooth.options["n"] == 2 and smooth.options["sigma"] == 0.05
    assert explain(model, image, "ig", steps=4).options["steps"] == 4
    blurred = explain(model, image, "ig", steps=4, baseline="blur", blur_sigma=2.0)
    assert blurred.options["baseline"] == "blur" and blurred.options["blur_sigma"] == 2.0
    names = {"window", "stride", "samples", "sigma", "steps", "baseline", "blur_sigma"}
    assert names <= set(parameters())


@pytest.mark.parametrize(
    ("method", "option", "message"),
    [
        ("gradcam", {"window": 4}, r"window= applies to occlusion, occlusion-drilldown"),
        ("saliency", {"sigma": 0.1}, r"sigma= applies to smoothgrad"),
        ("ig", {"tiles": 3}, r"tiles= is no method's parameter; 'ig' takes steps="),
    ],
)
def test_explain_rejects_parameters_a_method_does_not_take(
    method: str, option: dict, message: str
) -> None:
    from cnnviz.attribution import explain
    from cnnviz.models import load_model
    from cnnviz_core import InputError

    with pytest.raises(InputError, match=message):
        explain(load_model("shapes"), np.zeros((64, 64, 3), np.uint8), method, **option)


def test_explain_cli_flags_come_from_the_registry(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new method's parameters appear as flags without CLI code for it."""
    import dataclasses

    import cnnviz.attribution.methods as methods
    from cnnviz.attribution import saliency
    from cnnviz.cli import main

    photo = str(_shapes_picture(tmp_path))
    out = str(tmp_path / "out")
    assert (
        main(
            [
                "explain",
                "shapes",
                photo,
                "--method",
                "occlusion",
                "--window",
                "32",
                "--stride",
                "32",
                "--out",
                out,
            ]
        )
        == 0
    )
    assert (
        main(["explain", "shapes", photo, "--method", "gradcam", "--samples", "3", "--out", out])
        == 1
    )
    assert "--samples applies to smoothgrad, lime" in capsys.readouterr().err

    seen = {}

    def doubled(model, images, target=None, *, gain=1.0):
        seen["gain"] = gain
        return saliency(model, images, target)

    spec = methods.MethodSpec(
        "doubled",
        "doubled",
        "nobody",
        "gradient",
        doubled,
        parameters=(methods.Parameter("gain", float, "gain (1)"),),
    )
    monkeypatch.setattr(methods, "SPECS", (*methods.SPECS, spec))
    monkeypatch.setitem(methods.REGISTRY, "doubled", spec)
    import cnnviz.cli.attribution as cli_attribution

    monkeypatch.setattr(cli_attribution, "SPECS", methods.SPECS)
    assert (
        main(["explain", "shapes", photo, "--method", "doubled", "--gain", "2.5", "--out", out])
        == 0
    )
    assert seen == {"gain": 2.5}
    assert dataclasses.fields(spec)[-1].name == "parameters"


def test_smoothgrad_on_caffe_preset_separates_cat_and_dog(
    squeezenet: Model, shared_data: Path
) -> None:
    """both.png: the dog sits in the upper rows, the cat lies across the lower ones. As plain
    saliency does (0.60 / 0.38), SmoothGrad with its default sigma ("auto": the largest
    whose noisy copies keep SqueezeNet's decision, here 0.025 of the input range; at the
    paper's 0.15 most copies are other classes and the maps were alike, 0.22 / 0.22) puts
    more of tabby's mass than of bull mastiff's on the cat (0.52 / 0.32)."""
    from cnnviz.attribution import explain

    photo = shared_data / "photos" / "both.png"

    def on_cat(method: str, target: int, **options: Any) -> float:
        mass = np.abs(explain(squeezenet, photo, method, target, **options).maps[0])
        mass = mass.reshape(224, 224)
        return float(mass[135:].sum() / mass.sum())

    tabby, mastiff = 281, 243
    assert on_cat("saliency", tabby) > on_cat("saliency", mastiff) + 0.1
    assert on_cat("smoothgrad", tabby, samples=8) > on_cat("smoothgrad", mastiff, samples=8) + 0.1
    chosen = explain(squeezenet, photo, "smoothgrad", tabby, samples=2).options
    assert chosen["sigma_chosen"] == [0.025] and chosen["sigma_kept"] == [1.0]


def test_image_progress_shows_in_a_log(capsys: pytest.CaptureFixture) -> None:
    """Before: logged at INFO with no handler, so the data-set commands showed nothing."""
    from cnnviz.cli.common import images_progress

    images_progress(256, 1000)
    images_progress(1000, 1000)
    assert capsys.readouterr().err.splitlines() == ["256/1000 images", "1000/1000 images"]


def test_progress_on_a_terminal_is_a_bar(
    capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A progress bar redrawn in place (rate, time left) on a terminal; one line at the end."""
    import sys

    from cnnviz.cli.common import count_progress, progress_line, steps_progress

    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    report = steps_progress("invert")
    for step in range(1, 51):
        report(step, 50, 1.0 / step)
    count = count_progress("images")
    count(30, 120)
    count(120, 120)
    err = capsys.readouterr().err
    assert err.count("\n") == 2 and err.count("\r") == 52
    final = err.split("\r")[50].rstrip()
    assert final.startswith("invert: [" + "#" * 24 + "] 100%  50/50 steps")
    assert final.endswith("loss 0.02")
    assert "[######..................]  25%  30/120 images" in err
    line = progress_line(45, 100, "images", 4.5)
    assert line == "[##########..............]  45%  45/100 images  10.0/s  ETA 0:06"
    assert progress_line(7, None, "images", 2.0) == "7 images  3.5/s"
