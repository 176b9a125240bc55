"""Fast style transfer (Johnson et al. 2016): images per second of a feed-forward style network
through onnxruntime (what ``stylize`` runs, one forward pass per image) against the torch
module of the same network in eager mode (no_grad), same input, same threads, in the same run;
and training steps per second.

- trained: a network from ``train_style`` (default architecture, width 16, 3 residual
  blocks) at 256x256; its torch module is the network it was exported from.
- fns_candy (when ../shared/data is present): Johnson's own network at its fixed 720x720;
  its torch module is our torch bridge's interpretation of the ONNX graph.
- training: steps/s of ``train_style`` at 128 px, batch 4, with the shapes model and (when
  present) SqueezeNet 1.1 as the loss network.

Best of N, the calls alternating, since other processes compete for the cores.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
from timing import paired_seconds

from cnnviz.models import load_model

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def forward_rows(name: str, network: Any, module: Any, size: int, batches: tuple[int, ...],
                 repeats: int, scale: float) -> list[dict]:  # fmt: skip
    """onnxruntime vs torch eager images/s of one network at ``size`` (inputs in its range)."""
    import torch

    rows = []
    rng = np.random.default_rng(0)
    output = network.model.output_names[0]
    for n in batches:
        batch = (rng.random((n, 3, size, size), dtype=np.float32) * scale).astype(np.float32)
        tensor = torch.from_numpy(batch)

        def ours(batch: np.ndarray = batch) -> object:
            return network.model.run(batch)[output]

        def reference(tensor: Any = tensor) -> object:
            with torch.no_grad():
                return module(tensor)

        t_ours, t_ref = paired_seconds(ours, reference, repeats)
        rows.append({
            "network": name, "size": f"{size}x{size}", "batch": n,
            "onnxruntime img/s": round(n / t_ours, 2),
            "torch eager img/s": round(n / t_ref, 2),
            "speedup": round(t_ref / t_ours, 2),
        })  # fmt: skip
    return rows


def training_rows(quick: bool) -> list[dict]:
    """train_style steps/s (the median step, after two warm-up steps)."""
    from cnnviz.synthesis.train_fast_style import train_style
    from cnnviz_core import Model

    style = SHARED / "style" / "candy.jpg"
    style_image: Any = style if style.is_file() else np.full((64, 64, 3), 128, np.uint8)
    losses: list[tuple[str, Any, Any]] = [("shapes", load_model("shapes"), None)]
    squeezenet = SHARED / "models" / "squeezenet1.1_fp32.onnx"
    if squeezenet.is_file():
        photos = SHARED / "photos"
        model = Model(squeezenet, preprocess="caffe", name="squeezenet1.1")
        losses.append(("squeezenet1.1", model, photos))
    steps = 6 if quick else 12
    rows = []
    for name, model, content in losses:
        stamps: list[float] = []
        train_style(model, style_image, content, size=128, batch=4, steps=steps,
                    progress=lambda *_, s=stamps: s.append(time.perf_counter()))  # fmt: skip
        per_step = float(np.median(np.diff(stamps[1:])))
        rows.append({
            "network": "trained (width 16, 3 blocks)", "size": "128x128", "batch": 4,
            "training": f"loss network {name}", "steps/s": round(1 / per_step, 2),
            "content img/s": round(4 / per_step, 1),
        })  # fmt: skip
    return rows


def run(quick: bool = False) -> list[dict]:
    try:
        import torch
    except ImportError:
        return [{"note": "torch is not installed: fast_style suite skipped"}]
    from cnnviz.synthesis.fast_style_network import load_style_network
    from cnnviz.synthesis.train_fast_style import train_style

    torch.set_num_threads(2)
    repeats = 2 if quick else 5
    trained = train_style(load_model("shapes"), np.full((64, 64, 3), 128, np.uint8), None,
                          size=32, steps=1, batch=1)  # fmt: skip
    rows = forward_rows("trained (width 16, 3 blocks)", trained, trained.module, 256,
                        (1, 4), repeats, 1.0)  # fmt: skip
    candy = SHARED / "models" / "fns_candy.onnx"
    if candy.is_file():
        from cnnviz_core.torch_bridge import to_torch

        network = load_style_network(candy)
        module = to_torch(network.model).eval()
        rows += forward_rows("fns_candy", network, module, 720, (1,), max(2, repeats - 2), 255.0)
    rows += training_rows(quick)
    return rows
