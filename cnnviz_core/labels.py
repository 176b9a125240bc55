"""Class labels: loading label files and resolving a target given as index or name."""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from pathlib import Path

from .errors import InputError, TargetError

_SYNSET = re.compile(r"^n\d{8}\s+")


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
