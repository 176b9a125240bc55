"""Class labels: loading label files and resolving a target given as index or name."""

from __future__ import annotations

import ast
import difflib
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from .errors import InputError, TargetError

_SYNSET = re.compile(r"^n\d{8}\s+")

#: ONNX metadata keys that carry class names, most specific first: Paddle's ``character``
#: (one name per line), Ultralytics' ``names`` (a dict literal), and the common list keys
METADATA_LABEL_KEYS = ("classes", "labels", "class_names", "names", "character", "characters")


def load_labels(source: str | Path | Sequence[str]) -> list[str]:
    """Class names from a list or a text file with one name per line.

    ImageNet-style lines such as ``n01440764 tench, Tinca tinca`` drop their WordNet id.
    """
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise InputError(f"labels file not found: {str(path)!r}")
        lines = path.read_text(encoding="utf-8").splitlines()
        names = [_SYNSET.sub("", line.strip()) for line in lines]
        while names and not names[-1]:
            names.pop()
        return names
    return [str(name) for name in source]


def labels_from_metadata(
    metadata: Mapping[str, str], num_classes: int = 0
) -> tuple[list[str], str] | None:
    """Class names carried by an ONNX model's metadata, and the key they came from.

    Each key of :data:`METADATA_LABEL_KEYS` is tried in turn; a value is read as a JSON or
    Python list, a dict from index to name (keys sorted as numbers), or one name per line.
    A key whose names do not number ``num_classes`` (when known: not 0) is passed over, so
    a recognition model's character dictionary never labels a classifier's outputs wrongly.
    """
    for key in METADATA_LABEL_KEYS:
        value = metadata.get(key)
        names = parse_names(value) if value else None
        if names and (not num_classes or len(names) == num_classes):
            return names, key
    return None


def parse_names(text: str) -> list[str] | None:
    """Class names from a metadata value: a JSON / Python list, an index -> name dict, or
    one name per line; None when the value is none of these."""
    parsed: object = None
    try:
        parsed = json.loads(text)
    except ValueError:
        try:
            parsed = ast.literal_eval(text)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            parsed = None
    if isinstance(parsed, (list, tuple)):
        return [str(name) for name in parsed]
    if isinstance(parsed, dict):
        try:
            ordered = sorted(parsed.items(), key=lambda item: int(item[0]))
        except (TypeError, ValueError):
            return None
        return [str(name) for _, name in ordered]
    if "\n" in text:
        names = [line.strip() for line in text.strip().splitlines()]
        return names if all(names) else None
    return None


def short_label(name: str) -> str:
    """The first of several comma-separated synonyms ('tench, Tinca tinca' -> 'tench')."""
    return name.split(",")[0].strip()


def resolve_class(target: int | str, labels: Sequence[str] | None, num_classes: int) -> int:
    """Index of a class given as an index, a digit string, or a label name (full or short,
    case-insensitive). Raises :class:`TargetError` naming the valid range or close names."""
    if isinstance(target, str) and target.strip().lstrip("-").isdigit():
        target = int(target)
    if isinstance(target, (int,)) and not isinstance(target, bool):
        if not 0 <= target < num_classes:
            raise TargetError(
                f"target class {target} is out of range: the model has {num_classes} classes "
                f"(0..{num_classes - 1})"
            )
        return int(target)
    if not isinstance(target, str):
        raise TargetError(f"a target class must be an int or a label name, got {target!r}")
    if not labels:
        raise TargetError(f"target {target!r} is a name but the model has no class labels")
    wanted = target.strip().lower()
    for index, name in enumerate(labels):
        if name.lower() == wanted or short_label(name).lower() == wanted:
            return index
    close = difflib.get_close_matches(target, [short_label(n) for n in labels], n=5, cutoff=0.6)
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise TargetError(f"unknown class label {target!r}{hint}")
