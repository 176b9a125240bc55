"""``cnnviz export-explainer``: the file written atomically, the summary printed, the method's
options and the target passed through, one-line errors and no file on failure.

The command's plumbing runs against a stand-in exporter (the hand-made CAM explainer of
:mod:`deploy_standin`); the last tests run the real one (a file equal to Python's map, a
method that cannot compile, an op without an emission).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import tiny_classifier
from deploy_standin import assert_same_map, shapes_pixels, standin_explainer
from onnx import helper

import cnnviz.cli.deploy
from cnnviz.attribution import explain
from cnnviz.cli import main
from cnnviz.models import load_model
from cnnviz_core import InputError, Model, UnsupportedOpError


@pytest.fixture(scope="module")
def standin() -> onnx.ModelProto:
    return standin_explainer()


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch, standin: onnx.ModelProto) -> list[dict[str, Any]]:
    """The stand-in as ``cnnviz.export_explainer``; the list records each call's arguments."""
    seen: list[dict[str, Any]] = []

    def fake(model: Model, method: str, **kwargs: Any) -> onnx.ModelProto:
        seen.append({"model": model, "method": method, **kwargs})
        if method == "lime":
            raise InputError(
                "lime cannot be compiled into a graph (it fits a surrogate per "
                "image); use saliency, gradcam or ig, or run `cnnviz explain`"
            )
        if method == "deconvnet":
            raise UnsupportedOpError("no ONNX emission for the op 'Foo' (node 'foo_1')")
        return standin

    monkeypatch.setattr(cnnviz.cli.deploy, "export_explainer", fake)
    return seen


def test_writes_the_file_and_prints_its_summary(
    calls: list[dict[str, Any]],
    standin: onnx.ModelProto,
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
) -> None:
    out = tmp_path / "sub" / "cam.onnx"
    assert main(["export-explainer", "shapes", "--method", "cam", "--out", str(out)]) == 0
    assert out.read_bytes() == standin.SerializeToString()
    assert sorted(p.name for p in out.parent.iterdir()) == ["cam.onnx"]  # no temporary left
    printed = capsys.readouterr().out
    assert f"explainer written to {out}" in printed
    for line in [
        f"size: {out.stat().st_size / 1e6:.2f} MB",
        "method: cam",
        "layer: relu_3",
        "target: predicted",
        "opset: 20",
        "op types (22): ArgMax, Concat, Conv, Div, Gather, Gemm,",
        "inputs: pixels (N, 64, 64, 3) float32",
        "outputs: logits (N, 8) float32; map (N, 64, 64) float32; target (N) int64",
    ]:
        assert f"\n  {line}" in printed
    (call,) = calls
    assert call["method"] == "cam" and call["layer"] is None and call["target"] == "predicted"
    assert call["model"].name == "shapes"
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    pixels = np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype(np.float32)
    (heat,) = session.run(["map"], {"pixels": pixels})
    assert heat.shape == (2, 64, 64) and 0 <= heat.min() and heat.max() == pytest.approx(1)


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--target", "input"], {"target": "input"}),
        (["--target", "3"], {"target": 3}),
        (["--target", "star"], {"target": "star"}),
        (["--method", "ig", "--steps", "8"], {"method": "ig", "steps": 8}),
        (
            ["--method", "ig", "--baseline", "blur", "--blur-sigma", "2.5"],
            {"method": "ig", "baseline": "blur", "blur_sigma": 2.5},
        ),
        (
            ["--method", "smoothgrad", "--samples", "4", "--sigma", "0.2"],
            {"method": "smoothgrad", "samples": 4, "sigma": 0.2},
        ),
        (["--method", "gradcam", "--layer", "relu_2"], {"method": "gradcam", "layer": "relu_2"}),
        (
            ["--method", "gradcam++", "--layer", "relu_2"],
            {"method": "gradcam++", "layer": "relu_2"},
        ),
    ],
)
def test_target_and_method_options_reach_the_exporter(
    flags: list[str], expected: dict[str, Any], calls: list[dict[str, Any]], tmp_path: Path
) -> None:
    argv = ["export-explainer", "shapes", "--method", "saliency", *flags]
    assert main([*argv, "--out", str(tmp_path / "x.onnx")]) == 0
    (call,) = calls
    assert {key: call[key] for key in expected} == expected
    assert not {"window", "stride", "masks"} & call.keys()  # options not given are not passed


