"""An exported explainer outside onnxruntime, in the ONNX spec's own semantics: the reference
evaluator (``onnx.reference.ReferenceEvaluator``) gives the same map (1e-4 of its scale),
class and model outputs as onnxruntime, and ``onnx.checker`` passes with full checks."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from deploy_standin import (
    EXPLAINERS,
    assert_same_map,
    explainer,
    feeds_for,
    onnxruntime_outputs,
    shapes_pixels,
)
from onnx.reference import ReferenceEvaluator


@pytest.mark.parametrize("name", EXPLAINERS)
def test_reference_evaluator_equals_onnxruntime(name: str) -> None:
    proto = explainer(name)
    onnx.checker.check_model(proto, full_check=True)
    # one image: the reference evaluator runs Conv in NumPy loops (IG: 40 s on 2 images)
    feeds = feeds_for(proto, shapes_pixels(1), classes=[3])
    want = onnxruntime_outputs(proto, feeds)
    names = list(want)
    got = dict(zip(names, ReferenceEvaluator(proto).run(names, feeds)))
    assert_same_map(got["map"], want["map"])
    np.testing.assert_array_equal(got["target"], want["target"])
    for output in set(names) - {"map", "target"}:
        np.testing.assert_allclose(got[output], want[output], rtol=1e-4, atol=1e-4)
    metadata = {prop.key: prop.value for prop in proto.metadata_props}
    assert {node.op_type for node in proto.graph.node} == set(metadata["cnnviz.ops"].split(","))
    assert int(metadata["cnnviz.opset"]) == proto.opset_import[0].version
    assert "MaxUnpool" not in metadata["cnnviz.ops"]  # OpenVINO's ONNX frontend has none
