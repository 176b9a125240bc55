"""SmoothGrad's ``sigma="auto"`` (issue 18): per image, the largest sigma of the ladder whose
noisy copies keep the model's clean top-1 class, checked against an independent NumPy count
on ``model.run``; explicit sigmas unchanged; the choice recorded; the CLI's ``--sigma``; the
compiled form refuses "auto"."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import make_graph_model, tiny_classifier
from onnx import helper

from cnnviz.attribution import saliency
from cnnviz.attribution.smoothgrad import (
    AUTO_RULE,
    auto_sigma,
    sigma_value,
    smooth,
    smoothgrad,
)
from cnnviz_core import InputError, Model

LADDER = (0.2, 0.15, 0.1, 0.05, 0.025)
SHAPE = (3, 4, 4)


def linear_model() -> tuple[Model, np.ndarray]:
    """Flatten -> Gemm, 3 classes, on (3, 4, 4) inputs in [0, 1] (rgb01: range 1), and
    inputs whose logits are (margin, 0, 0): from a near tie (no sigma keeps class 0) to a
    wide margin (0.2 keeps it)."""
    rng = np.random.default_rng(3)
    weights = rng.standard_normal((3, 48)).astype(np.float32)
    nodes = [
        helper.make_node("Flatten", ["x"], ["flat"], "flatten", axis=1),
        helper.make_node("Gemm", ["flat", "w", "b"], ["logits"], "fc", transB=1),
    ]
    proto = make_graph_model(
        nodes, {"w": weights, "b": np.zeros(3, np.float32)}, ["N", *SHAPE], "logits"
    )
    model = Model(proto.SerializeToString(), preprocess="rgb01")
    centre = np.full(48, 0.5)
    pinv = np.linalg.pinv(weights.astype(np.float64))
    images = []
    for margin in (1e-4, 0.05, 0.3, 0.6, 1.0, 1.8, 4.0, 9.0):
        wanted = np.array([margin, 0.0, 0.0])
        x = centre + pinv @ (wanted - weights @ centre)
        images.append(x.reshape(SHAPE))
    return model, np.asarray(images, np.float32)


def reference_sigma(model: Model, image: np.ndarray, seed: int = 0) -> tuple[float, float]:
    """The rule computed independently: the image's first 8 seeded draws, one image at a
    time, top-1 counted with NumPy on ``model.run``'s logits."""
    draws = np.random.default_rng([seed, zlib.crc32(image.tobytes())]).standard_normal(
        (8, *image.shape), dtype=np.float32
    )
    span = model.preprocess.span.astype(np.float64)[:, None, None]
    (name,) = model.output_names
    clean = int(np.argmax(model.run(image[None])[name][0]))
    kept = 0.0
    for sigma in LADDER:
        noisy = (image + draws * (span * sigma).astype(np.float32)).astype(np.float32)
        labels = np.argmax(model.run(noisy)[name], axis=1)
        kept = float(np.count_nonzero(labels == clean)) / 8
        if kept >= 0.5:
            return sigma, kept
    return LADDER[-1], kept


def old_smoothgrad(
    model: Model, batch: np.ndarray, targets: list[int], n: int, sigma: float
) -> np.ndarray:
    """SmoothGrad as it was before "auto" (the noise per image seeded by its content)."""
    scale = (model.preprocess.span * sigma).astype(np.float32)[:, None, None]
    noise = np.stack(
        [
            np.random.default_rng([0, zlib.crc32(image.tobytes())]).standard_normal(
                (n, *batch.shape[1:]), dtype=np.float32
            )
            for image in batch
        ]
    )
    noisy = (batch[:, None] + noise * scale).astype(np.float32).reshape(-1, *batch.shape[1:])
    maps = saliency(model, noisy, [t for t in targets for _ in range(n)]).maps
    return maps.reshape(len(batch), n, *maps.shape[1:]).mean(axis=1)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Model:
    path = tmp_path_factory.mktemp("tiny") / "tiny.onnx"
    onnx.save(tiny_classifier(), path)
    return Model(path, preprocess="rgb01")


def test_auto_sigma_is_the_rule_computed_independently() -> None:
    model, images = linear_model()
    choice = auto_sigma(model, images)
    expected = [reference_sigma(model, image) for image in images]
    assert choice.sigmas == [sigma for sigma, _ in expected]
    assert choice.kept == [kept for _, kept in expected]
    assert len(set(choice.sigmas)) >= 3  # the images span the ladder
    failed = [i for i, (_, kept) in enumerate(expected) if kept < 0.5]
    assert failed and [note.split(":")[0] for note in choice.notes] == [
        f"sigma auto, image {i}" for i in failed
    ]
    assert all("used 0.025" in note for note in choice.notes)
    # one image alone gets the choice it gets in the batch
    assert auto_sigma(model, images[3:4]).sigmas == choice.sigmas[3:4]


def test_auto_records_the_choice_per_image() -> None:
    model, images = linear_model()
    result = smoothgrad(model, images, 0, samples=4)
    choice = auto_sigma(model, images)
    assert result.options["sigma"] == "auto" and result.options["sigma_rule"] == AUTO_RULE
    assert AUTO_RULE == (
        "auto: largest of (0.2, 0.15, 0.1, 0.05, 0.025) keeping the clean top-1 class in "
        ">= 50% of 8 noisy copies"
    )
    assert result.options["sigma_chosen"] == result.metrics["sigma_chosen"] == choice.sigmas
    assert result.options["sigma_kept"] == result.metrics["sigma_kept"] == choice.kept
    tried = result.options["sigma_tried"]
    assert [list(t) == list(LADDER[: len(t)]) for t in tried] == [True] * len(images)
    assert [t[s] for t, s in zip(tried, choice.sigmas)] == choice.kept
    assert "no sigma of" in result.metrics["sigma_note"]
    assert "sigma_rule" in result._repr_html_()


