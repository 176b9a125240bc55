"""Seeded fuzzing of what cnnviz reads: mutated ONNX models, mutated images of every format
Pillow reads and writes here, and out-of-range values of every CLI option.

Shared by the fuzz tests (``tests/*/test_fuzz_*.py``, about 100 cases a run) and the long
run (``benchmarks/fuzz.py``, 1,000+ cases a family). Each case runs in a worker process
(:class:`Runner`) under a time limit, its stdout and stderr captured at the file-descriptor
level (so onnxruntime's C++ logging is seen too), and is judged (:func:`judge`):

- ``ok``: a result (the CLI: exit status 0);
- ``clean``: one :class:`~cnnviz_core.CnnvizError` (the CLI: exit status 1 and one
  ``cnnviz: error:`` line, or argparse's usage error with status 2);
- ``other``: anything else: another exception, a traceback, a crash, a hang, a Pillow
  ``DecompressionBombWarning``, or a line from onnxruntime on stderr.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import random
import select
import struct
import subprocess
import sys
import tempfile
import time
import warnings
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

FAMILIES = ("model", "image", "cli")
#: what onnxruntime's own logger writes (``[E:onnxruntime:...]``, ``[W:onnxruntime:...]``)
ORT_MARK = ":onnxruntime:"
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "TIFF", "BMP", "GIF")


@dataclass
class Case:
    """One fuzz input: ``family`` (model, image, cli), what was done to it, and its payload
    (model or image bytes; for the CLI an argv whose ``{model}``, ``{image}`` and ``{out}``
    the worker fills in)."""

    family: str
    mutation: str
    data: bytes = b""
    argv: list[str] = field(default_factory=list)
    as_bytes: bool = False  # model family: load from bytes instead of a file

    def to_json(self) -> str:
        return json.dumps(
            {
                "family": self.family,
                "mutation": self.mutation,
                "data": base64.b64encode(self.data).decode(),
                "argv": self.argv,
                "as_bytes": self.as_bytes,
            }
        )


@dataclass
class Outcome:
    """How one case ended: ``ok``, ``clean`` or ``other``, with what was seen."""

    verdict: str
    detail: str
    seconds: float = 0.0


# ------------------------------------------------------------------------ ONNX mutants


def shipped_model_bytes() -> bytes:
    from cnnviz.data import default_model_path

    return default_model_path().read_bytes()


def _byte_mutants(rng: random.Random, base: bytes) -> tuple[str, bytes]:
    kind = rng.choice(("flip", "truncate", "splice", "zero-run", "duplicate"))
    data = bytearray(base)
    if kind == "flip":
        for _ in range(rng.randint(1, 16)):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        return f"flip bytes (seed {rng.random():.6f})", bytes(data)
    if kind == "truncate":
        cut = rng.choice((rng.randrange(1, 64), rng.randrange(len(data))))
        return f"truncate to {cut} bytes", bytes(data[:cut])
    if kind == "splice":
        start, length = rng.randrange(len(data)), rng.randint(1, 4096)
        chunk = bytes(data[start : start + length])
        at = rng.randrange(len(data))
        return f"splice {len(chunk)} bytes at {at}", bytes(data[:at] + chunk + data[at:])
    if kind == "zero-run":
        start = rng.randrange(len(data))
        length = rng.randint(1, 256)
        data[start : start + length] = bytes(len(data[start : start + length]))
        return f"zero {length} bytes at {start}", bytes(data)
    start, length = rng.randrange(len(data)), rng.randint(1, 64)
    chunk = bytes(data[start : start + length])
    end = start + length
    return f"duplicate {len(chunk)} bytes at {start}", bytes(data[:end] + chunk + data[end:])


_MARKER = "CNNVIZFUZZMARKER"


def _invalid_utf8(rng: random.Random, length: int) -> bytes:
    """``length`` bytes that are not valid UTF-8."""
    raw = bytearray(rng.randrange(256) for _ in range(length))
    raw[rng.randrange(length)] = rng.choice((0x80, 0xC0, 0xFF, 0xFE, 0xED))
    return bytes(raw)


def _structured_mutant(rng: random.Random, base: bytes) -> tuple[str, bytes]:
    """A model that parses but says something hostile (metadata, opsets, attributes, shapes,
    gigantic tensors, external data)."""
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load_from_string(base)
    graph = model.graph
    kind = rng.choice(
        (
            "metadata-utf8",
            "card-json",
            "card-values",
            "metadata-labels",
            "opset",
            "attribute-type",
            "attribute-value",
            "input-shape",
            "initializer-dims",
            "giant-initializer",
            "giant-constant-of-shape",
            "external-data",
            "ir-version",
            "output-shape",
            "drop-node",
        )
    )
    if kind == "metadata-utf8":
        key = rng.choice(("cnnviz.card", "labels", "classes", "character", "author"))
        for prop in list(model.metadata_props):
            if prop.key == key:
                model.metadata_props.remove(prop)
        model.metadata_props.add(key=key, value=_MARKER)
        data = model.SerializeToString()
        bad = _invalid_utf8(rng, len(_MARKER))
        return f"metadata {key!r} invalid UTF-8", data.replace(_MARKER.encode(), bad)
    if kind in ("card-json", "card-values"):
        card_prop = next((p for p in model.metadata_props if p.key == "cnnviz.card"), None)
        card = json.loads(card_prop.value) if card_prop is not None else {}
        if kind == "card-json":
            text = json.dumps(card)
            text = text[: rng.randrange(len(text) + 1)] + rng.choice(("", "}", "]]", "\\u", "\x00"))
            what = "card truncated"
        else:
            path, value = rng.choice(_CARD_VALUES)
            target = card
            for part in path[:-1]:
                target = target.setdefault(part, {}) if isinstance(target, dict) else {}
            if isinstance(target, dict):
                target[path[-1]] = value
            text = json.dumps(card)
            what = f"card {'.'.join(path)} = {value!r}"[:120]
        if card_prop is None:
            model.metadata_props.add(key="cnnviz.card", value=text)
        else:
            card_prop.value = text
        return what, model.SerializeToString()
    if kind == "metadata-labels":
        key = rng.choice(("labels", "classes", "character", "names"))
        value = rng.choice(
            ("", "[", "{}", "a\nb", "1,2,3", json.dumps(list(range(10**4))), "\x00" * 8)
        )
        model.metadata_props.add(key=key, value=value)
        return f"metadata {key!r} = {value[:20]!r}", model.SerializeToString()
    if kind == "opset":
        version = rng.choice((0, -1, 1, 6, 99, 10**6, 2**62))
        if rng.random() < 0.3 or not model.opset_import:
            del model.opset_import[:]
            model.opset_import.add(domain=rng.choice(("", "ai.onnx", "com.evil")), version=version)
            return f"only opset import version {version}", model.SerializeToString()
        model.opset_import[0].version = version
        return f"opset version {version}", model.SerializeToString()
    if kind in ("attribute-type", "attribute-value"):
        nodes = [n for n in graph.node if n.attribute]
        node = rng.choice(nodes)
        attribute = rng.choice(node.attribute)
        if kind == "attribute-type":
            new_type = rng.choice(
                (
                    onnx.AttributeProto.FLOAT,
                    onnx.AttributeProto.INT,
                    onnx.AttributeProto.STRING,
                    onnx.AttributeProto.INTS,
                    onnx.AttributeProto.TENSOR,
                    onnx.AttributeProto.GRAPH,
                )
            )
            attribute.type = new_type
            return (
                f"{node.op_type} attribute {attribute.name!r} type {new_type}",
                model.SerializeToString(),
            )
        value = rng.choice((0, -1, -(2**31), 2**31, 2**62, 10**9, 17, 65))
        if attribute.type == onnx.AttributeProto.INTS and attribute.ints:
            attribute.ints[rng.randrange(len(attribute.ints))] = value
        elif attribute.type == onnx.AttributeProto.INT:
            attribute.i = value
        elif attribute.type == onnx.AttributeProto.FLOAT:
            attribute.f = rng.choice((float("nan"), float("inf"), -1e38, 0.0))
        what = f"{node.op_type} attribute {attribute.name!r} value {value}"
        return what, model.SerializeToString()
    if kind == "input-shape":
        inputs = [i for i in graph.input if i.name not in {t.name for t in graph.initializer}]
        dims = inputs[0].type.tensor_type.shape.dim
        dim = dims[rng.randrange(len(dims))]
        value = rng.choice((0, -1, -7, 2**31, 10**6, 2**40, 2**62, "sym"))
        if value == "sym":
            dim.dim_param = "H"
        else:
            dim.dim_value = int(value)
        if rng.random() < 0.2:
            inputs[0].type.tensor_type.elem_type = rng.choice(
                (TensorProto.INT64, TensorProto.STRING, TensorProto.FLOAT16, 0, 99)
            )
        return f"input dim = {value}", model.SerializeToString()
    if kind == "initializer-dims":
        init = rng.choice(list(graph.initializer))
        if init.dims:
            init.dims[rng.randrange(len(init.dims))] = rng.choice((0, -1, 2**20, 2**40, 3))
        else:
            init.dims.append(rng.choice((0, 2**40)))
        return f"initializer {init.name!r} dims {list(init.dims)}", model.SerializeToString()
    if kind == "giant-initializer":
        dims = rng.choice(([2**20, 2**20], [2**31], [2**16, 2**16, 64], [2**62]))
        tensor = helper.make_tensor("giant", TensorProto.FLOAT, [1], [0.0])
        del tensor.dims[:]
        tensor.dims.extend(dims)
        graph.initializer.append(tensor)
        first = graph.node[0]
        node = helper.make_node("Add", [first.output[0], "giant"], ["giant_sum"], "giant_add")
        if rng.random() < 0.5:
            graph.node.insert(1, node)
        return f"giant initializer {dims}", model.SerializeToString()
    if kind == "giant-constant-of-shape":
        dims = rng.choice(([2**20, 2**20], [2**31], [1, 3, 2**16, 2**16], [2**40]))
        shape = helper.make_tensor("giant_shape", TensorProto.INT64, [len(dims)], dims)
        graph.initializer.append(shape)
        node = helper.make_node("ConstantOfShape", ["giant_shape"], ["giant"], "giant_fill")
        last = graph.node[-1].output[0]
        add = helper.make_node("Add", [last, "giant"], ["giant_out"], "giant_add")
        graph.node.extend([node, add])
        graph.output[0].name = "giant_out"
        return f"ConstantOfShape {dims}", model.SerializeToString()
    if kind == "external-data":
        init = rng.choice(list(graph.initializer))
        location = rng.choice(
            ("../../etc/passwd", "/etc/passwd", "weights.bin", "", "a/../../b", "\x00", "/dev/zero")
        )
        init.ClearField("raw_data")
        del init.float_data[:]
        init.data_location = TensorProto.EXTERNAL
        init.external_data.add(key="location", value=location)
        if rng.random() < 0.5:
            init.external_data.add(key="length", value=str(rng.choice((0, -1, 2**40))))
            init.external_data.add(key="offset", value=str(rng.choice((0, -5, 2**40))))
        return f"external data {init.name!r} at {location!r}", model.SerializeToString()
    if kind == "ir-version":
        model.ir_version = rng.choice((0, -1, 1, 3, 99, 2**62))
        return f"ir_version {model.ir_version}", model.SerializeToString()
    if kind == "output-shape":
        out = graph.output[0]
        dims = out.type.tensor_type.shape.dim
        if dims:
            dims[rng.randrange(len(dims))].dim_value = rng.choice((0, 7, 2**31, 2**62))
        out.type.tensor_type.elem_type = rng.choice((TensorProto.FLOAT, TensorProto.STRING, 0))
        return "output type/shape changed", model.SerializeToString()
    index = rng.randrange(len(graph.node))
    removed = graph.node[index]
    del graph.node[index]
    return f"drop node {removed.name!r}", model.SerializeToString()


#: card entries a hostile card may carry: (path, value)
_CARD_VALUES: list[tuple[tuple[str, ...], object]] = [
    (("classes",), 7),
    (("classes",), ["a"] * 3),
    (("classes",), [None, 1, {}]),
    (("classes",), "circle"),
    (("preprocess",), "imagenet"),
    (("preprocess",), [1, 2]),
    (("preprocess", "size"), [-1, 64]),
    (("preprocess", "size"), [0, 0]),
    (("preprocess", "size"), [2**31, 2**31]),
    (("preprocess", "size"), "big"),
    (("preprocess", "size"), [64]),
    (("preprocess", "std"), [0, 0, 0]),
    (("preprocess", "std"), ["x"]),
    (("preprocess", "mean"), [1, 2]),
    (("preprocess", "scale"), "nan"),
    (("preprocess", "scale"), None),
    (("preprocess", "resize"), "explode"),
    (("preprocess", "channel_order"), "CMYK"),
    (("output",), 3),
    (("name",), "\u202e" * 10),
]


def model_cases(seed: int, count: int, base: bytes | None = None) -> list[Case]:
    """``count`` seeded ONNX mutants of the shipped model: raw byte mutations (flips,
    truncations, splices) and structured ones (metadata, card, opsets, attributes, shapes,
    gigantic tensors, external data); one in eight is loaded from bytes."""
    base = base if base is not None else shipped_model_bytes()
    rng = random.Random(seed)
    cases = []
    for _ in range(count):
        if rng.random() < 0.4:
            what, data = _byte_mutants(rng, base)
        else:
            what, data = _structured_mutant(rng, base)
        cases.append(Case("model", what, data, as_bytes=rng.random() < 0.125))
    return cases


# ----------------------------------------------------------------------------- images


def _image_bytes(rng: random.Random, fmt: str) -> tuple[str, bytes]:
    """A valid image of ``fmt`` in a random mode and size."""
    import numpy as np
    from PIL import Image

    modes = {
        "PNG": ("RGB", "RGBA", "L", "P", "I;16", "LA", "1"),
        "JPEG": ("RGB", "L", "CMYK"),
        "WEBP": ("RGB", "RGBA"),
        "TIFF": ("RGB", "L", "I;16", "F", "CMYK", "1"),
        "BMP": ("RGB", "L", "P", "1"),
        "GIF": ("P", "L"),
    }[fmt]
    mode = rng.choice(modes)
    size = (rng.randint(1, 40), rng.randint(1, 40))
    nprng = np.random.default_rng(rng.randrange(2**32))
    picture = Image.fromarray(nprng.integers(0, 256, (size[1], size[0], 3), np.uint8))
    if mode in ("I;16", "F"):
        picture = Image.fromarray(nprng.integers(0, 65536, (size[1], size[0])).astype(np.uint16))
        picture = picture.convert("F") if mode == "F" else picture
    elif mode != "RGB":
        picture = picture.convert(mode)
    buffer = io.BytesIO()
    options = {"exif": _orientation_exif(rng.randint(1, 8))} if fmt == "JPEG" else {}
    picture.save(buffer, fmt, **options)
    return f"{fmt} {mode} {size[0]}x{size[1]}", buffer.getvalue()


def _orientation_exif(orientation: int) -> bytes:
    from PIL import Image

    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()


def png_declaring(width: int, height: int) -> bytes:
    """A PNG whose header declares ``width`` x ``height`` over a tiny body (a bomb)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = zlib.compress(b"\x00" * 64)

    def chunk(kind: bytes, payload: bytes) -> bytes:
        crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)

    chunks = chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + chunks


