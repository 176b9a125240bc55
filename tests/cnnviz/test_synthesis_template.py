"""The gradient-synthesis template (cnnviz.synthesis.template) on toy problems, no model: each
optimizer, the best-so-far, progress, Ctrl-C, jitter, early convergence, the option checks
and the result it builds. The techniques themselves are tested in test_synthesis.py and
test_texture_style.py."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from cnnviz.synthesis.base import SynthesisResult  # noqa: E402
from cnnviz.synthesis.template import (  # noqa: E402
    Parameterization,
    UnitPixels,
    adam,
    check_choice,
    gradient_steps,
    lbfgs,
    minimizer,
    optimize,
)
from cnnviz_core import InputError  # noqa: E402

GOAL = torch.linspace(-1.0, 1.0, 2 * 1 * 4 * 4).reshape(2, 1, 4, 4)


def squared_error(batch: Any) -> Any:
    """(N,) mean squared distance to GOAL."""
    return (batch - GOAL).pow(2).mean(dim=(1, 2, 3))


class Free(Parameterization):
    """A plain tensor, moved in place by Adam or L-BFGS."""

    def __init__(self) -> None:
        self.x = torch.zeros(2, 1, 4, 4, requires_grad=True)

    @property
    def params(self) -> list[Any]:
        return [self.x]

    def image(self) -> Any:
        return self.x


class Descent(Parameterization):
    """Plain gradient descent of step ``lr``; done once every loss is below ``until``."""

    fresh = True

    def __init__(self, lr: float = 0.5, until: float = -1.0) -> None:
        self.x, self.lr, self.until, self.last = torch.zeros(2, 1, 4, 4), lr, until, None

    @property
    def params(self) -> list[Any]:
        return [self.x]

    def image(self) -> Any:
        return self.x

    def step(self, grad: Any, step: int) -> None:
        self.x = self.x - self.lr * grad * GOAL.numel() / 2

    def converged(self) -> bool:
        return bool((squared_error(self.x) < self.until).all())


@pytest.mark.parametrize("optimizer", [adam(0.1), lbfgs(), lbfgs(exact_budget=False)])
def test_optimizers_lower_the_loss_and_keep_the_best(optimizer) -> None:
    calls: list[tuple[int, int, float]] = []
    run = optimize(Free(), squared_error, optimizer, steps=12, progress=lambda *c: calls.append(c))
    steps = run.tracker.steps  # L-BFGS stops early once it solves the quadratic exactly
    assert not run.interrupted and (steps == 12 if optimizer.name == "adam" else 2 <= steps <= 12)
    assert len(run.tracker.losses) == steps
    assert [c[:2] for c in calls] == [(i, 12) for i in range(1, steps + 1)]
    assert run.tracker.losses[-1] < run.tracker.losses[0]
    best = squared_error(torch.from_numpy(run.best)).numpy()
    assert run.tracker.best_loss is not None
    np.testing.assert_allclose(best, run.tracker.best_loss, rtol=1e-6)
    assert best.max() <= squared_error(torch.zeros(2, 1, 4, 4)).numpy().min()


def test_interruption_keeps_the_best_so_far() -> None:
    def progress(step: int, total: int, loss: float) -> None:
        if step == 3:
            raise KeyboardInterrupt

    run = optimize(Free(), squared_error, adam(0.1), steps=20, progress=progress)
    assert run.interrupted and run.tracker.steps == 3 and len(run.tracker.losses) == 3
    assert run.best.shape == (2, 1, 4, 4) and np.isfinite(run.best).all()


def test_gradient_steps_run_every_octave_and_stop_when_converged() -> None:
    run = optimize(Descent(0.1), squared_error, gradient_steps(2, 2.0), steps=5, progress=None)
    assert run.tracker.steps == 10 and run.tracker.total == 10
    early = optimize(Descent(0.5, until=1e-3), squared_error, gradient_steps(), steps=50,
                     progress=None)  # fmt: skip
    assert 0 < early.tracker.steps < 50 and not early.interrupted


def test_jitter_shifts_what_the_loss_sees_and_is_seeded() -> None:
    seen: list[Any] = []

    def loss(batch: Any) -> Any:
        seen.append(batch.detach().clone())
        return squared_error(batch)

    image = Descent(0.1)
    a = optimize(image, loss, gradient_steps(), steps=4, progress=None, jitter=2, seed=7)
    assert any(not torch.equal(s, seen[0]) for s in seen[1:])  # shifted, not only moved
    assert torch.equal(seen[-1], image.x)  # the last evaluation is unshifted
    b = optimize(Descent(0.1), loss, gradient_steps(), steps=4, progress=None, jitter=2, seed=7)
    np.testing.assert_array_equal(a.best, b.best)
    assert a.tracker.losses == b.tracker.losses


def test_unit_pixels_record_clipped_pixels() -> None:
    pixels = torch.full((1, 3, 4, 4), 0.5)
    run = optimize(UnitPixels(pixels), lambda p: -p.mean(dim=(1, 2, 3)), adam(1.0), steps=3,
                   progress=None)  # fmt: skip
    assert run.best.max() <= 1.0 and run.best.min() >= 0.0


def test_option_checks_name_the_parameter() -> None:
    with pytest.raises(InputError, match="steps must be at least 1, got 0"):
        optimize(Free(), squared_error, adam(0.1), steps=0, progress=None)
    with pytest.raises(InputError, match="optimizer must be one of lbfgs, adam, got 'sgd'"):
        minimizer("sgd", 0.1)
    with pytest.raises(InputError, match="init must be one of content, noise, got 'x'"):
        check_choice("init", "x", ("content", "noise"))
    with pytest.raises(NotImplementedError, match="Free has no gradient step"):
        optimize(Free(), squared_error, gradient_steps(), steps=1, progress=None)


def test_run_builds_the_result() -> None:
    run = optimize(Free(), squared_error, adam(0.1), steps=2, progress=None)
    images = np.zeros((2, 4, 4, 3), np.uint8)
    result = run.result(SynthesisResult, "toy", images, run.best, {"m": 1}, ["a", "b"], {"o": 2})
    assert isinstance(result, SynthesisResult) and result.method == "toy"
    assert result.losses == run.tracker.losses and result.steps == 2 and not result.interrupted
    assert result.labels == ["a", "b"] and result.options == {"o": 2} and len(result) == 2
