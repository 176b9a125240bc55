"""SmoothGrad (Smilkov et al. 2017, "SmoothGrad: removing noise by adding noise"), by
composition: ``smooth(method)`` is a method that averages ``method``'s maps over noisy
copies of each image (batches (N, C, H, W), maps as ``method``'s).

    smooth_saliency = smooth(saliency, n=25)  # sigma="auto": chosen per image
    result = smooth_saliency(model, images, target="star")
    result.options["sigma_chosen"]  # e.g. [0.05]

``sigma="auto"`` (the default) picks the noise per image: the paper's 10-20 % of the input
range is too much for some models (SqueezeNet 1.1 classifies most copies of a photo at
sigma 0.15 as other classes, and the maps of two classes in it become alike), so the
largest sigma of :data:`AUTO_SIGMAS` whose noisy copies still keep the model's clean
decision is used (:func:`auto_sigma`).
"""

from __future__ import annotations

import functools
import math
import numbers
import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cnnviz_core import InputError, Model
from cnnviz_core.preprocess import ImageLike
from cnnviz_core.targets import TargetLike, resolve_targets

from .base import Attribution, Images, Method, make_attribution, prepare
from .saliency import saliency

#: the sigmas ``sigma="auto"`` tries, largest first: the paper's range (10-20 % of the
#: input range) and below
AUTO_SIGMAS: tuple[float, ...] = (0.2, 0.15, 0.1, 0.05, 0.025)
#: noisy probe copies per image (the image's first draws of its own seeded noise)
AUTO_PROBES = 8
#: the share of probes that must keep the clean top-1 class
AUTO_KEEP = 0.5
#: the sigma used when the rule cannot check the decision (no class-score output)
UNCHECKED_SIGMA = 0.15
#: the rule, as the results record it
AUTO_RULE = (
    f"auto: largest of ({', '.join(f'{s:g}' for s in AUTO_SIGMAS)}) keeping the clean top-1 "
    f"class in >= {AUTO_KEEP:.0%} of {AUTO_PROBES} noisy copies"
)

Sigma = float | str
"""A sigma option: ``"auto"`` or the noise std as a fraction of the input range."""


def sigma_value(value: Any) -> Sigma:
    """``sigma=`` checked: ``"auto"`` or a finite number >= 0 (a string such as ``"0.1"``
    is read as one: this is also the ``--sigma`` flag's parser).

    Raises:
        InputError: anything else (one line naming the parameter and what to pass).
    """
    number: float | None = None
    if isinstance(value, str):
        word = value.strip().lower()
        if word == "auto":
            return "auto"
        try:
            number = float(word)
        except ValueError:
            number = None
    elif isinstance(value, numbers.Real) and not isinstance(value, bool):
        number = float(value)
    if number is None or not math.isfinite(number) or number < 0:
        raise InputError(
            f"sigma= is 'auto' or the noise std as a fraction of the input range (a number "
            f">= 0 such as 0.1); got {value!r}"
        )
    return number


@dataclass(frozen=True)
class SigmaChoice:
    """What ``sigma="auto"`` chose for each image of a batch (:func:`auto_sigma`).

    Attributes:
        sigmas: the sigma used per image.
        kept: per image, the share of the probe copies at that sigma whose top-1 class is
            the clean image's (None: not checked, the output is no class-score vector).
        tried: per image, every sigma probed (ladder order) -> its kept share.
        rule: the rule (:data:`AUTO_RULE`).
        notes: one line per image the rule could not satisfy or check (empty: none).
    """

    sigmas: list[float]
    kept: list[float | None]
    tried: list[dict[float, float]]
    rule: str = AUTO_RULE
    notes: list[str] = field(default_factory=list)


def _noise(batch: np.ndarray, count: int, seed: int) -> np.ndarray:
    """(N, count, C, H, W) float32 standard normal, seeded per image by its content (an
    image gets the same noise alone or in any batch; the first draws of a longer stream
    are the draws of a shorter one)."""
    if not len(batch):
        return np.zeros((0, count, *batch.shape[1:]), np.float32)
    return np.stack(
        [
            np.random.default_rng([seed, zlib.crc32(image.tobytes())]).standard_normal(
                (count, *batch.shape[1:]), dtype=np.float32
            )
            for image in batch
        ]
    )


def _scale(model: Model, sigma: float) -> np.ndarray:
    """(C, 1, 1) float32: the noise std per channel, sigma x the input range."""
    return (model.preprocess.span * sigma).astype(np.float32)[:, None, None]


