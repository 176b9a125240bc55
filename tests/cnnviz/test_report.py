"""The HTML report: section registry, content, escaping, atomicity, and a real browser load.

Most tests use a tiny ONNX model built here (Conv -> Relu -> GlobalAveragePool -> Flatten ->
Gemm on 3x16x16 inputs, with a model card), so they run without ``../shared``; the shared
MNIST and CIFAR-10 models are used when ``../shared/data`` is present.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from cnnviz.render import (
    Page,
    ReportContext,
    Section,
    build_report,
    register_section,
    save_png,
    sections,
    tile_grid,
    to_pil,
    unregister_section,
    upscale,
)
from cnnviz.render.report import (
    IMAGES_DIR,
    MAX_HOVER_VALUES,
    REPORT_FILE,
    STAGING_PREFIX,
    Hover,
    ReportSizeWarning,
)
from cnnviz_core import Model

SHARED_DATA = Path(__file__).parents[2] / ".." / "shared" / "data"
EVIL_LABEL = "<script>alert('label')</script>"
CLASSES = ["circle", EVIL_LABEL, "square"]
CARD = {
    "name": "tiny",
    "classes": CLASSES,
    "preprocess": {
        "size": [16, 16],
        "resize": "stretch",
        "scale": 1 / 255,
        "mean": [0.5, 0.5, 0.5],
        "std": [0.25, 0.25, 0.25],
        "channel_order": "RGB",
    },
    "heldout_accuracy": 0.9731,
    "command": "python -m cnnviz.data.train_shapes --epochs 3",
}

Builder = Callable[[ReportContext, Page], Section | None]
AddSection = Callable[[str, float, Builder], None]


def tiny_model_bytes() -> bytes:
    """Conv(3->4, 3x3, pad 1) -> Relu -> GlobalAveragePool -> Flatten -> Gemm(4->3)."""
    rng = np.random.default_rng(0)
    weights = {
        "conv_w": rng.normal(0, 0.5, (4, 3, 3, 3)).astype(np.float32),
        "conv_b": rng.normal(0, 0.1, 4).astype(np.float32),
        "fc_w": rng.normal(0, 1.0, (3, 4)).astype(np.float32),
        "fc_b": rng.normal(0, 0.1, 3).astype(np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["image", "conv_w", "conv_b"], ["conv"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv"], ["relu"]),
        helper.make_node("GlobalAveragePool", ["relu"], ["pool"]),
        helper.make_node("Flatten", ["pool"], ["flat"]),
        helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["logits"], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, 16, 16])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])],
        [numpy_helper.from_array(value, name) for name, value in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    helper.set_model_props(model, {"cnnviz.card": json.dumps(CARD)})
    onnx.checker.check_model(model)
    return model.SerializeToString()


@pytest.fixture(scope="module")
def tiny_model() -> Model:
    return Model(tiny_model_bytes(), name="tiny")


@pytest.fixture(scope="module")
def tiny_images() -> list[np.ndarray]:
    rng = np.random.default_rng(1)
    return [rng.integers(0, 256, (16, 16, 3), dtype=np.uint8) for _ in range(3)]


@pytest.fixture
def add_section() -> Iterator[AddSection]:
    """Register sections for one test; they are unregistered afterwards."""
    added: list[str] = []

    def add(key: str, order: float, build: Builder) -> None:
        register_section(key, order=order)(build)
        added.append(key)

    yield add
    for key in added:
        unregister_section(key)


def section_ids(page: str) -> list[str]:
    return re.findall(r'<section id="([^"]+)">', page)


def leftovers(out: Path) -> list[Path]:
    """Hidden entries: staging folders and temporary files a run may have left behind."""
    return list(out.rglob(".*"))


# ------------------------------------------------------------------------------ registry


def test_builtin_sections_are_in_order() -> None:
    keys = [section.key for section in sections()]
    assert keys.index("model") < keys.index("layers") < keys.index("predictions")


def test_duplicate_key_raises() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_section("model")(lambda ctx, page: None)


@pytest.mark.parametrize("key", ["", "Model", "1st", "has space", "a/b", "x<y"])
def test_malformed_key_raises(key: str) -> None:
    with pytest.raises(ValueError, match="section key"):
        register_section(key)


def test_unregister_unknown_raises() -> None:
    with pytest.raises(KeyError, match="no report section"):
        unregister_section("never-registered")


def test_custom_section_appears_in_order(
    tiny_model: Model, tiny_images: list[np.ndarray], tmp_path: Path, add_section: AddSection
) -> None:
    def custom(ctx: ReportContext, page: Page) -> Section:
        picture = page.image(ctx.pixels[0], "first", alt="first input", width=64)
        return Section("custom-test", "Custom <test>", page.figure(picture, "a caption"))

    add_section("custom-test", 15, custom)
    add_section("skipped-test", 16, lambda ctx, page: None)
    page = build_report(tiny_model, tiny_images, tmp_path, assets=True).read_text(encoding="utf-8")
    ids = section_ids(page)
    assert ids.index("model") < ids.index("custom-test") < ids.index("layers")
    assert "skipped-test" not in ids
    assert '<a href="#custom-test">Custom &lt;test&gt;</a>' in page
    assert f'src="{IMAGES_DIR}/custom-test/first.png"' in page
    assert (tmp_path / IMAGES_DIR / "custom-test" / "first.png").is_file()


def test_section_selection(tiny_model: Model, tmp_path: Path) -> None:
    page = build_report(tiny_model, [], tmp_path, sections=["layers", "model"]).read_text()
    assert section_ids(page) == ["model", "layers"]
    with pytest.raises(ValueError, match="unknown report section"):
        build_report(tiny_model, [], tmp_path, sections=["model", "nope"])


def test_builder_must_return_its_own_key(
    tiny_model: Model, tmp_path: Path, add_section: AddSection
) -> None:
    add_section("mismatch-test", 50, lambda ctx, page: Section("other", "Other", ""))
    with pytest.raises(ValueError, match="returned key 'other'"):
        build_report(tiny_model, [], tmp_path)
    assert not (tmp_path / REPORT_FILE).exists()
    assert leftovers(tmp_path) == []


# ------------------------------------------------------------------------------- content


def test_report_on_tiny_model(
    tiny_model: Model, tiny_images: list[np.ndarray], tmp_path: Path
) -> None:
    report = build_report(tiny_model, tiny_images, tmp_path / "out", top_k=2, assets=True)
    assert report == tmp_path / "out" / REPORT_FILE
    page = report.read_text(encoding="utf-8")
    assert section_ids(page)[:3] == ["model", "layers", "predictions"]
    for layer in tiny_model.layers:
        assert f"<code>{layer.name}</code>" in page
    for text in ("0.9731", "heldout_accuracy", "--epochs 3", "3 \u00d7 16 \u00d7 16", "global"):
        assert text in page
    assert "http://" not in page and "https://" not in page  # no external resources

    # each input as the model sees it, enlarged 8x (16 px -> 128 px), crisp
    batch = tiny_model.prepare(tiny_images)
    for index in range(len(tiny_images)):
        name = f"{IMAGES_DIR}/predictions/input-{index}.png"
        assert f'src="{name}"' in page
        with Image.open(tmp_path / "out" / name) as png:
            shown = np.asarray(png.convert("RGB"))
        expected = upscale(tiny_model.preprocess.invert(batch[index : index + 1])[0], factor=8)
        np.testing.assert_array_equal(shown, expected)
    assert page.count('class="pixelated"') == len(tiny_images)

    # top-k bars: widths are the probabilities, best first
    predictions = tiny_model.predict(tiny_images, k=2)
    widths = [float(w) for w in re.findall(r'<span style="width:([0-9.]+)%">', page)]
    expected_widths = [round(100 * p.probability, 1) for top in predictions for p in top]
    np.testing.assert_allclose(widths, expected_widths, atol=0.051)


def test_rebuild_replaces_report(
    tiny_model: Model, tiny_images: list[np.ndarray], tmp_path: Path
) -> None:
    build_report(tiny_model, tiny_images, tmp_path, title="first")
    report = build_report(tiny_model, tiny_images[:1], tmp_path, title="second")
    assert "<title>second</title>" in report.read_text()
    assert leftovers(tmp_path) == []


def test_zero_images(tiny_model: Model, tmp_path: Path) -> None:
    page = build_report(tiny_model, [], tmp_path).read_text()
    assert section_ids(page) == ["model", "layers"]
    assert not (tmp_path / IMAGES_DIR).exists()


def test_names_must_match_images(
    tiny_model: Model, tiny_images: list[np.ndarray], tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match="2 names given for 3 images"):
        build_report(tiny_model, tiny_images, tmp_path, names=["a", "b"])


def test_text_is_escaped(tiny_model: Model, tiny_images: list[np.ndarray], tmp_path: Path) -> None:
    names = ['<img src=x onerror="alert(1)">', "a & b", "plain"]
    page = build_report(
        tiny_model, tiny_images, tmp_path, names=names, title="<b>title</b>", top_k=3
    ).read_text()
    assert EVIL_LABEL not in page
    assert "&lt;script&gt;alert(&#x27;label&#x27;)&lt;/script&gt;" in page
    assert "<img src=x" not in page
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in page
    assert "a &amp; b" in page
    assert "<b>title</b>" not in page
    assert page.count("<script>") == 1  # the report's own marker script only


# ------------------------------------------------------------------- the explorer page


def embedded_pictures(page: str) -> list[Image.Image]:
    """The pictures embedded in a report, decoded, in page order."""
    pictures = []
    for encoded in re.findall(r'src="data:image/png;base64,([^"]+)"', page):
        picture = Image.open(io.BytesIO(base64.b64decode(encoded)))
        picture.load()
        pictures.append(picture)
    return pictures


def page_data(page: str) -> dict:
    found = re.search(r'<script type="application/json" id="cnnviz-data">(.*?)</script>', page)
    assert found is not None
    return json.loads(found.group(1))


def test_self_contained_by_default(
    tiny_model: Model, tiny_images: list[np.ndarray], tmp_path: Path
) -> None:
    chosen = ["model", "layers", "predictions"]
    report = build_report(tiny_model, tiny_images, tmp_path, top_k=2, sections=chosen)
    assert [p.name for p in tmp_path.iterdir()] == [REPORT_FILE]
    page = report.read_text(encoding="utf-8")
    assert "http://" not in page and "https://" not in page
    assert 'src="images/' not in page and "<link" not in page
    pictures = embedded_pictures(page)
    assert len(pictures) == len(tiny_images)
    batch = tiny_model.prepare(tiny_images)
    expected = upscale(tiny_model.preprocess.invert(batch[:1])[0], factor=8)
    np.testing.assert_array_equal(np.asarray(pictures[0].convert("RGB")), expected)
    data = page_data(page)
    assert data["images"] == [f"image {i + 1}" for i in range(len(tiny_images))]
    # the footer: version, model, preprocessing source, timings per section
    footer = page.split("<footer>")[1]
    for text in ("cnnviz", "0.1.0", "tiny", "model card", "predictions", "budget"):
        assert text in footer, text


def test_page_helpers_feed_the_explorer(
    tiny_model: Model, tiny_images: list[np.ndarray], tmp_path: Path, add_section: AddSection
) -> None:
    evil = "</script><script>alert(1)</script>"
    values = np.arange(16 * 16, dtype=np.float32).reshape(16, 16)

    def explorer(ctx: ReportContext, page: Page) -> Section:
        picture = page.image(ctx.pixels[0], "map", alt="map", hover=Hover(values, evil))
        panels = [
            page.for_layer("conv", page.for_image(0, picture)),
            page.for_layer(evil, page.tabs("group", [("One <b>", "1"), ("Two", "2")])),
        ]
        return Section("explorer-test", "Explorer", "".join(panels))

    add_section("explorer-test", 40, explorer)
    chosen = ["predictions", "explorer-test"]
    page = build_report(tiny_model, tiny_images, tmp_path, sections=chosen).read_text(
        encoding="utf-8"
    )
    assert page.count("<script>") == 1 and "alert(1)</script>" not in page
    data = page_data(page)
    assert data["layers"] == ["conv", evil]
    spec = data["maps"]["explorer-test/map"]
    assert 'data-map="explorer-test/map"' in page
    assert (spec["h"], spec["w"], spec["n"], spec["labels"]) == (16, 16, 1, [evil])
    codes = np.frombuffer(base64.b64decode(spec["q"]), np.uint8).reshape(16, 16)
    decoded = spec["lo"][0] + codes / 254 * (spec["hi"][0] - spec["lo"][0])
    np.testing.assert_allclose(decoded, values, atol=(values.max() - values.min()) / 254 / 2)
    assert '<div data-layer="conv"><div data-image="0">' in page
    assert 'role="tab" data-tab="all">All</button>' in page
    assert 'data-tab="one-b">One &lt;b&gt;</button>' in page


def test_hover_spec_tiles_nan_and_subsampling() -> None:
    maps = np.random.default_rng(0).normal(size=(3, 4, 5))
    maps[1, 2, 3] = np.nan
    spec = Hover(maps, ["a", "b", "c"], columns=2, pad=2, tile=(8, 10)).spec((22, 26))
    codes = np.frombuffer(base64.b64decode(spec["q"]), np.uint8).reshape(3, 4, 5)
    assert codes[1, 2, 3] == 255 and (np.delete(codes.ravel(), 1 * 20 + 2 * 5 + 3) < 255).all()
    assert (spec["columns"], spec["pad"], spec["th"], spec["tw"], spec["step"]) == (2, 2, 8, 10, 1)
    np.testing.assert_allclose(spec["lo"], np.nanmin(maps, axis=(1, 2)))
    with pytest.raises(ValueError, match="3 maps but 2 labels"):
        Hover(maps, ["a", "b"]).spec((4, 5))
    big = Hover(np.ones((512, 512))).spec((512, 512))
    assert big["step"] == 3 and big["h"] * big["w"] <= MAX_HOVER_VALUES


def test_budget_shrinks_pictures_then_warns(
    tiny_model: Model, tiny_images: list[np.ndarray], tmp_path: Path, add_section: AddSection
) -> None:
    rng = np.random.default_rng(3)
    noise = [rng.integers(0, 256, (96, 96, 3), dtype=np.uint8) for _ in range(12)]

    def heavy(ctx: ReportContext, page: Page) -> Section:
        return Section("heavy-test", "Heavy", "".join(page.image(n, "n", alt="") for n in noise))

    add_section("heavy-test", 40, heavy)
    sections = ["heavy-test"]
    roomy = build_report(tiny_model, [], tmp_path / "a", sections=sections, budget=None)
    assert {p.mode for p in embedded_pictures(roomy.read_text())} == {"P"}  # large: palette
    budget = 60_000
    with pytest.warns(ReportSizeWarning, match="over its budget"):
        tight = build_report(tiny_model, [], tmp_path / "b", sections=sections, budget=budget)
    sizes = [p.size for p in embedded_pictures(tight.read_text())]
    assert sizes[0] == (96, 96) and sizes[-1] == (48, 48)  # halved once the budget filled
    assert tight.stat().st_size < roomy.stat().st_size
    assert 'width="96" height="96" class="pixelated"' in tight.read_text()  # shown as large
    with pytest.raises(ValueError, match="budget must be"):
        build_report(tiny_model, [], tmp_path / "c", budget=0)


# ---------------------------------------------------------------------------- atomicity


@pytest.mark.parametrize("error", [KeyboardInterrupt, RuntimeError])
@pytest.mark.parametrize("older_report", [False, True])
def test_interrupted_build_leaves_no_report(
    tiny_model: Model,
    tiny_images: list[np.ndarray],
    tmp_path: Path,
    add_section: AddSection,
    error: type[BaseException],
    older_report: bool,
) -> None:
    out = tmp_path / "out"
    if older_report:
        build_report(tiny_model, tiny_images, out, title="older", assets=True)
    before = (out / REPORT_FILE).read_bytes() if older_report else None
    staged: list[Path] = []

    def interrupt(ctx: ReportContext, page: Page) -> Section:
        page.image(ctx.pixels[0], "staged", alt="staged")
        staged.extend(out.glob(f"{STAGING_PREFIX}*"))
        raise error("interrupted mid-build")

    add_section("interrupt-test", 35, interrupt)  # after predictions: its PNGs are staged
    with pytest.raises(error):
        build_report(tiny_model, tiny_images, out, title="newer", assets=True)

    assert staged, "the builder should have run with a staging folder in place"
    assert leftovers(out) == []
    if older_report:
        assert (out / REPORT_FILE).read_bytes() == before
    else:
        assert not (out / REPORT_FILE).exists()
        assert not (out / IMAGES_DIR).exists()


# ------------------------------------------------------------------------------- browser


def find_chromium() -> str:
    """Path of Chromium; skips when absent unless CNNVIZ_REQUIRE_CHROMIUM is set (CI)."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if os.environ.get("CNNVIZ_REQUIRE_CHROMIUM"):
            pytest.fail("CNNVIZ_REQUIRE_CHROMIUM is set but chromium is not on PATH")
        pytest.skip("headless Chromium is not installed")
    return found


