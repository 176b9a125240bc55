"""Atomic output: every file cnnviz writes goes through here.

A file is written under a temporary name in its own directory and renamed onto the final
name only once it is complete (``os.replace`` is atomic on one file system), so a run that
is interrupted or fails never leaves a half-written file under the final name: either the
old file stays or the new one is whole. (Atomic against interruption, not durable across a
power loss: there is no fsync.)
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PathLike = str | os.PathLike[str]


@contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` to write; it replaces ``path`` on success.

    The temporary path does not exist yet and keeps the final suffix (so writers that pick a
    format from the suffix still work). Parent directories are created. When the body raises
    (``KeyboardInterrupt`` included) the temporary file is deleted and ``path`` is untouched.

    Args:
        path: the final file.

    Yields:
        The temporary path; the body must create it as a file.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    temp = final.with_name(f".{final.stem}.{secrets.token_hex(6)}.tmp{final.suffix}")
    try:
        yield temp
        os.replace(temp, final)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns the path."""
    with atomic_path(path) as temp:
        temp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically; returns the path."""
    with atomic_path(path) as temp:
        temp.write_text(text, encoding=encoding)
    return Path(path)