def _choose(model: Model, batch: np.ndarray, noise: np.ndarray, clean: np.ndarray) -> SigmaChoice:
    """The auto rule on ``batch`` given its noise (N, >= AUTO_PROBES, C, H, W) and its clean
    score tensor ``clean`` (N, ...): one forward run per ladder rung, over the images not
    yet settled."""
    count = len(batch)
    per_image = tuple(clean.shape[1:])
    if len([d for d in per_image if d != 1]) != 1 or int(np.prod(per_image)) < 2:
        shape = "x".join(str(d) for d in ("N", *per_image))
        note = (
            f"sigma auto: the output {model.score_tensor!r} is {shape}, not one score per "
            f"class, so the rule cannot check the decision; used {UNCHECKED_SIGMA:g} "
            "unchecked (pass sigma= a number to choose)"
        )
        return SigmaChoice(
            [UNCHECKED_SIGMA] * count,
            [None] * count,
            [{} for _ in range(count)],
            f"{AUTO_RULE}: not checkable here, {UNCHECKED_SIGMA:g} used",
            [note] if count else [],
        )
    top = clean.reshape(count, -1).argmax(axis=1)
    sigmas: list[float] = [AUTO_SIGMAS[-1]] * count
    kept: list[float | None] = [None] * count
    tried: list[dict[float, float]] = [{} for _ in range(count)]
    pending = list(range(count))
    for sigma in AUTO_SIGMAS:
        if not pending:
            break
        rows = np.array(pending)
        probes = batch[rows, None] + noise[rows, :AUTO_PROBES] * _scale(model, sigma)
        probes = probes.astype(np.float32).reshape(-1, *batch.shape[1:])
        scores = model.run(probes, taps=[model.score_tensor], outputs=False)[model.score_tensor]
        labels = scores.reshape(len(rows), AUTO_PROBES, -1).argmax(axis=2)
        shares = (labels == top[rows, None]).mean(axis=1)
        for i, share in zip(pending, shares):
            tried[i][sigma] = float(share)
            kept[i] = float(share)
            sigmas[i] = sigma
        pending = [i for i, share in zip(pending, shares) if share < AUTO_KEEP]
    notes = [
        f"sigma auto, image {i}: no sigma of ({', '.join(f'{s:g}' for s in AUTO_SIGMAS)}) "
        f"keeps the clean top-1 class in >= {AUTO_KEEP:.0%} of {AUTO_PROBES} noisy copies "
        f"(kept {kept[i]:.0%} at {AUTO_SIGMAS[-1]:g}); used {AUTO_SIGMAS[-1]:g}: the "
        "decision is fragile to noise"
        for i in pending
    ]
    return SigmaChoice(sigmas, kept, tried, AUTO_RULE, notes)


def auto_sigma(
    model: Model, images: ImageLike | list[ImageLike] | np.ndarray, *, seed: int = 0
) -> SigmaChoice:
    """The sigma ``smooth(..., sigma="auto", seed=seed)`` uses for each image: the largest
    of :data:`AUTO_SIGMAS` at which at least :data:`AUTO_KEEP` of :data:`AUTO_PROBES` noisy
    copies (the image's first seeded noise draws, the ones SmoothGrad averages over) keep
    the clean image's top-1 class; the smallest, with a note, when none does; and
    :data:`UNCHECKED_SIGMA`, with a note, for a model whose output is no class-score vector.
    Forward runs only (one per sigma tried). A fixed sigma for :func:`export_explainer`
    can be read from a sample image here."""
    batch = model.prepare(images)
    clean = model.run(batch, taps=[model.score_tensor], outputs=False)[model.score_tensor]
    return _choose(model, batch, _noise(batch, AUTO_PROBES, seed), clean)


