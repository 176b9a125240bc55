"""GradientSHAP (Lundberg & Lee 2017, "A Unified Approach to Interpreting Model Predictions";
expected gradients, Erion et al. 2021), as Captum's ``GradientShap``.

For each image x and each of ``n_samples`` draws: a baseline b from a distribution, Gaussian
noise e (``stdevs``) and a point t uniform in [0, 1]; with x' = x + e, the gradient at
``t x' + (1 - t) b`` times ``(x' - b)``; the map is the mean over the draws. It estimates
the SHAP values when the features are independent and the model linear between baselines
and input; summed, the attributions approach ``f(x) - E_b[f(b)]`` (``metrics``).

Draws are seeded per image by its content (:func:`gradient_shap_draws` makes them again), so
an image gets the same draws alone or in any batch. Gradients come from the engine
(:func:`cnnviz_core.backward.gradients`) in batches. Shape convention: (N, C, H, W).
"""

from __future__ import annotations

import zlib
from typing import Any

import numpy as np

from cnnviz_core import InputError, Model
from cnnviz_core.backward import gradients
from cnnviz_core.targets import TargetLike, target_scores

from .base import Attribution, Images, make_attribution
from .integrated_gradients import make_baseline

#: named baseline distributions (besides an array of baselines)
BASELINES = ("uniform", "zeros", "black")


def baseline_distribution(
    model: Model, shape: tuple[int, ...], baselines: str | np.ndarray, count: int, seed: int
) -> np.ndarray:
    """(B, C, H, W) float32 baselines to draw from: ``uniform`` (``count`` images of uniform
    random pixels 0..255, preprocessed, seeded), ``zeros`` (zero in the preprocessed space),
    ``black`` (black pixels, preprocessed), or an array (B, C, H, W) or (C, H, W).

    Raises:
        InputError: an unknown name or an array of another shape.
    """
    c, h, w = shape
    if isinstance(baselines, str):
        if baselines == "uniform":
            if count < 1:
                raise InputError(f"baseline_count must be >= 1; got {count}")
            rng = np.random.default_rng(seed)
            pixels = rng.integers(0, 256, (count, h, w, 3), dtype=np.uint8)
            return model.prepare(list(pixels))
        if baselines in ("zeros", "black"):
            return make_baseline(model, np.zeros((1, c, h, w), np.float32), baselines)
        raise InputError(f"unknown baselines {baselines!r}; choose one of {BASELINES} or an array")
    array = np.asarray(baselines, np.float32)
    if array.shape == (c, h, w):
        array = array[None]
    if array.ndim != 4 or array.shape[1:] != (c, h, w) or len(array) < 1:
        raise InputError(
            f"baselines must have shape (B, {c}, {h}, {w}) or ({c}, {h}, {w}); got {array.shape}"
        )
    return np.ascontiguousarray(array)


def gradient_shap_draws(
    image: np.ndarray, n_baselines: int, n_samples: int, seed: int = 0, noise: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """One image's draws: baseline indices (n,) int64, points t (n,) float32 in [0, 1), and
    standard normal noise (n, C, H, W) float32 (None when ``noise`` is False), from a
    generator seeded by ``seed`` and the image's bytes."""
    rng = np.random.default_rng([seed, zlib.crc32(np.ascontiguousarray(image).tobytes())])
    index = rng.integers(0, n_baselines, n_samples)
    points = rng.random(n_samples).astype(np.float32)
    normal = rng.standard_normal((n_samples, *image.shape), dtype=np.float32) if noise else None
    return index, points, normal


def gradient_shap(
    model: Model,
    images: Images,
    target: TargetLike | list = None,
    *,
    baselines: str | np.ndarray = "uniform",
    baseline_count: int = 16,
    n_samples: int = 32,
    stdevs: float = 0.0,
    seed: int = 0,
    batch_size: int = 64,
) -> Attribution:
    """GradientSHAP maps, (N, H, W) (attributions summed over channels; signed).

    Args:
        model: the model.
        images: images or a preprocessed (N, C, H, W) batch.
        target: as for :func:`~.saliency.saliency` (None: predicted class); class targets
            explain the class score before softmax.
        baselines: the distribution baselines are drawn from: ``uniform``, ``zeros``,
            ``black`` or an array (see :func:`baseline_distribution`).
        baseline_count: how many images the ``uniform`` distribution holds.
        n_samples: draws per image (Captum's ``n_samples``).
        stdevs: standard deviation of the Gaussian noise added to the input, in the
            preprocessed space (Captum's ``stdevs``; 0: none).
        seed: seed of the draws and of the ``uniform`` baselines.
        batch_size: points per forward/backward pass.

    Returns:
        Signed (N, H, W) maps; ``extras``: ``attributions`` (N, C, H, W) and ``baselines``
        (B, C, H, W); ``metrics``: ``sum`` of the attributions and ``expected_delta``
        (f(x) minus the mean of f over the drawn baselines) per image.
    """
    if n_samples < 1 or batch_size < 1 or stdevs < 0:
        raise InputError(
            "gradient_shap needs n_samples >= 1, batch_size >= 1 and stdevs >= 0; got "
            f"n_samples={n_samples}, batch_size={batch_size}, stdevs={stdevs}"
        )
    batch = model.prepare(images)
    n = len(batch)
    targets, f_x = target_scores(model, batch, target)  # one forward: targets and f(x)
    base = baseline_distribution(model, batch.shape[1:], baselines, baseline_count, seed)
    draws = [
        gradient_shap_draws(batch[i], len(base), n_samples, seed, stdevs > 0) for i in range(n)
    ]
    index = np.stack([d[0] for d in draws]) if n else np.zeros((0, n_samples), np.int64)
    where = np.stack([d[1] for d in draws]) if n else np.zeros((0, n_samples), np.float32)
    noise = [np.float32(stdevs) * d[2] for d in draws if d[2] is not None]
    total = np.zeros(batch.shape, np.float64)
    pairs = [(i, j) for i in range(n) for j in range(n_samples)]  # image-major
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        rows, cols = np.array(chunk).T
        noisy = batch[rows] + np.stack([noise[i][j] for i, j in chunk]) if noise else batch[rows]
        b = base[index[rows, cols]]
        t = where[rows, cols][:, None, None, None]
        points = t * noisy + (np.float32(1) - t) * b  # Captum's _scale_input
        result = gradients(model, points, [targets[i] for i, _ in chunk])
        contribution = (noisy - b) * result.grads[model.input_name]
        for row, (i, _) in enumerate(chunk):
            total[i] += contribution[row]
    attributions = total / n_samples
    base_values = model.run(base, taps=sorted({t.tensor for t in targets}), outputs=False)
    expected = [
        float(t.values(base_values[t.tensor])[index[i]].mean()) for i, t in enumerate(targets)
    ]
    options: dict[str, Any] = {
        "baselines": baselines if isinstance(baselines, str) else "array",
        "n_samples": n_samples,
        "stdevs": stdevs,
        "seed": seed,
    }
    return make_attribution(
        attributions.sum(axis=1),
        "gradientshap",
        targets,
        options,
        model,
        batch,
        gradients=True,
        signed=True,
        metrics={
            "sum": attributions.reshape(n, -1).sum(axis=1).tolist(),
            "expected_delta": (f_x - np.array(expected)).tolist(),
        },
        extras={"attributions": attributions.astype(np.float32), "baselines": base},
    )


__all__ = ["BASELINES", "baseline_distribution", "gradient_shap", "gradient_shap_draws"]
