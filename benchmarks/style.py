"""Gatys style transfer: seconds per iteration at 256 x 256 through our loss network (the
torch bridge + the native Gram kernels inside autograd) against a pure-torch reference step
on the same network, and the native Gram forward + backward against ``torch.bmm``.

One iteration is what an L-BFGS function evaluation costs: preprocessing, one forward to
the deepest style/content layer, the Gram matrices, content + style + TV losses, backward to
the pixels. Three ways, same image, same weights, same losses:

- ``ours``: :class:`cnnviz.synthesis.style_losses.LossNetwork` (bridge interpreter, native Gram);
- ``bridge + bmm``: the same with the Gram done by ``torch.bmm`` (isolates the kernel);
- ``pure torch``: a hand-written twin of the network in ``torch.nn.functional`` (SqueezeNet
  1.1 up to fire6, with the model's weights; the shapes model's twin from synthesis.py) and
  ``torch.bmm`` Grams: what a user writing it in torch would run.

SqueezeNet 1.1 (../shared/data, caffe preset) when present, else the shipped shapes model.
Times are the best of N interleaved repetitions (other processes compete for the cores).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from timing import interleaved_best

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
SIZE = 256


def squeezenet_twin(model: Any) -> Callable[[Any], dict[str, Any]]:
    """SqueezeNet 1.1 up to fire6 in torch.nn.functional with the model's weights; returns the
    default style/content layers (conv1_2, fire2, fire4, fire5, fire6 concats)."""
    import torch
    from torch.nn import functional

    c = {k: torch.from_numpy(np.array(v, np.float32)) for k, v in model.constants.items()}

    def conv(x: Any, name: str, stride: int = 1, pad: int = 0) -> Any:
        return functional.relu(
            functional.conv2d(x, c[f"{name}_w_0"], c[f"{name}_b_0"], stride=stride, padding=pad)
        )

    def fire(x: Any, k: int) -> Any:
        s = conv(x, f"fire{k}/squeeze1x1")
        return torch.cat([conv(s, f"fire{k}/expand1x1"), conv(s, f"fire{k}/expand3x3", pad=1)], 1)

    def net(x: Any) -> dict[str, Any]:
        out = {}
        x = out["conv1_2"] = conv(x, "conv1", stride=2)
        x = out["fire2/concat_1"] = fire(functional.max_pool2d(x, 3, 2), 2)
        x = fire(x, 3)
        x = out["fire4/concat_1"] = fire(functional.max_pool2d(x, 3, 2), 4)
        x = out["fire5/concat_1"] = fire(x, 5)
        out["fire6/concat_1"] = fire(functional.max_pool2d(x, 3, 2), 6)
        return out

    return net


def shapes_twin(model: Any) -> Callable[[Any], dict[str, Any]]:
    """The shapes network's ReLU blocks (synthesis.py's twin) as the default layers."""
    from synthesis import reference_net

    net = reference_net(model)

    def taps(x: Any) -> dict[str, Any]:
        return {name: net(x, k) for k, name in enumerate(["relu", "relu_1", "relu_2", "relu_3"], 1)}

    return taps


def run(quick: bool = False) -> list[dict]:
    try:
        import torch
    except ImportError:
        return [{"note": "torch is not installed: style suite skipped"}]
    from cnnviz.synthesis.style_losses import LossNetwork, tv_loss
    from cnnviz_core.torch_bridge import gram_matrix

    torch.set_num_threads(2)
    if (SHARED / "models" / "squeezenet1.1_fp32.onnx").is_file():
        from cnnviz_core import Model

        model = Model(SHARED / "models" / "squeezenet1.1_fp32.onnx", preprocess="caffe")
        twin, network = squeezenet_twin(model), "squeezenet1.1"
    else:
        from cnnviz.models import load_model

        model = load_model("shapes")
        twin, network = shapes_twin(model), "shapes"
    net = LossNetwork(model)
    repeats = 2 if quick else 7
    gen = torch.Generator().manual_seed(0)
    content, style = (torch.rand(1, 3, SIZE, SIZE, generator=gen) for _ in range(2))
    targets = net.targets(style)
    content_target = net.content_targets(content)
    x = torch.rand(1, 3, SIZE, SIZE, generator=gen)

    def objective(features: dict, gram: Callable[[Any], Any]) -> Any:
        grams = {name: gram(features[name]) for name in net.style_layers}
        return (
            net.content_loss(features, content_target)
            + 1e3 * net.style_loss(grams, targets)
            + tv_loss(pixels)
        )

    pixels = x.clone().requires_grad_(True)

    def step(features_of: Callable[[Any], dict], gram: Callable[[Any], Any]) -> Callable:
        def once() -> None:
            pixels.grad = None
            objective(features_of(pixels), gram).backward()

        return once

    def twin_features(p: Any) -> dict:
        return twin(net.preprocess(p))

    native = gram_matrix
    bmm = lambda f: gram_matrix(f, backend="torch")  # noqa: E731
    # the twin computes what the bridge computes
    with torch.no_grad():
        ours_f, twin_f = net.features(x), twin_features(x)
    error = max(
        float((ours_f[k] - twin_f[k]).abs().max() / twin_f[k].abs().max()) for k in net.layers
    )
    times = interleaved_best(
        {
            "ours": step(net.features, native),
            "bridge + bmm": step(net.features, bmm),
            "pure torch": step(twin_features, bmm),
        },
        3 * repeats,
    )
    rows: list[dict] = [
        {
            "case": f"Gatys iteration {SIZE}x{SIZE}",
            "network": network,
            "layers": ", ".join(net.layers),
            "ours s/it": round(times["ours"], 4),
            "bridge+bmm s/it": round(times["bridge + bmm"], 4),
            "pure torch s/it": round(times["pure torch"], 4),
            "ours / pure torch": round(times["ours"] / times["pure torch"], 3),
            "twin max rel diff": f"{error:.1e}",
        }
    ]
    # the Gram kernels alone, inside autograd, on this network's style-layer shapes
    for name in net.style_layers:
        f = ours_f[name].detach().clone().requires_grad_(True)
        weight = torch.rand(1, f.shape[1], f.shape[1], generator=gen)

        def gram_step(backend: str, f: Any = f, weight: Any = weight) -> Callable:
            def once() -> None:
                f.grad = None
                (gram_matrix(f, backend=backend) * weight).sum().backward()

            return once

        steps = {"native": gram_step("native"), "torch": gram_step("torch")}
        t = interleaved_best(steps, 15 * repeats)
        rows.append(
            {
                "case": "Gram fwd+bwd",
                "network": network,
                "layers": f"{name} {tuple(f.shape[1:])}",
                "native ms": round(1e3 * t["native"], 3),
                "torch bmm ms": round(1e3 * t["torch"], 3),
                "bmm / native": round(t["torch"] / t["native"], 2),
            }
        )
    return rows


if __name__ == "__main__":
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    for row in run(quick="--quick" in sys.argv):
        print(row)
