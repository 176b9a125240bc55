"""What every ``cnnviz`` command shares: the model arguments and opening the model, the
output folder, progress on stderr, enlarged pictures, and running a command: a user's error
is one line in the command's own terms (library parameters become flags) with exit status 1,
Ctrl-C exits with 130 (every file is written atomically: see :mod:`cnnviz.output`).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cnnviz_core import Box, CnnvizError, InputError, Model, Region
from cnnviz_core.detection import LAYOUTS, DetectionLayout, layout_named
from cnnviz_core.preprocess import PRESETS, ImageLike
from cnnviz_core.targets import Targets

from ..attribution.methods import SPECS, parameters
from ..models import SHIPPED, load_model
from ..render.images import save_png, upscale

#: an ``--out`` with one of these suffixes names a file, any other a folder
FILE_SUFFIXES = (".npz", ".onnx")

Command = Callable[[argparse.Namespace], None]


def seed(text: str) -> int:
    """``--seed``: a whole number from 0 to 2**64 - 1 (NumPy's and torch's seed range)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 0 <= value < 2**64:
        raise argparse.ArgumentTypeError(f"a seed is between 0 and 2**64 - 1, got {value}")
    return value


def model_arguments(parser: argparse.ArgumentParser) -> None:
    """The model a command runs: a file or a shipped name, its preprocessing, labels and
    device."""
    parser.add_argument(
        "model",
        help=f"an .onnx file, or the name of a shipped model ({', '.join(SHIPPED)})",
    )
    parser.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        help="preprocessing convention (default: the model card's, else RGB scaled to 0-1)",
    )
    parser.add_argument("--labels", metavar="FILE", help="class names, one per line")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")


def open_model(args: argparse.Namespace) -> Model:
    """The model named by the command's arguments (:func:`model_arguments`); without
    ``--preset`` and without a model card, a warning on stderr names the preset the graph
    suggests (:func:`preset_hint`), and a 1000-class model without labels gets a note."""
    model = load_model(
        args.model, preprocess=args.preset, labels=getattr(args, "labels", None), device=args.device
    )
    if args.preset is None and not model.card.get("preprocess"):
        hint = preset_hint(model)
        if hint is not None:
            print(f"cnnviz: warning: {hint}", file=sys.stderr)
    if not model.labels and model.num_classes == 1000 and getattr(args, "labels", 0) is None:
        print(
            "cnnviz: note: 1000 classes and no labels: give --labels FILE (ImageNet class "
            "names, one per line, e.g. synset_words.txt) to see class names",
            file=sys.stderr,
        )
    return model


#: per-channel mean constants (0-255 scale) a graph that normalizes its own input carries
_BGR_MEANS = ((104.0, 117.0, 123.0), (103.939, 116.779, 123.68))
_IMAGENET_MEAN_01 = (0.485, 0.456, 0.406)


def _carries(values: np.ndarray, wanted: Sequence[float], tolerance: float) -> bool:
    flat = np.abs(np.asarray(values, np.float64).reshape(-1))
    return flat.size == len(wanted) and bool(np.allclose(flat, wanted, atol=tolerance))


def preset_hint(model: Model) -> str | None:
    """What the graph suggests about its preprocessing when no preset was given, as a
    sentence naming the preset (None: no hint). Hints: a Caffe2 export (input ``data_0``,
    producer ``onnx-caffe2``: BGR 0-255 minus the mean, ``caffe``), BGR or RGB mean
    constants on the 0-255 scale or an ``ImageScaler`` (the graph subtracts the mean
    itself: ``bgr255``/``rgb255``), ImageNet's 0-1 mean (``rgb01``), Windows ML's
    ``NominalRange_0_255`` metadata (``rgb255``/``grey255``)."""
    proto = model.proto
    producer = (proto.producer_name or "").lower()
    grey = model.channels == 1
    guess: tuple[str, str] | None = None
    if model.input_name == "data_0" or "caffe" in producer:
        why = f"input {model.input_name!r}, producer {proto.producer_name!r}: a Caffe/Caffe2 "
        guess = ("caffe", why + "export, which takes BGR 0-255 minus the mean")
    elif any(node.op_type == "ImageScaler" for node in proto.graph.node):
        why = "the graph starts with an ImageScaler (it subtracts the mean itself), "
        guess = ("bgr255", why + "the convention of BGR 0-255 Windows ML models")
    else:
        for name, value in model.constants.items():
            holds = f"the constant {name!r} holds the"
            if any(_carries(value, mean, 1.5) for mean in _BGR_MEANS):
                why = "BGR ImageNet mean on the 0-255 scale: the graph subtracts it from BGR"
                guess = ("bgr255", f"{holds} {why} 0-255 pixels")
            elif any(_carries(value, mean[::-1], 1.5) for mean in _BGR_MEANS):
                why = "RGB ImageNet mean on the 0-255 scale: the graph subtracts it from RGB"
                guess = ("rgb255", f"{holds} {why} 0-255 pixels")
            elif _carries(value, _IMAGENET_MEAN_01, 0.01):
                why = "ImageNet mean on the 0-1 scale: the graph normalizes RGB 0-1 pixels"
                guess = ("rgb01", f"{holds} {why} itself")
            if guess is not None:
                break
    if guess is None:
        metadata = {p.key: p.value for p in proto.metadata_props}
        if "255" in metadata.get("Image.NominalPixelRange", ""):
            guess = ("grey255" if grey else "rgb255", "the metadata says NominalRange_0_255")
    if guess is None:
        return None
    name, why = guess
    return (
        f"no --preset and no model card: using {model.preprocess.channel_order} "
        f"scaled by {model.preprocess.scale:.4g}, but {why}; try --preset {name}"
    )


