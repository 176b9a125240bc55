"""Incremental and approximate occlusion (Nakandala, Kumar & Papakonstantinou, SIGMOD 2019)
against the naive floor, in one run: 224x224, window 16, stride 8 (27 x 27 = 729 windows),
on the VGG-16-like and ResNet-18-like networks of :mod:`models` (random seeded weights) and
SqueezeNet 1.1 (../shared/data, when present), one photo, its predicted class, fill 0.

Modes: naive batched onnxruntime (one full forward per window; timed on a subset of the
windows where a full run is long, extrapolated per window, said in the row), exact
incremental (``IncrementalOcclusion``), and the approximate ones: projective-field
thresholding (``tau``), adaptive drill-down (exact scorer), bf16 forwards (torch bridge),
and drill-down composed with tau and with bf16. For each: seconds, speed-up vs naive, the
FLOP ceiling of the speed-up (naive FLOPs / FLOPs computed, from the engine's plan; bf16
computes the naive FLOPs in a cheaper precision), and against the exact map: Pearson
correlation, deletion-AUC difference (Petsiuk et al. 2018, 8 steps) and max |diff| / max |map|.
"""

from __future__ import annotations

import time
from pathlib import Path

import models
import numpy as np
from timing import best_within

WINDOW, STRIDE = 16, 8
#: windows the naive floor is timed on per network (None: all of them)
NAIVE_SUBSET = {"vgg16": 54, "resnet18": 243, "squeezenet": None}
PHOTO = Path(__file__).resolve().parents[2] / "shared" / "data" / "photos" / "both.png"
TAU, TAU_LOW = 0.5, 0.4
#: one halving: the coarse pass runs stride 16 = the window, so its windows tile the image
#: (at stride 32 a 16-pixel window leaves gaps the interpolation cannot see: corr ~0.87)
LEVELS, REFINE = 1, 0.05


def _image(model, name: str) -> np.ndarray:
    """One (1, 3, 224, 224) input: the photo (the model's preprocessing for SqueezeNet,
    ImageNet-style standardisation for the generated networks), else smooth noise."""
    if PHOTO.exists():
        if name == "squeezenet":
            return model.prepare([PHOTO])
        from PIL import Image

        rgb = np.asarray(Image.open(PHOTO).convert("RGB").resize((224, 224)), np.float32)
        x = (rgb / 255 - 0.45) / 0.225
        return np.ascontiguousarray(x.transpose(2, 0, 1)[None], np.float32)
    rng = np.random.default_rng(0)
    coarse = rng.standard_normal((1, 3, 14, 14)).astype(np.float32)
    return np.ascontiguousarray(coarse.repeat(16, axis=2).repeat(16, axis=3))


def _naive_seconds(model, x: np.ndarray, positions: np.ndarray, subset: int | None) -> float:
    """Seconds of the naive method for all ``positions``, timed on an evenly spread subset:
    the best of runs while they total under 3 s (at least one; it is called twice, before and
    after the other modes)."""
    from cnnviz_core.incremental import NaiveOcclusion

    pick = positions
    if subset is not None and subset < len(positions):
        pick = positions[np.linspace(0, len(positions) - 1, subset).astype(np.int64)]
    scorer = NaiveOcclusion(model, WINDOW)
    zeros = np.asarray(0.0, np.float32)  # the fill (a 0-d array: as the number 0.0)
    scorer.scores(x[0], pick[:2], zeros)  # warm-up
    _, best = best_within(lambda: scorer.scores(x[0], pick, zeros), min_runs=1)
    return best * len(positions) / len(pick)


def _drill(model, x: np.ndarray, target: int, scorer, levels: int):
    """Occlusion through ``scorer`` by drill-down (levels 0: every window), and its seconds:
    the best of at least two runs (the first run of a plan pays onnxruntime's first run of
    each crop shape: 1.5x the steady time on VGG-16), and of up to ten while they total under
    3 s (a 0.2 s run is easily disturbed on a shared machine)."""
    from cnnviz.attribution.drilldown import drilldown

    return best_within(
        lambda: drilldown(model, x, target, window=WINDOW, stride=STRIDE, fill=0.0,
                          levels=levels, refine=REFINE, scorer=scorer),
        min_runs=2,
    )  # fmt: skip


