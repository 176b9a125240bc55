"""Synthesis through the torch bridge against a hand-written pure-torch loop on the shapes
model, the reference network rebuilt in ``torch.nn.functional`` from the model's weights.

Two measurements, each interleaved best-of-N:
- the gradient step, the bridge's own overhead: forward to the objective and backward to the
  input (class score; relu_1 feature error), bridge module against the twin;
- the techniques end to end: iterations per second of class visualization (jittered gradient
  ascent) and feature inversion (Adam), same steps, batch and per-step work (jitter roll,
  objective, normalized step, decay, blur, clamp; inversion: feature error + TV + Lp, Adam,
  clamp). Ours is the public call, which also does per-call work the bare loop does not
  (target resolution, the target features, the best-image bookkeeping and the final metrics:
  one more forward pass).
The bridge's overhead should stay under 10%.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
from timing import paired_seconds

from cnnviz.models import load_model


def reference_net(model: Any) -> Callable[..., Any]:
    """The shapes network in torch.nn.functional: 4 x (3x3 conv pad 1, ReLU), 2x2 max-pools
    after blocks 1-3, mean over H, W, linear classifier. ``net(x, tap)`` returns the logits
    (tap None) or the ReLU output of block ``tap`` (1-based)."""
    import torch
    from torch.nn import functional

    c = {k: torch.from_numpy(np.array(v, np.float32)) for k, v in model.constants.items()}

    def net(x: Any, tap: int | None = None) -> Any:
        for k in range(1, 5):
            x = functional.relu(
                functional.conv2d(x, c[f"features.conv{k}.weight"], c[f"features.conv{k}.bias"],
                                  padding=1)
            )  # fmt: skip
            if tap == k:
                return x
            if k < 4:
                x = functional.max_pool2d(x, 2)
        x = x.mean(dim=(2, 3))
        return functional.linear(x, c["classifier.weight"], c["classifier.bias"])

    return net


def reference_class_visualization(
    model: Any, net: Callable[..., Any], classes: list[int], steps: int, seed: int = 0
) -> Any:
    """The default class_visualization loop (lr 0.005, l2 0.005, jitter 4, blur 0.5 every 4
    steps, contrast 1) written directly in torch."""
    import torch

    from cnnviz.synthesis.base import bounds, channel_tensor, gaussian_blur

    low_np, high_np = bounds(model)
    x = torch.zeros((len(classes), *model.input_shape))
    low, high = channel_tensor(low_np, x), channel_tensor(high_np, x)
    step = 0.005 * (high - low)
    index = torch.tensor(classes)
    rows = torch.arange(len(classes))
    rng = np.random.default_rng(seed)
    for i in range(steps):
        dy, dx = (int(v) for v in rng.integers(-4, 5, size=2))
        x = x.detach().requires_grad_(True)
        scores = net(torch.roll(x, shifts=(dy, dx), dims=(2, 3)))
        own = scores[rows, index]
        others = scores.masked_fill(torch.nn.functional.one_hot(index, 8).bool(), -torch.inf)
        value = own - torch.logsumexp(others, dim=1)
        (grad,) = torch.autograd.grad(value.sum(), x)
        with torch.no_grad():
            grad = grad / (grad.abs().mean(dim=(1, 2, 3), keepdim=True) + 1e-12)
            x = (x + step * grad) * (1 - 0.005)
            if (i + 1) % 4 == 0:
                x = gaussian_blur(x, 0.5)
            x = torch.maximum(torch.minimum(x, high), low)
    return x


def reference_inversion(
    model: Any, net: Callable[..., Any], original: np.ndarray, tap: int, steps: int
) -> Any:
    """invert(..., optimizer="adam") written directly in torch (same loss, Adam, clamp)."""
    import torch

    from cnnviz.synthesis.base import bounds, channel_tensor, start_batch
    from cnnviz.synthesis.inversion import total_variation

    with torch.no_grad():
        goal = net(torch.from_numpy(original), tap)
    goal_norm = goal.flatten(1).pow(2).sum(dim=1) + 1e-12
    x = torch.from_numpy(start_batch(model, "noise", len(original), 0))
    low_np, high_np = bounds(model)
    low, high = channel_tensor(low_np, x), channel_tensor(high_np, x)
    span, middle = high - low, (high + low) / 2
    x.requires_grad_(True)
    opt = torch.optim.Adam([x], lr=0.05)
    for _ in range(steps):
        opt.zero_grad()
        error = (net(x, tap) - goal).flatten(1).pow(2).sum(dim=1) / goal_norm
        unit = (x - middle) / span
        loss = (
            error
            + 0.01 * total_variation(unit)
            + 1e-3 * ((2 * unit).abs() ** 6).mean(dim=(1, 2, 3))
        )
        loss.sum().backward()
        opt.step()
        with torch.no_grad():
            x.copy_(torch.maximum(torch.minimum(x, high), low))
    return x


def run(quick: bool = False) -> list[dict]:
    try:
        import torch
    except ImportError:
        return [{"note": "torch is not installed: synthesis suite skipped"}]
    from cnnviz.data import make_shapes
    from cnnviz.synthesis import class_visualization, invert

    torch.set_num_threads(2)
    model = load_model("shapes")
    net = reference_net(model)
    steps = 10 if quick else 40
    repeats = 2 if quick else 15
    batches = (1, 8) if quick else (1, 8, 32)
    images = make_shapes(32, seed=3).images
    rows = gradient_step_rows(model, net, images, batches, 5 if quick else 100)
    for n in batches:
        classes = [i % 8 for i in range(n)]
        cases = {
            "class visualization": (
                partial(class_visualization, model, classes, steps=steps),
                partial(reference_class_visualization, model, net, classes, steps),
            ),
            "inversion relu_1 (adam)": (
                partial(invert, model, images[:n], "relu_1", steps=steps, optimizer="adam"),
                partial(reference_inversion, model, net, model.prepare(images[:n]), 2, steps),
            ),
        }
        for name, (ours, reference) in cases.items():
            t_ours, t_ref = paired_seconds(ours, reference, repeats)
            rows.append({
                "what": f"{name}, {steps} steps", "batch": n,
                "bridge it/s": round(steps / t_ours, 1),
                "pure torch it/s": round(steps / t_ref, 1),
                "overhead %": round(100 * (t_ours / t_ref - 1), 1),
            })  # fmt: skip
    return rows


def gradient_step_rows(
    model: Any, net: Callable[..., Any], images: np.ndarray, batches: tuple[int, ...], repeats: int
) -> list[dict]:
    """Forward to the objective and backward to the input, bridge against twin: the class
    score of class 0 and the relu_1 feature error (the two techniques' gradients)."""
    import torch

    from cnnviz.synthesis.base import bridge

    module = bridge(model)

    def step(batch: Any, objective: Callable[[Any], Any]) -> Callable[[], Any]:
        def run() -> Any:
            x = batch.clone().requires_grad_(True)
            (grad,) = torch.autograd.grad(objective(x).sum(), x)
            return grad

        return run

    def tapped(x: Any, name: str) -> Any:
        return module(x, taps=[name], outputs=False)[name]

    rows = []
    for n in batches:
        batch = torch.from_numpy(model.prepare(images[:n]))
        with torch.no_grad():
            goal = net(batch, 2)
        cases = {
            "class score": (
                step(batch, lambda x: tapped(x, "logits")[:, 0]),
                step(batch, lambda x: net(x)[:, 0]),
            ),
            "relu_1 feature error": (
                step(batch, lambda x, goal=goal: (tapped(x, "relu_1") - goal).pow(2).sum()),
                step(batch, lambda x, goal=goal: (net(x, 2) - goal).pow(2).sum()),
            ),
        }
        for name, (ours, reference) in cases.items():
            t_ours, t_ref = paired_seconds(ours, reference, repeats)
            rows.append({
                "what": f"gradient step: {name}", "batch": n,
                "bridge it/s": round(1 / t_ours, 1),
                "pure torch it/s": round(1 / t_ref, 1),
                "overhead %": round(100 * (t_ours / t_ref - 1), 1),
            })  # fmt: skip
    return rows