def dump_dom(chromium: str, report: Path, scratch: Path) -> str:
    """The DOM of the loaded report, after its scripts ran, as headless Chromium sees it."""
    profile = tempfile.mkdtemp(prefix="chromium-profile-", dir=scratch)
    command = [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={profile}",
        "--virtual-time-budget=10000",
        "--dump-dom",
        report.resolve().as_uri(),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.mark.chromium
def test_all_images_load_in_chromium(
    tiny_model: Model, tiny_images: list[np.ndarray], tmp_path: Path
) -> None:
    chromium = find_chromium()
    report = build_report(tiny_model, tiny_images, tmp_path / "out", assets=True)
    assert 'data-cnnviz-images="loaded"' in dump_dom(chromium, report, tmp_path)

    # the marker can fail: a missing picture is reported as broken
    (tmp_path / "out" / IMAGES_DIR / "predictions" / "input-1.png").unlink()
    assert 'data-cnnviz-images="broken:1"' in dump_dom(chromium, report, tmp_path)


@pytest.mark.chromium
def test_page_without_images_loads_in_chromium(tiny_model: Model, tmp_path: Path) -> None:
    chromium = find_chromium()
    report = build_report(tiny_model, [], tmp_path / "out")
    assert 'data-cnnviz-images="loaded"' in dump_dom(chromium, report, tmp_path)


# --------------------------------------------------------------------------- shared data


@pytest.mark.shared
@pytest.mark.parametrize(
    ("model_file", "preprocess", "pattern", "shown_side"),
    [
        ("mnist_cntk.onnx", "grey255", "digits/*.jpg", 140),  # 28 px x 5
        ("cifar10_tutorial_cnn.onnx", "unit", "photos/*", 128),  # 32 px x 4
    ],
)
def test_report_on_shared_models(
    tmp_path: Path, model_file: str, preprocess: str, pattern: str, shown_side: int
) -> None:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} is absent")
    model = Model(SHARED_DATA / "models" / model_file, preprocess=preprocess)
    images = sorted(SHARED_DATA.glob(pattern))
    page = build_report(model, images, tmp_path, assets=True).read_text(encoding="utf-8")
    assert section_ids(page)[:3] == ["model", "layers", "predictions"]
    for layer in model.layers:
        assert f"<code>{layer.name}</code>" in page
    for index, image in enumerate(images):
        assert f"<figcaption>{image.name}</figcaption>" in page
        with Image.open(tmp_path / IMAGES_DIR / "predictions" / f"input-{index}.png") as png:
            assert png.size == (shown_side, shown_side)
    if model_file.startswith("mnist"):  # the digits are easy: each file's digit comes first
        for image in images:
            digit = image.stem.split("_")[1]
            card = page.split(f"<figcaption>{image.name}</figcaption>")[1]
            top1 = re.search(r"<tbody><tr><td>class (\d)</td>", card)
            assert top1 is not None and top1.group(1) == digit


