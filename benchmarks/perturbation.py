"""Score-CAM, Ablation-CAM, RISE and KernelSHAP throughput on a ResNet-18-like network (torch,
exported to ONNX, 224 x 224, one image): masked images scored per second by ours (masks
made, blended and scored in chunks of the engine's memory budget) vs the raw onnxruntime
forward of as many images at the same batch size (the floor: overhead %), and KernelSHAP vs
Captum's ``KernelShap`` on the same torch model in the same run, fed the same superpixels,
fill and coalitions (so the maps must agree too; KernelSHAP explains the class logit, a
Neuron target, since a random network's probabilities barely move and float32 noise would
swamp them).

Agreement: Captum fits its linear model in float32 (its samples are cast before
scikit-learn), which at 49 segments and 128 samples (condition number ~6e3 with the 1e6
endpoint weights) leaves ~1e-3 relative; ours matched a float64 fit of the torch model's own
float32 scores to 3e-6 (2026-12 check), and equals Captum to 3e-6 on the tests' tiny net.

Score-CAM (on the last block, 512 channels: 512 masked images) vs the raw onnxruntime
forward of 513 images in the same chunks and vs torch-cam's ``ScoreCAM`` on the same torch
weights (maps compared after ReLU and min-max at the layer's 7 x 7). Ablation-CAM vs the raw
onnxruntime forward of one image plus the cut-off rest (GlobalAveragePool + Gemm) on the 512
ablated activations; no peer: pytorch-grad-cam's needs torchvision, not installable here.

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

    from cnnviz.attribution.cam import default_layer
    from cnnviz.attribution.cam_variants import ablationcam, scorecam
    from cnnviz.attribution.kernel_shap import kernel_shap, shapley_coalitions
    from cnnviz.attribution.perturbation import segment_batch
    from cnnviz.attribution.rise import rise
    from cnnviz_core import Model
    from cnnviz_core.downstream import Downstream
    from cnnviz_core.targets import Neuron

    try:
        from torchcam.methods import ScoreCAM

        has_torchcam = True
    except ImportError:  # the Score-CAM peer is optional: its row says so
        has_torchcam = False

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
    widest = max(batch, min(model.max_batch, 512))  # Score-CAM's chunk at up to 512 channels
    chunk = np.random.default_rng(1).standard_normal((widest, 3, 224, 224)).astype(np.float32)

    def raw(count: int, step: int = batch):
        def forward() -> None:
            for start in range(0, count, step):
                session.run(None, {"image": chunk[: min(step, count - start)]})

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

    # Score-CAM / Ablation-CAM on the last block (512 x 7 x 7): K masked images through the
    # whole net / K ablated activations through the rest (GlobalAveragePool + Gemm)
    layer = default_layer(model)
    channels = int(model.run(x, taps=[layer], outputs=False)[layer].shape[1])
    rest = Downstream.of(model, layer, [model.output_names[0]])
    rest_session = ort.InferenceSession(
        rest.proto.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    activations = model.run(x, taps=[layer], outputs=False)[layer]
    ablated = np.repeat(activations, min(rest.max_batch, channels), axis=0)
    full_session = ort.InferenceSession(proto, providers=["CPUExecutionProvider"])

    def raw_ablation() -> None:
        full_session.run(None, {"image": x})  # the layer's activations (one forward)
        for start in range(0, channels, rest.max_batch):
            rows = min(rest.max_batch, channels - start)
            rest_session.run(None, {rest.start: ablated[:rows]})

    def ours_scorecam() -> None:
        results["scorecam"] = scorecam(model, x, target, layer=layer)

    def ours_ablationcam() -> None:
        results["ablationcam"] = ablationcam(model, x, target, layer=layer)

    suites = {
        "rise": ours_rise,
        "raw rise": raw(masks + 1),  # + the unmasked score RISE reports
        "kernelshap": ours_kernel_shap,
        "raw kernelshap": raw(samples),
        "captum": captum_kernel_shap,
        "scorecam": ours_scorecam,
        "raw scorecam": raw(
            channels + 1, min(model.max_batch, channels)
        ),  # + the forward giving the layer's activations
        "ablationcam": ours_ablationcam,
        "raw ablationcam": raw_ablation,
    }
    if has_torchcam:
        extractor = ScoreCAM(net, target_layer=net[11], batch_size=min(model.max_batch, channels))

        def torchcam_scorecam() -> None:
            with torch.no_grad():
                logits = net(torch.from_numpy(x))
                results["torchcam"] = extractor(class_idx=target, scores=logits)[0]

        suites["torchcam scorecam"] = torchcam_scorecam
    t = interleaved_best(suites, rounds)
    ours_phi = results["ours"].extras["coefficients"][0]
    theirs_phi = results["captum"].numpy().ravel()
    diff = float(np.abs(ours_phi - theirs_phi).max() / np.abs(theirs_phi).max())

    def rate(count: int, seconds: float) -> float:
        return round(count / seconds, 1)

    def minmax(a: np.ndarray) -> np.ndarray:
        a = np.maximum(np.asarray(a, np.float64), 0)
        return (a - a.min()) / ((a.max() - a.min()) or 1.0)

    ours_cam = minmax(results["scorecam"].extras["layer_maps"][0])
    scorecam_rows = [
        {
            "method": "cnnviz Score-CAM",
            "masked images": channels,
            "batch": min(model.max_batch, channels),
            "seconds": round(t["scorecam"], 2),
            "masked img/s": rate(channels, t["scorecam"]),
            "overhead vs raw ORT": f"{100 * (t['scorecam'] / t['raw scorecam'] - 1):.1f} %",
        },
        {
            "method": "raw onnxruntime (Score-CAM's count)",
            "masked images": channels + 1,
            "batch": min(model.max_batch, channels),
            "seconds": round(t["raw scorecam"], 2),
            "masked img/s": rate(channels + 1, t["raw scorecam"]),
        },
    ]
    if "torchcam" in results:
        theirs_cam = minmax(results["torchcam"].numpy()[0])
        scorecam_rows[0]["speed vs torch-cam"] = f"{t['torchcam scorecam'] / t['scorecam']:.2f}x"
        scorecam_rows[0]["max |diff| (min-max maps)"] = f"{np.abs(ours_cam - theirs_cam).max():.1e}"
        scorecam_rows.append(
            {
                "method": "torch-cam ScoreCAM (torch eager)",
                "masked images": channels,
                "batch": min(model.max_batch, channels),
                "seconds": round(t["torchcam scorecam"], 2),
                "masked img/s": rate(channels, t["torchcam scorecam"]),
            }
        )
    else:
        scorecam_rows.append({"method": "torch-cam ScoreCAM", "note": "torchcam not installed"})
    ablation_rows = [
        {"method": "cnnviz Ablation-CAM", "masked images": channels, "batch": rest.max_batch,
         "seconds": round(t["ablationcam"], 3), "masked img/s": rate(channels, t["ablationcam"]),
         "overhead vs raw ORT": f"{100 * (t['ablationcam'] / t['raw ablationcam'] - 1):.1f} %",
         "note": "no peer: pytorch-grad-cam needs torchvision"},
        {"method": "raw onnxruntime (1 forward + Ablation-CAM's ablated rest)",
         "masked images": channels, "batch": rest.max_batch,
         "seconds": round(t["raw ablationcam"], 3),
         "masked img/s": rate(channels, t["raw ablationcam"])},
    ]  # fmt: skip

    return scorecam_rows + ablation_rows + [
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