def test_auto_maps_are_the_explicit_maps_at_the_chosen_sigma() -> None:
    """Per image, "auto" smooths exactly as the sigma it chose would (fewer samples than
    probes: the smoothing noise is the first draws of the probe stream)."""
    model, images = linear_model()
    auto = smoothgrad(model, images, 0, samples=4)
    for i, sigma in enumerate(auto.options["sigma_chosen"]):
        fixed = smoothgrad(model, images[i : i + 1], 0, samples=4, sigma=sigma)
        np.testing.assert_array_equal(auto.maps[i], fixed.maps[0])


@pytest.mark.parametrize("sigma", [0.0, 0.1, 0.15])
def test_explicit_sigma_is_unchanged(tiny: Model, sigma: float) -> None:
    batch = np.random.default_rng(1).uniform(0, 1, (3, *SHAPE[:1], 16, 16)).astype(np.float32)
    targets = [0, 2, 3]
    result = smoothgrad(tiny, batch, targets, samples=5, sigma=sigma)
    np.testing.assert_array_equal(result.maps, old_smoothgrad(tiny, batch, targets, 5, sigma))
    assert result.options["sigma"] == sigma and "sigma_chosen" not in result.options
    assert "sigma_chosen" not in result.metrics


def test_output_without_a_class_axis_uses_015_and_says_so() -> None:
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"], "conv", pads=[1, 1, 1, 1])]
    weights = {"w": rng.standard_normal((2, 3, 3, 3)).astype(np.float32)}
    proto = make_graph_model(nodes, weights, ["N", *SHAPE], "y")
    model = Model(proto.SerializeToString(), preprocess="rgb01")
    image = rng.uniform(0, 1, (1, *SHAPE)).astype(np.float32)
    result = smoothgrad(model, image, 5, samples=2)
    assert result.options["sigma_chosen"] == [0.15] and result.options["sigma_kept"] == [None]
    assert "not checkable" in result.options["sigma_rule"]
    note = result.metrics["sigma_note"]
    assert "'y' is Nx2x4x4, not one score per class" in note and "0.15 unchecked" in note
    fixed = smoothgrad(model, image, 5, samples=2, sigma=0.15)
    np.testing.assert_array_equal(result.maps, fixed.maps)


@pytest.mark.parametrize(
    ("given", "expected"),
    [("auto", "auto"), (" AUTO ", "auto"), ("0.1", 0.1), (0.05, 0.05), (0, 0.0)],
)
def test_sigma_values(given: object, expected: object) -> None:
    assert sigma_value(given) == expected


@pytest.mark.parametrize("given", ["lots", "-0.1", -1.0, float("nan"), "inf", True, None])
def test_bad_sigma_is_one_line_naming_the_parameter(given: object) -> None:
    with pytest.raises(InputError, match=r"^sigma= is 'auto' or .* such as 0\.1\); got ") as e:
        smooth(saliency, sigma=given)  # type: ignore[arg-type]  # the mistake under test
    assert "\n" not in str(e.value)


# ------------------------------------------------------------------------------ the CLI


def _picture(tmp_path: Path) -> str:
    from PIL import Image

    path = tmp_path / "in.png"
    pixels = np.random.default_rng(4).integers(0, 256, (64, 64, 3), np.uint8)
    Image.fromarray(pixels).save(path)
    return str(path)


@pytest.mark.parametrize("sigma", ["auto", "0.1", None])
def test_cli_sigma(tmp_path: Path, capsys: pytest.CaptureFixture, sigma: str | None) -> None:
    from cnnviz.cli import main

    argv = ["explain", "shapes", _picture(tmp_path), "--method", "smoothgrad", "--samples", "2"]
    given = [] if sigma is None else ["--sigma", sigma]
    assert main([*argv, *given, "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert ("sigma_chosen: [" in out) == (sigma != "0.1")


@pytest.mark.parametrize("bad", ["lots", "-1", "nan"])
def test_cli_bad_sigma_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture, bad: str
) -> None:
    from cnnviz.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["explain", "shapes", "x.png", "--method", "smoothgrad", "--sigma", bad])
    err = capsys.readouterr().err
    last = err.splitlines()[-1]
    assert exit_.value.code == 2 and "Traceback" not in err
    assert "argument --sigma: sigma= is 'auto' or the noise std" in last and repr(bad) in last


def test_cli_help_shows_auto(capsys: pytest.CaptureFixture) -> None:
    from cnnviz.cli import main

    with pytest.raises(SystemExit):
        main(["explain", "--help"])
    shown = " ".join(capsys.readouterr().out.split())
    assert "--sigma auto|F" in shown and "or auto (default)" in shown


# ----------------------------------------------------------------------- compiled form


def test_export_refuses_auto_naming_the_alternative(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from cnnviz import export_explainer
    from cnnviz.cli import main
    from cnnviz.models import load_model

    model = load_model("shapes")
    with pytest.raises(InputError, match=r"sigma='auto' cannot be compiled.*pass a number"):
        export_explainer(model, "smoothgrad", samples=2, sigma="auto")
    argv = ["export-explainer", "shapes", "--method", "smoothgrad", "--sigma", "auto"]
    assert main([*argv, "--out", str(tmp_path / "x.onnx")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "auto_sigma(model, sample_image)" in err
    assert not (tmp_path / "x.onnx").exists()
    proto = export_explainer(model, "smoothgrad", samples=2)  # the compiled default: 0.15
    notes = {p.key: p.value for p in proto.metadata_props}
    assert notes["cnnviz.sigma"] == "0.15"