#: the ``--target`` syntax, for the help text and the errors
TARGET_SYNTAX = (
    "CLASS (index or label), box:INDEX[:objectness|:class=K], "
    "box@X0,Y0,X1,Y1[:objectness|:class=K] or region:CLASS@MASK.png"
)

TARGET_HELP = (
    "what to explain (default: the predicted class): CLASS, an index or label; "
    "box:INDEX[:objectness|:class=K], one box of a detector's pre-NMS output (list them "
    "with `cnnviz boxes`; default score: the class, for a one-class detector); "
    "box@X0,Y0,X1,Y1[:...], the best-scoring box overlapping that rectangle (input pixels, "
    "IoU >= 0.3), per image; region:CLASS@MASK.png, a segmentation class summed over the "
    "mask's nonzero pixels (mask at the output's or the input's resolution). Boxes follow "
    "--layout"
)


@dataclass(frozen=True)
class TargetSpec:
    """A parsed ``--target`` (see :data:`TARGET_SYNTAX`).

    Attributes:
        text: the spec as given (None: the predicted class).
        kind: ``class``, ``box`` (by index), ``box@`` (by rectangle) or ``region``.
        label: the class (index or label) of a class or region target.
        index: the box's index.
        rect: the rectangle (x0, y0, x1, y1) in input pixels.
        score: ``class`` or ``objectness`` for a box.
        class_index: a box's class (``:class=K``).
        mask: the mask file of a region.
    """

    text: str | None
    kind: str = "class"
    label: str | None = None
    index: int | None = None
    rect: tuple[float, float, float, float] | None = None
    score: str = "class"
    class_index: int | None = None
    mask: Path | None = None

    def targets(
        self,
        model: Model,
        images: Sequence[ImageLike],
        layout: DetectionLayout | None = None,
    ) -> Targets:
        """The target(s) of ``images`` for :func:`~cnnviz.attribution.explain`: one target,
        or one box per image for ``box@`` (each image's own best box)."""
        layout = layout or DetectionLayout()
        if self.kind == "class":
            return self.label
        if self.kind == "box":
            assert self.index is not None
            return Box(self.index, self.score, self.class_index, layout)
        if self.kind == "box@":
            assert self.rect is not None
            batch = model.prepare(images)
            return [
                Box.at(model, batch[i : i + 1], self.rect, layout, self.score, self.class_index)
                for i in range(len(batch))
            ]
        assert self.mask is not None and self.label is not None
        if not self.mask.is_file():
            raise InputError(f"--target {self.text!r}: no mask file {str(self.mask)!r}")
        from PIL import Image

        with Image.open(self.mask) as picture:
            mask = np.asarray(picture.convert("L")) > 0
        label = int(self.label) if self.label.isdigit() else model.class_index(self.label)
        return Region(mask, label)


def _spec_error(text: str, why: str) -> InputError:
    return InputError(f"--target {text!r}: {why}; expected {TARGET_SYNTAX}")


