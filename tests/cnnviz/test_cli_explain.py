"""``cnnviz explain``: PNGs and a report per method; user errors exit 1 with one line."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from cnnviz.attribution import METHODS
from cnnviz.cli import main
from cnnviz.data import make_shapes


@pytest.fixture(scope="module")
def image_files(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    folder = tmp_path_factory.mktemp("images")
    paths = []
    for i, pixels in enumerate(make_shapes(2, seed=3).images):
        path = folder / f"shape{i}.png"
        Image.fromarray(pixels).save(path)
        paths.append(str(path))
    return paths


@pytest.mark.parametrize("method", list(METHODS))
def test_explain_writes_pngs_and_report(
    method: str, image_files: list[str], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert (
        main(["explain", "shapes", *image_files, "--method", method, "--out", str(tmp_path)]) == 0
    )
    for path in image_files:
        png = tmp_path / f"{Path(path).stem}-{method}.png"
        with Image.open(png) as picture:
            assert picture.size == (64, 64) and picture.mode == "RGB"
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert '<section id="attribution">' in page and "not available" not in page
    assert "report written to" in capsys.readouterr().out


def test_explain_target_and_layer(
    image_files: list[str], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    argv = ["explain", "shapes", image_files[0], "--method", "gradcam", "--target", "star"]
    assert main([*argv, "--layer", "features.relu3", "--out", str(tmp_path)]) == 0
    assert "class 3 'star'" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--method", "saliency", "--layer", "relu_3"], "--layer applies to"),
        (["--target", "unicorn"], "unknown class label"),
        (["--layer", "nope"], "unknown layer"),
    ],
)
def test_explain_user_errors(
    extra: list[str],
    message: str,
    image_files: list[str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
) -> None:
    assert main(["explain", "shapes", image_files[0], *extra, "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("cnnviz: error:") and message in err and err.count("\n") == 1