@pytest.mark.parametrize(
    ("method", "message"),
    [
        ("lime", "lime cannot be compiled into a graph"),
        ("deconvnet", "no ONNX emission for the op 'Foo' (node 'foo_1')"),
    ],
)
def test_exporter_errors_are_one_line_and_write_nothing(
    method: str, message: str, calls: list[dict[str, Any]], tmp_path: Path, capsys
) -> None:
    out = tmp_path / "x.onnx"
    assert main(["export-explainer", "shapes", "--method", method, "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"cnnviz: error: {message}") and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("out", "message"),
    [("explainer.txt", "--out 'X' must name an .onnx file"), ("folder.onnx", "is a folder")],
)
def test_bad_out_is_one_line(
    out: str, message: str, calls: list[dict[str, Any]], tmp_path: Path, capsys
) -> None:
    (tmp_path / "folder.onnx").mkdir()
    path = tmp_path / out
    assert main(["export-explainer", "shapes", "--method", "cam", "--out", str(path)]) == 1
    err = capsys.readouterr().err
    assert message.replace("X", str(path)) in err and err.count("\n") == 1
    assert not calls


def test_interrupted_export_leaves_no_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys
) -> None:
    def interrupted(*args: Any, **kwargs: Any) -> onnx.ModelProto:
        raise KeyboardInterrupt

    monkeypatch.setattr(cnnviz.cli.deploy, "export_explainer", interrupted)
    out = tmp_path / "x.onnx"
    assert main(["export-explainer", "shapes", "--method", "cam", "--out", str(out)]) == 130
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------ with the real exporter


@pytest.mark.parametrize(
    ("method", "layer"),
    [
        ("gradcam", None),
        ("gradcam++", "relu_2"),
        ("xgradcam", None),
        ("layercam", "relu_1"),
        ("hirescam", None),
    ],
)
def test_real_export_runs_in_onnxruntime_as_python_explains(
    method: str, layer: str | None, tmp_path: Path
) -> None:
    out = tmp_path / "explainer.onnx"
    flags = ["--layer", layer] if layer else []
    assert main(["export-explainer", "shapes", "--method", method, *flags, "--out", str(out)]) == 0
    pixels = shapes_pixels(2)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    heat, target = session.run(["map", "target"], {"pixels": pixels})
    python = explain(load_model("shapes"), list(pixels.astype(np.uint8)), method, layer=layer)
    assert [t.class_index for t in python.targets] == target.tolist()
    assert_same_map(heat, python.maps)


def softsign_model(folder: Path) -> Path:
    """The tiny classifier with a Softsign (no backward rule, so no emission) after relu1."""
    model = tiny_classifier()
    for node in model.graph.node:
        if node.name == "relu1":
            node.output[0] = "relu1_pre"
    model.graph.node.insert(2, helper.make_node("Softsign", ["relu1_pre"], ["relu1"], "soft1"))
    path = folder / "softsign.onnx"
    onnx.save(model, path)
    return path


@pytest.mark.parametrize(
    ("model", "method", "message"),
    [
        ("shapes", "lime", "method 'lime' cannot be compiled into one ONNX graph"),
        ("softsign", "saliency", "no rule for ONNX op 'Softsign' (node 'soft1'"),
    ],
)
def test_real_export_errors_are_one_line_and_write_nothing(
    model: str, method: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    source = str(softsign_model(tmp_path)) if model == "softsign" else model
    out = tmp_path / "out" / "x.onnx"
    argv = ["export-explainer", source, "--preset", "rgb01", "--method", method]
    assert main([*argv, "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("cnnviz: error: ") and message in err and err.count("\n") == 1
    assert not out.parent.exists() or list(out.parent.iterdir()) == []
