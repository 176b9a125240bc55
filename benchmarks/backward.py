"""Forward + backward (input gradient) per image: the engine (onnxruntime forward with taps,
NumPy + native kernels backward) against torch autograd on the same network, VGG-16 and
ResNet-18 shapes at 224x224 with random weights."""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from models import export_onnx, networks

from cnnviz_core import Model, Preprocess
from cnnviz_core.backward import gradients

if TYPE_CHECKING:
    pass

#: multiply-adds x 2 of one forward pass at 224x224 (torchvision's figures)
FORWARD_GFLOP = {"vgg16": 2 * 15.47, "resnet18": 2 * 1.81}


def engine_gradient(model: Model, x: np.ndarray, seed: np.ndarray) -> np.ndarray:
    seeds = {model.output_names[0]: seed}
    return gradients(model, x, seeds, forward="onnxruntime").grads[model.input_name]


def torch_gradient(net: object, x: np.ndarray, seed: np.ndarray) -> object:
    import torch

    xt = torch.from_numpy(x).requires_grad_()
    (net(xt) * torch.from_numpy(seed)).sum().backward()  # type: ignore[operator]
    return xt.grad


def seconds_per_call(fn: Callable[[], object], repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run(quick: bool = False) -> list[dict]:
    try:
        import torch
    except ImportError:
        return [{"note": "torch is not installed: backward suite skipped"}]
    torch.set_num_threads(2)
    rows = []
    batches = (1, 4) if quick else (1, 16)
    with tempfile.TemporaryDirectory() as folder:
        for name, make in networks().items():
            torch.manual_seed(0)
            net = make().eval()
            path = export_onnx(net, Path(folder) / f"{name}.onnx", 224)
            model = Model(path, preprocess=Preprocess(scale=1.0))
            for n in batches:
                x = np.random.default_rng(0).standard_normal((n, 3, 224, 224), np.float32)
                seed = np.zeros((n, 1000), np.float32)
                seed[:, 7] = 1
                repeats = 1 if quick else 3

                t_ours_call = partial(engine_gradient, model, x, seed)
                t_torch_call = partial(torch_gradient, net, x, seed)
                t_ours = seconds_per_call(t_ours_call, repeats) / n
                t_torch = seconds_per_call(t_torch_call, repeats) / n
                rows.append({
                    "model": name, "batch": n,
                    "engine ms/img": round(1000 * t_ours, 1),
                    "torch ms/img": round(1000 * t_torch, 1),
                    "engine / torch speed": round(t_torch / t_ours, 2),
                    "engine GFLOP/s (fwd+bwd)": round(2 * FORWARD_GFLOP[name] / t_ours, 1),
                })  # fmt: skip
    return rows
