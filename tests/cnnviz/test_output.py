"""Atomic output: a failed or interrupted write leaves neither a temporary nor a half file."""

from __future__ import annotations

from pathlib import Path

import pytest

from cnnviz.output import atomic_path, atomic_write_bytes, atomic_write_text


def test_write_bytes_creates_parents_and_file(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "data.bin"
    assert atomic_write_bytes(target, b"\x00\x01payload") == target
    assert target.read_bytes() == b"\x00\x01payload"
    assert sorted(p.name for p in target.parent.iterdir()) == ["data.bin"]


def test_write_text_replaces_existing_file(tmp_path: Path) -> None:
    target = tmp_path / "note.txt"
    target.write_text("old")
    atomic_write_text(target, "new ✓")
    assert target.read_text(encoding="utf-8") == "new ✓"
    assert [p.name for p in tmp_path.iterdir()] == ["note.txt"]


def test_temp_path_is_beside_target_with_its_suffix(tmp_path: Path) -> None:
    target = tmp_path / "picture.png"
    with atomic_path(target) as temp:
        assert temp.parent == tmp_path
        assert temp.suffix == ".png"
        assert temp != target
        assert not temp.exists()
        temp.write_bytes(b"png")
        assert not target.exists()
    assert target.read_bytes() == b"png"
    assert not temp.exists()


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
@pytest.mark.parametrize("existing", [None, b"previous complete file"])
def test_error_leaves_no_temp_and_keeps_old_file(
    tmp_path: Path, error: type[BaseException], existing: bytes | None
) -> None:
    target = tmp_path / "out.html"
    if existing is not None:
        target.write_bytes(existing)
    with pytest.raises(error), atomic_path(target) as temp:
        temp.write_bytes(b"half a fi")
        raise error("interrupted")
    assert not temp.exists()
    if existing is None:
        assert list(tmp_path.iterdir()) == []
    else:
        assert [p.name for p in tmp_path.iterdir()] == ["out.html"]
        assert target.read_bytes() == existing
