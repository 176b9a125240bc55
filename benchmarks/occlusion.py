"""Occlusion throughput on a ResNet-18-like network (torch, exported to ONNX, 224x224,
window 16, stride 8: 729 positions): ours (native occluded-batch builder + onnxruntime) vs
raw onnxruntime forward at the same batch size (the floor of the naive method) vs Captum's
``Occlusion`` on the same torch model, in the same run; plus the maps' agreement."""

from __future__ import annotations

import time

import numpy as np


def resnet18_like(torch):
    """ResNet-18's layout (BasicBlocks 2-2-2-2, widths 64-512, BatchNorm), random weights."""
    nn = torch.nn

    class Block(nn.Module):
        def __init__(self, c_in: int, c_out: int, stride: int) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(c_out)
            self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(c_out)
            self.down = None
            if stride != 1 or c_in != c_out:
                self.down = nn.Sequential(
                    nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)
                )

        def forward(self, x):
            y = torch.relu(self.bn1(self.conv1(x)))
            y = self.bn2(self.conv2(y))
            return torch.relu(y + (x if self.down is None else self.down(x)))

    layers = [nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
              nn.MaxPool2d(3, 2, 1)]  # fmt: skip
    c = 64
    for width, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        layers += [Block(c, width, stride), Block(width, width, 1)]
        c = width
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, 1000)]
    return nn.Sequential(*layers)


def _export(torch, net) -> bytes:
    import io
    import logging
    import warnings

    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            net,
            (torch.zeros(2, 3, 224, 224),),
            dynamo=True,
            input_names=["image"],
            output_names=["logits"],
            dynamic_shapes=({0: torch.export.Dim("batch")},),
            verbose=False,
        )
    buffer = io.BytesIO()
    import onnx

    onnx.save(program.model_proto, buffer)
    return buffer.getvalue()


def run(quick: bool = False) -> list[dict]:
    try:
        import torch
        from captum.attr import Occlusion
    except ImportError:
        return [{"note": "torch and captum are needed for this suite"}]
    import onnxruntime as ort

    from cnnviz.attribution import occlusion
    from cnnviz_core import Model

    torch.manual_seed(0)
    torch.set_num_threads(2)
    net = resnet18_like(torch).eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                assert m.running_mean is not None and m.running_var is not None
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    proto = _export(torch, net)
    model = Model(proto, name="resnet18-like")
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    target = int(model.scores(x).argmax())
    window, stride, batch = (32, 16, 16) if quick else (16, 8, 32)
    positions = (int(np.ceil((224 - window) / stride)) + 1) ** 2

    warm = np.repeat(x, min(batch, model.max_batch), axis=0)
    model.run(warm)  # warm-up at the timed batch shape (both paths get one)
    start = time.perf_counter()
    ours = occlusion(model, x, target, window=window, stride=stride, fill=0.0,
                     batch_size=batch)  # fmt: skip
    t_ours = time.perf_counter() - start

    session = ort.InferenceSession(proto, providers=["CPUExecutionProvider"])
    chunk = np.random.default_rng(1).standard_normal((batch, 3, 224, 224)).astype(np.float32)
    session.run(None, {"image": chunk})
    start = time.perf_counter()
    done = 0
    while done < positions:
        n = min(batch, positions - done)
        session.run(None, {"image": chunk[:n]})
        done += n
    t_raw = time.perf_counter() - start

    start = time.perf_counter()
    with torch.no_grad():
        theirs = Occlusion(net).attribute(
            torch.from_numpy(x), sliding_window_shapes=(3, window, window),
            strides=(3, stride, stride), baselines=0.0, target=target,
            perturbations_per_eval=batch,
        )  # fmt: skip
    t_captum = time.perf_counter() - start
    theirs_map = theirs.numpy()[0, 0]
    diff = float(np.abs(ours.maps[0] - theirs_map).max() / np.abs(theirs_map).max())
    return [
        {"method": "cnnviz occlusion", "positions": positions, "batch": batch,
         "seconds": round(t_ours, 2), "occluded img/s": round(positions / t_ours, 1),
         "overhead vs raw ORT": f"{100 * (t_ours / t_raw - 1):.1f} %",
         "speed vs Captum": f"{t_captum / t_ours:.2f}x", "max |diff| / max |map|": f"{diff:.1e}"},
        {"method": "raw onnxruntime forward", "positions": positions,
         "batch": f"{batch} (engine max_batch {model.max_batch})",
         "seconds": round(t_raw, 2), "occluded img/s": round(positions / t_raw, 1)},
        {"method": "Captum Occlusion (torch eager)", "positions": positions, "batch": batch,
         "seconds": round(t_captum, 2), "occluded img/s": round(positions / t_captum, 1)},
    ]  # fmt: skip


if __name__ == "__main__":
    import sys

    from table import print_table

    print_table(run(quick="--quick" in sys.argv))