def _header_size(fmt: str) -> int:
    return {"PNG": 33, "JPEG": 20, "WEBP": 30, "TIFF": 8, "BMP": 54, "GIF": 13}[fmt]


def _image_mutant(rng: random.Random, fmt: str) -> tuple[str, bytes]:
    what, data = _image_bytes(rng, fmt)
    kind = rng.choice(("intact", "body-flip", "truncate-body", "splice", "giant-dims", "zero-tail"))
    keep = min(_header_size(fmt), len(data) - 1)
    raw = bytearray(data)
    if kind == "intact":
        return what, data
    if kind == "body-flip":
        for _ in range(rng.randint(1, 12)):
            at = rng.randrange(keep, len(raw))
            raw[at] ^= 1 << rng.randrange(8)
        return f"{what}, body bits flipped", bytes(raw)
    if kind == "truncate-body":
        cut = rng.randrange(keep, len(raw))
        return f"{what}, truncated to {cut} of {len(raw)} bytes", bytes(raw[:cut])
    if kind == "splice":
        start = rng.randrange(keep, len(raw))
        chunk = bytes(raw[start : start + rng.randint(1, 200)])
        at = rng.randrange(keep, len(raw))
        return f"{what}, {len(chunk)} bytes spliced", bytes(raw[:at] + chunk + raw[at:])
    if kind == "zero-tail":
        start = rng.randrange(keep, len(raw))
        return f"{what}, zeroed from {start}", bytes(raw[:start]) + bytes(len(raw) - start)
    side = rng.choice((10_000, 2**14, 2**15 - 1, 65535, 2**20, 2**31 - 1))
    if fmt == "PNG":
        return f"PNG declaring {side}x{side}", png_declaring(side, side)
    if fmt == "BMP":
        raw[18:26] = struct.pack("<ii", min(side, 2**31 - 1), min(side, 2**31 - 1))
    elif fmt == "GIF":
        raw[6:10] = struct.pack("<HH", min(side, 65535), min(side, 65535))
    elif fmt == "JPEG":
        sof = raw.find(b"\xff\xc0")
        if sof > 0:
            raw[sof + 5 : sof + 9] = struct.pack(">HH", min(side, 65535), min(side, 65535))
    elif fmt == "WEBP":
        from PIL import Image

        big = Image.new("RGB", (1, 1))
        buffer = io.BytesIO()
        big.save(buffer, "WEBP")
        raw = bytearray(buffer.getvalue())
        vp8 = raw.find(b"\x9d\x01\x2a")
        if vp8 > 0:
            raw[vp8 + 3 : vp8 + 7] = struct.pack("<HH", 16383, 16383)
    elif fmt == "TIFF":
        return f"TIFF declaring {side}x{side}", tiff_declaring(side, side)
    return f"{what} header declaring {side}x{side}", bytes(raw)


