"""Compiled explanations of the test architectures (AlexNet / VGG / ResNet / SqueezeNet /
MobileNetV2 / DenseNet / Inception-style, exported by torch's dynamo exporter as in
tests/core/test_backward_models.py): the graph, run by onnxruntime in a child interpreter
without cnnviz or torch, equals the engine's maps to 1e-5 relative."""

from __future__ import annotations

import numpy as np
import pytest

import cnnviz
from tests.cnnviz.test_export import (
    RELATIVE,
    Job,
    engine_map,
    images,
    relative_error,
    run_standalone,
)

pytest.importorskip("torch")
pytest.importorskip("onnxscript")

from tests.core.test_backward_models import ARCHITECTURES, exported  # noqa: F401

METHODS = {"saliency": {}, "guided": {}, "gradcam": {}, "gradcam++": {}, "layercam": {}}


@pytest.fixture(scope="module")
def architecture_jobs(exported, tmp_path_factory) -> dict[str, Job]:  # noqa: F811
    jobs = {}
    for name in sorted(ARCHITECTURES):
        _, model, size = exported(name)
        pictures = images((size, size), n=2, seed=3)
        for method, options in METHODS.items():
            expected, classes = engine_map(model, pictures, method, None, **options)
            jobs[f"{name}/{method}"] = Job(
                cnnviz.export_explainer(model, method, **options),
                {"pixels": pictures.astype(np.float32)},
                expected,
                classes,
            )
    run_standalone(jobs, tmp_path_factory.mktemp("architectures_export"))
    return jobs


@pytest.mark.torch
@pytest.mark.parametrize("method", sorted(METHODS))
@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_architecture_standalone_equals_the_engine(architecture_jobs, name, method):
    job = architecture_jobs[f"{name}/{method}"]
    assert relative_error(job.outputs["map"], job.expected) <= RELATIVE
    np.testing.assert_array_equal(job.outputs["target"], job.expected_target)
