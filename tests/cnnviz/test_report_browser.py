"""BROWSER TESTS: the report explorer in headless Chromium, driven by Playwright.

Needs the ``browser`` extra (``pip install playwright``) and Debian's ``chromium`` (Playwright
is pointed at it with ``executable_path``: no browser download). Skipped when either is
absent, unless ``CNNVIZ_REQUIRE_CHROMIUM`` is set (CI, see scripts/test.sh), where a missing
one fails. Screenshots of each section go to ``$CNNVIZ_TEST_ARTIFACTS`` (default: the test's
temporary folder).

What is checked: the page loads with no console error and no request other than the file
itself; every picture decodes; the image picker, the layer picker and the method tabs change
what is shown; hovering a map shows the value Python computed at that pixel.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import cnnviz
from cnnviz.attribution import saliency
from cnnviz.data import make_shapes
from cnnviz.features.report import default_activation_layer
from cnnviz.render.report import REPORT_FILE

pytestmark = pytest.mark.chromium

#: the demo's self-contained report must stay under this many bytes
DEMO_BUDGET = 8 * 2**20


def _require(reason: str) -> None:
    if os.environ.get("CNNVIZ_REQUIRE_CHROMIUM"):
        pytest.fail(f"CNNVIZ_REQUIRE_CHROMIUM is set but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Debian Chromium under Playwright, for the module."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _require("playwright is not installed (pip install 'cnnviz[browser]')")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        _require("chromium is not on PATH (apt-get install chromium)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        yield launched
        launched.close()


class Opened:
    """A loaded report page and what it did: console errors, page errors, requests."""

    def __init__(self, browser: Any, report: Path):
        self.errors: list[str] = []
        self.requests: list[str] = []
        self.page = browser.new_page(viewport={"width": 1200, "height": 900})
        self.page.on(
            "console", lambda message: message.type == "error" and self.errors.append(message.text)
        )
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.page.on("request", lambda request: self.requests.append(request.url))
        self.url = report.resolve().as_uri()
        self.page.goto(self.url)
        self.page.wait_for_function(
            "document.documentElement.dataset.cnnvizImages !== 'pending'", timeout=30_000
        )

    def outside_requests(self) -> list[str]:
        return [u for u in self.requests if u != self.url and not u.startswith("data:")]

    def visible(self, selector: str) -> list[dict[str, str]]:
        """data-* attributes of the elements matching ``selector`` that are shown."""
        return self.page.eval_on_selector_all(
            selector,
            "els => els.filter(e => e.offsetParent !== null).map(e => Object.assign({}, "
            "e.dataset))",
        )


# ------------------------------------------------------------------ a report we can recompute


@pytest.fixture(scope="module")
def explorer(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A report on 3 shapes images with the attribution and activation explorers."""
    model = cnnviz.load_model("shapes")
    images = list(make_shapes(3, seed=5).images)
    out = tmp_path_factory.mktemp("explorer")
    report = cnnviz.build_report(
        model, images, out, sections=["predictions", "attribution", "activations"]
    )
    return {"model": model, "images": images, "report": report}


@pytest.fixture(scope="module")
def opened(browser: Any, explorer: dict[str, Any]) -> Iterator[Opened]:
    page = Opened(browser, explorer["report"])
    yield page
    page.page.close()


def test_loads_without_errors_or_network(opened: Opened) -> None:
    assert opened.errors == []
    assert opened.outside_requests() == []
    assert opened.page.evaluate("document.documentElement.dataset.cnnvizImages") == "loaded"
    undecoded = opened.page.eval_on_selector_all(
        "img", "imgs => imgs.filter(i => !(i.naturalWidth > 0)).length"
    )
    assert undecoded == 0


def test_image_picker_changes_the_panels(opened: Opened) -> None:
    picker = opened.page.locator("#cnnviz-image-picker")
    assert picker.locator("option").count() == 3
    for index in ("2", "0", "1"):
        picker.select_option(index)
        shown = opened.visible("#attribution [data-image]")
        assert shown and {panel["image"] for panel in shown} == {index}
        shown = opened.visible("#activations [data-image]")
        assert shown and {panel["image"] for panel in shown} == {index}


def test_layer_picker_changes_the_panels(opened: Opened, explorer: dict[str, Any]) -> None:
    model = explorer["model"]
    picker = opened.page.locator("#cnnviz-layer-picker")
    layers = picker.locator("option").all_text_contents()
    assert layers[0] == default_activation_layer(model) and len(layers) >= 2
    opened.page.locator("#cnnviz-image-picker").select_option("1")
    for layer in reversed(layers):
        picker.select_option(layer)
        shown = opened.page.eval_on_selector_all(
            "#activations [data-image]",
            "els => els.filter(e => e.offsetParent !== null).map(e => "
            "[e.closest('[data-layer]').dataset.layer, e.dataset.image])",
        )
        assert shown == [[layer, "1"]]


def test_method_tabs(opened: Opened) -> None:
    page = opened.page
    page.locator("#cnnviz-image-picker").select_option("0")
    tabs = page.locator('#attribution [data-image="0"] [role="tab"]')
    assert tabs.all_text_contents() == ["All", "saliency", "guided backprop", "Grad-CAM"]
    tabs.nth(3).click()
    panels = opened.visible('#attribution [role="tabpanel"]')
    assert [panel["tab"] for panel in panels] == ["grad-cam"]
    page.locator("#cnnviz-image-picker").select_option("2")  # the tab choice holds
    assert [panel["tab"] for panel in opened.visible('#attribution [role="tabpanel"]')] == [
        "grad-cam"
    ]
    page.locator('#attribution [data-image="2"] [role="tab"]').first.click()
    assert len(opened.visible('#attribution [role="tabpanel"]')) == 3