def tiff_declaring(width: int, height: int) -> bytes:
    """A little-endian TIFF whose tags declare ``width`` x ``height`` RGB over 16 bytes."""
    entries = [
        (256, 4, 1, width),  # ImageWidth, LONG
        (257, 4, 1, height),  # ImageLength
        (258, 3, 1, 8),  # BitsPerSample
        (259, 3, 1, 1),  # Compression: none
        (262, 3, 1, 1),  # Photometric: black is zero
        (273, 4, 1, 8),  # StripOffsets
        (277, 3, 1, 1),  # SamplesPerPixel
        (278, 4, 1, height),  # RowsPerStrip
        (279, 4, 1, 16),  # StripByteCounts
    ]
    ifd_offset = 8 + 16
    out = b"II*\x00" + struct.pack("<I", ifd_offset) + bytes(16)
    out += struct.pack("<H", len(entries))
    for tag, kind, count, value in entries:
        packed = struct.pack("<HI", value, 0)[:4] if kind == 3 else struct.pack("<I", value)
        out += struct.pack("<HHI", tag, kind, count) + packed
    return out + struct.pack("<I", 0)


def image_cases(seed: int, count: int) -> list[Case]:
    """``count`` seeded images over every format (PNG, JPEG, WebP, TIFF, BMP, GIF): intact
    ones in several modes (JPEGs with EXIF orientations), flipped, truncated, spliced or
    zeroed bodies behind valid headers, and headers declaring gigantic sizes."""
    rng = random.Random(seed)
    cases = []
    for index in range(count):
        fmt = IMAGE_FORMATS[index % len(IMAGE_FORMATS)]
        what, data = _image_mutant(rng, fmt)
        cases.append(Case("image", what, data))
    return cases


