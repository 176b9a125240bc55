"""``cnnviz check``: the doctor's table and JSON, and its exit status (1 with one line when what
was asked cannot work)."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from conftest import make_graph_model, tiny_classifier
from onnx import helper
from PIL import Image

from cnnviz.cli import main
from cnnviz_core.backward import rule_for


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_the_shipped_model_passes(capsys):
    code, out, err = run(capsys, "check", "shapes", "--method", "gradcam")
    assert code == 0 and err == ""
    assert "batches in one call" in out and "model card" in out and "CAM layer" in out
    assert "gradient self-test" in out and "PASS" in out and "--method gradcam: ok" in out
    code, out, _ = run(capsys, "check", "shapes", "--json", "--directions", "1")
    data = json.loads(out)
    assert code == 0 and data["ok"] and data["gradient_test"]["status"] == "pass"
    assert data["cam_layer"] and {op["op_type"] for op in data["ops"]} >= {"Conv", "Gemm"}
    assert data["preprocess_source"] == "model card" and data["method"] is None


def test_a_given_image_is_the_self_test_input(capsys, tmp_path):
    path = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (70, 80, 3), np.uint8)).save(path)
    code, out, _ = run(capsys, "check", "shapes", "--image", path, "--directions", "1", "--json")
    assert code == 0 and json.loads(out)["gradient_test"]["input"] == "given"


@pytest.fixture
def rounding(tmp_path):
    """A model whose path to the scores has an op without a backward rule (Round)."""
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["conv"], "conv", pads=[1, 1, 1, 1]),
        helper.make_node("Round", ["conv"], ["round"], "round"),
        helper.make_node("GlobalAveragePool", ["round"], ["gap"], "gap"),
        helper.make_node("Flatten", ["gap"], ["logits"], "flat"),
    ]
    w = {"w": rng.standard_normal((4, 3, 3, 3)).astype(np.float32)}
    path = tmp_path / "rounding.onnx"
    path.write_bytes(make_graph_model(nodes, w, ["N", 3, 8, 8], "logits").SerializeToString())
    return path


def test_an_op_without_a_rule_fails_only_gradient_methods(capsys, rounding):
    code, out, err = run(capsys, "check", rounding, "--size", "8")
    assert code == 0 and "MISSING" in out and "skipped" in out and "problem: no backward" in out
    code, out, err = run(capsys, "check", rounding, "--size", "8", "--method", "gradcam")
    assert code == 1 and "CANNOT RUN" in out
    assert err.count("\n") == 1 and "Round (round)" in err and "--method gradcam" in err
    code, out, err = run(capsys, "check", rounding, "--size", "8x8", "--method", "occlusion")
    assert code == 0 and "--method occlusion: ok" in out
    code, out, err = run(capsys, "check", rounding, "--size", "8", "--json", "--method", "saliency")
    assert code == 1 and json.loads(out)["method"]["ok"] is False


def test_a_wrong_rule_exits_1(capsys, tmp_path, monkeypatch):
    rule = rule_for("Gemm", 18)
    assert rule is not None
    original = type(rule).vjp

    def scaled(self, call, grads):
        return [None if g is None else g * 1.1 for g in original(self, call, grads)]

    monkeypatch.setattr(type(rule), "vjp", scaled)
    path = tmp_path / "tiny.onnx"
    path.write_bytes(tiny_classifier().SerializeToString())
    code, out, err = run(capsys, "check", path, "--directions", "1")
    assert code == 1 and "FAIL" in out
    assert err.startswith("cnnviz: error: gradient self-test failed") and err.count("\n") == 1


def test_a_bad_size_is_one_line(capsys, rounding):
    with pytest.raises(SystemExit):
        main(["check", str(rounding), "--size", "big"])
    assert "HxW" in capsys.readouterr().err


@pytest.mark.shared
def test_a_shared_model_of_any_size(capsys, shared_data):
    """PaddleOCR's classifier (symbolic H and W) at the size PaddleOCR feeds it (the API tests
    run the doctor on the other shared models)."""
    with warnings.catch_warnings():  # its batch of -1 may still run one image at a time
        warnings.simplefilter("ignore", RuntimeWarning)
        code, out, _ = run(
            capsys,
            "check",
            shared_data / "models" / "ppocr_mobile_v2_cls.onnx",
            "--size",
            "48x192",
            "--preset",
            "unit",
            "--directions",
            "1",
            "--json",
        )
    data = json.loads(out)
    assert code == 0 and data["ok"] and data["missing_rules"] == []
    assert data["layout"]["symbolic"][1:] == ["H=?", "W=?"] and data["layout"]["size"] == [
        3,
        48,
        192,
    ]
    assert data["gradient_test"]["status"] in ("pass", "flip")
