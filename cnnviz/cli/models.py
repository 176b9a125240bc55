"""The model commands: ``demo``, ``layers``, ``predict`` and ``report``."""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cnnviz_core import CnnvizError, InputError, Model

from ..models import load_model
from ..render.report import build_report
from .common import model_arguments, open_model, output_folder


def cmd_layers(args: argparse.Namespace) -> None:
    model = open_model(args)
    chosen = [model.layer(name) for name in args.layer] if args.layer else model.layers
    if args.json:
        print(json.dumps([dataclasses.asdict(layer) for layer in chosen], indent=1))
        return
    table = [["name", "op", "output shape", "receptive field (size / stride / offset)", "aliases"]]
    for layer in chosen:
        field = layer.receptive_field
        table.append(
            [
                layer.name,
                layer.op_type,
                "x".join(str(d) for d in layer.shape) if layer.shape else "?",
                "-"
                if field is None
                else f"{_pair(field.size)} / {_pair(field.stride)} / {_pair(field.offset)}",
                ", ".join(layer.aliases),
            ]
        )
    print(f"{model.name}: input {model.input_name!r} {'x'.join(map(str, model.input_shape))}")
    _print_table(table)


def _check_classifier(model: Model) -> None:
    """InputError unless the first output holds class scores (N, classes) or
    (N, classes, 1, 1): an image-to-image network (a style network) is no classifier."""
    name = model.output_names[0]
    try:
        shape = model.layer(name).shape
    except CnnvizError:
        return  # the output is not in the layer table: nothing to judge it by
    spatial = [d for d in (shape or ())[2:] if not (isinstance(d, int) and d == 1)]
    if spatial:
        dims = "x".join(str(d) for d in shape or ())
        raise InputError(
            f"{model.name} is not a classifier: its output {name!r} is {dims} (an image or "
            "feature map, not one score per class); predict needs class scores (for a style "
            "network use `cnnviz stylize`)"
        )


def cmd_predict(args: argparse.Namespace) -> None:
    model = open_model(args)
    _check_classifier(model)
    wanted = [model.class_index(c) for c in args.classes]
    batch = model.prepare(args.images)
    probabilities = model.probabilities(batch)
    predictions = model.predict(batch, k=args.top)
    if args.json:
        print(
            json.dumps(
                {
                    str(image): {
                        "top": [
                            {"index": p.index, "label": p.label, "probability": p.probability}
                            for p in preds
                        ],
                        "classes": [
                            {"index": c, "label": model.label(c), "probability": float(probs[c])}
                            for c in wanted
                        ],
                    }
                    for image, preds, probs in zip(args.images, predictions, probabilities)
                },
                indent=1,
            )
        )
        return
    for image, preds, probs in zip(args.images, predictions, probabilities):
        print(image)
        for rank, p in enumerate(preds, 1):
            print(f"  {rank}. {p.probability:7.4f}  {p.label}  (#{p.index})")
        for c in wanted:
            rank = int((probs > probs[c]).sum()) + 1
            print(f"  class #{c} {model.label(c)}: probability {probs[c]:.4f}, rank {rank}")


def cmd_report(args: argparse.Namespace) -> None:
    output_folder(args)
    model = open_model(args)
    path = build_report(model, args.images, args.out, top_k=args.top)
    print(f"report written to {path}")


def cmd_demo(args: argparse.Namespace) -> None:
    from ..data import CLASSES, make_shapes

    output_folder(args)
    model = load_model("shapes")
    sample = make_shapes(4 * len(CLASSES), seed=args.seed)
    picked = [
        int(next(i for i, y in enumerate(sample.labels) if y == c))
        for c in range(len(CLASSES))
        if c in sample.labels
    ]
    names = [f"{CLASSES[sample.labels[i]]} #{i}" for i in picked]
    path = build_report(
        model,
        list(sample.images[picked]),
        args.out,
        names=names,
        title="cnnviz demo: the shipped shapes model",
        # the worked examples: scored explanation methods and the confounded model
        options={"attribution": {"quality": True, "confounded": True}},
    )
    print(f"report written to {path}")


def _pair(values: Sequence[int]) -> str:
    return str(values[0]) if values[0] == values[1] else f"{values[0]}x{values[1]}"


def _print_table(rows: list[list[str]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for n, row in enumerate(rows):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
        if n == 0:
            print("  ".join("-" * w for w in widths))


def add_commands(commands: Any) -> None:
    """Add the model commands to the ``cnnviz`` parser's subparsers."""
    demo = commands.add_parser(
        "demo",
        help="write a report on the shipped shapes model (start here)",
        description="Classify one generated image per class with the shipped 'shapes' model "
        "and write an HTML report: model card, layer table, predictions.",
    )
    demo.add_argument("--out", type=Path, default=Path("demo"), help="output folder (demo/)")
    demo.add_argument("--seed", type=int, default=2026, help="seed of the generated images")
    demo.set_defaults(run=cmd_demo)

    layers = commands.add_parser(
        "layers",
        help="list a model's layers, shapes and receptive fields",
        description="List every layer: the name to type in other commands, the operator, "
        "the output shape and the receptive field in input pixels.",
    )
    model_arguments(layers)
    layers.add_argument(
        "--layer",
        action="append",
        default=[],
        metavar="NAME",
        help="show only this layer (name or alias; repeatable)",
    )
    layers.add_argument("--json", action="store_true", help="machine-readable output")
    layers.set_defaults(run=cmd_layers)

    predict = commands.add_parser(
        "predict",
        help="top-k classes for images",
        description="Print the top-k classes and probabilities for each image.",
    )
    model_arguments(predict)
    predict.add_argument("images", nargs="+", help="image files (PNG, JPEG, ...)")
    predict.add_argument("--top", type=int, default=5, help="how many classes (5)")
    predict.add_argument(
        "--class",
        dest="classes",
        action="append",
        default=[],
        metavar="CLASS",
        help="also show this class (index or label; repeatable)",
    )
    predict.add_argument("--json", action="store_true", help="machine-readable output")
    predict.set_defaults(run=cmd_predict)

    report = commands.add_parser(
        "report",
        help="write an HTML report for a model and images",
        description="Write OUT/report.html (images beside it in OUT/images/) with the model "
        "card, the layer table and the predictions for the images.",
    )
    model_arguments(report)
    report.add_argument("images", nargs="+", help="image files")
    report.add_argument("--out", type=Path, required=True, help="output folder")
    report.add_argument("--top", type=int, default=5, help="classes shown per image (5)")
    report.set_defaults(run=cmd_report)


__all__ = ["add_commands", "cmd_demo", "cmd_layers", "cmd_predict", "cmd_report"]
