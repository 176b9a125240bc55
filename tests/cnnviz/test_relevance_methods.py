"""The DeepLIFT and LRP methods of the toolkit: registry entries with their CLI flags, the
metadata (rule, parameters, completeness / conservation), the z^B bounds taken from the
preprocessing, and a CLI run with the method's flags. The rules themselves are checked
against Captum and NumPy in tests/core/test_relevance.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnviz import load_model
from cnnviz.attribution import REGISTRY, deeplift, explain, lrp
from cnnviz.attribution.lrp import input_range
from cnnviz.cli import build_parser, main
from cnnviz.cli.common import flags
from cnnviz.data import make_shapes
from cnnviz_core import InputError, Model
from cnnviz_core.backward import LRP, gradients
from cnnviz_core.backward.relevance import LRPRule

RULES: dict[str, LRPRule] = {
    "lrp-epsilon": "epsilon",
    "lrp-gamma": "gamma",
    "lrp-alphabeta": "alphabeta",
}


@pytest.fixture(scope="module")
def model() -> Model:
    return load_model("shapes")


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return make_shapes(2, seed=11).images


def test_registry_entries_and_flags() -> None:
    assert {"deeplift", "lrp-epsilon", "lrp-gamma", "lrp-alphabeta"} <= REGISTRY.keys()
    assert REGISTRY["lrp-gamma"].parameter_names == {"gamma", "epsilon", "input_rule"}
    assert REGISTRY["deeplift"].parameter_names == {"baseline"}
    names = flags(build_parser(), "explain")
    assert names["epsilon"] == "--epsilon" and names["gamma"] == "--gamma"
    assert names["input_rule"] == "--input-rule" and names["baseline"] == "--baseline"


def test_deeplift_reports_its_completeness(model: Model, images: np.ndarray) -> None:
    result = explain(model, images, "deeplift", 2, baseline="black")
    assert result.method == "deeplift" and result.signed
    assert result.options == {"rule": "rescale", "baseline": "black"}
    assert result.extras["attributions"].shape == (2, 3, 64, 64)
    sums = result.extras["attributions"].astype(np.float64).reshape(2, -1).sum(axis=1)
    np.testing.assert_allclose(sums, result.metrics["sum"], rtol=1e-5)
    assert result.metrics["completeness_max"] < 1e-3  # float32 forwards
    base = result.extras["baseline"]
    delta = model.scores(model.prepare(images))[:, 2] - model.scores(base)[:, 2]
    np.testing.assert_allclose(result.metrics["delta"], delta, rtol=1e-5, atol=1e-6)


def test_zbox_bounds_are_black_and_white_preprocessed(model: Model) -> None:
    low, high = input_range(model, np.zeros((1, 3, 64, 64), np.float32))
    black, white = model.prepare(
        [np.zeros((64, 64, 3), np.uint8), np.full((64, 64, 3), 255, np.uint8)]
    )
    np.testing.assert_allclose(low[0, :, 0, 0], black[:, 0, 0])
    np.testing.assert_allclose(high[0, :, 0, 0], white[:, 0, 0])


@pytest.mark.parametrize("name", ["lrp-epsilon", "lrp-gamma", "lrp-alphabeta"])
def test_lrp_methods_equal_the_engine_mode(model: Model, images: np.ndarray, name: str) -> None:
    result = explain(model, images, name, [1, 3], epsilon=1e-4)
    rule = RULES[name]
    assert result.method == name and result.options["rule"] == rule
    assert result.options["epsilon"] == 1e-4 and result.options["input_rule"] == "zbox"
    batch = model.prepare(images)
    low, high = input_range(model, batch)
    mode = LRP(rule, 1e-4, input_rule="zbox", low=low, high=high)
    engine = gradients(model, batch, [1, 3], mode=mode)
    np.testing.assert_array_equal(result.extras["relevance"], engine.grads[model.input_name])
    np.testing.assert_allclose(result.metrics["score"], engine.scores)
    gap = np.abs(np.array(result.metrics["sum"]) - engine.scores) / np.abs(engine.scores)
    np.testing.assert_allclose(result.metrics["conservation"], gap, rtol=1e-6)


def test_lrp_options_and_errors(model: Model, images: np.ndarray) -> None:
    same = lrp(model, images[:1], 0, rule="gamma", gamma=0.5, input_rule="same")
    box = lrp(model, images[:1], 0, rule="gamma", gamma=0.5)
    assert same.options["gamma"] == 0.5 and same.options["input_rule"] == "same"
    assert not np.allclose(same.maps, box.maps)  # the first layer's rule matters
    with pytest.raises(InputError, match="unknown input_rule 'pixel'"):
        lrp(model, images[:1], input_rule="pixel")
    with pytest.raises(InputError, match=r"^gamma= applies to lrp-gamma; 'lrp-epsilon' takes"):
        explain(model, images[:1], "lrp-epsilon", gamma=0.5)
    with pytest.raises(InputError, match="unknown baseline 'grey'"):
        deeplift(model, images[:1], baseline="grey")


def test_cli_explain_with_lrp_flags(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "shape.png"
    Image.fromarray(make_shapes(1, seed=2).images[0]).save(path)
    argv = ["explain", "shapes", str(path), "--method", "lrp-gamma", "--gamma", "0.5"]
    assert main([*argv, "--input-rule", "same", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "shape-lrp-gamma.png").is_file()
    assert main([*argv[:3], "--method", "lrp-epsilon", "--gamma", "1", "--out", str(tmp_path)]) == 1
    assert "--gamma applies to lrp-gamma" in capsys.readouterr().err