# ------------------------------------------------------------------------------- CLI

INTS = ("-1", "0", "-2147483649", "2147483648", "99999999999999999999")
FLOATS = ("nan", "inf", "-inf", "-1", "0", "1e308", "-1e308")
NAMES = ("nope", "", "../../etc", "relu_3/../x", "\u00e9\u202e", "-1", "999")
#: options that only count iterations: a huge value is a request honoured (it runs long,
#: Ctrl-C stops it), so they get no huge values
WORK_COUNTS = {"--steps", "--octaves", "--samples", "--n-samples", "--masks", "--directions"}

#: per command: the argv of a small valid run, and the options to give bad values
#: (option -> "int", "float", "name", "size" or "count")
COMMANDS: dict[str, tuple[list[str], dict[str, str]]] = {
    "layers": (["layers", "{model}"], {"--layer": "name"}),
    "predict": (["predict", "{model}", "{image}"], {"--top": "int", "--class": "name"}),
    "check": (
        ["check", "{model}", "--no-gradient-test", "--method", "saliency"],
        {"--directions": "int", "--size": "name", "--seed": "int", "--image": "name"},
    ),
    "report": (["report", "{model}", "{image}", "--out", "{out}"], {"--top": "int"}),
    "explain": (
        ["explain", "{model}", "{image}", "--out", "{out}", "--method", "{method}"],
        {
            "--target": "name",
            "--layer": "name",
            "--samples": "int",
            "--sigma": "float",
            "--steps": "int",
            "--window": "int",
            "--stride": "int",
            "--segments": "int",
            "--masks": "int",
            "--cells": "int",
            "--n-samples": "int",
            "--stdevs": "float",
            "--baseline": "name",
            "--epsilon": "float",
            "--gamma": "float",
            "--input-rule": "name",
            "--layout": "name",
        },
    ),
    "boxes": (
        ["boxes", "{model}", "{image}", "--layout", "yolox"],
        {"--layout": "name", "--min-score": "float", "--nms": "float", "--top": "int"},
    ),
    "export-explainer": (
        ["export-explainer", "{model}", "--method", "saliency", "--out", "{out}/x.onnx"],
        {
            "--method": "name",
            "--layer": "name",
            "--target": "name",
            "--steps": "int",
            "--samples": "int",
            "--sigma": "float",
        },
    ),
    "sanity": (
        ["sanity", "{model}", "{image}", "--method", "saliency", "--out", "{out}"],
        {"--target": "name", "--layer": "name", "--randomize": "name", "--seed": "int"},
    ),
    "filters": (["filters", "{model}", "--out", "{out}"], {"--layer": "name"}),
    "activations": (
        ["activations", "{model}", "{image}", "--out", "{out}"],
        {"--layer": "name", "--top": "int"},
    ),
    "embed": (
        ["embed", "{model}", "--shapes", "16", "--out", "{out}/e.npz"],
        {"--shapes": "int", "--batch": "int", "--layer": "name", "--seed": "int"},
    ),
    "neighbors": (
        ["neighbors", "{model}", "--shapes", "16", "--out", "{out}"],
        {"--shapes": "int", "--batch": "int", "--k": "int", "--queries": "int", "--layer": "name"},
    ),
    "project": (
        ["project", "{model}", "--shapes", "16", "--out", "{out}"],
        {"--shapes": "int", "--batch": "int", "--layer": "name"},
    ),
    "top-patches": (
        ["top-patches", "{model}", "--shapes", "16", "--out", "{out}"],
        {"--shapes": "int", "--k": "int", "--channel": "int", "--list": "int", "--layer": "name"},
    ),
    "visualize-class": (
        ["visualize-class", "{model}", "--steps", "2", "--out", "{out}"],
        {
            "--steps": "int",
            "--target": "name",
            "--channel": "int",
            "--y": "int",
            "--x": "int",
            "--octaves": "int",
            "--layer": "name",
        },
    ),
    "invert": (
        ["invert", "{model}", "{image}", "--steps", "2", "--out", "{out}"],
        {"--steps": "int", "--tv": "float", "--layer": "name"},
    ),
    "dream": (
        ["dream", "{model}", "{image}", "--steps", "2", "--octaves", "1", "--out", "{out}"],
        {"--steps": "int", "--octaves": "int", "--lr": "float", "--layer": "name"},
    ),
    "fool": (
        ["fool", "{model}", "{image}", "--steps", "2", "--out", "{out}"],
        {"--steps": "int", "--epsilon": "float", "--magnify": "float", "--target": "name"},
    ),
    "texture": (
        ["texture", "{image}", "--size", "12", "12", "--window", "5", "--out", "{out}"],
        {"--window": "int", "--epsilon": "float", "--crop": "int", "--seed": "int"},
    ),
    "style": (
        ["style", "{image}", "{image}", "--steps", "1", "--size", "32", "--out", "{out}"],
        {
            "--size": "int",
            "--style-size": "int",
            "--steps": "int",
            "--content-weight": "float",
            "--style-weight": "float",
            "--tv-weight": "float",
            "--content-layer": "name",
            "--style-layer": "name",
        },
    ),
    "stylize": (["stylize", "{model}", "{image}", "--out", "{out}"], {"--device": "name"}),
    "train-style": (
        [
            *("train-style", "{image}", "--content", "{image}", "--steps", "1", "--size", "16"),
            *("--batch", "1", "--width", "2", "--blocks", "1", "--out", "{out}/net.onnx"),
        ],
        {
            "--size": "int",
            "--steps": "int",
            "--batch": "int",
            "--lr": "float",
            "--width": "int",
            "--blocks": "int",
            "--style-weight": "float",
        },
    ),
}

