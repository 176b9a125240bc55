"""The feature commands: ``filters``, ``activations``, ``embed``, ``neighbors``, ``project``
and ``top-patches``: argument parsing and thin calls into :mod:`cnnviz.features`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from cnnviz_core import InputError, Model

from ..data import iter_shapes
from ..features import (
    Embeddings,
    channel_overlay,
    conv_filters,
    conv_layers,
    extract,
    feature_map_grid,
    high_frequency_energy,
    image_grid,
    iter_chunks,
    knn_accuracy,
    nearest_neighbors,
    neighbor_rows,
    pca,
    pca_axes_arrows,
    projections,
    render_filters,
    render_top_patches,
    scatter,
    signed_and_rectified,
    signed_pairs_grid,
    strongest_channels,
    top_images,
    top_patches,
    tsne,
)
from ..features.activations import pre_activation
from ..features.neighbors import pixel_features
from ..render.images import save_png, upscale
from ..render.report import build_report
from .common import images_progress, model_arguments, safe_name, seed, with_model


def _dataset_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--data", type=Path, metavar="DIR", help="folder of images (recursive)")
    group.add_argument(
        "--shapes", type=int, metavar="N", help="the first N images of the shapes data set"
    )
    parser.add_argument("--seed", type=seed, default=0, help="shapes data set seed (0)")
    parser.add_argument("--batch", type=int, default=256, help="images per forward chunk")


def _dataset(args: argparse.Namespace) -> tuple[Any, int | None]:
    if args.shapes is not None:
        return iter_shapes(args.shapes, args.seed, batch=args.batch), args.shapes
    return args.data, None


def _write_report(
    args: argparse.Namespace,
    model: Model,
    sections: list[str],
    options: dict[str, Any],
    images: Any = (),
) -> None:
    """``OUT/report.html``: the command's result as report sections (self-contained)."""
    path = build_report(
        model,
        list(images),
        args.out,
        sections=["model", *sections],
        options={"features": options},
        title=f"cnnviz {args.command}: {model.name}",
    )
    print(f"report written to {path}")


def _pixels(model: Model, source: Any, count: int | None = None) -> np.ndarray:
    parts = [model.preprocess.invert(chunk.batch) for chunk in iter_chunks(model, source)]
    return np.concatenate(parts)[:count]


def cmd_filters(args: argparse.Namespace, model: Model) -> None:
    names = args.layer or conv_layers(model)[:1]
    bgr = model.preprocess.channel_order == "BGR"
    for name in names:
        weights = conv_filters(model, name)
        for norm in ("filter", "joint"):
            path = save_png(
                render_filters(weights, norm, bgr=bgr),
                args.out / f"filters-{safe_name(weights.layer)}-{norm}.png",
            )
            print(f"{weights.layer} ({norm} normalisation) -> {path}")
        score = high_frequency_energy(weights.weights)
        worst = np.argsort(-score)[:5]
        print(
            f"  high-frequency energy: mean {score.mean():.3f}, noisiest filters "
            + ", ".join(f"#{i} {score[i]:.2f}" for i in worst)
        )
    _write_report(args, model, ["filters"], {"filter_layers": names})


def cmd_activations(args: argparse.Namespace, model: Model) -> None:
    batch = model.prepare(args.images)
    maps = model.run(batch, taps=[args.layer], outputs=False)[args.layer]
    if maps.ndim != 4:
        raise InputError(f"layer {args.layer!r} has no feature maps (shape {maps.shape})")
    pixels = model.preprocess.invert(batch)
    pair = pre_activation(model, args.layer)
    for i, image in enumerate(args.images):
        stem = Path(image).stem
        top = strongest_channels(maps[i], k=args.top, by=args.by)
        save_png(feature_map_grid(maps[i]), args.out / f"{stem}-maps.png")
        save_png(feature_map_grid(maps[i], top), args.out / f"{stem}-strongest.png")
        over = channel_overlay(upscale(pixels[i], min_side=256), maps[i][top[0]])
        save_png(over, args.out / f"{stem}-overlay.png")
        if pair is not None:
            pre, post = signed_and_rectified(model, batch[i : i + 1], args.layer)
            save_png(signed_pairs_grid(pre, post, top), args.out / f"{stem}-signed.png")
        print(f"{image}: strongest channels by {args.by}: {', '.join(map(str, top))}")
    print(f"pictures written to {args.out}")
    _write_report(args, model, ["predictions", "activations"], {"layer": args.layer}, args.images)


