"""The attribution commands: ``explain`` (one technique of the method registry per run) and
``sanity`` (Adebayo et al.'s model parameter randomization test of one technique)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from cnnviz_core import Model, list_boxes
from cnnviz_core.detection import layout_named

from ..attribution import SPECS, explain
from ..attribution.methods import parameters, taking
from ..attribution.sanity import model_randomization
from ..output import atomic_write_text
from ..render.images import save_png
from ..render.report import build_report
from .common import (
    command_targets,
    count_progress,
    layout_argument,
    method_parameter_arguments,
    model_arguments,
    open_model,
    output_folder,
    parse_target,
    safe_name,
    seed,
    target_arguments,
    with_model,
)


def cmd_explain(args: argparse.Namespace) -> None:
    spec = parse_target(args.target)
    output_folder(args)
    model = open_model(args)
    tuning = {name: getattr(args, name) for name in parameters()}
    result = explain(
        model,
        args.images,
        args.method,
        command_targets(args, model, spec),
        layer=args.layer,
        precision=args.precision,
        **tuning,
    )
    for i, image in enumerate(args.images):
        name = safe_name(f"{Path(image).stem}-{args.method}")
        path = save_png(result.render(i), args.out / f"{name}.png")
        print(f"{image}: {result.targets[i].label} -> {path}")
    for key, value in result.metrics.items():
        print(f"{key}: {value}")
    options = {"methods": [args.method], "results": {args.method: result}, "layer": args.layer}
    path = build_report(
        model,
        args.images,
        args.out,
        sections=["model", "predictions", "attribution"],
        options={"attribution": options},
        title=f"cnnviz explain: {model.name}, {args.method}",
    )
    print(f"report written to {path}")


def cmd_sanity(args: argparse.Namespace, model: Model) -> None:
    result = model_randomization(
        model,
        args.images,
        args.method,
        target=command_targets(args, model, parse_target(args.target)),
        cascading=not args.independent,
        seed=args.seed,
        layers=args.layers,
        options={"layer": args.layer} if args.layer else None,
        progress=count_progress("randomized models"),
    )
    mode = "cascading" if result.cascading else "independent"
    stem = safe_name(f"{Path(args.images[0]).stem}-{args.method}-sanity-{mode}")
    strip = save_png(result.strip(), args.out / f"{stem}.png")
    figures = {**result.figures(), "model": model.name, "images": list(args.images)}
    table = atomic_write_text(args.out / f"{stem}.json", json.dumps(figures, indent=1) + "\n")
    print(f"{'randomized (top first)':<24} {'spearman':>9} {'ssim':>7}")
    for row in figures["layers"]:
        print(f"{row['layer']:<24} {row['spearman']:>9.3f} {row['ssim']:>7.3f}")
    verdict = "PASS (the maps decorrelate)" if result.passed else "FAIL (the maps stay)"
    step = result.decisive_step
    print(
        f"{args.method}, {mode}: {verdict}: Spearman {result.spearman[step].mean():.3f} "
        f"at {result.layers[step]} (threshold < {result.threshold})"
    )
    print(f"strip written to {strip}, figures to {table}")


def cmd_boxes(args: argparse.Namespace, model: Model) -> None:
    layout = layout_named(args.layout)
    for image in args.images:
        found = list_boxes(
            model, [image], layout, min_score=args.min_score, nms_iou=args.nms, top=args.top
        )
        print(f"{image}: {len(found)} boxes (score >= {args.min_score}, input pixels)")
        for box in found:
            x0, y0, x1, y1 = box.xyxy
            print(
                f"  box:{box.index:<6} score {box.score:.3f}  class {box.class_index}  "
                f"({x0:.0f}, {y0:.0f}, {x1:.0f}, {y1:.0f})"
            )


def _taking(option: str) -> str:
    """The methods that take an option or parameter of :func:`~cnnviz.attribution.explain`."""
    return ", ".join(taking(option))


def add_commands(commands: Any) -> None:
    """Add the attribution commands to the ``cnnviz`` parser's subparsers."""
    p = commands.add_parser(
        "explain",
        help="attribution maps: which pixels drive a class (saliency, Grad-CAM...)",
        description="Explain each image's prediction (or --target) with one technique: "
        "writes OUT/<image>-<method>.png and OUT/report.html.",
    )
    model_arguments(p)
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument(
        "--method",
        choices=[spec.name for spec in SPECS],
        default="gradcam",
        help="technique (gradcam)",
    )
    target_arguments(p)
    p.add_argument(
        "--layer",
        metavar="NAME",
        help=f"layer for {_taking('layer')} (default: last conv)",
    )
    p.add_argument(
        "--precision",
        choices=["fp32", "bf16"],
        help=f"{_taking('precision')}: run the occluded forwards in bf16 (approximate; "
        "needs torch)",
    )
    p.add_argument("--out", type=Path, required=True, help="output folder")
    method_parameter_arguments(p)
    p.set_defaults(run=cmd_explain)
    add_sanity_command(commands)
    add_boxes_command(commands)


def add_boxes_command(commands: Any) -> None:
    """Add ``boxes`` (a detector's boxes, to pick ``--target box:INDEX``) to the subparsers."""
    p = commands.add_parser(
        "boxes",
        help="list a detector's boxes (after NMS) with their indices for --target box:INDEX",
        description="Decode a YOLO-style detector's output (--layout) and print each image's "
        "boxes, best first: pre-NMS index, score, class, corners in input pixels.",
    )
    model_arguments(p)
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    layout_argument(p)
    p.add_argument(
        "--min-score", type=float, default=0.25, metavar="S", help="lowest score shown (0.25)"
    )
    p.add_argument(
        "--nms", type=float, default=0.45, metavar="IOU", help="NMS IoU threshold (0.45)"
    )
    p.add_argument("--top", type=int, metavar="N", help="at most this many boxes per image")
    p.set_defaults(run=with_model(cmd_boxes))


def add_sanity_command(commands: Any) -> None:
    """Add ``sanity`` (the model parameter randomization test) to the subparsers."""
    p = commands.add_parser(
        "sanity",
        help="sanity check of a technique: do its maps change when the weights are destroyed?",
        description="Adebayo et al. 2018: re-randomize the Conv/Gemm weights from the top "
        "layer down (cascading, or one layer at a time with --independent), recompute the "
        "maps for the same target, and report their Spearman rank correlation and SSIM "
        "with the original; a method passes when its maps decorrelate. Writes "
        "OUT/<image>-<method>-sanity-<mode>.png (input, original map, one map per step) "
        "and .json (the figures).",
    )
    model_arguments(p)
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    p.add_argument(
        "--method", choices=[spec.name for spec in SPECS], required=True, help="technique"
    )
    p.add_argument(
        "--independent",
        action="store_true",
        help="randomize one layer at a time (default: cascading from the top)",
    )
    target_arguments(p)
    p.add_argument(
        "--randomize",
        dest="layers",
        nargs="+",
        metavar="NAME",
        help="the Conv/Gemm layers to randomize (default: all)",
    )
    p.add_argument("--layer", metavar="NAME", help=f"layer for {_taking('layer')}")
    p.add_argument("--seed", type=seed, default=0, help="seed of the random weights (0)")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.set_defaults(run=with_model(cmd_sanity))


__all__ = [
    "add_boxes_command",
    "add_commands",
    "add_sanity_command",
    "cmd_boxes",
    "cmd_explain",
    "cmd_sanity",
]
