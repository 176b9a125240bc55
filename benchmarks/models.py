"""Benchmark networks as ONNX files: random-weight (seeded) VGG-16-like and ResNet-18-like
classifiers (224x224 RGB in, 1000 logits out, dynamic batch), exported once with
``torch.onnx.export(dynamo=True)`` and cached outside the repository, plus the pretrained
SqueezeNet 1.1 (fp32) from ../shared/data when that folder is present.

    from models import onnx_path, load
    path = onnx_path("vgg16")        # /tmp/cnnviz-bench-models/vgg16-seed0.onnx
    model = load("resnet18")         # cnnviz_core.Model, preprocessing = identity

The layouts are torchvision's (written out in :func:`backward.networks`); weights are
He-normal so activations keep their scale through 16 layers (PyTorch's default init shrinks
them ~1000x and makes every occlusion map flat), BatchNorm statistics are non-trivial (the
exporter folds BN into the convolutions). Cache folder: ``$CNNVIZ_BENCH_MODELS`` or
``<tmp>/cnnviz-bench-models``; files are keyed by network and seed, written atomically.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

#: the generated networks (names for :func:`onnx_path`) and the real one
GENERATED = ("vgg16", "resnet18")
SQUEEZENET = Path(__file__).resolve().parents[2] / "shared" / "data" / "models"
SQUEEZENET = SQUEEZENET / "squeezenet1.1_fp32.onnx"


def cache_dir() -> Path:
    """Where exported networks are kept (created on first use)."""
    folder = os.environ.get("CNNVIZ_BENCH_MODELS")
    path = Path(folder) if folder else Path(tempfile.gettempdir()) / "cnnviz-bench-models"
    path.mkdir(parents=True, exist_ok=True)
    return path


def networks(size: int = 224) -> dict[str, Any]:
    """VGG-16 and ResNet-18 as torch modules (torchvision's layouts, written out here) for
    ``size`` x ``size`` inputs."""
    import torch
    from torch import nn

    def vgg16() -> nn.Module:
        layers: list[nn.Module] = []
        c = 3
        for width, repeat in ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3)):
            for _ in range(repeat):
                layers += [nn.Conv2d(c, width, 3, padding=1), nn.ReLU()]
                c = width
            layers.append(nn.MaxPool2d(2))
        side = size // 32
        return nn.Sequential(
            *layers, nn.Flatten(), nn.Linear(512 * side * side, 4096), nn.ReLU(),
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
            self.down: nn.Module = (
                nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False),
                              nn.BatchNorm2d(c_out))
                if stride != 1 or c_in != c_out else nn.Identity()
            )  # fmt: skip

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.relu(self.b(self.a(x)) + self.down(x))

    def resnet18() -> nn.Module:
        blocks: list[nn.Module] = []
        c = 64
        for width, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            blocks += [Block(c, width, stride), Block(width, width, 1)]
            c = width
        return nn.Sequential(
            nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
            nn.MaxPool2d(3, 2, 1), *blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten(),
            nn.Linear(512, 1000),
        )  # fmt: skip

    return {"resnet18": resnet18, "vgg16": vgg16}


def export_onnx(net: Any, path: Path, size: int = 224) -> Path:
    """``net`` (frozen: input gradients only, as the engine computes) exported to ``path``
    by the dynamo exporter with a dynamic batch, at ``size`` x ``size``."""
    import torch

    for p in net.parameters():
        p.requires_grad_(False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net, (torch.randn(1, 3, size, size),), str(path), dynamo=True,
            dynamic_shapes=({0: torch.export.Dim("batch")},), verbose=False,
        )  # fmt: skip
    return path


def torch_network(name: str, seed: int = 0):
    """The seeded torch module (eval mode, no parameter gradients) for ``name``."""
    import torch

    makers = networks()
    if name not in makers:
        raise ValueError(f"unknown network {name!r}; choose one of {GENERATED}")
    torch.manual_seed(seed)
    net = makers[name]().eval()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
                torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                if m.bias is not None:
                    m.bias.uniform_(-0.05, 0.05)
            elif isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.8, 1.2)
                m.bias.uniform_(-0.1, 0.1)
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
        last = [m for m in net.modules() if isinstance(m, torch.nn.Linear)][-1]
        last.weight.mul_(0.1)  # logits of order 1-10, as a trained classifier's
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def onnx_path(name: str, seed: int = 0) -> Path:
    """The ONNX file of a generated network (exported on first call) or ``squeezenet``.

    Raises:
        FileNotFoundError: ``squeezenet`` when ../shared/data is absent.
    """
    if name == "squeezenet":
        if not SQUEEZENET.exists():
            raise FileNotFoundError(f"SqueezeNet 1.1 fp32 not found at {SQUEEZENET}")
        return SQUEEZENET
    path = cache_dir() / f"{name}-seed{seed}.onnx"
    if path.exists():
        return path
    import onnx
    import torch

    net = torch_network(name, seed)
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            net, (torch.zeros(2, 3, 224, 224),), dynamo=True, input_names=["image"],
            output_names=["logits"], dynamic_shapes=({0: torch.export.Dim("batch")},),
            verbose=False,
        )  # fmt: skip
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    onnx.save(program.model_proto, str(tmp))
    tmp.replace(path)
    return path


def load(name: str, seed: int = 0):
    """A :class:`cnnviz_core.Model` of ``name`` (identity preprocessing for the generated
    networks, BGR 0-255 for SqueezeNet)."""
    from cnnviz_core import Model, Preprocess

    if name == "squeezenet":
        return Model(onnx_path(name), name="squeezenet1.1", preprocess="bgr255")
    return Model(onnx_path(name, seed), name=f"{name}-like", preprocess=Preprocess(scale=1.0))


def available() -> list[str]:
    """The networks this machine can benchmark (SqueezeNet only with ../shared/data)."""
    return [*GENERATED, *(["squeezenet"] if SQUEEZENET.exists() else [])]


if __name__ == "__main__":
    for network in available():
        print(network, onnx_path(network))
