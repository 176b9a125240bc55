"""The model commands: ``demo``, ``layers``, ``predict``, ``check`` and ``report``."""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cnnviz_core import CnnvizError, InputError, Model
from cnnviz_core.check import CheckReport, check
from cnnviz_core.preprocess import Preprocess, preset

from ..attribution import REGISTRY, default_layer
from ..models import load_model
from ..render.report import DEFAULT_BUDGET, build_report
from .common import model_arguments, open_model, output_folder, seed


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
    path = build_report(
        model, args.images, args.out, top_k=args.top, assets=args.assets, budget=_budget(args)
    )
    print(f"report written to {path}")


#: images of the demo's data set (feature space, top patches): 8 per class
DEMO_DATASET = 64


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
    dataset = make_shapes(DEMO_DATASET, seed=args.seed + 1)
    options: dict[str, Any] = {
        # the worked examples: every method side by side, scored, and the confounded model
        "attribution": {"methods": DEMO_METHODS, "quality": True, "confounded": True},
        # feature space and top patches over a data set of their own
        "features": {"dataset": dataset.images, "labels": list(dataset.labels)},
        "deploy": {"method": "gradcam"},  # the same Grad-CAM as one deployable ONNX file
    }
    if _torch_installed():
        # kept short: one class model per class in 20 steps, one inverted layer
        options["synthesis"] = {
            "classes": list(range(len(CLASSES))),
            "steps": 20,
            "layers": ["relu_1"],
        }
    path = build_report(
        model,
        list(sample.images[picked]),
        args.out,
        names=names,
        title="cnnviz demo: the shipped shapes model",
        options=options,
        assets=args.assets,
        budget=_budget(args),
    )
    print(f"report written to {path}")


#: the demo's attribution methods (all fast on the 64-pixel shapes model)
DEMO_METHODS = ["saliency", "guided", "gradcam", "ig", "smoothgrad", "occlusion"]


def _torch_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("torch") is not None


def _budget(args: argparse.Namespace) -> int | None:
    """``--budget-mb`` in bytes (0: no limit)."""
    return None if args.budget_mb == 0 else int(args.budget_mb * 2**20)


def _report_arguments(parser: argparse.ArgumentParser) -> None:
    """``--assets`` and ``--budget-mb``: how the report is written."""
    parser.add_argument(
        "--assets",
        action="store_true",
        help="write the pictures as PNG files in OUT/images/ (default: one self-contained "
        "report.html with the pictures embedded)",
    )
    parser.add_argument(
        "--budget-mb",
        type=float,
        default=DEFAULT_BUDGET / 2**20,
        metavar="MB",
        help=f"size budget of the self-contained report ({DEFAULT_BUDGET / 2**20:g}; pictures "
        "are stored smaller as it fills; 0: no limit)",
    )


#: CAM-family methods that need no backward pass (the others do)
_FORWARD_CAMS = frozenset({"cam"})


def cmd_check(args: argparse.Namespace) -> None:
    """The doctor: the engine's report on the model plus the toolkit's lines (CAM layer,
    the method asked for); exits 1 with one line when what was asked cannot work."""
    if args.size:
        base = preset(args.preset) if args.preset else Preprocess()
        args.preset = None
        model = load_model(
            args.model,
            preprocess=base.replace(size=args.size),
            labels=args.labels,
            device=args.device,
        )
    else:
        model = open_model(args)
    image = args.image
    report = check(
        model,
        image=image,
        directions=args.directions,
        seed=args.seed,
        gradient_test=not args.no_gradient_test,
    )
    try:
        cam_layer: str | None = default_layer(model)
        cam_note = str(cam_layer)
    except CnnvizError as exc:
        cam_layer, cam_note = None, f"none found ({exc})"
    if cam_layer is not None:
        cam_note += report.layer_note(cam_layer, model)
    sources = {
        "preprocess": f"--preset {args.preset}" if args.preset else report.preprocess_source,
        "labels": f"--labels {args.labels}" if args.labels else report.labels_source,
    }
    test = report.gradient_test
    reasons = (
        [f"gradient self-test failed: {test.reason}"] if test and test.status == "fail" else []
    )
    method = _method_verdict(args.method, report, cam_layer) if args.method else None
    if method is not None and method["reason"]:
        reasons.append(method["reason"])
    if args.json:
        data = report.to_dict()
        data["preprocess_source"], data["labels_source"] = sources["preprocess"], sources["labels"]
        data["cam_layer"] = cam_layer
        data["method"] = method
        data["ok"] = not reasons
        print(json.dumps(data, indent=1))
    else:
        _print_check(report, sources, cam_note, method)
    if reasons:
        raise CnnvizError(reasons[0])