#: explain methods cheap enough for the fuzz (the rest run minutes at odd option values)
EXPLAIN_METHODS = ("saliency", "gradcam", "smoothgrad", "ig", "occlusion", "lime", "rise")


def _bad_values(option: str, kind: str) -> tuple[str, ...]:
    if kind == "float":
        return FLOATS
    if kind == "name":
        return NAMES
    values: tuple[str, ...] = INTS
    if option in WORK_COUNTS:
        values = tuple(v for v in values if not v.lstrip("-").isdigit() or int(v) <= 0)
    return (*values, "nan", "abc")


def cli_cases(seed: int, count: int) -> list[Case]:
    """``count`` seeded command lines: one command, one option given a bad value (negative,
    zero, huge, NaN, infinite or an unknown name), the rest a small valid run."""
    rng = random.Random(seed)
    commands = sorted(COMMANDS)
    cases = []
    for index in range(count):
        command = commands[index % len(commands)]
        base, options = COMMANDS[command]
        option = rng.choice(sorted(options))
        value = rng.choice(_bad_values(option, options[option]))
        argv = [a.replace("{method}", rng.choice(EXPLAIN_METHODS)) for a in base]
        if option in argv:
            argv[argv.index(option) + 1] = value
        else:
            argv += [option, value]
        if option == "--size" and command == "texture":
            argv[argv.index("--size") + 2] = value
        cases.append(Case("cli", f"{command} {option} {value!r}", argv=argv))
    return cases


