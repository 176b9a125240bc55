"""The report section ``deploy``: the exported explainer's facts and, per image, its map
(run by onnxruntime) beside the Python method's, with their difference; opt-in."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import onnx
import pytest
from deploy_standin import shapes_pixels, standin_explainer

import cnnviz
from cnnviz.attribution import deploy_report
from cnnviz.attribution.deploy_report import TITLE
from cnnviz.models import load_model
from cnnviz_core import InputError, Model


@pytest.fixture
def exporter(monkeypatch: pytest.MonkeyPatch) -> None:
    """The hand-made CAM explainer as ``cnnviz.export_explainer`` (LIME: an error)."""

    def fake(model: Model, method: str, **kwargs: Any) -> onnx.ModelProto:
        if method == "lime":
            raise InputError("lime cannot be compiled into a graph; use gradcam")
        return standin_explainer()

    monkeypatch.setattr(deploy_report, "export_explainer", fake)


def report(tmp_path: Path, options: dict[str, Any]) -> str:
    images = list(shapes_pixels(2).astype("uint8"))
    path = cnnviz.build_report(  # assets: the test opens the pictures as files
        load_model("shapes"), images, tmp_path, sections=["deploy"], options=options, assets=True
    )
    return path.read_text(encoding="utf-8")


def test_section_shows_facts_and_maps_side_by_side(exporter: None, tmp_path: Path) -> None:
    page = report(tmp_path, {"deploy": {"method": "cam"}})
    assert '<section id="deploy">' in page and TITLE in page
    assert "op types (22)" in page and "pixels (N, 64, 64, 3) float32" in page
    assert "cnnviz export-explainer MODEL --method cam" in page
    differences = [float(d) for d in re.findall(r"<td>(\d\.\de[-+]\d+)</td>", page)]
    assert len(differences) == 2 and max(differences) < 1e-5  # the stand-in is Python's CAM
    pictures = sorted(p.name for p in (tmp_path / "images" / "deploy").iterdir())
    assert pictures == ["onnx-0.png", "onnx-1.png", "python-0.png", "python-1.png"]


def test_section_is_opt_in(exporter: None, tmp_path: Path) -> None:
    assert '<section id="deploy">' not in report(tmp_path, {})


def test_method_that_cannot_compile_is_shown(exporter: None, tmp_path: Path) -> None:
    page = report(tmp_path, {"deploy": {"method": "lime"}})
    assert "not available: lime cannot be compiled into a graph" in page


def test_demo_asks_for_the_section(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import cnnviz.cli.models
    from cnnviz.cli import main

    seen: dict[str, Any] = {}

    def build_report(*args: Any, **kwargs: Any) -> Path:
        seen.update(kwargs)
        return tmp_path / "report.html"

    monkeypatch.setattr(cnnviz.cli.models, "build_report", build_report)
    assert main(["demo", "--out", str(tmp_path)]) == 0
    assert seen["options"]["deploy"] == {"method": "gradcam"}
    assert seen.get("sections") is None  # every registered section, "deploy" included


@pytest.mark.parametrize("method", ["gradcam", "guided"])
def test_section_with_the_real_exporter(method: str, tmp_path: Path) -> None:
    page = report(tmp_path, {"deploy": {"method": method}})
    assert '<section id="deploy">' in page and "not available" not in page
    differences = [float(d) for d in re.findall(r"<td>(\d\.\de[-+]\d+)</td>", page)]
    assert len(differences) == 2 and max(differences) < 1e-5