def _method_verdict(name: str, report: CheckReport, cam_layer: str | None) -> dict[str, Any]:
    """Whether the method asked for can run: {"name", "ok", "reason"}."""
    spec = REGISTRY[name]
    backward = spec.family == "gradient" or (spec.family == "cam" and name not in _FORWARD_CAMS)
    reason = ""
    if backward and not report.gradients_supported:
        reason = (
            f"--method {name} needs gradients, and the backward pass has no rule for "
            f"{', '.join(report.missing_ops)} (first node: {report.missing_rules[0]}); "
            "use a perturbation method (occlusion, lime)"
        )
    elif spec.family == "cam" and cam_layer is None:
        reason = f"--method {name} finds no default layer; name one with --layer in explain"
    return {"name": name, "ok": not reason, "reason": reason}


def _print_check(
    report: CheckReport, sources: dict[str, str], cam_note: str, method: dict[str, Any] | None
) -> None:
    layout = report.layout
    p = report.preprocess
    shape = "x".join(str(d) for d in layout.shape)
    symbolic = f"; symbolic {', '.join(layout.symbolic)}" if layout.symbolic else ""
    batching = {
        "symbolic": "batches in one call (batch dimension symbolic)",
        "rewritten": "batches in one call (fixed batch made symbolic)",
        "loop": "one image at a time (the batch dimension could not be made symbolic)",
    }[report.batching]
    labels = f"{sources['labels']}; {report.scores}"
    if report.unused_label_keys:
        keys = ", ".join(repr(k) for k in report.unused_label_keys)
        labels += f"; metadata {keys}: {report.num_classes} names, unused (give them with --labels)"
    rows = [
        ["input", f"{layout.input_name!r} {shape} {layout.layout}{symbolic}"],
        ["batching", batching],
        [
            "preprocess",
            f"{sources['preprocess']}: {'x'.join(map(str, layout.size[1:]))} "
            f"{p['channel_order']}, scale {p['scale']:.4g}, mean {_floats(p['mean'])}, "
            f"std {_floats(p['std'])}, resize {p['resize']}",
        ],
        ["labels", labels],
        ["CAM layer", cam_note],
        ["incremental", report.incremental or "crops to the end"],
    ]
    print(f"{report.model} (opset {report.opset})")
    for key, value in rows:
        print(f"  {key:<12} {value}")
    print()
    table = [["op", "count", "backward", "torch bridge", "incremental occlusion"]]
    for op in report.ops:
        backward = ("yes" if op.backward else "MISSING") if op.on_gradient_path else "-"
        bridge = "torch not installed" if op.bridge is None else "yes" if op.bridge else "no"
        table.append([op.op_type, str(op.count), backward, bridge, op.incremental])
    _print_table(table)
    test = report.gradient_test
    if test is not None:
        print()
        if test.status == "skipped":
            print(f"gradient self-test: skipped ({test.reason})")
        else:
            error = (
                "" if test.forward_error is None else f", forward error {test.forward_error:.1e}"
            )
            print(
                f"gradient self-test ({test.input} input, seed {test.seed}, random cotangent "
                f"on {test.target!r}{error}): {test.status.upper()}"
                + (f": {test.reason}" if test.reason else "")
            )
            rows = [["direction", "finite difference", "float32 error", "float64 error", "status"]]
            for k, d in enumerate(test.directions):
                flips = "; ".join(
                    f"{f.op_type} {f.node!r} x{f.elements} ({f.between})" for f in d.flips
                )
                rows.append(
                    [
                        f"{k} {d.kind}",
                        f"{d.finite_difference:.6g}",
                        f"{d.error32:.1e}",
                        f"{d.error64:.1e}",
                        d.status + (f": {flips}" if flips else ""),
                    ]
                )
            _print_table(rows)
    if report.problems:
        print()
        for problem in report.problems:
            print(f"problem: {problem}")
    if method is not None:
        print()
        print(f"--method {method['name']}: " + ("ok" if method["ok"] else "CANNOT RUN"))