def smooth(
    method: Method,
    *,
    n: int = 25,
    sigma: Sigma = "auto",
    seed: int = 0,
    batch_size: int = 64,
) -> Method:
    """A method that averages ``method`` over ``n`` noisy copies of each image.

    Args:
        method: any technique with the common contract.
        n: noisy samples per image.
        sigma: noise standard deviation as a fraction of the input range (Smilkov et al.:
            sigma / (x_max - x_min), the paper's 10-20%), the range being what the model's
            preprocessing makes of pixel values 0-255 (:attr:`Preprocess.span`, per
            channel): 0.15 is 38 levels on a Caffe BGR 0-255 model as on a 0-1 model, and a
            flat or low-contrast image gets the same noise as a photo. ``"auto"`` (default):
            per image, the largest of 0.2, 0.15, 0.1, 0.05, 0.025 whose noisy copies keep
            the model's clean top-1 class (:func:`auto_sigma`); the result's options record
            ``sigma_chosen``, ``sigma_kept``, ``sigma_tried`` and ``sigma_rule`` (metrics:
            ``sigma_chosen``, ``sigma_kept`` and ``sigma_note`` when the rule could not be
            met or checked).
        seed: seed of the noise (deterministic; each image's noise depends on the seed and
            the image only, so batches and single images agree).
        batch_size: most noisy images run through ``method`` at once.

    Returns:
        ``smoothed(model, images, target=None, **options) -> Attribution``; options go to
        ``method``. Targets resolve once on the clean images (None: the predicted class).
    """
    sigma = sigma_value(sigma)
    if n < 1 or batch_size < 1:
        raise InputError(f"smooth needs n >= 1 and batch_size >= 1; got {n}, {batch_size}")
    name = getattr(method, "__name__", "method")

    @functools.wraps(method)
    def smoothed(
        model: Model, images: Images, target: TargetLike | list = None, **options: Any
    ) -> Attribution:
        choice: SigmaChoice | None = None
        if sigma == "auto":
            batch = model.prepare(images)
            tensor = model.score_tensor
            clean = model.run(batch, taps=[tensor], outputs=False)
            targets = resolve_targets(model, batch, target, clean)
            noise = _noise(batch, max(n, AUTO_PROBES), seed)
            choice = _choose(model, batch, noise, clean[tensor])
            scales = np.array([_scale(model, s) for s in choice.sigmas], np.float32)
            scales = scales.reshape(len(batch), batch.shape[1], 1, 1)
            noisy = batch[:, None] + noise[:, :n] * scales[:, None]
        else:
            batch, targets = prepare(model, images, target)
            noisy = batch[:, None] + _noise(batch, n, seed) * _scale(model, float(sigma))
        noisy = noisy.astype(np.float32).reshape(-1, *batch.shape[1:])
        repeated = [t for t in targets for _ in range(n)]
        parts = [
            method(model, noisy[s : s + batch_size], repeated[s : s + batch_size], **options)
            for s in range(0, len(noisy), batch_size)
        ]
        maps = np.concatenate([p.maps for p in parts])
        maps = maps.reshape(len(batch), n, *maps.shape[1:]).mean(axis=1)
        first = parts[0]
        recorded = {"n": n, "sigma": sigma, "seed": seed, "method": first.method, **first.options}
        if choice is not None:
            recorded.update(
                sigma_rule=choice.rule,
                sigma_chosen=choice.sigmas,
                sigma_kept=choice.kept,
                sigma_tried=choice.tried,
            )
        result = make_attribution(
            maps,
            f"smoothgrad({first.method})",
            targets,
            recorded,
            model,
            batch,
            signed=first.signed,
            gradients=bool(first.metrics.get("straight_through")),
        )
        if choice is not None:
            result.metrics.update(sigma_chosen=choice.sigmas, sigma_kept=choice.kept)
            if choice.notes:
                result.metrics["sigma_note"] = " | ".join(choice.notes)
        return result

    smoothed.__name__ = f"smooth_{name}"
    smoothed.__qualname__ = smoothed.__name__
    return smoothed


def smoothgrad(
    model: Model,
    images: Images,
    target: TargetLike | list = None,
    *,
    samples: int = 25,
    sigma: Sigma = "auto",
    seed: int = 0,
) -> Attribution:
    """SmoothGrad of the saliency map: :func:`smooth` (``n=samples``) of
    :func:`~.saliency.saliency`, the technique as the registry and ``cnnviz explain`` run it.

    Args:
        samples: noisy copies per image (25).
        sigma: ``"auto"`` (default: per image, the largest of 0.2 ... 0.025 keeping the
            model's decision, see :func:`auto_sigma`) or the noise std as a fraction of the
            input range (the paper's 0.1-0.2).
        seed: seed of the noise.
    """
    return smooth(saliency, n=samples, sigma=sigma, seed=seed)(model, images, target)


__all__ = [
    "AUTO_KEEP",
    "AUTO_PROBES",
    "AUTO_RULE",
    "AUTO_SIGMAS",
    "UNCHECKED_SIGMA",
    "Sigma",
    "SigmaChoice",
    "auto_sigma",
    "sigma_value",
    "smooth",
    "smoothgrad",
]
