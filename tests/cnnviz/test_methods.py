"""The method registry: every spec's options exist on its function, explain() runs a method
by name and rejects an option the method does not take with an error naming the parameter
(the CLI names the flag); the CLI's translation of parameters into flags."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

from cnnviz import load_model
from cnnviz.attribution import METHODS, REGISTRY, SPECS, explain
from cnnviz.attribution.methods import OPTIONS, MethodSpec, method_spec, title
from cnnviz.cli import build_parser
from cnnviz.cli.common import flags, in_flags
from cnnviz.data import make_shapes
from cnnviz_core import InputError, Model

VALUES = {"layer": "relu_3", "precision": "fp32"}


@pytest.fixture(scope="module")
def model() -> Model:
    return load_model("shapes")


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return make_shapes(1, seed=5).images


def test_registry_is_one_table() -> None:
    assert list(REGISTRY) == [spec.name for spec in SPECS] == list(METHODS)
    assert all(METHODS[spec.name] is spec.function for spec in SPECS)
    assert len({spec.name for spec in SPECS}) == len(SPECS)
    assert {spec.family for spec in SPECS} == {"gradient", "cam", "perturbation"}


@pytest.mark.parametrize("spec", SPECS, ids=lambda spec: spec.name)
def test_spec_options_are_parameters_of_its_function(spec: MethodSpec) -> None:
    assert spec.title and spec.paper and spec.options <= OPTIONS.keys()
    parameters = inspect.signature(spec.function).parameters
    assert list(parameters)[:3] == ["model", "images", "target"]
    for option in spec.options:
        assert parameters[option].kind in (
            inspect.Parameter.KEYWORD_ONLY,
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
        )


@pytest.mark.parametrize(
    ("spec", "option"),
    [(spec, option) for spec in SPECS for option in OPTIONS if option not in spec.options],
    ids=lambda value: value.name if isinstance(value, MethodSpec) else value,
)
def test_explain_rejects_an_option_the_method_does_not_take(
    model: Model, image: np.ndarray, spec: MethodSpec, option: str
) -> None:
    with pytest.raises(InputError, match=f"^{option}= applies to ") as error:
        explain(model, image, spec.name, **{option: VALUES[option]})
    takers = [s.name for s in SPECS if option in s.options]
    assert ", ".join(sorted(takers)) in str(error.value) and "--" not in str(error.value)


@pytest.mark.parametrize("name", [spec.name for spec in SPECS if "layer" in spec.options])
def test_explain_passes_the_layer_on(model: Model, image: np.ndarray, name: str) -> None:
    if name == "cam":  # CAM reaches its own check: only the layer the head pools
        with pytest.raises(InputError, match="CAM is defined at the layer"):
            explain(model, image, name, 3, layer="relu_2")
        return
    result = explain(model, image, name, 3, layer="relu_2")
    assert result.options["layer"] == model.tensor_name("relu_2")


def test_unknown_method_lists_the_registry() -> None:
    with pytest.raises(InputError, match="unknown method 'nope'; choose one of saliency"):
        method_spec("nope")
    assert title("gradcam") == "Grad-CAM" and title("custom") == "custom"


def test_spec_rejects_an_unknown_option() -> None:
    with pytest.raises(ValueError, match="unknown options"):
        MethodSpec("x", "x", "paper", "gradient", METHODS["saliency"], frozenset({"tau"}))


def test_cli_names_flags_for_parameters() -> None:
    explain_flags = flags(build_parser(), "explain")
    assert explain_flags["layer"] == "--layer" and explain_flags["precision"] == "--precision"
    assert flags(build_parser(), "predict")["classes"] == "--class"
    message = "layer= applies to cam; precision='bf16' runs; feature_layer=x stays; x="
    assert in_flags(message, {**explain_flags, "x": "--x"}) == (
        "--layer applies to cam; --precision 'bf16' runs; feature_layer=x stays; --x"
    )
