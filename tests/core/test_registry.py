"""The versioned op table shared by the backward rules and the torch bridge."""

from __future__ import annotations

import pytest

from cnnviz_core.backward.registry import RULES, rule_for, supported_ops
from cnnviz_core.registry import VersionedRegistry
from cnnviz_core.torch_bridge.ops import OPS, op_for


def test_an_opset_resolves_to_the_newest_entry_not_after_it():
    table: VersionedRegistry[str] = VersionedRegistry("test entry")
    table.add("ReduceMean", 18, "axes as input")
    table.add("ReduceMean", 1, "axes as attribute")
    assert table.get("ReduceMean", 1) == "axes as attribute"
    assert table.get("ReduceMean", 17) == "axes as attribute"
    assert table.get("ReduceMean", 18) == "axes as input"
    assert table.get("ReduceMean", 21) == "axes as input"
    assert table.get("Relu", 13) is None
    assert table.keys() == [("ReduceMean", 1), ("ReduceMean", 18)]
    assert table.op_types() == ["ReduceMean"]
    assert "ReduceMean" in table and "Relu" not in table
    assert len(table) == 2


def test_an_entry_newer_than_the_model_does_not_apply():
    table: VersionedRegistry[str] = VersionedRegistry("test entry")
    table.add("Resize", 11, "v11")
    assert table.get("Resize", 10) is None


def test_a_duplicate_key_raises_naming_the_op_and_opset():
    table: VersionedRegistry[str] = VersionedRegistry("test entry")
    table.add("Relu", 6, "a")
    with pytest.raises(ValueError, match="test entry for Relu since opset 6"):
        table.add("Relu", 6, "b")
    with pytest.raises(ValueError, match="since must be an opset"):
        table.add("Relu", 0, "c")


def test_rules_and_bridge_ops_share_the_implementation():
    assert isinstance(RULES, VersionedRegistry) and isinstance(OPS, VersionedRegistry)
    assert rule_for("Relu", 13) is RULES.get("Relu", 13)
    assert op_for("Relu", 13) is OPS.get("Relu", 13)
    assert supported_ops() == RULES.op_types()