def _box_score(text: str, qualifier: str | None) -> tuple[str, int | None]:
    """``objectness``, ``class=K`` or nothing (the class score) -> (score, class_index)."""
    if qualifier is None:
        return "class", None
    if qualifier == "objectness":
        return "objectness", None
    key, _, value = qualifier.partition("=")
    if key == "class" and value.isdigit():
        return "class", int(value)
    raise _spec_error(text, f"{qualifier!r} is neither 'objectness' nor 'class=K'")


def parse_target(text: str | None) -> TargetSpec:
    """Parse a ``--target`` (see :data:`TARGET_SYNTAX`); anything that is not a box or
    region spec is a class (index or label), checked later against the model.

    Raises:
        InputError: a malformed box or region spec (one line naming ``--target``).
    """
    if text is None or not text.startswith(("box:", "box@", "region:")):
        return TargetSpec(text, "class", label=text)
    if text.startswith("region:"):
        label, at, mask = text[len("region:") :].partition("@")
        if not at or not label or not mask:
            raise _spec_error(text, "a region needs a class and a mask file")
        return TargetSpec(text, "region", label=label, mask=Path(mask))
    body, _, qualifier = text[len("box") + 1 :].partition(":")
    score, class_index = _box_score(text, qualifier or None)
    if text.startswith("box:"):
        if not body.isdigit():
            raise _spec_error(text, f"the box index {body!r} is not a whole number >= 0")
        return TargetSpec(text, "box", index=int(body), score=score, class_index=class_index)
    try:
        x0, y0, x1, y1 = (float(v) for v in body.split(","))
    except ValueError:
        raise _spec_error(text, f"the rectangle {body!r} is not four numbers X0,Y0,X1,Y1") from None
    if not (x1 > x0 and y1 > y0):
        raise _spec_error(text, "the rectangle needs X1 > X0 and Y1 > Y0")
    return TargetSpec(text, "box@", rect=(x0, y0, x1, y1), score=score, class_index=class_index)


def target_arguments(parser: argparse.ArgumentParser) -> None:
    """``--target`` (:func:`parse_target`) and ``--layout`` (the detection layout of box
    targets)."""
    parser.add_argument("--target", metavar="SPEC", help=TARGET_HELP)
    layout_argument(parser)


def flag_parser(parse: Callable[[str], object]) -> Callable[[str], object]:
    """An argparse ``type=`` for a parameter's parser: ``int``, ``float`` and ``str`` as
    they are, any other parser's ValueError (e.g. an InputError) becomes argparse's usage
    error with the parser's own one-line message (``argument --sigma: sigma= is 'auto'
    or ...``) instead of "invalid value"."""
    if parse in (int, float, str):
        return parse

    def parse_flag(text: str) -> object:
        try:
            return parse(text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    parse_flag.__name__ = getattr(parse, "__name__", "value")
    return parse_flag


def method_parameter_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per tuning parameter of the registered methods (their
    :attr:`~cnnviz.attribution.MethodSpec.parameters`): a new method's parameters appear
    without code here; :func:`~cnnviz.attribution.explain` rejects one the chosen method does
    not take, naming the flag."""
    group = parser.add_argument_group("method parameters (default: the method's own)")
    for parameter in parameters().values():
        group.add_argument(
            "--" + parameter.name.replace("_", "-"),
            dest=parameter.name,
            type=flag_parser(parameter.type),
            metavar=parameter.metavar,
            help="; ".join(
                f"{spec.name}: {own.help}"
                for spec in SPECS
                for own in spec.parameters
                if own.name == parameter.name
            ),
        )


def layout_argument(parser: argparse.ArgumentParser) -> None:
    """``--layout``: a detector's output layout, by preset name."""
    parser.add_argument(
        "--layout",
        choices=sorted(LAYOUTS),
        default="yolov5",
        help="detector output layout for box targets: yolov5 (decoded boxes x 5+C, default), "
        "yolov8 (4+C x boxes), yolox (raw grids of strides 8, 16, 32, e.g. ddddocr)",
    )


def command_targets(args: argparse.Namespace, model: Model, spec: TargetSpec) -> Targets:
    """The command's parsed ``--target`` (:func:`parse_target`, parsed before the model is
    opened so a malformed spec fails at once) as targets of its images, boxes laid out as
    ``--layout`` says."""
    return spec.targets(model, args.images, layout_named(args.layout))


def output_folder(args: argparse.Namespace) -> None:
    """Create the ``--out`` folder, when the command has one and it names no file; an
    ``--out`` that is an existing file where a folder is wanted (or a folder where a file
    is) is an InputError naming the flag, not a traceback."""
    out = getattr(args, "out", None)
    if out is None:
        return
    if out.suffix in FILE_SUFFIXES:
        if out.is_dir():
            raise InputError(f"out= {str(out)!r} is a folder; give a file name ({out.suffix})")
        return
    if out.exists() and not out.is_dir():
        raise InputError(
            f"out= {str(out)!r} is an existing file; give a folder (created when missing)"
        )
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"out= cannot create the folder {str(out)!r}: {exc.strerror}") from exc


