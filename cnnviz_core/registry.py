"""A table of implementations keyed by (ONNX op type, first opset they apply to).

ONNX changes an operator's semantics at given opsets (ReduceMean's axes moved from an
attribute to an input at 18): an implementation is registered once per (op type, ``since``),
and a model's opset resolves to the newest one whose ``since`` is at most that opset. The
backward rules (:mod:`cnnviz_core.backward.registry`) and the torch bridge's ops
(:mod:`cnnviz_core.torch_bridge.ops`) are two such tables.
"""

from __future__ import annotations

import bisect
from typing import Generic, TypeVar

T = TypeVar("T")


class VersionedRegistry(Generic[T]):
    """Implementations of ONNX operators, one per (op type, since opset).

    Args:
        kind: what an entry is, for error messages (``"backward rule"``, ``"torch op"``).
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._versions: dict[str, list[tuple[int, T]]] = {}

    def add(self, op_type: str, since: int, entry: T) -> None:
        """Register ``entry`` for ``op_type`` from opset ``since`` on; a second entry for the
        same key raises :class:`ValueError`."""
        if since < 1:
            raise ValueError(f"since must be an opset (>= 1); got {since} for {op_type}")
        versions = self._versions.setdefault(op_type, [])
        if any(v == since for v, _ in versions):
            raise ValueError(
                f"a {self.kind} for {op_type} since opset {since} is already registered"
            )
        bisect.insort(versions, (since, entry), key=lambda item: item[0])

    def get(self, op_type: str, opset: int) -> T | None:
        """The entry that applies to ``op_type`` at ``opset`` (the newest whose ``since`` is at
        most ``opset``), or None when there is none."""
        applicable = [entry for since, entry in self._versions.get(op_type, []) if since <= opset]
        return applicable[-1] if applicable else None

    def op_types(self) -> list[str]:
        """Op types with at least one entry, sorted."""
        return sorted(self._versions)

    def keys(self) -> list[tuple[str, int]]:
        """Every registered (op type, since opset), sorted."""
        return sorted(
            (op, since) for op, versions in self._versions.items() for since, _ in versions
        )

    def __contains__(self, op_type: object) -> bool:
        return op_type in self._versions

    def __len__(self) -> int:
        return sum(len(versions) for versions in self._versions.values())
