"""Synthesis techniques on the shipped shapes model (class models, inversion, DeepDream,
adversarial images), their determinism, interruption, CLI and report, and import without
torch. Step counts are small: the whole file runs in well under 90 s on 2 cores."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

pytest.importorskip("torch")

from cnnviz.data import CLASSES, make_shapes
from cnnviz.models import load_model
from cnnviz.synthesis import (
    class_visualization,
    dream,
    fool,
    invert,
    invert_layers,
    multifaceted,
)


@pytest.fixture(scope="module")
def model():
    return load_model("shapes")


@pytest.fixture(scope="module")
def sample():
    return make_shapes(8, seed=11)


@pytest.fixture(scope="module")
def class_models(model):
    return class_visualization(model, list(range(len(CLASSES))), steps=30, seed=0)


def test_class_visualization_is_classified_as_its_class(model, class_models) -> None:
    probabilities = model.probabilities(model.prepare(class_models.images))
    for c in range(len(CLASSES)):
        assert probabilities[c].argmax() == c, (c, probabilities[c])
        assert probabilities[c, c] >= 0.9, (c, probabilities[c, c])
    assert class_models.metrics["probability"] == pytest.approx(
        [float(probabilities[c, c]) for c in range(len(CLASSES))], abs=1e-4
    )
    assert class_models.images.dtype == np.uint8 and class_models.images.shape == (8, 64, 64, 3)
    assert class_models.steps == 30 and len(class_models.losses) == 30
    assert class_models.losses[-1] < class_models.losses[0]
    assert not class_models.interrupted


def test_channel_and_neuron_objectives_rise(model) -> None:
    from cnnviz.attribution import Channel, Neuron
    from cnnviz.synthesis.base import start_batch

    targets = [Channel("relu_2", 3), Neuron("relu_3", 5, 4, 4)]
    result = class_visualization(model, targets, steps=10, jitter=0, start="noise", seed=1)
    after = model.run(model.prepare(result.images), taps=["relu_2", "relu_3"], outputs=False)
    before = model.run(start_batch(model, "noise", 2, seed=1), taps=["relu_2", "relu_3"])
    assert after["relu_2"][0, 3].mean() > before["relu_2"][0, 3].mean() + 0.1
    assert after["relu_3"][1, 5, 4, 4] > before["relu_3"][1, 5, 4, 4] + 0.1
    assert result.metrics["objective"][1] == pytest.approx(after["relu_3"][1, 5, 4, 4], rel=1e-3)
    assert "probability" not in result.metrics


def test_octaves_and_start_image(model, sample) -> None:
    result = class_visualization(model, [3], steps=8, octaves=2, start=sample.images[0])
    assert result.steps == 16 and result.images.shape == (1, 64, 64, 3)


def test_determinism_by_seed(model) -> None:
    a = class_visualization(model, [1, 5], steps=6, start="noise", seed=4)
    b = class_visualization(model, [1, 5], steps=6, start="noise", seed=4)
    c = class_visualization(model, [1, 5], steps=6, start="noise", seed=5)
    np.testing.assert_array_equal(a.images, b.images)
    assert a.losses == b.losses
    assert not np.array_equal(a.images, c.images)


def test_fourier_parameterization(model) -> None:
    from cnnviz_core import InputError

    a = class_visualization(model, [1, 6], steps=40, parameterization="fourier", seed=3)
    b = class_visualization(model, [1, 6], steps=40, parameterization="fourier", seed=3)
    np.testing.assert_array_equal(a.images, b.images)
    assert a.losses == b.losses and a.steps == 40
    probabilities = model.probabilities(model.prepare(a.images))
    assert list(probabilities.argmax(axis=1)) == [1, 6]
    assert probabilities[0, 1] >= 0.9 and probabilities[1, 6] >= 0.9, probabilities
    assert a.options["parameterization"] == "fourier" and a.options["lr"] == 0.05
    with pytest.raises(InputError, match="parameterization"):
        class_visualization(model, 0, steps=1, parameterization="wavelet")


def test_multifaceted_gives_distinct_facets_of_the_class(model) -> None:
    images = make_shapes(200, seed=1).images
    result = multifaceted(model, "triangle", images, facets=3, seed=0)
    c = CLASSES.index("triangle")
    assert result.method == "multifaceted" and result.images.shape == (3, 64, 64, 3)
    assert sum(result.metrics["cluster_sizes"]) == 30
    assert result.metrics["cluster_sizes"] == sorted(result.metrics["cluster_sizes"])[::-1]
    probabilities = model.probabilities(model.prepare(result.images))
    assert (probabilities.argmax(axis=1) == c).all()
    assert (probabilities[:, c] >= 0.9).all(), probabilities[:, c]
    pictures = result.images.astype(int)
    for i in range(3):
        for j in range(i + 1, 3):
            assert np.abs(pictures[i] - pictures[j]).mean() > 5, (i, j)
    assert result.options["starts"].shape == (3, 64, 64, 3)


def test_inversion_psnr_falls_with_depth(model, sample) -> None:
    results = invert_layers(model, sample.images[:1], ["conv2d", "relu", "relu_2"], steps=40)
    psnrs = [r.metrics["psnr"][0] for r in results]
    assert psnrs[0] >= 20 and psnrs[1] >= 20, psnrs
    assert psnrs[2] < psnrs[1] - 5, psnrs
    assert all(r.metrics["feature_error"][0] < 0.5 for r in results)


def test_inversion_with_adam_is_deterministic(model, sample) -> None:
    a = invert(model, sample.images[:1], "relu", steps=15, optimizer="adam", seed=2)
    b = invert(model, sample.images[:1], "relu", steps=15, optimizer="adam", seed=2)
    np.testing.assert_array_equal(a.images, b.images)
    assert a.losses[-1] < a.losses[0]


@pytest.mark.parametrize("seed", [0, 1])
def test_fooling_image_is_predicted_as_target(model, sample, seed) -> None:
    images = sample.images[:4]
    targets = [(int(label) + 3 + seed) % len(CLASSES) for label in sample.labels[:4]]
    result = fool(model, images, targets, epsilon=8, random_start=bool(seed), seed=seed)
    predicted = model.probabilities(model.prepare(result.images)).argmax(axis=1)
    assert list(predicted) == targets
    assert all(result.metrics["success"])
    change = np.abs(result.images.astype(int) - result.original.astype(int))
    assert change.max() <= 8
    assert max(result.metrics["linf_fraction"]) <= 8 / 255 + 1e-9
    assert all(0 < s <= 100 for s in result.metrics["steps"])
    assert all(v > 0 for v in result.metrics["l2"])
    assert result.difference.shape == result.images.shape


def test_deepdream_increases_activation_norm(model, sample) -> None:
    result = dream(model, sample.images[:2], "relu_2", steps=5, octaves=2)
    batch = model.prepare(result.images)
    before = model.run(model.prepare(sample.images[:2]), taps=["relu_2"], outputs=False)
    after = model.run(batch, taps=["relu_2"], outputs=False)
    for i in range(2):
        norm_before = np.linalg.norm(before["relu_2"][i])
        norm_after = np.linalg.norm(after["relu_2"][i])
        assert norm_after > 1.5 * norm_before
        assert result.metrics["norm_after"][i] == pytest.approx(norm_after, rel=1e-3)


def _interrupt_at(step: int):
    calls = []

    def progress(done: int, total: int, loss: float) -> None:
        calls.append((done, total, loss))
        if done == step:
            raise KeyboardInterrupt

    return progress, calls


@pytest.mark.parametrize("technique", ["class", "invert", "dream", "fool"])
def test_interruption_returns_best_so_far(model, sample, technique) -> None:
    progress, calls = _interrupt_at(3)
    image = sample.images[:1]
    if technique == "class":
        result = class_visualization(model, [2], steps=20, progress=progress)
    elif technique == "invert":
        result = invert(model, image, "relu", steps=20, progress=progress)
    elif technique == "dream":
        result = dream(model, image, "relu_1", steps=20, octaves=1, progress=progress)
    else:
        target = (int(sample.labels[0]) + 1) % len(CLASSES)
        result = fool(model, image, target, epsilon=2, step_size=0.25, progress=progress)
    assert result.interrupted
    assert result.steps == 3 and len(result.losses) == 3
    assert [c[0] for c in calls] == [1, 2, 3]
    assert result.images.shape == (1, 64, 64, 3) and result.images.dtype == np.uint8
    assert np.isfinite(result.batch).all()


def test_class_visualization_best_so_far_is_the_lowest_loss(model) -> None:
    progress, _ = _interrupt_at(5)
    result = class_visualization(model, [4], steps=20, progress=progress, contrast=0.0)
    assert result.interrupted
    # the kept image scores at least as high as the start (loss 0 at step 1)
    assert result.metrics["objective"][0] >= -result.losses[0] - 1.0


def test_cli_commands(tmp_path, sample) -> None:
    from cnnviz.cli import main
    from cnnviz.render.images import save_png

    image = save_png(sample.images[0], tmp_path / "in.png")
    out = tmp_path / "out"
    assert main(["visualize-class", "shapes", "--target", "star", "--steps", "5",
                 "--out", str(out)]) == 0  # fmt: skip
    assert main(["invert", "shapes", str(image), "--layer", "relu", "--steps", "5",
                 "--out", str(out)]) == 0  # fmt: skip
    assert main(["dream", "shapes", str(image), "--layer", "relu_1", "--steps", "2",
                 "--octaves", "1", "--out", str(out)]) == 0  # fmt: skip
    target = CLASSES[(int(sample.labels[0]) + 1) % len(CLASSES)]
    assert main(["fool", "shapes", str(image), "--target", target, "--out", str(out)]) == 0
    names = {p.name for p in out.iterdir()}
    assert {"class-0.png", "invert-relu.png", "dream-relu_1.png", "in-difference.png"} <= names


def test_report_sections_are_opt_in(tmp_path, model, sample, monkeypatch) -> None:
    import importlib

    from cnnviz.render.report import build_report

    cv = importlib.import_module("cnnviz.synthesis.class_visualization")
    inv = importlib.import_module("cnnviz.synthesis.inversion")

    plain = build_report(model, list(sample.images[:1]), tmp_path / "plain")
    html = plain.read_text()
    assert "Class model visualization" not in html and "Adversarial images" not in html
    fast_cv, fast_inv = cv.class_visualization, inv.invert_layers
    monkeypatch.setattr(cv, "class_visualization", lambda m, t, **kw: fast_cv(m, t, steps=3))
    monkeypatch.setattr(
        inv, "invert_layers", lambda m, i, layers: fast_inv(m, i, ["relu"], steps=5)
    )
    options = {"synthesis": {"classes": [0, 3], "dream_layer": "relu_1"}}
    path = build_report(model, list(sample.images[:1]), tmp_path / "full", options=options)
    html = path.read_text()
    for title in ("Class model visualization", "Feature inversion", "DeepDream",
                  "Adversarial images"):  # fmt: skip
        assert title in html


def test_import_and_call_without_torch() -> None:
    script = textwrap.dedent(
        """
        import importlib.abc
        import sys

        class NoTorch(importlib.abc.MetaPathFinder):
            # as if torch were not installed: importing it raises ImportError
            def find_spec(self, name, path, target=None):
                if name.split(".")[0] == "torch":
                    raise ImportError(f"No module named {name!r}")
                return None

        sys.meta_path.insert(0, NoTorch())
        import cnnviz.synthesis
        from cnnviz import load_model
        from cnnviz.cli import build_parser

        build_parser()
        model = load_model("shapes")
        try:
            cnnviz.synthesis.class_visualization(model, 0, steps=1)
        except ImportError as error:
            assert "pip install 'cnnviz[torch]'" in str(error), error
        else:
            raise AssertionError("no ImportError")
        assert "torch" not in sys.modules
        print("ok")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "ok" in done.stdout


