"""Report sections of the feature tools (registered when this module is imported, which
:mod:`cnnviz.features` does explicitly).

- ``filters`` (200): the first Conv layer's filters (per-filter and joint normalisation)
  and each Conv layer's filter smoothness.
- ``activations`` (210): per image, the strongest channels of a layer, the strongest one
  over the input, and signed pre-ReLU maps beside the rectified ones.
- ``feature-space`` (220): k-NN accuracy, PCA with its axes, t-SNE thumbnails, the
  confusion matrix and k-means clusters of a data set's features.
- ``top-patches`` (230): the maximally activating patches of a layer's channels over the
  data set, beside their guided-backprop projections.

Options, under ``ctx.options["features"]``: ``layer`` (activations; default the first
ReLU), ``embedding_layer`` (default the last vector layer before the scores), ``patch_layer``
(default the last layer with a receptive field), ``dataset`` (a source, see
:mod:`cnnviz.features.sources`; default the report's own images when there are at least
:data:`MIN_DATASET`), ``labels`` (class per data-set image), ``channels`` (top-patch rows,
default the first 8), ``k`` (hits per channel, 6).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cnnviz_core import CnnvizError, Model

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
from . import activations as act
from . import filters as flt
from .clusters import cluster_samples, kmeans, purity, render_clusters
from .confusion import confusion_matrix, most_confused, render_confusion
from .embeddings import extract
from .neighbors import knn_accuracy, nearest_neighbors, neighbor_rows, pixel_features
from .patches import projections, render_top_patches, top_patches
from .projection import image_grid, pca, pca_axes_arrows, scatter, tsne

#: the feature-space sections need at least this many images
MIN_DATASET = 16


def _options(ctx: ReportContext) -> dict[str, Any]:
    return dict(ctx.options.get("features") or {})


def _error(exc: CnnvizError) -> Markup:
    return Markup(f'<p class="muted">not available: {escape(exc)}</p>')


def default_activation_layer(model: Model) -> str | None:
    """The first ReLU-like layer with a 4-D output, else the first layer."""
    for layer in model.layers:
        if layer.op_type in {"Relu", "LeakyRelu", "Clip"} and layer.shape and len(layer.shape) == 4:
            return layer.name
    return model.layers[0].name if model.layers else None


def default_embedding_layer(model: Model) -> str | None:
    """The last layer before the scores (the penultimate features)."""
    return model.layers[-2].name if len(model.layers) >= 2 else None


def default_patch_layer(model: Model) -> str | None:
    """The last layer with a receptive field."""
    fields = [layer.name for layer in model.layers if layer.receptive_field is not None]
    return fields[-1] if fields else None


@_register("filters", order=200)
def filters_section(ctx: ReportContext, page: Page) -> Section | None:
    """The first Conv layer's filters (or those of ``options["filter_layers"]``, shown even
    without images) and every Conv layer's filter smoothness."""
    wanted = list(_options(ctx).get("filter_layers") or [])
    if not ctx.names and not wanted:  # a report without images stays model card + layers
        return None
    model = ctx.model
    try:
        shown = [flt.conv_filters(model, name) for name in wanted] or [flt.conv_filters(model)]
    except CnnvizError:
        return None
    first = shown[0]
    bgr = model.preprocess.channel_order == "BGR"
    pictures = [
        page.figure(
            page.image(
                flt.render_filters(weights, norm, bgr=bgr),
                f"{weights.layer}-{norm}",
                alt=f"{weights.layer}: {text}",
            ),
            f"{weights.layer}: {text}",
        )
        for weights in shown
        for norm, text in (("filter", "each filter scaled"), ("joint", "one scale for all"))
    ]
    rows = []
    for name in flt.conv_layers(model):
        weights = flt.conv_filters(model, name)
        if weights.weights.shape[2:] == (1, 1):  # no spatial frequencies to measure
            energy = ["-", "-"]
        else:
            score = flt.high_frequency_energy(weights.weights)
            energy = [f"{score.mean():.2f}", f"{score.max():.2f}"]
        rows.append([name, "x".join(map(str, weights.weights.shape)), weights.groups, *energy])
    table = page.table(
        ["layer", "weights (O x I/g x kh x kw)", "groups", "HF energy (mean)", "max"], rows
    )
    note = (
        f'<p class="muted">First layer <code>{escape(first.layer)}</code>. HF energy: share of '
        "a filter's energy above a quarter of the sampling rate (high: noisy or unconverged "
        "filters; - for 1x1 kernels).</p>"
    )
    per_layer = "" if wanted else _filters_per_layer(model, page)
    return Section(
        "filters",
        "Filters",
        note + '<div class="cards">' + "".join(pictures) + "</div>" + per_layer + table,
    )


