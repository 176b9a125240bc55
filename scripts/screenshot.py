"""Screenshot of the report explorer for the README (docs/explorer.png).

Builds an explorer report on the shipped shapes model (or opens ``--report``), picks an
image, a method tab and a layer, hovers a map so its value shows, and saves the part of the
page around the attribution explorer, palette-quantized to stay small. Needs the ``browser``
extra (Playwright) and Debian's ``chromium``::

    python scripts/screenshot.py [--report demo/report.html] [--out docs/explorer.png]
"""

from __future__ import annotations

import argparse
import io
import shutil
import sys
import tempfile
from pathlib import Path

from PIL import Image


def build(out: Path) -> Path:
    """A quick explorer report: 8 shapes images, predictions, attribution, activations."""
    import cnnviz
    from cnnviz.cli.models import DEMO_METHODS
    from cnnviz.data import CLASSES, make_shapes

    model = cnnviz.load_model("shapes")
    sample = make_shapes(4 * len(CLASSES), seed=2026)
    picked = [int(next(i for i, y in enumerate(sample.labels) if y == c)) for c in range(8)]
    return cnnviz.build_report(
        model,
        list(sample.images[picked]),
        out,
        names=[f"{CLASSES[sample.labels[i]]} #{i}" for i in picked],
        sections=["predictions", "attribution", "activations"],
        title="cnnviz demo: the shipped shapes model",
        options={"attribution": {"methods": DEMO_METHODS}},
    )


def shoot(report: Path, out: Path, width: int = 1200) -> Path:
    """Open ``report`` in headless Chromium, set the explorer up and save a screenshot."""
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("chromium is not on PATH (apt-get install chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": width, "height": 880})
        page.goto(report.resolve().as_uri())
        page.wait_for_function("document.documentElement.dataset.cnnvizImages !== 'pending'")
        page.locator("#cnnviz-image-picker").select_option("3")
        page.locator('#attribution [data-image="3"] [role="tab"]').first.click()  # All
        section = page.locator("#attribution")
        section.scroll_into_view_if_needed()
        page.evaluate("window.scrollBy(0, document.querySelector('#attribution')"
                      ".getBoundingClientRect().top - 70)")  # fmt: skip
        target = page.locator('#attribution [data-image="3"] img[data-map]').nth(2)
        box = target.bounding_box()
        assert box is not None
        page.mouse.move(box["x"] + 0.55 * box["width"], box["y"] + 0.45 * box["height"])
        picture = Image.open(io.BytesIO(page.screenshot()))
        browser.close()
    picture = picture.convert("RGB").quantize(128, method=Image.Quantize.MEDIANCUT)
    out.parent.mkdir(parents=True, exist_ok=True)
    picture.save(out, optimize=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--report", type=Path, help="an existing report.html (default: build)")
    parser.add_argument("--out", type=Path, default=Path("docs/explorer.png"))
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        report = args.report or build(Path(scratch))
        path = shoot(report, args.out)
    print(f"{path}: {path.stat().st_size / 1024:.0f} kB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
