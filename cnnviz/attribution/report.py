"""Report sections of the attribution techniques (registered when this module is imported,
which :mod:`cnnviz.attribution` does explicitly).

- ``attribution`` (order 100): for each image, the input and the maps of the chosen
  methods (default saliency, guided backprop, Grad-CAM) for the target (default: the
  predicted class).
- ``attribution-true-class`` (order 110): for each misclassified image whose true class
  is known, the maps of the predicted and of the true class side by side.

Options, under ``ctx.options["attribution"]``: ``methods`` (names of
:data:`~.methods.REGISTRY`), ``target``, ``layer`` (for the CAM family),
``results`` (name -> precomputed :class:`~.base.Attribution` for this batch), and
``true_labels`` (one class index or label, or None, per image; also read from
``ctx.options["true_labels"]``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cnnviz_core import CnnvizError

from ..render.images import upscale
from ..render.report import (
    MIN_DISPLAY_SIDE,
    Hover,
    Markup,
    Page,
    ReportContext,
    Section,
    escape,
)
from ..render.report import register_section as _register
from .base import Attribution, Method
from .cam import gradcam
from .lime import lime, show_top
from .methods import method_spec, title
from .occlusion import occlusion
from .quality import quality_table
from .saliency import saliency
from .scoring import energy_inside

DEFAULT_METHODS = ("saliency", "guided", "gradcam")


def _options(ctx: ReportContext) -> dict[str, Any]:
    return dict(ctx.options.get("attribution") or {})


def _explain(ctx: ReportContext, name: str, target: Any) -> Attribution:
    """One method's maps; the report's ``layer`` goes to the methods that take one."""
    spec = method_spec(name)
    layer = _options(ctx).get("layer")
    kwargs = {"layer": layer} if layer and "layer" in spec.options else {}
    return spec.function(ctx.model, ctx.batch, target, **kwargs)


def _picture(page: Page, array: np.ndarray, name: str, alt: str, caption: str) -> Markup:
    # enlarged here by an integer factor (crisp at its natural size: no CSS scaling)
    img = page.image(upscale(array, min_side=MIN_DISPLAY_SIDE), name, alt=alt)
    return page.figure(img, caption)


def _error(exc: CnnvizError) -> Markup:
    return Markup(f'<p class="muted">not available: {escape(exc)}</p>')


@_register("attribution", order=100)
def attribution_section(ctx: ReportContext, page: Page) -> Section | None:
    """Per image (the explorer's image picker): the input, then one tab per method with its
    map over the input; hovering a map reads its value at that input pixel."""
    if not ctx.names:
        return None
    options = _options(ctx)
    methods = list(options.get("methods") or DEFAULT_METHODS)
    precomputed: dict[str, Attribution] = options.get("results") or {}
    results: dict[str, Attribution | CnnvizError] = {}
    for name in methods:
        if name in precomputed and len(precomputed[name]) == len(ctx.batch):
            results[name] = precomputed[name]
            continue
        try:
            results[name] = _explain(ctx, name, options.get("target"))
        except CnnvizError as exc:  # shown in the report, not hidden
            results[name] = exc
    panels = []
    for i, image_name in enumerate(ctx.names):
        tabs: list[tuple[str, str]] = []
        for name in methods:
            result = results[name]
            if isinstance(result, CnnvizError):
                tabs.append((title(name), _error(result)))
                continue
            target = result.targets[i]
            caption = target.label
            if target.class_index is not None and len(ctx.probabilities):
                caption += f", p = {float(ctx.probabilities[i, target.class_index]):.3f}"
            picture = page.image(
                upscale(result.render(i), min_side=MIN_DISPLAY_SIDE),
                f"{name}-{i}",
                alt=f"{title(name)} of {image_name} for {target.label}",
                hover=Hover(result.heatmap[i], title(name)),
            )
            tabs.append((title(name), page.figure(picture, caption)))
        source = _picture(page, ctx.pixels[i], f"input-{i}", f"{image_name} as the model sees it",
                          image_name)  # fmt: skip
        body = f'<div class="row">{source}{page.tabs("attribution", tabs)}</div>'
        panels.append(page.for_image(i, body))
    note = (
        '<p class="muted">Target: the predicted class (p: its probability) unless one was '
        "given. Pick the image above, a method in the tabs (All: side by side); hover a map to "
        "read its value at that input pixel. Heat maps: bright = strong evidence for the "
        "target (scaled to the image's own 99th percentile); signed maps blue < 0 < red; "
        "guided backprop and deconvnet show the signal reaching the pixels, grey = zero.</p>"
    )
    return Section("attribution", "Attribution", note + "".join(panels))


@_register("attribution-true-class", order=110)
def true_class_section(ctx: ReportContext, page: Page) -> Section | None:
    """Misclassified images: Grad-CAM and saliency for the predicted and the true class."""
    options = _options(ctx)
    true_labels = options.get("true_labels", ctx.options.get("true_labels"))
    if not ctx.names or true_labels is None:
        return None
    if len(true_labels) != len(ctx.names):
        raise ValueError(f"{len(true_labels)} true labels given for {len(ctx.names)} images")
    predicted = ctx.probabilities.argmax(axis=1)
    wrong = []
    for i, label in enumerate(true_labels):
        if label is None:
            continue
        truth = ctx.model.class_index(int(label) if isinstance(label, np.integer) else label)
        if truth != int(predicted[i]):
            wrong.append((i, truth))
    if not wrong:
        return None
    index = np.array([i for i, _ in wrong])
    batch = ctx.batch[index]
    wanted = [int(predicted[i]) for i in index] + [t for _, t in wrong]
    both = np.concatenate([batch, batch])
    layer = options.get("layer")
    maps: dict[str, Attribution | CnnvizError] = {}
    compared: tuple[tuple[str, Method], ...] = (("gradcam", gradcam), ("saliency", saliency))
    for key, technique in compared:
        try:
            kwargs = {"layer": layer} if layer and key == "gradcam" else {}
            maps[key] = technique(ctx.model, both, wanted, **kwargs)
        except CnnvizError as exc:
            maps[key] = exc
    rows = []
    k = len(wrong)
    for row, (i, _truth) in enumerate(wrong):
        name = ctx.names[i]
        cells: list[object] = [
            Markup(escape(name)),
            _picture(page, ctx.pixels[i], f"in-{i}", name, ""),
        ]
        for key, result in maps.items():
            for col, which in ((row, "predicted"), (row + k, "true")):
                if isinstance(result, CnnvizError):
                    cells.append(_error(result))
                    continue
                label = result.targets[col].label
                cells.append(
                    _picture(
                        page,
                        result.render(col),
                        f"{key}-{which}-{i}",
                        f"{title(key)} of {name} for the {which} {label}",
                        f"{which}: {label}",
                    )
                )
        rows.append(cells)
    headers = [
        "image",
        "input",
        "Grad-CAM, predicted",
        "Grad-CAM, true",
        "saliency, predicted",
        "saliency, true",
    ]
    note = (
        '<p class="muted">Images the model gets wrong: where it looks for the class it '
        "chose, and where it would look for the true one.</p>"
    )
    return Section(
        "attribution-true-class",
        "Misclassified: predicted vs true class",
        note + page.table(headers, rows),
    )


# ------------------------------------------- occlusion / LIME worked examples (opt-in)


@_register("attribution-quality", order=120)
def quality_section(ctx: ReportContext, page: Page) -> Section | None:
    """The scored comparison of explanation methods (``options["attribution"]["quality"]``:
    rows from ``benchmarks/attribution_quality.py``, or True to score 8 held-out shapes
    images with the report's model)."""
    wanted = _options(ctx).get("quality")
    if not wanted:
        return None
    if wanted is True:
        from ..data import make_shapes

        held = make_shapes(8, seed=2, size=ctx.model.input_shape[1])
        rows = quality_table(ctx.model, held.images, held.masks)
    else:
        rows = list(wanted)
    headers = list(rows[0]) if rows else []
    body = [[Markup(escape(str(row.get(h, "")))) for h in headers] for row in rows]
    note = (
        '<p class="muted">Each method explains the predicted class of held-out shapes images. '
        "Deletion / insertion: area under the class probability as the most important pixels "
        "are removed / added (Petsiuk et al. 2018). Pointing game: the map's peak on the "
        "object. Energy: share of the positive attribution on the object mask. ROAD (Rong et "
        "al. 2022): class probability, averaged over 20/50/80 % removed, with the most (MoRF) "
        "or least (LeRF) relevant pixels imputed from their neighbours. Faithfulness "
        "correlation (Bhatt et al. 2020): how well the attribution of random pixel subsets "
        "predicts the score drop when they are blurred.</p>"
    )
    return Section(
        "attribution-quality", "Scoring the explanations", note + page.table(headers, body)
    )


@_register("attribution-confounded", order=130)
def confounded_section(ctx: ReportContext, page: Page) -> Section | None:
    """The husky-vs-wolf lesson (``options["attribution"]["confounded"] = True``): shapes on
    snow, the clean and the confounded model, their occlusion and LIME maps, and the share of
    attribution off the object."""
    if not _options(ctx).get("confounded"):
        return None
    from cnnviz_core import Model

    from ..data import make_shapes
    from ..data.confounded import SNOW_CLASS, confounded_model_path, on_snow

    plain = make_shapes(20, seed=31)  # the images of the test's assertion
    keep = np.flatnonzero(plain.labels != SNOW_CLASS)[:8]
    snowy = on_snow(plain, 31)
    images, masks = snowy.images[keep], snowy.masks[keep]
    models = {
        "clean": ctx.model if ctx.model.name == "shapes" else None,
        "confounded": Model(confounded_model_path(), name="shapes_confounded"),
    }
    if models["clean"] is None:
        from ..models import load_model

        models["clean"] = load_model("shapes")
    rows, summary = [], []
    results = {}
    for name, m in models.items():
        assert m is not None
        occ = occlusion(m, images, None, window=8, stride=4, fill="grey")
        lim = lime(m, images, None, samples=300)
        results[name] = (occ, lim)
        answers = np.array([target.class_index for target in occ.targets])
        right = int((answers == plain.labels[keep]).sum())
        stars = int((answers == SNOW_CLASS).sum())
        summary.append(
            [
                Markup(escape(name)),
                Markup(f"{right} of {len(keep)}"),
                Markup(f"{stars} of {len(keep)}"),
                Markup(f"{1 - energy_inside(occ, masks).mean():.2f}"),
                Markup(f"{1 - energy_inside(lim, masks).mean():.2f}"),
            ]
        )
    for i in range(4):  # the energies above are over all 8 images
        cells: list[object] = [
            _picture(
                page,
                images[i],
                f"snow-{i}",
                "a shape on snow",
                plain.classes[plain.labels[keep[i]]],
            )
        ]
        for name, (occ, lim) in results.items():
            label = occ.targets[i].label
            cells.append(
                _picture(
                    page, occ.render(i), f"occ-{name}-{i}", f"occlusion, {name}", f"{name}: {label}"
                )
            )
            cells.append(
                _picture(
                    page, show_top(lim, i), f"lime-{name}-{i}", f"LIME, {name}", f"{name}: {label}"
                )
            )
        rows.append(cells)
    star = plain.classes[SNOW_CLASS]
    note = (
        "<p>The confounded model was trained with every star on snow and no other shape ever "
        "on it (<code>python -m cnnviz.data.train_confounded</code>), the way a husky-vs-wolf "
        "classifier learned that wolves come with snow. Below, shapes that are <b>not</b> "
        f"stars are put on snow. Neither model saw snow behind these shapes, so <b>both "
        f"may be wrong</b>; the difference is how: the confounded model answers "
        f'"{escape(star)}" because of the snow, and its explanations point at the snow '
        "instead of the object (energy off object near 1), while the clean model's errors "
        "still come from the object. The table counts both, over 8 images:</p>"
    )
    table = page.table(
        [
            "model",
            "right on snow",
            f"answers {star!r}",
            "occlusion: energy off object",
            "LIME: energy off object",
        ],
        summary,
    )
    grid = page.table(
        ["input", "occlusion, clean", "LIME, clean", "occlusion, confounded", "LIME, confounded"],
        rows,
    )
    return Section(
        "attribution-confounded",
        "Husky vs wolf: a model that learned the background",
        note + table + grid,
    )