def cases(family: str, seed: int, count: int) -> list[Case]:
    """``count`` seeded cases of one family (``model``, ``image`` or ``cli``)."""
    make: dict[str, Callable[[int, int], list[Case]]] = {
        "model": model_cases,
        "image": image_cases,
        "cli": cli_cases,
    }
    return make[family](seed, count)


# --------------------------------------------------------------------------- judging


def judge(
    family: str, raised: BaseException | None, status: int | None, out: str, err: str
) -> tuple[str, str]:
    """(verdict, detail) of one finished case: see the module docstring."""
    if ORT_MARK in err or ORT_MARK in out:
        line = next(x for x in (err + out).splitlines() if ORT_MARK in x)
        return "other", f"onnxruntime wrote: {line[:300]}"
    if "Traceback" in err:
        return "other", f"traceback: {err.strip().splitlines()[-1][:300]}"
    if family != "cli":
        from cnnviz_core import CnnvizError

        if err.strip():
            return "other", f"stderr: {err.strip()[:300]}"
        if raised is None:
            return "ok", ""
        if isinstance(raised, CnnvizError) and str(raised).strip():
            return "clean", f"{type(raised).__name__}: {str(raised)[:300]}"
        return "other", f"raw {type(raised).__module__}.{type(raised).__name__}: {raised}"[:400]
    if raised is not None:
        return "other", f"raw {type(raised).__name__} escaped main: {raised}"[:400]
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("cnnviz: error:")]
    if status == 0:
        return "ok", ""
    if status == 1 and len(errors) == 1 and errors[0] == lines[-1]:
        return "clean", errors[0][:300]
    if status == 2 and lines and ": error:" in lines[-1] and lines[0].startswith("usage:"):
        return "clean", lines[-1][:300]
    return "other", f"exit status {status}: {err.strip()[-400:]}"