def with_model(fn: Callable[[argparse.Namespace, Model], None]) -> Command:
    """A command ``fn(args, model)`` run with its output folder made and its model opened."""

    def run(args: argparse.Namespace) -> None:
        output_folder(args)
        fn(args, open_model(args))

    return run


#: width of the bar itself, in characters (the line adds counts, rate and time left)
BAR_WIDTH = 24


def progress_line(done: int, total: int | None, unit: str, elapsed: float, extra: str = "") -> str:
    """One progress-bar line: ``[#########.......]  45% 45/100 images  12.3/s  ETA 0:04``
    (without a total: the count and the rate only)."""
    rate = done / elapsed if elapsed > 0 else 0.0
    speed = f"{rate:.1f}/s" if rate < 100 else f"{rate:.0f}/s"
    parts = []
    if total:
        filled = min(BAR_WIDTH, BAR_WIDTH * done // total)
        parts.append(f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {100 * done // total:3d}%")
        parts.append(f"{done}/{total} {unit}")
        if rate > 0 and done < total:
            left = round((total - done) / rate)
            parts.append(f"{speed}  ETA {left // 60}:{left % 60:02d}")
        else:
            parts.append(f"{speed}  {int(elapsed) // 60}:{int(elapsed) % 60:02d}")
    else:
        parts.append(f"{done} {unit}  {speed}")
    if extra:
        parts.append(extra)
    return "  ".join(parts)


def _show_bar(line: str, finished: bool) -> None:
    """Redraw the terminal's progress line in place (a newline once finished)."""
    width = shutil.get_terminal_size((80, 24)).columns - 1
    print(f"\r{line[:width]:<{width}}", end="\n" if finished else "", file=sys.stderr, flush=True)


def count_progress(unit: str) -> Callable[[int, int | None], None]:
    """``progress(done, total)`` counting ``unit`` on stderr: a progress bar redrawn in place
    on a terminal (count, rate, time left), a plain ``done/total unit`` line per call in a
    log. The clock starts at the first call, and again when the count goes back (a new
    run)."""
    state: dict[str, float] = {"started": 0.0, "done": -1.0}

    def report(done: int, total: int | None) -> None:
        if done <= state["done"] or state["done"] < 0:
            state["started"] = time.monotonic()
        state["done"] = done
        if sys.stderr.isatty():
            elapsed = time.monotonic() - state["started"]
            _show_bar(progress_line(done, total, unit, elapsed), done == total)
        else:
            print(f"{done}/{total if total is not None else '?'} {unit}", file=sys.stderr,
                  flush=True)  # fmt: skip

    return report


#: the data-set tools' progress (called once per chunk)
images_progress = count_progress("images")


#: plain progress lines (stderr not a terminal): about this many per run
LOG_LINES = 10


def steps_progress(name: str) -> Callable[[int, int, float], None]:
    """``progress(step, total, loss)`` of an optimization on stderr: a progress bar with the
    loss, redrawn in place on a terminal; in a log file or pipe, plain lines about every
    tenth of the run (and the first and last step), never carriage returns."""
    terminal = sys.stderr.isatty()
    started = time.monotonic()

    def report(step: int, total: int, loss: float) -> None:
        if terminal:
            elapsed = time.monotonic() - started
            line = progress_line(step, total, "steps", elapsed, f"loss {loss:.4g}")
            _show_bar(f"{name}: {line}", step == total)
            return
        every = max(1, total // LOG_LINES)
        if step == 1 or step == total or step % every == 0:
            print(f"{name}: step {step}/{total}  loss {loss:.4g}", file=sys.stderr, flush=True)

    return report


def partial_suffix(args: argparse.Namespace, interrupted: bool) -> str:
    """The file-name suffix of a synthesis result: ``""`` when the run finished,
    ``"-partial"`` when Ctrl-C stopped it and ``--keep-partial`` was given; otherwise
    KeyboardInterrupt (the command exits 130 and writes nothing that looks complete)."""
    if not interrupted:
        return ""
    if getattr(args, "keep_partial", False):
        return "-partial"
    print(
        "interrupted before the end: nothing written (--keep-partial writes the best result "
        "so far, named *-partial)",
        file=sys.stderr,
    )
    raise KeyboardInterrupt


def keep_partial_argument(parser: argparse.ArgumentParser) -> None:
    """``--keep-partial``: on Ctrl-C, write the result so far under a ``-partial`` name
    (the command still exits 130)."""
    parser.add_argument(
        "--keep-partial",
        action="store_true",
        help="on Ctrl-C, write the result so far as *-partial files (exit status still 130)",
    )


def safe_name(name: str) -> str:
    """``name`` usable as one file name: path separators and other characters that are
    not letters, digits, ``.``, ``-``, ``+`` or ``_`` become ``_`` (``fire2/squeeze1x1_1`` ->
    ``fire2_squeeze1x1_1``), so a layer name never makes a subfolder."""
    cleaned = re.sub(r"[^\w.+\-]+", "_", name).strip("._")
    return cleaned or "_"


def save_enlarged(image: np.ndarray, path: Path) -> Path:
    """Save a picture as PNG (atomically), enlarged by an integer factor to at least 256
    pixels a side."""
    return save_png(upscale(image, min_side=256), path)


def flags(parser: argparse.ArgumentParser, command: str) -> dict[str, str]:
    """Library parameter name -> the flag of ``command`` that sets it (``layer`` ->
    ``--layer``, ``classes`` -> ``--class``)."""
    for action in parser._actions:  # argparse keeps its subcommands nowhere public
        if isinstance(action, argparse._SubParsersAction):
            sub = action.choices[command]
            return {a.dest: a.option_strings[-1] for a in sub._actions if a.option_strings}
    return {}


def in_flags(message: str, names: dict[str, str]) -> str:
    """A library message in the command's terms: ``layer= applies to ...`` -> ``--layer
    applies to ...``, ``precision='bf16'`` -> ``--precision 'bf16'``."""
    if not names:
        return message
    pattern = re.compile(r"(?<![\w-])(" + "|".join(map(re.escape, names)) + r")=\s?")

    def flag(match: re.Match[str]) -> str:
        return names[match.group(1)] + " "

    return pattern.sub(flag, message).rstrip()


def version_line() -> str:
    """``cnnviz X (onnxruntime Y, numpy Z, torch W|no torch)``: what ``--version`` prints."""
    import importlib.metadata

    import onnxruntime

    from .. import __version__

    try:
        torch = f"torch {importlib.metadata.version('torch')}"
    except importlib.metadata.PackageNotFoundError:
        torch = "no torch"
    return (
        f"cnnviz {__version__} (onnxruntime {onnxruntime.__version__}, numpy {np.__version__}, "
        f"{torch})"
    )


def one_line(message: str) -> str:
    """``message`` on one line: a library's multi-line text (onnxruntime's, a file's
    metadata) joined with spaces, control characters escaped."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    joined = " ".join(lines)
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in joined)


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Run the parsed command; returns the exit status (0, 1 for a user's error, 130 for
    Ctrl-C)."""
    try:
        args.run(args)
    except CnnvizError as exc:
        message = in_flags(one_line(str(exc)), flags(parser, args.command))
        print(f"cnnviz: error: {message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("cnnviz: interrupted", file=sys.stderr)
        return 130
    except (FileExistsError, IsADirectoryError, NotADirectoryError, PermissionError) as exc:
        # an output path the command could not use: one line, as any user's error
        target = exc.filename2 or exc.filename  # a rename: the final name, not the temporary
        print(f"cnnviz: error: cannot write {str(target)!r}: {exc.strerror}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # the reader (e.g. `head`) went away: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return 0


__all__ = [
    "FILE_SUFFIXES",
    "TARGET_HELP",
    "TARGET_SYNTAX",
    "Command",
    "TargetSpec",
    "command_targets",
    "flag_parser",
    "flags",
    "images_progress",
    "in_flags",
    "keep_partial_argument",
    "layout_argument",
    "model_arguments",
    "open_model",
    "output_folder",
    "parse_target",
    "partial_suffix",
    "preset_hint",
    "progress_line",
    "run",
    "safe_name",
    "save_enlarged",
    "seed",
    "steps_progress",
    "target_arguments",
    "version_line",
    "with_model",
]