# ------------------------------------------------------------------- picture helpers


def test_to_pil_modes() -> None:
    grey = to_pil(np.full((4, 5), 0.5))
    assert (grey.mode, grey.size, grey.getpixel((0, 0))) == ("L", (5, 4), 128)
    assert to_pil(np.zeros((4, 5, 1), np.uint8)).mode == "L"
    assert to_pil(np.zeros((4, 5, 3), np.uint8)).mode == "RGB"
    assert to_pil(np.zeros((4, 5, 4), np.float32)).mode == "RGBA"
    with pytest.raises(ValueError, match="0-255"):
        to_pil(np.full((2, 2), 300))
    with pytest.raises(ValueError, match="image must be"):
        to_pil(np.zeros((2, 2, 2)))


def test_save_png_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    pixels = rng.integers(0, 256, (7, 9, 3), dtype=np.uint8)
    path = save_png(pixels, tmp_path / "deep" / "picture.png")
    with Image.open(path) as png:
        np.testing.assert_array_equal(np.asarray(png), pixels)
    assert [p.name for p in path.parent.iterdir()] == ["picture.png"]


def test_upscale() -> None:
    rng = np.random.default_rng(3)
    digit = rng.integers(0, 256, (28, 28), dtype=np.uint8)
    big = upscale(digit, min_side=128)
    assert big.shape == (140, 140) and big.dtype == np.uint8
    np.testing.assert_array_equal(big, np.kron(digit, np.ones((5, 5), np.uint8)))
    assert upscale(digit, min_side=16).shape == (28, 28)
    colour = rng.random((3, 4, 3)).astype(np.float32)
    assert upscale(colour, size=(6, 10)).shape == (6, 10, 3)
    smooth = upscale(colour, factor=3, nearest=False)
    assert smooth.shape == (9, 12, 3) and smooth.dtype == np.float32
    assert colour.min() - 1e-6 <= smooth.min() and smooth.max() <= colour.max() + 1e-6
    with pytest.raises(ValueError, match="exactly one"):
        upscale(digit, 2, min_side=3)


def test_tile_grid() -> None:
    tiles = [np.full((2, 3, 3), value, np.uint8) for value in (10, 20, 30)]
    grid = tile_grid(tiles, columns=2, pad=1, background=255)
    assert grid.shape == (2 * 3 + 1, 2 * 4 + 1, 3)
    assert (grid[1:3, 1:4] == 10).all() and (grid[1:3, 5:8] == 20).all()
    assert (grid[4:6, 1:4] == 30).all()
    assert (grid[4:6, 5:8] == 255).all() and (grid[0] == 255).all()
    assert tile_grid([np.zeros((2, 2))] * 4, pad=0).shape == (4, 4)
    with pytest.raises(ValueError, match="share shape"):
        tile_grid([np.zeros((2, 2)), np.zeros((3, 2))])