def test_tracker_keeps_each_images_best_batch() -> None:
    """Per image, the batch with the lowest loss so far: held without a copy while every
    image improves (a fresh batch), assembled when only some do, and copied when the caller
    changes its batch in place (the default)."""
    import torch

    from cnnviz.synthesis.base import Tracker

    seen = []
    tracker = Tracker(3, lambda step, total, loss: seen.append((step, total, loss)))
    a = torch.full((2, 1, 2, 2), 1.0)
    tracker.record(torch.tensor([3.0, 3.0]), a, fresh=True)
    np.testing.assert_array_equal(tracker.best, a.numpy())
    b = torch.full((2, 1, 2, 2), 2.0)
    tracker.record(torch.tensor([2.0, 4.0]), b, fresh=True)  # only image 0 improves
    np.testing.assert_array_equal(tracker.best[:, 0, 0, 0], [2.0, 1.0])
    c = torch.full((2, 1, 2, 2), 5.0)
    tracker.record(torch.tensor([1.0, 1.0]), c)  # both improve; not fresh: copied
    c.fill_(9.0)
    np.testing.assert_array_equal(tracker.best, np.full((2, 1, 2, 2), 5.0))
    tracker.record(torch.tensor([0.5, 7.0]), torch.full((2, 1, 2, 2), 6.0), final=True)
    np.testing.assert_array_equal(tracker.best[:, 0, 0, 0], [6.0, 5.0])
    np.testing.assert_array_equal(tracker.best_loss, [0.5, 1.0])
    assert tracker.steps == 3 and tracker.losses == [3.0, 3.0, 1.0]
    assert [s[0] for s in seen] == [1, 2, 3]