def run(quick: bool = False) -> list[dict]:
    try:
        import torch
    except ImportError:
        return [{"note": "torch is needed to export the benchmark networks"}]
    from cnnviz.attribution.perturbation import window_positions
    from cnnviz.attribution.scoring import approximation_error, deletion
    from cnnviz_core.incremental import IncrementalOcclusion, NaiveOcclusion
    from cnnviz_core.torch_bridge.precision import Bf16Occlusion

    torch.set_num_threads(2)
    rows: list[dict] = []
    networks = models.available()
    if quick:
        networks = [n for n in networks if n != "vgg16"]
    for name in networks:
        model = models.load(name)
        x = _image(model, name)
        target = int(model.scores(x)[0].argmax())
        tops, lefts = window_positions((224, 224), (WINDOW, WINDOW), (STRIDE, STRIDE))
        positions = np.stack(np.meshgrid(tops, lefts, indexing="ij"), -1).reshape(-1, 2)
        total = len(positions)
        subset = NAIVE_SUBSET.get(name)
        if quick and subset is None:
            subset = 243
        naive = [_naive_seconds(model, x, positions, subset)]

        exact_scorer = IncrementalOcclusion(model, WINDOW)
        start = time.perf_counter()  # sessions built once per model, size and window grid
        exact_scorer.plan(tuple(x.shape[1:]), positions)
        t_plan = time.perf_counter() - start
        exact, t_exact = _drill(model, x, target, exact_scorer, 0)
        flops_exact = exact_scorer.stats["flops_ratio"]
        auc_exact = float(deletion(model, exact, x, steps=8).auc.mean())

        modes: list[tuple[str, IncrementalOcclusion | NaiveOcclusion, int]] = []
        tau_scorer = IncrementalOcclusion(model, WINDOW, tau=TAU)
        tau_scorer.plan(tuple(x.shape[1:]), positions)
        bf16_scorer = Bf16Occlusion(model, WINDOW)
        zeros = np.asarray(0.0, np.float32)
        bf16_scorer.scores(x[0], positions[:2], zeros)  # warm-up (and the conversion is done)
        modes.append((f"approx: tau={TAU}", tau_scorer, 0))
        modes.append((f"approx: drill-down (levels {LEVELS}, top {REFINE:.0%})", exact_scorer,
                      LEVELS))  # fmt: skip
        modes.append(("approx: bf16 (torch bridge)", bf16_scorer, 0))
        modes.append(("approx: drill-down + bf16", bf16_scorer, LEVELS))
        modes.append((f"approx: drill-down + tau={TAU}", tau_scorer, LEVELS))
        low_scorer = IncrementalOcclusion(model, WINDOW, tau=TAU_LOW)
        low_scorer.plan(tuple(x.shape[1:]), positions)
        modes.append((f"approx: drill-down + tau={TAU_LOW}", low_scorer, LEVELS))
        results = []
        for label, scorer, levels in modes:
            attribution, seconds = _drill(model, x, target, scorer, levels)
            results.append((label, scorer, attribution, seconds))
        naive.append(_naive_seconds(model, x, positions, subset))  # interleaved: best of 2
        t_naive = min(naive)
        note = f"timed on {subset} of {total} windows, per window x {total}" if subset else ""
        rows.append({"model": name, "mode": "naive (onnxruntime, batched)", "windows": total,
                     "seconds": round(t_naive, 2), "speed-up": "1.00x",
                     "FLOP ceiling": "1.00x", "note": note})  # fmt: skip
        rows.append({"model": name, "mode": "exact incremental", "windows": total,
                     "seconds": round(t_exact, 2), "speed-up": f"{t_naive / t_exact:.2f}x",
                     "FLOP ceiling": f"{flops_exact:.2f}x", "map corr": "1 (reference)",
                     "deletion AUC": round(auc_exact, 4),
                     "note": f"switch to full at {exact_scorer.stats.get('switch')}; "
                             f"planning {t_plan:.1f} s once"})  # fmt: skip
        for label, scorer, attribution, seconds in results:
            error = approximation_error(attribution, exact)
            auc = float(deletion(model, attribution, x, steps=8).auc.mean())
            scored = int(attribution.metrics["positions_scored"][0])
            per_window = scorer.stats.get("flops_ratio", 1.0)
            ceiling = per_window * total / scored
            rows.append({
                "model": name, "mode": label, "windows": scored, "seconds": round(seconds, 2),
                "speed-up": f"{t_naive / seconds:.2f}x", "FLOP ceiling": f"{ceiling:.2f}x",
                "map corr": round(error["map_correlation"], 4),
                "deletion AUC": round(auc, 4), "AUC diff": f"{auc - auc_exact:+.4f}",
                "max |diff| rel": f"{error['max_abs_diff_rel']:.1e}",
                "note": "the naive FLOPs, in bf16" if "bf16" in label else "",
            })  # fmt: skip
    return rows


if __name__ == "__main__":
    import sys

    from table import print_table

    print_table(run(quick="--quick" in sys.argv))