def _filters_per_layer(model: Model, page: Page) -> str:
    """For each explored layer fed by a Conv (the layer picker), that Conv's first 16
    filters over their first 16 input channels, grey, one row per filter."""
    panels = []
    for layer in explored_layers(model):
        try:
            weights = flt.conv_filters(model, layer)
        except CnnvizError:
            continue
        if weights.weights.shape[2:] == (1, 1):
            continue
        picture = flt.render_filters(weights, "filter", tile_side=24, max_out=16, max_in=16)
        shape = "x".join(map(str, weights.weights.shape))
        caption = (
            f"{layer}: filters of {weights.layer} ({shape}); rows: the first 16 filters, "
            "columns: their first 16 input channels, each filter scaled"
        )
        panels.append(
            page.for_layer(
                layer,
                page.figure(page.image(picture, f"layer-{layer}", alt=caption), caption),
            )
        )
    return "<h3>Filters of the picked layer</h3>" + "".join(panels) if panels else ""


#: the layer explorer shows at most this many layers and images
MAX_EXPLORED_LAYERS = 8
MAX_EXPLORED_IMAGES = 8


def explored_layers(model: Model) -> list[str]:
    """The layers the explorer's layer picker offers: every ReLU-like layer with 4-D
    output (else every 4-D layer), at most :data:`MAX_EXPLORED_LAYERS`, spread evenly."""
    four_d = [layer for layer in model.layers if layer.shape and len(layer.shape) == 4]
    relus = [layer.name for layer in four_d if layer.op_type in {"Relu", "LeakyRelu", "Clip"}]
    names = relus or [layer.name for layer in four_d]
    if len(names) > MAX_EXPLORED_LAYERS:
        keep = np.linspace(0, len(names) - 1, MAX_EXPLORED_LAYERS).round().astype(int)
        names = [names[i] for i in keep]
    return names


@_register("activations", order=210)
def activations_section(ctx: ReportContext, page: Page) -> Section | None:
    """Per layer (layer picker) and image (image picker): the 16 strongest channels, the
    strongest over the input, signed pre-ReLU maps beside the rectified ones; hovering a
    feature map reads its activation."""
    if not ctx.names:
        return None
    model = ctx.model
    options = _options(ctx)
    first = options.get("layer") or default_activation_layer(model)
    if first is None:
        return None
    layers = [first, *(name for name in explored_layers(model) if name != first)]
    count = min(len(ctx.batch), MAX_EXPLORED_IMAGES)
    panels = []
    for layer in layers:
        try:
            maps = model.run(ctx.batch[:count], taps=[layer], outputs=False)[layer]
            pair = act.pre_activation(model, layer)
        except CnnvizError as exc:
            panels.append(page.for_layer(layer, _error(exc)))
            continue
        if maps.ndim != 4:
            continue
        for i in range(len(maps)):
            panels.append(page.for_layer(layer, page.for_image(i, _activation_panel(
                ctx, page, layer, i, maps[i], pair))))  # fmt: skip
    if not panels:
        return None
    note = (
        '<p class="muted">Pick a layer and an image above. Each map min-max scaled on its own; '
        "hover a map to read its activation (x, y in the layer's cells). Signed maps: blue "
        "negative, red positive, grey zero.</p>"
    )
    return Section("activations", "Activations", note + "".join(panels))


