"""``--target`` beyond a class: box:INDEX, box@X0,Y0,X1,Y1 and region:CLASS@MASK.png parse
in one place (good specs become targets, malformed ones one-line errors naming --target),
run through ``cnnviz explain`` on a tiny detector and segmenter, and ``cnnviz boxes`` lists
ddddocr's characters (when ../shared is present)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from cnnviz.cli import main
from cnnviz.cli.common import TargetSpec, parse_target
from cnnviz_core import Box, DetectionLayout, InputError, Model, Preprocess, Region

SIZE = 8
DDDDOCR = Path(__file__).resolve().parents[3] / "shared/data/models/ddddocr_det.onnx"


@pytest.mark.parametrize(
    ("text", "spec"),
    [
        (None, TargetSpec(None)),
        ("3", TargetSpec("3", label="3")),
        ("boxer", TargetSpec("boxer", label="boxer")),
        ("box:12", TargetSpec("box:12", "box", index=12)),
        ("box:12:objectness", TargetSpec("box:12:objectness", "box", index=12, score="objectness")),
        ("box:0:class=3", TargetSpec("box:0:class=3", "box", index=0, class_index=3)),
        (
            "box@1,2,30.5,40:objectness",
            TargetSpec(
                "box@1,2,30.5,40:objectness", "box@", rect=(1, 2, 30.5, 40), score="objectness"
            ),
        ),
        ("region:2@m.png", TargetSpec("region:2@m.png", "region", label="2", mask=Path("m.png"))),
        (
            "region:sky@a@b.png",
            TargetSpec("region:sky@a@b.png", "region", label="sky", mask=Path("a@b.png")),
        ),
    ],
)
def test_good_specs_parse(text: str | None, spec: TargetSpec) -> None:
    assert parse_target(text) == spec


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("box:", "box index '' is not a whole number"),
        ("box:-1", "box index '-1' is not a whole number"),
        ("box:x", "box index 'x'"),
        ("box:3:area", "'area' is neither 'objectness' nor 'class=K'"),
        ("box:3:class=a", "'class=a' is neither"),
        ("box@1,2,3", "is not four numbers"),
        ("box@1,2,3,x", "is not four numbers"),
        ("box@5,5,1,1", "X1 > X0 and Y1 > Y0"),
        ("region:2", "needs a class and a mask file"),
        ("region:@m.png", "needs a class and a mask file"),
        ("region:2@", "needs a class and a mask file"),
    ],
)
def test_bad_specs_are_one_line_errors(text: str, why: str) -> None:
    with pytest.raises(InputError) as error:
        parse_target(text)
    message = str(error.value)
    assert message.startswith(f"--target {text!r}: ") and why in message
    assert "expected CLASS" in message and "\n" not in message


# --------------------------------------------------------------- through `cnnviz explain`


def _tiny(path: Path, detector: bool) -> Path:
    """Conv3x3 (stride 1: a detector of (64 boxes, 7), YOLOv5 layout; stride 2: a
    3-class segmenter at half the input's resolution)."""
    rng = np.random.default_rng(4)
    out = 7 if detector else 3
    inits = [
        numpy_helper.from_array(rng.normal(0, 0.5, (out, 3, 3, 3)).astype(np.float32), "w"),
        numpy_helper.from_array(rng.normal(0, 0.1, out).astype(np.float32), "b"),
    ]
    stride = 1 if detector else 2
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["maps"], pads=[1] * 4, strides=[stride] * 2)
    ]
    if detector:
        inits.append(numpy_helper.from_array(np.array([0, out, -1], np.int64), "flat"))
        nodes += [
            helper.make_node("Reshape", ["maps", "flat"], ["cells"]),
            helper.make_node("Transpose", ["cells"], ["y"], perm=[0, 2, 1]),
        ]
        shape: list = ["N", SIZE * SIZE, out]
    else:
        nodes.append(helper.make_node("Identity", ["maps"], ["y"]))
        shape = ["N", out, SIZE // 2, SIZE // 2]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)],
        inits,
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(proto)
    onnx.save(proto, path)
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("targets")
    pixels = np.random.default_rng(7).integers(0, 256, (SIZE, SIZE, 3), np.uint8)
    Image.fromarray(pixels).save(folder / "image.png")
    mask = np.zeros((SIZE, SIZE), np.uint8)
    mask[2:6, 0:4] = 255
    Image.fromarray(mask).save(folder / "mask.png")
    return {
        "image": folder / "image.png",
        "mask": folder / "mask.png",
        "detector": _tiny(folder / "detector.onnx", True),
        "segmenter": _tiny(folder / "segmenter.onnx", False),
    }


def test_specs_become_the_targets_of_the_images(files: dict[str, Path]) -> None:
    model = Model(str(files["detector"]), preprocess=Preprocess(scale=1.0 / 255))
    images = [str(files["image"])] * 2
    layout = DetectionLayout()
    assert parse_target("box:17:class=1").targets(model, images) == Box(17, "class", 1, layout)
    values = model.run(model.prepare(images[:1]))["y"][0]
    rect = layout.xyxy(values)[30]
    spec = parse_target("box@{},{},{},{}:objectness".format(*rect))
    chosen = spec.targets(model, images)
    expected = Box.at(model, model.prepare(images[:1]), rect, layout, "objectness")
    assert chosen == [expected, expected]
    segmenter = Model(str(files["segmenter"]), preprocess=Preprocess(scale=1.0 / 255))
    region = parse_target(f"region:2@{files['mask']}").targets(segmenter, images)
    assert isinstance(region, Region) and region.class_index == 2
    assert region.mask.shape == (SIZE, SIZE) and region.mask.sum() == 16


def test_a_mask_at_the_input_resolution_is_resized_to_the_output(files: dict[str, Path]) -> None:
    """An 8x8 mask on a 4x4 output: nearest neighbour, the same score as the 4x4 mask."""
    from cnnviz_core.targets import target_scores

    model = Model(str(files["segmenter"]), preprocess=Preprocess(scale=1.0 / 255))
    batch = model.prepare([str(files["image"])])
    full = np.zeros((SIZE, SIZE), bool)
    full[2:6, 0:4] = True
    small = np.zeros((SIZE // 2, SIZE // 2), bool)
    small[1:3, 0:2] = True
    _, resized = target_scores(model, batch, Region(full, 2))
    _, direct = target_scores(model, batch, Region(small, 2))
    np.testing.assert_allclose(resized, direct)
    np.testing.assert_allclose(direct, model.run(batch)["y"][0, 2][small].sum(), rtol=1e-5)


@pytest.mark.parametrize(
    ("model", "target", "label"),
    [
        ("detector", "box:17:class=1", "box 17 class 1"),
        ("detector", "box:40:objectness", "box 40 objectness"),
        ("segmenter", "region:1@MASK", "class 1 over 4 pixels of y"),
    ],
)
def test_explain_takes_box_and_region_targets(
    files: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
    model: str,
    target: str,
    label: str,
) -> None:
    target = target.replace("MASK", str(files["mask"]))
    argv = ["explain", str(files[model]), str(files["image"]), "--method", "saliency"]
    assert main([*argv, "--target", target, "--out", str(tmp_path)]) == 0
    assert f"{label} ->" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("box:3:area", "--target 'box:3:area': 'area' is neither"),
        ("box:999:class=0", "box 999 is out of range"),
        ("box@100,100,120,120", "no box overlaps"),
        ("region:1@nowhere.png", "no mask file"),
    ],
)
def test_explain_target_errors_are_one_line(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture, target: str, message: str
) -> None:
    argv = ["explain", str(files["detector"]), str(files["image"]), "--target", target]
    assert main([*argv, "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("cnnviz: error: ") and message in err and "\n" not in err


@pytest.mark.skipif(not DDDDOCR.exists(), reason="ddddocr_det.onnx is not in ../shared")
def test_boxes_lists_ddddocr_characters(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from PIL import ImageDraw, ImageFont

    image = Image.new("RGB", (416, 416), "white")
    ImageDraw.Draw(image).text((200, 250), "K", fill="black", font=ImageFont.load_default(size=60))
    image.save(tmp_path / "k.png")
    argv = ["boxes", str(DDDDOCR), str(tmp_path / "k.png"), "--preset", "rgb255"]
    assert main([*argv, "--layout", "yolox"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].endswith("1 boxes (score >= 0.25, input pixels)")
    index, corners = lines[1].split()[0], lines[1].split("(")[1].rstrip(")")
    x0, y0, x1, y1 = (float(v) for v in corners.split(","))
    assert index.startswith("box:") and x0 < 215 < x1 and y0 < 285 < y1
