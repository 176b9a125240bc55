"""Forward + backward (input gradient) per image: the engine (onnxruntime forward with taps,
NumPy + native kernels backward) against torch autograd on the same network, VGG-16 and
ResNet-18 shapes at 224x224 with random weights."""

from __future__ import annotations

import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from cnnviz_core import Model, Preprocess
from cnnviz_core.backward import gradients

if TYPE_CHECKING:
    from torch import nn

#: multiply-adds x 2 of one forward pass at 224x224 (torchvision's figures)
FORWARD_GFLOP = {"vgg16": 2 * 15.47, "resnet18": 2 * 1.81}


def networks() -> dict[str, Callable[[], nn.Module]]:
    """VGG-16 and ResNet-18 as torch modules (torchvision's layouts, written out here)."""
    import torch
    from torch import nn

    def vgg16() -> nn.Module:
        layers, c = [], 3
        for width, repeat in ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3)):
            for _ in range(repeat):
                layers += [nn.Conv2d(c, width, 3, padding=1), nn.ReLU()]
                c = width
            layers.append(nn.MaxPool2d(2))
        return nn.Sequential(
            *layers, nn.Flatten(), nn.Linear(512 * 7 * 7, 4096), nn.ReLU(),
            nn.Linear(4096, 4096), nn.ReLU(), nn.Linear(4096, 1000),
        )  # fmt: skip

    class Block(nn.Module):
        def __init__(self, c_in: int, c_out: int, stride: int) -> None:
            super().__init__()
            self.a = nn.Sequential(
                nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()
            )
            self.b = nn.Sequential(
                nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False), nn.BatchNorm2d(c_out)
            )
            self.down = (
                nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False),
                              nn.BatchNorm2d(c_out))
                if stride != 1 or c_in != c_out else nn.Identity()
            )  # fmt: skip

        def forward(self, x):
            return torch.relu(self.b(self.a(x)) + self.down(x))

    def resnet18() -> nn.Module:
        blocks, c = [], 64
        for width, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            blocks += [Block(c, width, stride), Block(width, width, 1)]
            c = width
        return nn.Sequential(
            nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
            nn.MaxPool2d(3, 2, 1), *blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten(),
            nn.Linear(512, 1000),
        )  # fmt: skip

    return {"vgg16": vgg16, "resnet18": resnet18}


def engine_gradient(model: Model, x: np.ndarray, seed: np.ndarray) -> np.ndarray:
    return gradients(model, x, {model.output_names[0]: seed}).grads[model.input_name]


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
            for p in net.parameters():
                p.requires_grad_(False)  # input gradients only, as the engine computes
            path = Path(folder) / f"{name}.onnx"
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(
                    net, (torch.randn(1, 3, 224, 224),), str(path), dynamo=True,
                    dynamic_shapes=({0: torch.export.Dim("batch")},), verbose=False,
                )  # fmt: skip
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