def _hover(opened: Opened, selector: str, fx: float, fy: float) -> dict[str, str]:
    image = opened.page.locator(selector)
    image.scroll_into_view_if_needed()
    box = image.bounding_box()
    assert box is not None
    opened.page.mouse.move(box["x"] + fx * box["width"], box["y"] + fy * box["height"])
    hover = opened.page.locator("#cnnviz-hover")
    assert hover.is_visible()
    return {**hover.evaluate("h => Object.assign({}, h.dataset)"), "text": hover.inner_text()}


def _data(opened: Opened) -> dict[str, Any]:
    return json.loads(opened.page.locator("#cnnviz-data").text_content() or "{}")


@pytest.mark.parametrize(("x", "y"), [(32, 32), (8, 45), (57, 13)])
def test_hover_shows_the_attribution_value(
    opened: Opened, explorer: dict[str, Any], x: int, y: int
) -> None:
    opened.page.locator("#cnnviz-image-picker").select_option("1")
    opened.page.locator('#attribution [data-image="1"] [role="tab"]').nth(1).click()  # saliency
    heat = saliency(explorer["model"], explorer["images"]).heatmap[1]
    height, width = heat.shape
    selector = '#attribution [data-image="1"] img[data-map]:visible'
    shown = _hover(opened, selector, (x + 0.5) / width, (y + 0.5) / height)  # pixel centre
    assert (int(shown["x"]), int(shown["y"])) == (x, y)  # input pixels under the cursor
    assert shown["label"] == "saliency"
    quantum = (heat.max() - heat.min()) / 254
    assert abs(float(shown["value"]) - heat[y, x]) <= quantum / 2 + 1e-6
    assert f"x {x}, y {y}:" in shown["text"]


def test_hover_on_a_feature_map_grid(opened: Opened, explorer: dict[str, Any]) -> None:
    model = explorer["model"]
    layer = default_activation_layer(model)
    assert layer is not None
    opened.page.locator("#cnnviz-layer-picker").select_option(layer)
    opened.page.locator("#cnnviz-image-picker").select_option("0")
    selector = f'#activations [data-layer="{layer}"] [data-image="0"] img[data-map*="grid"]'
    spec = _data(opened)["maps"][opened.page.locator(selector).get_attribute("data-map")]
    maps = model.run(model.prepare(explorer["images"][:1]), taps=[layer], outputs=False)[layer][0]
    # the middle of the second tile of the first row
    fx = (spec["pad"] + spec["tw"] + spec["pad"] + spec["tw"] / 2) / spec["pw"]
    fy = (spec["pad"] + spec["th"] / 2) / spec["ph"]
    shown = _hover(opened, selector, fx, fy)
    channel = int(shown["label"].rsplit(" ", 1)[1])
    x, y = int(shown["x"]), int(shown["y"])
    values = maps[channel]
    quantum = (values[:: spec["step"], :: spec["step"]].max() - values.min()) / 254
    assert abs(float(shown["value"]) - values[y, x]) <= quantum / 2 + 1e-6
    assert shown["label"] == spec["labels"][1]
    # padding between tiles shows nothing
    _hover(opened, selector, fx, fy)
    box = opened.page.locator(selector).bounding_box()
    assert box is not None
    opened.page.mouse.move(box["x"] + 0.5, box["y"] + 0.5)
    assert not opened.page.locator("#cnnviz-hover").is_visible()


# --------------------------------------------------------------------------- the demo report


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from cnnviz.cli import main

    out = tmp_path_factory.mktemp("demo")
    assert main(["demo", "--out", str(out)]) == 0
    return out / REPORT_FILE


def test_demo_in_the_browser(browser: Any, demo: Path, tmp_path: Path) -> None:
    assert demo.stat().st_size < DEMO_BUDGET
    opened = Opened(browser, demo)
    try:
        assert opened.errors == []
        assert opened.outside_requests() == []
        assert opened.page.evaluate("document.documentElement.dataset.cnnvizImages") == "loaded"
        artifacts = Path(os.environ.get("CNNVIZ_TEST_ARTIFACTS") or tmp_path)
        artifacts.mkdir(parents=True, exist_ok=True)
        keys = opened.page.eval_on_selector_all("main > section", "s => s.map(e => e.id)")
        assert {"predictions", "attribution", "activations"} <= set(keys)
        for key in keys:
            section = opened.page.locator(f"section#{key}")
            section.screenshot(path=str(artifacts / f"report-{key}.png"))
            assert (artifacts / f"report-{key}.png").stat().st_size > 0
        assert opened.errors == []
    finally:
        opened.page.close()


def test_report_without_images_loads(browser: Any, tmp_path: Path) -> None:
    model = cnnviz.load_model("shapes")
    opened = Opened(browser, cnnviz.build_report(model, [], tmp_path))
    try:
        assert opened.errors == [] and opened.outside_requests() == []
        assert opened.page.locator("#cnnviz-pickers select").count() == 0
        assert np.isfinite(opened.page.evaluate("document.images.length"))
    finally:
        opened.page.close()
