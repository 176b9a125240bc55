"""The engine's compiled backward (forward and backward as one onnxruntime graph,
``gradients(..., forward="compiled")``) against the engine's default path (onnxruntime forward
with taps + NumPy / native backward), torch autograd (parameters frozen) and Captum's
Saliency, on ResNet-18-like and VGG-16-like networks (random weights), input gradient of one
class score per image, batch 1 and 16.

    python benchmarks/compiled_backward.py                 # 224x224, batch 1 and 16
    python benchmarks/compiled_backward.py --size 32 --quick   # a smoke run

The goal (issue 16): the compiled path at least 2x torch autograd at both batch sizes on the
CPU. The ceiling is this machine's FP32 GEMM rate, measured in the same interleaved rounds (a
2048^2 torch.mm on the same threads): a forward + input-gradient backward is 2 forwards of
multiply-adds, and the "% of sgemm" columns say how close each path runs to the rate at
which those FLOPs could go; "2x torch needs" is the fraction that 2x torch's speed would take
(above 100 %: out of reach for any direct convolution on this machine).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from models import export_onnx, networks
from table import RESULTS, print_table, write_json
from timing import interleaved_best

from cnnviz_core import Model, Preprocess
from cnnviz_core.backward import gradients

#: side of the square torch.mm timed as the FP32 GEMM ceiling
SGEMM_SIDE = 2048
#: multiply-adds x 2 of one forward pass at 224x224 (torchvision's figures)
FORWARD_GFLOP_224 = {"vgg16": 2 * 15.47, "resnet18": 2 * 1.81}
CLASS = 7


def captum_saliency(saliency: Any, x: Any) -> object:
    """Captum's Saliency (signed gradient) of the benchmark's class."""
    return saliency.attribute(x.clone().requires_grad_(), target=CLASS, abs=False)


def run(quick: bool = False, size: int = 224, batches: tuple[int, ...] = (1, 16)) -> list[dict]:
    try:
        import torch
    except ImportError:
        return [{"note": "torch is not installed: compiled_backward suite skipped"}]
    try:
        from captum.attr import Saliency  # type: ignore[import-untyped]  # no stubs
    except ImportError:
        Saliency = None
    torch.set_num_threads(2)
    square = torch.rand(SGEMM_SIDE, SGEMM_SIDE)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for name, make in networks(size).items():
            torch.manual_seed(0)
            net = make().eval()
            path = export_onnx(net, Path(folder) / f"{name}.onnx", size)
            model = Model(path, preprocess=Preprocess(scale=1.0, size=(size, size)))
            for n in batches:
                x = np.random.default_rng(0).standard_normal((n, 3, size, size), np.float32)
                xt = torch.from_numpy(x)
                seed = torch.zeros(n, 1000)
                seed[:, CLASS] = 1

                def torch_autograd(xt: Any = xt, seed: Any = seed, net: Any = net) -> object:
                    leaf = xt.clone().requires_grad_()
                    (net(leaf) * seed).sum().backward()
                    return leaf.grad

                calls: dict[str, Callable[[], object]] = {
                    "compiled": partial(gradients, model, x, CLASS, forward="compiled"),
                    "engine": partial(gradients, model, x, CLASS, forward="onnxruntime"),
                    "torch": torch_autograd,
                }
                if Saliency is not None:
                    calls["captum"] = partial(captum_saliency, Saliency(net), xt)
                calls["sgemm"] = partial(torch.mm, square, square)
                best = interleaved_best(calls, 1 if quick else 5)
                ours = gradients(model, x, CLASS, forward="compiled").grads[model.input_name]
                reference = torch_autograd().numpy()  # type: ignore[attr-defined]
                error = float(np.abs(ours - reference).max() / np.abs(reference).max())
                gflop = 2 * FORWARD_GFLOP_224[name] * (size / 224) ** 2
                row: dict[str, Any] = {"model": name, "size": size, "batch": n}
                for key, seconds in best.items():
                    if key != "sgemm":
                        row[f"{key} ms/img"] = round(1000 * seconds / n, 1)
                row["compiled / torch speed"] = round(best["torch"] / best["compiled"], 2)
                row["compiled / engine speed"] = round(best["engine"] / best["compiled"], 2)
                if "captum" in best:
                    row["compiled / captum speed"] = round(best["captum"] / best["compiled"], 2)
                ceiling = 2 * SGEMM_SIDE**3 / best["sgemm"] / 1e9
                row["sgemm GFLOP/s"] = round(ceiling, 1)
                for key in ("compiled", "torch"):
                    share = gflop * n / best[key] / ceiling
                    row[f"{key} % of sgemm"] = round(100 * share)
                row["2x torch needs % of sgemm"] = round(200 * gflop * n / best["torch"] / ceiling)
                row["max rel. error vs torch"] = f"{error:.1e}"
                rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224, help="input side (a multiple of 32)")
    parser.add_argument("--quick", action="store_true", help="one timed round, batch 1 and 2")
    args = parser.parse_args()
    rows = run(args.quick, args.size, (1, 2) if args.quick else (1, 16))
    print_table(rows)
    write_json(RESULTS / f"compiled_backward-{args.size}.json", rows)


if __name__ == "__main__":
    main()