def _floats(values: Sequence[float]) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"


def _size(text: str) -> tuple[int, int]:
    """``HxW`` (or one number for a square) -> (H, W)."""
    try:
        parts = [int(v) for v in text.lower().split("x")]
    except ValueError:
        parts = []
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2 or min(parts) < 1:
        raise argparse.ArgumentTypeError(f"size must be HxW (e.g. 48x192); got {text!r}")
    return parts[0], parts[1]


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
        "and write OUT/report.html, one self-contained explorer: model card, layer table, "
        "predictions, every attribution method side by side (scored), the husky-vs-wolf "
        "lesson, filters, activations per layer, the feature space and top patches of a "
        "64-image data set, and synthesis when torch is installed.",
    )
    demo.add_argument("--out", type=Path, default=Path("demo"), help="output folder (demo/)")
    demo.add_argument("--seed", type=seed, default=2026, help="seed of the generated images")
    _report_arguments(demo)
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

    check = commands.add_parser(
        "check",
        help="what cnnviz can do with a model, and a gradient self-test on it",
        description="The doctor: input layout and batching, where preprocessing and labels "
        "came from, each op with or without a backward rule / torch bridge op / incremental "
        "occlusion, the default CAM layer, and a gradient self-test (float32 gradient against "
        "float64 central differences; near-tie gate flips are reported as flips). Exits 1 "
        "with one line when the self-test fails or --method cannot run on the model.",
    )
    model_arguments(check)
    check.add_argument(
        "--method",
        choices=list(REGISTRY),
        help="also say whether this method can run (exit 1 when it cannot)",
    )
    check.add_argument(
        "--size",
        type=_size,
        metavar="HxW",
        help="input size for a model that accepts any size (e.g. 48x192)",
    )
    check.add_argument("--image", metavar="FILE", help="self-test input (default: noise)")
    check.add_argument("--directions", type=int, default=3, help="directions of the self-test (3)")
    check.add_argument("--seed", type=seed, default=0, help="seed of the self-test (0)")
    check.add_argument(
        "--no-gradient-test", action="store_true", help="skip the gradient self-test"
    )
    check.add_argument("--json", action="store_true", help="machine-readable output")
    check.set_defaults(run=cmd_check)

    report = commands.add_parser(
        "report",
        help="write an HTML report for a model and images",
        description="Write OUT/report.html, one self-contained explorer (pick an image or "
        "a layer, hover a map to read its values): the model card, the layer table, the "
        "predictions, attribution maps, filters and activations for the images.",
    )
    model_arguments(report)
    report.add_argument("images", nargs="+", help="image files")
    report.add_argument("--out", type=Path, required=True, help="output folder")
    report.add_argument("--top", type=int, default=5, help="classes shown per image (5)")
    _report_arguments(report)
    report.set_defaults(run=cmd_report)


__all__ = ["add_commands", "cmd_check", "cmd_demo", "cmd_layers", "cmd_predict", "cmd_report"]
