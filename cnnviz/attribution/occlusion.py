"""Occlusion sensitivity (Zeiler & Fergus 2014, "Visualizing and Understanding Convolutional
Networks", section 4.2 and figure 7): slide a window over the image, replace it by a fill,
and record how much the target drops.

Per window position the drop ``f(x) - f(x occluded)`` is computed for the target (class
probability and logit; for a channel or neuron target, its value). The per-pixel map is the
sum of the drops of the windows covering the pixel divided by their number, exactly as
Captum's ``Occlusion`` averages overlapping windows. Window positions along an axis are
``0, s, 2s, ...`` with ``ceil((H - h) / s) + 1`` of them (the last one clipped at the edge),
as in Captum.

Engines that score the windows of an image (each an ``OcclusionScorer``):

- ``naive``: the occluded copies are built by the native kernel
  (:func:`cnnviz_core.kernels.occlusion_batch`) into one reused buffer of at most
  ``model.max_batch`` images and run through onnxruntime: one full forward per window.
- ``incremental`` (Krypton: Nakandala, Kumar and Papakonstantinou, SIGMOD 2019,
  "Incremental and Approximate Inference for Faster Occlusion-based Deep CNN
  Explanations"): only the feature-map regions a window can change are recomputed, on crops
  of the unoccluded image's cached maps, until the regions cover most of a map; the rest of
  the network then runs in full. Exact (equal to naive to float rounding); with ``tau`` the
  regions are capped (projective-field thresholding), an approximation recorded in the
  options and metrics.
- ``auto`` (default): incremental when its plan saves at least a fifth of the FLOPs (every
  CNN made of convolutions, pooling, elementwise ops, Add and Concat), else naive, silently.

Memory stays bounded whatever the number of positions. Shape convention: (N, C, H, W).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from cnnviz_core import InputError, Model, UnsupportedOpError
from cnnviz_core.incremental import IncrementalOcclusion, NaiveOcclusion, OcclusionScorer
from cnnviz_core.model import to_probabilities
from cnnviz_core.targets import TargetLike, resolve_target, score_tensor

from .base import Attribution, Images, make_attribution, prepare
from .perturbation import (
    Progress,
    cover_average,
    fill_label,
    fill_values,
    window_grid,
)
from .scoring import approximation_error

OUTPUTS = ("probability", "logit")
ENGINES = ("auto", "naive", "incremental")
#: the precisions the occluded forwards may run in (bf16: approximate, through torch)
PRECISIONS = ("fp32", "bf16")
#: ``auto`` picks the incremental engine when its plan needs at most this share of the FLOPs
AUTO_MAX_FLOP_SHARE = 0.8
#: largest occluded batch per onnxruntime call by default (also bounded by model.max_batch)
DEFAULT_BATCH = 128


def occlusion(
    model: Model,
    images: Images,
    target: TargetLike | list = None,
    *,
    window: int | Sequence[int] = 8,
    stride: int | Sequence[int] = 4,
    fill: Any = "grey",
    output: str = "logit",
    classes: Sequence[int | str] = (),
    feature_layer: str | None = None,
    feature_channel: int | None = None,
    blur_sigma: float | None = None,
    batch_size: int | None = None,
    progress: Progress | None = None,
    engine: str = "auto",
    tau: float | None = None,
    precision: str = "fp32",
    reference: Attribution | bool = False,
) -> Attribution:
    """Occlusion maps, (N, H, W): how much the target drops when a window is hidden.

    Args:
        model: the model.
        images: paths, PIL images, uint8 arrays or a preprocessed (N, C, H, W) batch.
        target: class index or label, :class:`~.targets.Channel`, :class:`~.targets.Neuron`,
            None for the predicted class, or a list of those (one per image).
        window: (h, w) of the occluding window, or an int for a square.
        stride: (sy, sx) between window positions, or an int.
        fill: ``grey`` (pixel 128), ``zeros``, ``mean`` (per-channel mean), ``blur`` or a
            number / array (see :func:`~.perturbation.fill_values`).
        output: for class targets, the map shows the ``logit`` drop (default: it does not
            saturate on confident predictions) or the ``probability`` drop (Zeiler &
            Fergus); both are in ``extras``. Channel and neuron targets
            always show the drop of their value.
        classes: more classes scored in the same pass: ``extras["class_drops"]`` holds their
            maps (N, len(classes), H, W) in ``output`` units.
        feature_layer: record per window the total activation of one channel of this layer
            (Z&F figure 7 b/c): ``extras["activation"]`` (N, Ph, Pw).
        feature_channel: that channel (default: the strongest on the unoccluded image).
        blur_sigma: sigma of the ``blur`` fill in pixels.
        batch_size: windows per batch (default: naive min(128, model.max_batch); incremental
            its own memory estimate).
        progress: called as ``progress(done, total)`` after each batch (window positions).
        engine: ``naive`` (one full forward per window), ``incremental`` (Krypton; raises
            :class:`UnsupportedOpError` naming the op when the graph cannot be run
            incrementally) or ``auto`` (incremental when it saves FLOPs, else naive).
        tau: projective-field threshold of the incremental engine (approximate, in (0, 1]):
            each changed region's side is capped at ``tau`` x its map's side. None: exact.
        precision: ``fp32`` (exact) or ``bf16`` (approximate: the occluded forwards run in
            bfloat16 through the torch bridge, needs torch; the drops are taken against the
            bf16 score of the unoccluded image so the bias cancels, and a few windows are
            re-scored in float32: ``metrics["scorer"]``).
        reference: an exact occlusion :class:`~.base.Attribution` of the same images (or True
            to compute one with the naive engine) whose error against this map goes to
            ``metrics["approximation_error"]`` (:func:`~.scoring.approximation_error`): how
            an approximate mode (``tau``, bf16) is reported.

    Returns:
        An :class:`~.base.Attribution`; ``extras``: ``probability_drop`` / ``logit_drop``
        (N, H, W; class targets), ``grid`` (the drop per window position, (N, Ph, Pw)),
        ``label`` (most probable class per position, (N, Ph, Pw)), ``positions_y`` /
        ``positions_x``, and ``activation`` / ``class_drops`` when asked for.

    Raises:
        InputError: a window larger than the image or not positive, a stride < 1, a fill of
            the wrong shape, an unknown output; TargetError: a target out of range (all
            before any occluded batch runs).
    """
    batch, targets = prepare(model, images, target)
    n, c, h, w = batch.shape
    win, step, tops, lefts = window_grid((h, w), window, stride)
    if output not in OUTPUTS:
        raise InputError(f"unknown output {output!r}; choose one of {OUTPUTS}")
    fills = fill_values(model, batch, fill, blur_sigma)
    extra_classes = [resolve_target(model, k, batch) for k in classes]
    scores_name = score_tensor(model)
    feature = model.tensor_name(feature_layer) if feature_layer is not None else None
    tapped = {t.tensor for t in targets if t.kind != "class"}
    if feature is not None:
        tapped.add(feature)
    taps = sorted(tapped)
    chunk = max(1, min(batch_size or DEFAULT_BATCH, model.max_batch))
    positions = np.stack(np.meshgrid(tops, lefts, indexing="ij"), -1).reshape(-1, 2)
    ph, pw = len(tops), len(lefts)

    # the scores are probabilities only when no Softmax input could be found
    already = model.outputs_probabilities and scores_name == model.output_names[0]

    scorer = occlusion_scorer(
        model, win, taps, (c, h, w), positions, engine=engine, tau=tau, precision=precision
    )

    def as_logits(scores: np.ndarray) -> np.ndarray:
        if already:  # "logit" drop = log-probability drop
            return np.log(np.maximum(scores, 1e-30))
        return scores

    if precision == "fp32":
        base_taps = model.run(batch, taps=[scores_name, *taps], outputs=False)
        base_scores = base_taps[scores_name].reshape(n, -1).astype(np.float64)
    else:  # the scorer's own unoccluded score (a window wholly off the image): bias cancels
        off_image = np.array([[-win[0], -win[1]]], np.int64)
        runs = [scorer.scores(batch[i], off_image, fills[i]) for i in range(n)]
        base_scores = np.concatenate([r[0] for r in runs])
        base_taps = {k: np.concatenate([r[1][k] for r in runs]) for k in runs[0][1]}
    base_logits = as_logits(base_scores)
    channels: list[int] = []
    if feature is not None:
        act = base_taps[feature]
        if act.ndim != 4:
            raise InputError(f"feature_layer {feature_layer!r} is not a (N, C, H, W) map")
        if feature_channel is None:
            channels = list(act.sum(axis=(2, 3)).argmax(axis=1))
        elif not 0 <= feature_channel < act.shape[1]:
            raise InputError(
                f"feature_channel {feature_channel} out of range: {act.shape[1]} channels"
            )
        else:
            channels = [feature_channel] * n

    total = n * len(positions)
    logit_grid = np.empty((n, len(positions)), np.float64)
    prob_grid = np.empty((n, len(positions)), np.float64)
    value_grid = np.empty((n, len(positions)), np.float64)
    label_grid = np.empty((n, len(positions)), np.int64)
    act_grid = np.empty((n, len(positions)), np.float64)
    extra_grid = np.empty((n, len(extra_classes), len(positions)), np.float64)
    probs_base = _probabilities(base_logits, already)
    # the naive engine runs min(128, max_batch) copies per call; the incremental one sizes
    # its batches from its own (much smaller) per-window memory unless told
    per_call = chunk if isinstance(scorer, NaiveOcclusion) else batch_size
    for i in range(n):
        t = targets[i]
        offset = i * len(positions)

        def report(done: int, _: int, offset: int = offset) -> None:
            if progress is not None:
                progress(offset + done, total)

        scores, out = scorer.scores(batch[i], positions, fills[i], per_call, report)
        logits = as_logits(scores)
        probs = _probabilities(logits, already)
        label_grid[i] = probs.argmax(axis=1)
        if t.kind == "class":
            k = t.index[0]
            logit_grid[i] = logits[:, k]
            prob_grid[i] = probs[:, k]
        else:
            value_grid[i] = t.values(out[t.tensor])
        for j, e in enumerate(extra_classes):
            chosen = probs if output == "probability" else logits
            extra_grid[i, j] = chosen[:, e.index[0]]
        if feature is not None:
            act_grid[i] = out[feature][:, channels[i]].sum(axis=(1, 2), dtype=np.float64)

    def average(drops: np.ndarray) -> np.ndarray:
        """(..., P) drops per position -> (..., H, W) average over covering windows."""
        grid = drops.reshape(*drops.shape[:-1], ph, pw)
        return cover_average(grid, (tops, lefts), win, (h, w))

    maps = np.empty((n, h, w), np.float32)
    grid_drop = np.empty((n, ph, pw), np.float32)
    prob_maps = np.zeros((n, h, w), np.float32)
    logit_maps = np.zeros((n, h, w), np.float32)
    for i, t in enumerate(targets):
        if t.kind == "class":
            k = t.index[0]
            pdrop = probs_base[i, k] - prob_grid[i]
            ldrop = base_logits[i, k] - logit_grid[i]
            prob_maps[i], logit_maps[i] = average(pdrop), average(ldrop)
            drop = pdrop if output == "probability" else ldrop
        else:
            drop = t.values(_row(base_taps, i)[t.tensor])[0] - value_grid[i]
        maps[i] = average(drop)
        grid_drop[i] = drop.reshape(ph, pw)
    extras: dict[str, np.ndarray] = {
        "grid": grid_drop,
        "label": label_grid.reshape(n, ph, pw),
        "positions_y": tops,
        "positions_x": lefts,
    }
    if any(t.kind == "class" for t in targets):
        extras["probability_drop"] = prob_maps
        extras["logit_drop"] = logit_maps
    if extra_classes:
        base_extra = probs_base if output == "probability" else base_logits
        idx = [e.index[0] for e in extra_classes]
        extras["class_drops"] = average(base_extra[:, idx][..., None] - extra_grid)
    if feature is not None:
        extras["activation"] = act_grid.reshape(n, ph, pw).astype(np.float32)
        extras["feature_channel"] = np.asarray(channels, np.int64)
    options = {
        "window": win,
        "stride": step,
        "fill": fill_label(fill),
        "output": output,
        "feature_layer": feature_layer,
        "engine": "naive" if isinstance(scorer, NaiveOcclusion) else "incremental",
        "tau": tau,
        "precision": precision,
        "approximate": scorer.approximate,
    }
    metrics: dict[str, Any] = {}
    stats = getattr(scorer, "stats", {})
    if stats.get("engine") == "incremental":
        metrics = {
            "flops_naive": stats["flops_naive"],
            "flops_computed": stats["flops_incremental"],
            "flop_ratio": stats["flops_ratio"],
            "full_from": stats["switch"],
        }
    if precision != "fp32":
        metrics["scorer"] = dict(stats)
    result = make_attribution(
        maps,
        "occlusion",
        targets,
        options,
        model,
        batch,
        signed=True,
        extras=extras,
        metrics=metrics,
    )
    if reference is not False:
        exact = reference
        if exact is True:
            exact = occlusion(model, batch, targets, window=win, stride=step, fill=fill,
                              output=output, blur_sigma=blur_sigma, engine="naive")  # fmt: skip
        metrics["approximation_error"] = approximation_error(result, exact, model, batch)
    return result


def occlusion_scorer(
    model: Model,
    window: tuple[int, int],
    taps: Sequence[str],
    image_chw: tuple[int, int, int],
    positions: np.ndarray,
    *,
    engine: str = "auto",
    tau: float | None = None,
    precision: str = "fp32",
) -> OcclusionScorer:
    """The scorer that maps window positions of one image to the model's outputs on the
    occluded copies, for an engine, ``tau`` and precision (see the module docstring); all
    checks happen here, before any batch runs.

    Raises:
        InputError: an unknown engine or precision, ``tau`` outside (0, 1] or with the naive
            engine, bf16 with the incremental engine or ``tau``.
        UnsupportedOpError: ``engine="incremental"`` on a graph that cannot run
            incrementally (names the op and node) or a model that runs image by image.
    """
    if engine not in ENGINES:
        raise InputError(f"unknown engine {engine!r}; choose one of {ENGINES}")
    if precision not in PRECISIONS:
        raise InputError(f"unknown precision {precision!r}; choose one of {PRECISIONS}")
    if tau is not None and (engine == "naive" or not 0 < tau <= 1):
        raise InputError(
            f"tau={tau!r}: projective-field thresholding needs engine='incremental' or 'auto' "
            "and a value in (0, 1]"
        )
    if precision == "bf16":
        if engine == "incremental" or tau is not None:
            raise InputError(
                "precision='bf16' runs whole forwards in torch: use it with engine='naive' or "
                f"'auto' and tau=None (got engine={engine!r}, tau={tau!r})"
            )
        from cnnviz_core.torch_bridge.precision import Bf16Occlusion

        return Bf16Occlusion(model, window, taps)
    if engine == "naive":
        return NaiveOcclusion(model, window, taps)
    if not model.batched:
        if engine == "incremental":
            raise UnsupportedOpError(
                f"incremental occlusion needs a batchable model; {model.name!r} runs one image "
                "at a time"
            )
        return NaiveOcclusion(model, window, taps)
    if engine == "incremental":
        scorer = IncrementalOcclusion(model, window, taps, tau=tau, strict=True)
        scorer.plan(image_chw, positions)  # raises now, naming the op
        return scorer
    scorer = IncrementalOcclusion(model, window, taps, tau=tau)
    with warnings.catch_warnings():  # auto decides silently
        warnings.simplefilter("ignore")
        plan = scorer.plan(image_chw, positions)
    if tau is not None or plan.flops_incremental <= AUTO_MAX_FLOP_SHARE * plan.flops_naive:
        return scorer
    return NaiveOcclusion(model, window, taps)


def _probabilities(logits: np.ndarray, already: bool) -> np.ndarray:
    return np.exp(logits) if already else to_probabilities(logits, False)


def _row(values: dict[str, np.ndarray], i: int) -> dict[str, np.ndarray]:
    return {k: v[i : i + 1] for k, v in values.items()}


__all__ = ["ENGINES", "OUTPUTS", "PRECISIONS", "occlusion", "occlusion_scorer"]
