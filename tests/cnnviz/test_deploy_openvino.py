"""OpenVINO runs an exported explainer: the Python runtime (PyPI ``openvino``, the ``deploy``
extra) and the C++ example ``csrc/examples/openvino/explain_openvino`` built against the C++
runtime that wheel ships. Both give onnxruntime's map to 1e-4 of its scale and the same class.

Skipped only when ``openvino`` is not installed (``scripts/test.sh`` installs it) and, for the
C++ example, when CMake or a C++ compiler is absent. ``scripts/test.sh`` builds the example and
names it in ``CNNVIZ_EXPLAIN_OPENVINO``; without it the test builds it under
``build/openvino-example``.

OpenVINO's CPU plugin picks bfloat16 on CPUs that have it (maps move by ~1e-2): the tests,
like the C++ example, ask for float32.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest
from deploy_standin import (
    EXPLAINERS,
    assert_same_map,
    explainer,
    feeds_for,
    onnxruntime_outputs,
    python_map,
    shapes_pixels,
    standin_explainer,
)
from PIL import Image

ov = pytest.importorskip("openvino", reason="needs the deploy extra (pip install openvino)")

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "csrc" / "examples" / "openvino"


def saved(proto: onnx.ModelProto, folder: Path) -> Path:
    path = folder / "explainer.onnx"
    path.write_bytes(proto.SerializeToString())
    return path


@pytest.mark.parametrize("name", EXPLAINERS)
def test_openvino_equals_onnxruntime(name: str, tmp_path: Path) -> None:
    proto = explainer(name)
    feeds = feeds_for(proto, shapes_pixels(), classes=[3, 5])
    want = onnxruntime_outputs(proto, feeds)
    core = ov.Core()
    compiled = core.compile_model(
        saved(proto, tmp_path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"}
    )
    got = compiled(feeds)
    assert_same_map(got["map"], want["map"])
    np.testing.assert_array_equal(got["target"], want["target"])
    for output in set(want) - {"map", "target"}:
        np.testing.assert_allclose(got[output], want[output], rtol=1e-4, atol=1e-4)


def build_example() -> Path:
    """The explain_openvino binary: ``CNNVIZ_EXPLAIN_OPENVINO`` (scripts/test.sh builds it),
    else built here (skipped without CMake or a C++ compiler)."""
    given = os.environ.get("CNNVIZ_EXPLAIN_OPENVINO")
    if given:
        return Path(given)
    if shutil.which("cmake") is None or not (shutil.which("c++") or shutil.which("g++")):
        pytest.skip("needs CMake and a C++ compiler to build explain_openvino")
    build = ROOT / "build" / "openvino-example"
    config = Path(ov.__file__).parent / "cmake"
    for command in (
        ["cmake", "-S", str(EXAMPLE), "-B", str(build), f"-DOpenVINO_DIR={config}"],
        ["cmake", "--build", str(build), "-j2"],
    ):
        subprocess.run(command, check=True, capture_output=True, text=True, timeout=600)
    return build / "explain_openvino"


@pytest.fixture(scope="module")
def example() -> Path:
    binary = build_example()
    assert binary.is_file(), f"{binary} was not built (is OpenVINO_DIR right?)"
    return binary


def read_pfm(path: Path) -> np.ndarray:
    """A PFM as float32: (H, W) grey, (3, H, W) colour, top row first."""
    with path.open("rb") as f:
        kind = f.readline()
        assert kind in (b"Pf\n", b"PF\n")
        width, height = map(int, f.readline().split())
        scale = float(f.readline())
        data = np.frombuffer(f.read(), "<f4" if scale < 0 else ">f4")
    if kind == b"Pf\n":
        return data.reshape(height, width)[::-1].astype(np.float32)
    return data.reshape(height, width, 3)[::-1].transpose(2, 0, 1).astype(np.float32)


@pytest.mark.parametrize("name", EXPLAINERS)
def test_cpp_example_equals_python(name: str, example: Path, tmp_path: Path) -> None:
    proto = explainer(name)
    pixels = shapes_pixels(1, seed=5)
    png = tmp_path / "image.png"  # the user's file, converted to binary PPM as the README says
    Image.fromarray(pixels[0].astype(np.uint8)).save(png)
    ppm = tmp_path / "image.ppm"
    Image.open(png).convert("RGB").save(ppm)
    feeds = feeds_for(proto, pixels, classes=[3])
    want = onnxruntime_outputs(proto, feeds)
    command = [str(example), str(saved(proto, tmp_path)), str(ppm), str(tmp_path / "map")]
    if "target" in feeds:
        command += ["--target", "3"]
    run = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert f"target {int(want['target'][0])}\n" in run.stdout
    heat = read_pfm(tmp_path / "map.pfm")
    assert_same_map(heat, want["map"][0])
    assert_same_map(heat, python_map(proto, pixels, classes=[3])[0])
    assert f"map {want['map'][0].reshape(-1, 64, 64).shape[0]}x64x64 -> " in run.stdout
    with Image.open(tmp_path / "map.pgm") as preview:
        assert preview.mode == "L" and preview.size == (64, 64)


@pytest.mark.parametrize(
    ("image_size", "flags", "message"),
    [
        ((32, 32), [], "is 32x32; the explainer takes 64x64 pixels: resize it first"),
        ((64, 64), ["--target", "2"], "bakes its target in (predicted)"),
    ],
)
def test_cpp_example_errors(
    image_size: tuple[int, int], flags: list[str], message: str, example: Path, tmp_path: Path
) -> None:
    ppm = tmp_path / "image.ppm"
    Image.new("RGB", image_size).save(ppm)
    model = saved(standin_explainer(), tmp_path)
    run = subprocess.run(
        [str(example), str(model), str(ppm), str(tmp_path / "map"), *flags],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 1 and message in run.stderr and not (tmp_path / "map.pfm").exists()