def cmd_embed(args: argparse.Namespace, model: Model) -> None:
    source, _ = _dataset(args)
    emb = extract(
        model,
        source,
        args.layer,
        pooling=args.pooling,
        batch_size=args.batch,
        predictions=True,
        progress=images_progress,
    )
    path = emb.save(args.out)
    print(f"{len(emb)} x {emb.features.shape[1]} features of {args.layer} -> {path}")


def _load_or_extract(args: argparse.Namespace, model: Model) -> Any:
    if args.embeddings is not None:
        return Embeddings.load(args.embeddings)
    source, _ = _dataset(args)
    return extract(model, source, args.layer, pooling=args.pooling, batch_size=args.batch,
                   predictions=True, progress=images_progress)  # fmt: skip


def cmd_neighbors(args: argparse.Namespace, model: Model) -> None:
    source, _ = _dataset(args)
    emb = _load_or_extract(args, model)
    pixels = _pixels(model, source, len(emb))
    rng = np.random.default_rng(args.seed)
    queries = np.sort(rng.choice(len(emb), size=min(args.queries, len(emb)), replace=False))
    feature_nn, _ = nearest_neighbors(emb.features, k=args.k + 1, metric=args.metric)
    pixel_nn, _ = nearest_neighbors(pixel_features(pixels), k=args.k + 1, metric=args.metric)
    rows = [
        [*(j for j in feature_nn[q] if j != q)][: args.k]
        + [*(j for j in pixel_nn[q] if j != q)][: args.k]
        for q in queries
    ]
    picture = neighbor_rows(pixels, pixels[queries], rows, separator_after=args.k)
    path = save_png(picture, args.out / "neighbors.png")
    print(f"query | {args.k} nearest in feature space | {args.k} nearest in pixels -> {path}")
    if emb.labels is not None:
        for name, feats in (("features", emb.features), ("pixels", pixel_features(pixels))):
            accuracy = knn_accuracy(feats, emb.labels, args.k, args.metric)
            print(f"{args.k}-NN accuracy ({name}, {args.metric}): {accuracy:.3f}")
    _write_report(args, model, ["feature-space"], {"dataset": pixels, "embeddings": emb})


def cmd_project(args: argparse.Namespace, model: Model) -> None:
    source, _ = _dataset(args)
    emb = _load_or_extract(args, model)
    pixels = _pixels(model, source, len(emb))
    colours = emb.labels if emb.labels is not None else emb.predictions
    names = model.labels or None
    result = pca(emb.features, 2)
    pca_plot = scatter(result.coords, colours, arrows=pca_axes_arrows(result), class_names=names)
    save_png(pca_plot, args.out / "pca.png")
    ratios = ", ".join(f"{100 * r:.1f}%" for r in result.explained_variance_ratio)
    print(f"PCA: variance explained {ratios} -> {args.out / 'pca.png'}")
    if args.tsne:
        coords = tsne(emb.features, seed=args.seed, backend=args.backend)
        save_png(scatter(coords, colours, images=pixels, class_names=names), args.out / "tsne.png")
        grid, _ = image_grid(coords, pixels)
        save_png(grid, args.out / "tsne-grid.png")
        print(f"t-SNE -> {args.out / 'tsne.png'}, {args.out / 'tsne-grid.png'}")
    _write_report(args, model, ["feature-space"], {"dataset": pixels, "embeddings": emb})


