"""The cnnviz command: outputs, exit codes and one-line messages for each bad input."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import tiny_classifier
from PIL import Image

from cnnviz.cli import main

#: the demo's self-contained report stays under this many bytes
DEMO_BUDGET = 8 * 2**20


@pytest.fixture
def tiny(tmp_path):
    path = tmp_path / "tiny.onnx"
    path.write_bytes(tiny_classifier().SerializeToString())
    return path


@pytest.fixture
def photo(tmp_path):
    path = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (20, 24, 3), np.uint8)).save(path)
    return path


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_layers_table_and_json(capsys, tiny):
    code, out, _ = run(capsys, "layers", tiny)
    assert code == 0 and "conv1" in out and "MaxPool" in out and "4 / 2 / -1" in out
    code, out, _ = run(capsys, "layers", tiny, "--json", "--layer", "pool1")
    rows = json.loads(out)
    assert code == 0 and [r["name"] for r in rows] == ["pool1"]
    assert rows[0]["receptive_field"] == {"size": [4, 4], "stride": [2, 2], "offset": [-1, -1]}


def test_predict_json_matches_the_api(capsys, tiny, photo):
    from cnnviz import load_model

    code, out, _ = run(capsys, "predict", tiny, photo, "--top", "2", "--json", "--class", "3")
    assert code == 0
    result = json.loads(out)[str(photo)]
    expected = load_model(tiny).predict([photo], k=2)[0]
    assert [p["index"] for p in result["top"]] == [p.index for p in expected]
    assert result["classes"][0]["index"] == 3


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["layers", "{tmp}/missing.onnx"], "model file not found"),
        (["layers", "{tmp}/notonnx.onnx"], "not an ONNX model"),
        (["layers", "{tmp}/truncated.onnx"], "not an ONNX model"),
        (["layers", "{tmp}/noimage.onnx"], "not an image batch"),
        (["predict", "{tiny}", "{tmp}/broken.png"], "cannot decode image"),
        (["predict", "{tiny}", "{tmp}/nope.png"], "image file not found"),
        (["predict", "{tiny}", "{photo}", "--preset", "grey255"], "1-channel"),
        (["predict", "{tiny}", "{photo}", "--class", "4"], "out of range"),
        (["predict", "{tiny}", "{photo}", "--class", "zebra"], "no class labels"),
        (["layers", "{tiny}", "--layer", "conv3"], "did you mean"),
        (["predict", "{tiny}", "{photo}", "--device", "cuda"], "cuda"),
    ],
)
def test_bad_input_gives_one_line_and_status_1(capsys, tmp_path, tiny, photo, argv, message):
    (tmp_path / "notonnx.onnx").write_text("hello, I am a text file")
    (tmp_path / "truncated.onnx").write_bytes(tiny.read_bytes()[:200])
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["v"], ["y"])],
        "g",
        [helper.make_tensor_value_info("v", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])],
    )
    (tmp_path / "noimage.onnx").write_bytes(helper.make_model(graph).SerializeToString())
    args = [a.format(tmp=tmp_path, tiny=tiny, photo=photo) for a in argv]
    code, _, err = run(capsys, *args)
    if message == "cuda" and code == 0:
        pytest.skip("this onnxruntime has CUDA")
    assert code == 1
    assert err.startswith("cnnviz: error: ") and err.count("\n") == 1, err
    assert message in err
    assert "Traceback" not in err


def test_report_command_writes_report(capsys, tmp_path, tiny, photo):
    code, out, _ = run(capsys, "report", tiny, photo, "--out", tmp_path / "rep")
    assert code == 0 and "report.html" in out
    assert (tmp_path / "rep" / "report.html").is_file()


def test_demo_writes_a_report_with_every_class(capsys, tmp_path):
    from cnnviz.data import CLASSES

    code, out, _ = run(capsys, "demo", "--out", tmp_path / "demo")
    assert code == 0
    html = (tmp_path / "demo" / "report.html").read_text()
    assert str(tmp_path / "demo" / "report.html") in out
    for name in CLASSES:
        assert f"{name} #" in html
    # every section the installed extras allow, every fast method side by side, a footer
    for key in ("attribution", "attribution-confounded", "activations", "feature-space",
                "top-patches"):  # fmt: skip
        assert f'<section id="{key}">' in html, key
    assert 'data-tab="occlusion">occlusion</button>' in html and "right on snow" in html
    if importlib.util.find_spec("torch") is not None:
        assert '<section id="class-models">' in html and '<section id="inversion">' in html
    assert "<footer>" in html and "timings" in html
    # one self-contained file: the pictures are embedded, nothing lies beside it
    assert html.count('src="data:image/png;base64,') >= len(CLASSES)
    assert [p.name for p in (tmp_path / "demo").iterdir()] == ["report.html"]
    assert (tmp_path / "demo" / "report.html").stat().st_size < DEMO_BUDGET


def test_report_with_assets_writes_pictures_beside_it(capsys, tmp_path, tiny, photo):
    code, _, _ = run(capsys, "report", tiny, photo, "--out", tmp_path / "rep", "--assets")
    assert code == 0
    assert len(list((tmp_path / "rep" / "images").rglob("*.png"))) >= 1
    assert "data:image/png" not in (tmp_path / "rep" / "report.html").read_text()


@pytest.mark.parametrize(
    ("argv", "sections"),
    [
        (["filters", "shapes", "--layer", "conv2d_1"], ["filters"]),
        (["activations", "shapes", "{photo}", "--layer", "relu_1"], ["activations"]),
        (["top-patches", "shapes", "--shapes", "24", "--layer", "relu_2", "--k", "2"],
         ["top-patches"]),
        (["project", "shapes", "--shapes", "24", "--layer", "view"], ["feature-space"]),
    ],
)  # fmt: skip
def test_feature_commands_write_their_report_sections(capsys, tmp_path, argv, sections):
    photo = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), np.uint8)).save(photo)
    out = tmp_path / "out"
    code, stdout, _ = run(capsys, *[a.format(photo=photo) for a in argv], "--out", out)
    assert code == 0 and f"report written to {out / 'report.html'}" in stdout
    html = (out / "report.html").read_text()
    for key in ["model", *sections]:
        assert f'<section id="{key}">' in html, key
    assert "not available" not in html


def test_installed_entry_point_help():
    exe = shutil.which("cnnviz")
    cmd = [exe] if exe else [sys.executable, "-m", "cnnviz"]
    done = subprocess.run([*cmd, "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "demo" in done.stdout and "predict" in done.stdout
    done = subprocess.run([*cmd, "frobnicate"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "invalid choice" in done.stderr