# ---------------------------------------------------------------------------- worker


@contextlib.contextmanager
def _captured_fds(folder: Path) -> Iterator[dict[str, str]]:
    """Send fds 1 and 2 (Python's and C++'s writes alike) to files; yields a dict that
    holds their text after the block."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    files = {fd: open(folder / f"fd{fd}", "w+b") for fd in (1, 2)}
    texts: dict[str, str] = {}
    for fd, handle in files.items():
        os.dup2(handle.fileno(), fd)
    try:
        yield texts
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, handle in files.items():
            os.dup2(saved[fd], fd)
            os.close(saved[fd])
            handle.seek(0)
            texts["out" if fd == 1 else "err"] = handle.read().decode("utf-8", "replace")
            handle.close()


def _fixtures(folder: Path) -> dict[str, str]:
    """A small valid image for the CLI cases."""
    import numpy as np
    from PIL import Image

    image = folder / "photo.png"
    if not image.exists():
        pixels = np.random.default_rng(0).integers(0, 256, (40, 48, 3), np.uint8)
        Image.fromarray(pixels).save(image)
    return {"image": str(image), "model": "shapes"}


def _run_case(case: dict, scratch: Path) -> tuple[BaseException | None, int | None]:
    """Run one case in this process; returns (exception raised or None, CLI exit status)."""
    import numpy as np

    data = base64.b64decode(case["data"])
    if case["family"] == "model":
        from cnnviz_core import Model

        source: Path | bytes = data
        if not case["as_bytes"]:
            path = scratch / "model" / "mutant.onnx"
            path.parent.mkdir(exist_ok=True)
            path.write_bytes(data)
            source = path
        from cnnviz_core.backward import gradients

        try:
            model = Model(source)
            size = model.preprocess.size or (8, 8)
            image = np.full((*size, 3), 128, np.uint8)
            model.predict(image, k=3)
            gradients(model, model.prepare([image]), None)  # the default (compiled) path
        except Exception as exc:
            return exc, None
        return None, None
    if case["family"] == "image":
        from cnnviz_core import Preprocess, load_image

        path = scratch / "image.bin"
        path.write_bytes(data)
        try:
            load_image(path)
            Preprocess(size=(16, 16))(path)
        except Exception as exc:
            return exc, None
        return None, None
    from cnnviz.cli import main

    out = scratch / "out"
    names = {**_fixtures(scratch), "out": str(out)}
    argv = [arg.format(**names) if "{" in arg else arg for arg in case["argv"]]
    try:
        return None, main(argv)
    except SystemExit as exc:
        return None, exc.code if isinstance(exc.code, int) else 1
    except Exception as exc:
        return exc, None


def serve() -> None:
    """Worker loop: one JSON case a line on stdin, one JSON outcome a line on the original
    stdout (fds 1 and 2 are captured around each case)."""
    import shutil

    import numpy as np  # noqa: F401  (imported once, outside the timed cases)

    import cnnviz.cli  # noqa: F401

    channel = os.fdopen(os.dup(1), "w")
    root = Path(tempfile.mkdtemp(prefix="cnnviz-fuzz-"))
    os.chdir(root)
    channel.write("ready\n")
    channel.flush()
    try:
        _serve_cases(channel, root)
    finally:
        os.chdir(tempfile.gettempdir())
        shutil.rmtree(root, ignore_errors=True)


def _serve_cases(channel: IO[str], root: Path) -> None:
    import shutil

    for line in sys.stdin:
        case = json.loads(line)
        scratch = root / "case"
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir()
        start = time.perf_counter()
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            with _captured_fds(root) as texts:
                raised, status = _run_case(case, scratch)
        verdict, detail = judge(case["family"], raised, status, texts["out"], texts["err"])
        leaks = [
            w
            for w in seen
            if w.category.__name__ == "DecompressionBombWarning"
            or (issubclass(w.category, RuntimeWarning) and "encountered" in str(w.message))
        ]
        if leaks and verdict != "other":
            verdict, detail = "other", f"{leaks[0].category.__name__}: {leaks[0].message}"
        seconds = time.perf_counter() - start
        answer = {"verdict": verdict, "detail": detail, "seconds": seconds}
        channel.write(json.dumps(answer) + "\n")
        channel.flush()


class Runner:
    """A worker process that runs cases one at a time under a time limit; a crash or a
    hang is an ``other`` outcome, and the next case gets a fresh worker."""

    def __init__(self, timeout: float = 30.0):
        self.timeout = timeout
        self._worker: subprocess.Popen | None = None
        self._stderr: IO[bytes] | None = None

    def _start(self) -> subprocess.Popen:
        env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
        self._stderr = tempfile.TemporaryFile()
        worker = subprocess.Popen(
            [sys.executable, "-W", "default", __file__, "--serve"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=env,
            text=True,
        )
        ready = self._read_line(worker, 120.0)
        if ready != "ready":
            raise RuntimeError(f"fuzz worker did not start: {ready!r} {self._stderr_tail()}")
        return worker

    @staticmethod
    def _read_line(worker: subprocess.Popen, timeout: float) -> str | None:
        assert worker.stdout is not None
        ready, _, _ = select.select([worker.stdout], [], [], timeout)
        if not ready:
            return None
        line = worker.stdout.readline()
        return line.strip() if line else ""

    def run(self, case: Case) -> Outcome:
        if self._worker is None or self._worker.poll() is not None:
            self._worker = self._start()
        worker = self._worker
        assert worker.stdin is not None
        start = time.perf_counter()
        worker.stdin.write(case.to_json() + "\n")
        worker.stdin.flush()
        line = self._read_line(worker, self.timeout)
        seconds = time.perf_counter() - start
        if line:
            answer = json.loads(line)
            return Outcome(answer["verdict"], answer["detail"], answer["seconds"])
        if line is None:
            self.close()
            return Outcome("other", f"hang: no answer in {self.timeout:.0f} s", seconds)
        worker.wait()
        tail = self._stderr_tail()
        self.close()
        return Outcome("other", f"crash: exit status {worker.returncode}: {tail}", seconds)

    def _stderr_tail(self) -> str:
        if self._stderr is None:
            return ""
        self._stderr.seek(0)
        return self._stderr.read().decode("utf-8", "replace")[-300:]

    def close(self) -> None:
        """Stop the worker (killed when it is still busy) and release its pipes."""
        if self._worker is not None:
            worker, self._worker = self._worker, None
            if worker.poll() is None:
                worker.kill()
            worker.wait()
            for stream in (worker.stdin, worker.stdout):
                if stream is not None:
                    stream.close()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


if __name__ == "__main__" and sys.argv[1:] == ["--serve"]:
    serve()