def cmd_top_patches(args: argparse.Namespace, model: Model) -> None:
    source, _ = _dataset(args)
    channels = args.channel or None
    if args.whole_images:
        result = top_images(model, source, args.layer, args.k, channels=channels,
                            batch_size=args.batch, progress=images_progress)  # fmt: skip
    else:
        result = top_patches(model, source, args.layer, args.k, channels=channels,
                             batch_size=args.batch, progress=images_progress)  # fmt: skip
    projected = None if args.projection == "none" else projections(model, result, args.projection)
    path = save_png(
        render_top_patches(model, result, projected=projected), args.out / "top-patches.png"
    )
    for row, channel in enumerate(result.channels[: args.list]):
        hits = ", ".join(
            f"#{i} {v:.2f}" for i, v in zip(result.images[row], result.values[row]) if i >= 0
        )
        print(f"channel {channel}: {hits}")
    what = "patches" if result.kind == "patch" else "images"
    print(f"{len(result.channels)} channels x {result.k} {what} -> {path}")
    _write_report(args, model, ["top-patches"], {"top_patches": result, "projected": projected})


def add_commands(commands: Any) -> None:
    """Add the feature commands to the ``cnnviz`` parser's subparsers."""
    p = commands.add_parser("filters", help="pictures of Conv filters and their smoothness")
    model_arguments(p)
    p.add_argument("--layer", action="append", default=[], metavar="NAME",
                   help="Conv layer (repeatable; default the first)")  # fmt: skip
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.set_defaults(run=with_model(cmd_filters))

    p = commands.add_parser("activations", help="feature maps of a layer for images")
    model_arguments(p)
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument("--layer", required=True, metavar="NAME", help="layer (cnnviz layers)")
    p.add_argument("--top", type=int, default=16, help="strongest channels shown (16)")
    p.add_argument("--by", choices=["mean", "max"], default="mean", help="channel ranking")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.set_defaults(run=with_model(cmd_activations))

    def features_arguments(parser: argparse.ArgumentParser) -> None:
        model_arguments(parser)
        _dataset_arguments(parser)
        parser.add_argument("--layer", required=True, metavar="NAME", help="layer")
        parser.add_argument("--pooling", choices=["flatten", "avg", "max"], default="flatten")

    p = commands.add_parser("embed", help="features of a data set at a layer, saved as .npz")
    features_arguments(p)
    p.add_argument("--out", type=Path, required=True, help="output .npz file")
    p.set_defaults(run=with_model(cmd_embed))

    for name, fn, text in (
        ("neighbors", cmd_neighbors, "nearest neighbours in feature vs pixel space"),
        ("project", cmd_project, "PCA and t-SNE pictures of a feature space"),
    ):
        p = commands.add_parser(name, help=text)
        features_arguments(p)
        p.add_argument("--embeddings", type=Path, metavar="NPZ", help="saved by cnnviz embed")
        p.add_argument("--out", type=Path, required=True, help="output folder")
        if name == "neighbors":
            p.add_argument("--k", type=int, default=5, help="neighbours (5)")
            p.add_argument("--queries", type=int, default=8, help="query images (8)")
            p.add_argument("--metric", choices=["l2", "cosine"], default="l2")
        else:
            p.add_argument("--tsne", action="store_true", help="also t-SNE and its image grid")
            p.add_argument("--backend", choices=["auto", "sklearn", "opentsne"], default="auto")
        p.set_defaults(run=with_model(fn))

    p = commands.add_parser("top-patches", help="maximally activating patches of a layer")
    model_arguments(p)
    _dataset_arguments(p)
    p.add_argument("--layer", required=True, metavar="NAME", help="layer")
    p.add_argument("--k", type=int, default=9, help="hits per channel (9)")
    p.add_argument("--channel", type=int, action="append", default=[], help="repeatable")
    p.add_argument("--whole-images", action="store_true", help="top whole images instead")
    p.add_argument("--projection", choices=["guided", "deconvnet", "none"], default="none")
    p.add_argument("--list", type=int, default=8, help="channels listed on stdout (8)")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.set_defaults(run=with_model(cmd_top_patches))


__all__ = ["add_commands"]
