"""RISE and KernelSHAP throughput on a ResNet-18-like network (torch, exported to ONNX,
224 x 224, one image): masked images scored per second by ours (masks made, blended and
scored in chunks of the engine's memory budget) vs the raw onnxruntime forward of as many
images at the same batch size (the floor: overhead %), and KernelSHAP vs Captum's
``KernelShap`` on the same torch model in the same run, fed the same superpixels, fill and
coalitions (so the maps must agree too; KernelSHAP explains the class logit, a Neuron target,
since a random network's probabilities barely move and float32 noise would swamp them).

Agreement: Captum fits its linear model in float32 (its samples are cast before
scikit-learn), which at 49 segments and 128 samples (condition number ~6e3 with the 1e6
endpoint weights) leaves ~1e-3 relative; ours matched a float64 fit of the torch model's own
float32 scores to 3e-6 (2026-12 check), and equals Captum to 3e-6 on the tests' tiny net.

Timing: interleaved best-of-N (``timing.interleaved_best``); the superpixels are cut once
beforehand and given to both KernelSHAPs (Captum takes a feature mask)."""

from __future__ import annotations

from typing import Any

import numpy as np
from occlusion import _export, resnet18_like
from timing import interleaved_best


def run(quick: bool = False) -> list[dict]:
    try:
        import torch
        from captum.attr import KernelShap
    except ImportError:
        return [{"note": "torch and captum are needed for this suite"}]
    import onnxruntime as ort

    from cnnviz.attribution.kernel_shap import kernel_shap, shapley_coalitions
    from cnnviz.attribution.perturbation import segment_batch
    from cnnviz.attribution.rise import rise
    from cnnviz_core import Model
    from cnnviz_core.targets import Neuron

    torch.manual_seed(0)
    torch.set_num_threads(2)
    net = resnet18_like(torch).eval()
    proto = _export(torch, net)
    model = Model(proto, name="resnet18-like", preprocess="imagenet")
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    target = int(model.scores(x).argmax())
    logit = Neuron(model.output_names[0], target)
    masks, samples, rounds = (128, 128, 1) if quick else (1000, 500, 3)
    batch = min(model.max_batch, masks, samples)  # the chunk our methods use by default
    labels = segment_batch(model, x, 49, 10.0, "slic")[0]
    segments = int(labels.max()) + 1
    coalitions = shapley_coalitions(segments, samples, seed=0)

    session = ort.InferenceSession(proto, providers=["CPUExecutionProvider"])
    chunk = np.random.default_rng(1).standard_normal((batch, 3, 224, 224)).astype(np.float32)

    def raw(count: int):
        def forward() -> None:
            for start in range(0, count, batch):
                session.run(None, {"image": chunk[: min(batch, count - start)]})

        return forward

    results: dict[str, Any] = {}

    def ours_rise() -> None:
        results["rise"] = rise(model, x, target, masks=masks)

    def ours_kernel_shap() -> None:
        results["ours"] = kernel_shap(model, x, logit, segments=labels, samples=samples, fill=0.0)

    def drawn(original, **kwargs):
        for row in coalitions:
            yield torch.from_numpy(row[None].astype(np.int64))

    captum = KernelShap(net)
    captum.perturb_func = drawn  # the same coalitions as ours
    mask = torch.from_numpy(labels)[None, None].expand(1, 3, 224, 224)

    def captum_kernel_shap() -> None:
        with torch.no_grad():
            results["captum"] = captum.attribute(
                torch.from_numpy(x), baselines=0.0, target=target, n_samples=samples,
                feature_mask=mask, perturbations_per_eval=batch, return_input_shape=False,
            )  # fmt: skip

    t = interleaved_best(
        {
            "rise": ours_rise,
            "raw rise": raw(masks + 1),  # + the unmasked score RISE reports
            "kernelshap": ours_kernel_shap,
            "raw kernelshap": raw(samples),
            "captum": captum_kernel_shap,
        },
        rounds,
    )
    ours_phi = results["ours"].extras["coefficients"][0]
    theirs_phi = results["captum"].numpy().ravel()
    diff = float(np.abs(ours_phi - theirs_phi).max() / np.abs(theirs_phi).max())

    def rate(count: int, seconds: float) -> float:
        return round(count / seconds, 1)

    return [
        {"method": "cnnviz RISE", "masked images": masks, "batch": batch,
         "seconds": round(t["rise"], 2), "masked img/s": rate(masks, t["rise"]),
         "overhead vs raw ORT": f"{100 * (t['rise'] / t['raw rise'] - 1):.1f} %"},
        {"method": "raw onnxruntime (RISE's count)", "masked images": masks + 1,
         "batch": f"{batch} (engine max_batch {model.max_batch})",
         "seconds": round(t["raw rise"], 2), "masked img/s": rate(masks + 1, t["raw rise"])},
        {"method": "cnnviz KernelSHAP", "masked images": samples, "batch": batch,
         "seconds": round(t["kernelshap"], 2), "masked img/s": rate(samples, t["kernelshap"]),
         "overhead vs raw ORT": f"{100 * (t['kernelshap'] / t['raw kernelshap'] - 1):.1f} %",
         "speed vs Captum": f"{t['captum'] / t['kernelshap']:.2f}x",
         "max |diff| / max |phi|": f"{diff:.1e}"},
        {"method": "raw onnxruntime (KernelSHAP's count)", "masked images": samples,
         "batch": batch, "seconds": round(t["raw kernelshap"], 2),
         "masked img/s": rate(samples, t["raw kernelshap"])},
        {"method": "Captum KernelShap (torch eager)", "masked images": samples, "batch": batch,
         "seconds": round(t["captum"], 2), "masked img/s": rate(samples, t["captum"])},
    ]  # fmt: skip


if __name__ == "__main__":
    import sys

    from table import print_table

    print_table(run(quick="--quick" in sys.argv))