def _activation_panel(
    ctx: ReportContext,
    page: Page,
    layer: str,
    i: int,
    maps: np.ndarray,
    pair: tuple[str, str] | None,
) -> str:
    """One image's maps at one layer: the strongest channel over the input, the 16 strongest
    channels (hover: their values), signed and rectified maps."""
    model = ctx.model
    strongest = act.strongest_channels(maps, k=16, by="mean")
    height, width = maps.shape[1:]
    factor = max(1, -(-48 // max(1, min(height, width))))
    columns = min(8, len(strongest))
    grid = act.feature_map_grid(maps, strongest, min_side=48, columns=columns)
    hover = Hover(
        maps[strongest],
        [f"{layer} channel {int(c)}" for c in strongest],
        columns=columns,
        pad=2,
        tile=(height * factor, width * factor),
    )
    over = act.channel_overlay(
        upscale(ctx.pixels[i], min_side=MIN_DISPLAY_SIDE), maps[strongest[0]]
    )
    stem = f"{layer}-{i}"  # Page makes it a safe file name
    overlay_hover = Hover(maps[strongest[0]], f"{layer} channel {int(strongest[0])}")
    figures = [
        page.figure(
            page.image(over, f"overlay-{stem}", alt="strongest channel", hover=overlay_hover),
            f"{ctx.names[i]}: {layer} channel {strongest[0]} over the input",
        ),
        page.figure(
            page.image(grid, f"grid-{stem}", alt="strongest channels", hover=hover),
            f"{layer}: the 16 strongest channels by mean",
        ),
    ]
    if pair is not None:
        pre, post = act.signed_and_rectified(model, ctx.batch[i : i + 1], layer)
        signed = act.signed_pairs_grid(pre, post, strongest[:8], min_side=40)
        figures.append(
            page.figure(
                page.image(signed, f"signed-{stem}", alt="signed maps"),
                "before | after ReLU, 8 strongest",
            )
        )
    return '<div class="row">' + "".join(figures) + "</div>"


def _dataset(ctx: ReportContext) -> tuple[Any, np.ndarray | None] | None:
    options = _options(ctx)
    if options.get("dataset") is not None:
        labels = options.get("labels")
        return options["dataset"], None if labels is None else np.asarray(labels)
    if len(ctx.batch) >= MIN_DATASET:
        labels = options.get("labels", ctx.options.get("true_labels"))
        if labels is not None and any(label is None for label in labels):
            labels = None
        if labels is not None:
            labels = np.asarray(
                [ctx.model.class_index(v if isinstance(v, str) else int(v)) for v in labels],
                np.int64,
            )
        return ctx.batch, labels
    return None


@_register("feature-space", order=220)
def feature_space_section(ctx: ReportContext, page: Page) -> Section | None:
    found = _dataset(ctx)
    model = ctx.model
    layer = _options(ctx).get("embedding_layer") or default_embedding_layer(model)
    if found is None or layer is None:
        return None
    source, labels = found
    emb = _options(ctx).get("embeddings")
    if emb is None:
        emb = extract(model, source, layer, pooling="avg", labels=labels, predictions=True)
    layer = emb.layer
    feats, labels = emb.features, emb.labels
    parts: list[str] = []
    facts: list[tuple[str, object]] = [
        ("layer", layer),
        ("images", len(emb)),
        ("features", feats.shape[1]),
    ]
    if labels is not None and len(emb) > 5:
        facts.append(("5-NN accuracy (leave one out)", f"{knn_accuracy(feats, labels, 5):.3f}"))
    result = pca(feats, min(2, *feats.shape))
    facts.append(
        (
            "PCA variance explained (PC1, PC2)",
            ", ".join(f"{100 * v:.1f}%" for v in result.explained_variance_ratio),
        )
    )
    parts.append(page.definitions(facts))
    thumbs = _thumbnails(model, source, len(emb))
    colours = labels if labels is not None else emb.predictions
    figures = [
        page.figure(
            page.image(
                scatter(
                    result.coords,
                    colours,
                    arrows=pca_axes_arrows(result),
                    class_names=model.labels or None,
                ),
                "pca",
                alt="PCA",
            ),
            "PCA, principal axes as arrows (2 standard deviations)",
        )
    ]
    if len(emb) >= 8:
        coords = tsne(feats, seed=0)
        figures.append(
            page.figure(
                page.image(
                    scatter(coords, colours, images=thumbs, class_names=model.labels or None),
                    "tsne",
                    alt="t-SNE",
                ),
                "t-SNE, thumbnails framed by class",
            )
        )
        grid, _ = image_grid(coords, thumbs)
        figures.append(
            page.figure(
                page.image(grid, "tsne-grid", alt="t-SNE image grid"),
                "t-SNE image grid: each image in the cell its point snaps to",
            )
        )
    parts.append('<div class="cards">' + "".join(figures) + "</div>")
    parts.append(_neighbours(page, feats, thumbs))
    if labels is not None and emb.predictions is not None:
        matrix = confusion_matrix(labels, emb.predictions, model.num_classes)
        pairs = most_confused(matrix, 5)
        parts.append(
            page.figure(
                page.image(
                    render_confusion(matrix, model.labels), "confusion", alt="confusion matrix"
                ),
                "confusion matrix (rows: true class)",
            )
        )
        if pairs:
            parts.append(
                page.table(
                    ["true", "predicted as", "images", "share of the class"],
                    [
                        [
                            model.label(p.true),
                            model.label(p.predicted),
                            p.count,
                            f"{100 * p.rate:.1f}%",
                        ]
                        for p in pairs
                    ],
                )
            )
    k = min(model.num_classes or 8, len(emb))
    clustering = kmeans(feats, k, seed=0)
    samples = cluster_samples(feats, clustering, 8)
    text = f"k-means, k = {k}" + (
        f", purity {purity(clustering.assignments, labels):.3f}" if labels is not None else ""
    )
    parts.append(
        page.figure(
            page.image(render_clusters(thumbs, samples, 8), "clusters", alt="clusters"), text
        )
    )
    return Section("feature-space", "Feature space", "".join(parts))


#: query images of the feature space's neighbour table
NEIGHBOUR_QUERIES = 6


def _neighbours(page: Page, feats: np.ndarray, thumbs: np.ndarray, k: int = 5) -> str:
    """Query images beside their nearest neighbours in feature space and in pixel space."""
    if len(feats) <= k + 1:
        return ""
    queries = np.linspace(0, len(feats) - 1, min(NEIGHBOUR_QUERIES, len(feats))).astype(int)
    by_feature, _ = nearest_neighbors(feats, k=k + 1)
    by_pixel, _ = nearest_neighbors(pixel_features(thumbs), k=k + 1)
    rows = [
        [j for j in by_feature[q] if j != q][:k] + [j for j in by_pixel[q] if j != q][:k]
        for q in queries
    ]
    picture = neighbor_rows(thumbs, thumbs[queries], rows, separator_after=k)
    return page.figure(
        page.image(picture, "neighbours", alt="nearest neighbours"),
        f"nearest neighbours: query | {k} nearest in feature space | {k} nearest in pixels",
    )


def _thumbnails(model: Model, source: Any, count: int) -> np.ndarray:
    from .sources import iter_chunks

    pictures = [model.preprocess.invert(chunk.batch) for chunk in iter_chunks(model, source)]
    return np.concatenate(pictures)[:count]


@_register("top-patches", order=230)
def top_patches_section(ctx: ReportContext, page: Page) -> Section | None:
    """The maximally activating patches of a data set (``options["top_patches"]``: a
    precomputed :class:`~.patches.TopPatches`, else computed at ``patch_layer`` and at the
    other explored layers, one per layer picker entry)."""
    found = _dataset(ctx)
    model = ctx.model
    options = _options(ctx)
    given = options.get("top_patches")
    first = given.layer if given is not None else options.get("patch_layer")
    first = first or default_patch_layer(model)
    if (found is None and given is None) or first is None:
        return None
    fields = {layer.name for layer in model.layers if layer.receptive_field is not None}
    layers = [first]
    if given is None and options.get("patch_layer") is None:
        layers += [name for name in explored_layers(model) if name in fields and name != first]
    panels = []
    for layer in layers:
        if given is not None:
            result, projected = given, options.get("projected")
        else:
            shape = model.layer(layer).shape
            channels = options.get("channels") or list(range(min(8, shape[1] if shape else 8)))
            assert found is not None
            result = top_patches(
                model, found[0], layer, int(options.get("k", 6)), channels=channels
            )
            try:
                projected = projections(model, result)
            except CnnvizError:
                projected = None
        grid = render_top_patches(model, result, projected=projected)
        note = (
            f'<p class="muted">Layer <code>{escape(layer)}</code>, channels '
            f"{escape(', '.join(map(str, result.channels)))} (one row each): the strongest "
            f"{'patches' if result.kind == 'patch' else 'images'} of the data set"
            + (", each cropped by the unit's receptive field" if result.kind == "patch" else "")
            + (", beside its guided-backprop projection" if projected is not None else "")
            + ".</p>"
        )
        body = note + page.image(grid, f"grid-{layer}", alt=f"top patches of {layer}")
        panels.append(page.for_layer(layer, body) if len(layers) > 1 else body)
    return Section("top-patches", "Maximally activating patches", "".join(panels))
