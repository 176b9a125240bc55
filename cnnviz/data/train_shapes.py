"""Train the small default CNN on the shapes data set and ship it as ONNX plus a model card.

``python -m cnnviz.data.train_shapes --out cnnviz/data/models`` reproduces the shipped model:
four conv/BatchNorm/ReLU blocks (max-pooled after the first three), global average pooling and
one linear classifier, so CAM applies to ``features.relu4``. BatchNorm is folded into the
convolutions before export. The model card (class names, preprocessing, held-out accuracy) is
written next to the ONNX file and also stored in its ``metadata_props`` under ``cnnviz.card``.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import logging
import platform
import shlex
import sys
import time
import warnings
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
import onnxruntime as ort

from cnnviz.data.shapes import CLASSES, make_shapes
from cnnviz.output import atomic_write_bytes, atomic_write_text
from cnnviz_core.model import CARD_KEY, SessionFactory

if TYPE_CHECKING:
    import torch

log = logging.getLogger("cnnviz.data.train_shapes")

SIZE = 64
MEAN = (0.5, 0.5, 0.5)
STD = (0.5, 0.5, 0.5)
WIDTHS = (16, 32, 64, 96)
HELDOUT_SEED = 2
HELDOUT_N = 2000


def _import_torch() -> Any:
    try:
        import torch
    except ImportError as err:
        raise ImportError("training needs the torch extra: pip install 'cnnviz[torch]'") from err
    return torch


def preprocess(images: np.ndarray) -> np.ndarray:
    """uint8 (N, H, W, 3) RGB -> float32 (N, 3, H, W), scaled by 1/255 and normalised."""
    mean, std = np.array(MEAN, np.float32), np.array(STD, np.float32)
    x = (images.astype(np.float32) / 255.0 - mean) / std
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def build_model(n_classes: int = len(CLASSES)) -> torch.nn.Module:
    """The shapes CNN; module names (``features.conv1`` ... ``classifier``) become layer names."""
    torch = _import_torch()
    nn = torch.nn
    layers: OrderedDict[str, Any] = OrderedDict()
    c_in = 3
    for i, c_out in enumerate(WIDTHS, 1):
        layers[f"conv{i}"] = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
        layers[f"bn{i}"] = nn.BatchNorm2d(c_out)
        layers[f"relu{i}"] = nn.ReLU()
        if i < len(WIDTHS):
            layers[f"pool{i}"] = nn.MaxPool2d(2)
        c_in = c_out
    return nn.Sequential(
        OrderedDict(
            features=nn.Sequential(layers),
            gap=nn.AdaptiveAvgPool2d(1),
            flatten=nn.Flatten(),
            classifier=nn.Linear(c_in, n_classes),
        )
    )


def _reuse_freed_memory() -> None:
    """Make glibc keep freed buffers up to 32 MB instead of unmapping them: otherwise each
    training step page-faults its activations back in, which halves the speed on CPU."""
    if platform.libc_ver()[0] == "glibc":
        libc = ctypes.CDLL(None)
        libc.mallopt(-3, 32 << 20)  # M_MMAP_THRESHOLD (glibc's maximum)
        libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD


def _torch_batch(images: np.ndarray) -> torch.Tensor:
    """uint8 NHWC -> normalised float NCHW tensor in channels-last memory (faster convs on CPU)."""
    torch = _import_torch()
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    return (x - mean) / std


def _torch_accuracy(model: torch.nn.Module, images: np.ndarray, labels: np.ndarray) -> float:
    torch = _import_torch()
    model.eval()
    with torch.no_grad():
        pred = np.concatenate(
            [
                model(_torch_batch(images[i : i + 500])).argmax(1).numpy()
                for i in range(0, len(images), 500)
            ]
        )
    return float((pred == labels).mean())


def train(
    model: torch.nn.Module,
    images: np.ndarray,
    labels: np.ndarray,
    epochs: int,
    seed: int,
    heldout: tuple[np.ndarray, np.ndarray],
    batch: int = 64,
) -> None:
    """AdamW with a one-cycle schedule; logs loss and train/held-out accuracy per epoch."""
    torch = _import_torch()
    gen = torch.Generator().manual_seed(seed)
    steps = (len(images) + batch - 1) // batch
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=epochs * steps)
    y_all = torch.from_numpy(labels)
    model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # documented form
    for epoch in range(1, epochs + 1):
        model.train()
        t0, total_loss, correct = time.perf_counter(), 0.0, 0
        for idx in torch.randperm(len(images), generator=gen).split(batch):
            x, y = _torch_batch(images[idx.numpy()]), y_all[idx]
            logits = model(x)
            loss = torch.nn.functional.cross_entropy(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total_loss += loss.item() * len(idx)
            correct += int((logits.argmax(1) == y).sum())
        log.info(
            "epoch %d/%d  loss %.4f  train acc %.4f  held-out acc %.4f  (%.1f s)",
            epoch,
            epochs,
            total_loss / len(images),
            correct / len(images),
            _torch_accuracy(model, *heldout),
            time.perf_counter() - t0,
        )
    model.to(memory_format=torch.contiguous_format).eval()  # type: ignore[call-overload]


def fold_batchnorm(model: torch.nn.Module) -> torch.nn.Module:
    """Fold each BatchNorm into the Conv before it (eval mode), so exported Conv nodes keep the
    conv's module name (the exporter would fold it too, but under the BatchNorm's name)."""
    torch = _import_torch()
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    layers: OrderedDict[str, Any] = OrderedDict()
    for name, module in model.get_submodule("features").named_children():
        if isinstance(module, torch.nn.BatchNorm2d):
            conv = next(reversed(layers))
            layers[conv] = fuse_conv_bn_eval(layers[conv], module)
        else:
            layers[name] = module
    model.features = torch.nn.Sequential(layers)
    return model


@contextlib.contextmanager
def quiet_export() -> Iterator[None]:
    """Silence what torch 2.13's dynamo exporter prints that never concerns us: the
    registration log's "torchvision is not installed" and torch.export's own deprecated
    pytree call (a FutureWarning, an error under pytest's warnings-as-errors)."""
    registration_log = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registration_log.level
    registration_log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings(
                "ignore",
                message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
                category=FutureWarning,
            )
            yield
    finally:
        registration_log.setLevel(level)


def export(model: torch.nn.Module) -> onnx.ModelProto:
    """Export with the dynamo exporter: input ``image`` with a symbolic batch, output ``logits``."""
    torch = _import_torch()
    example = torch.zeros(2, 3, SIZE, SIZE)
    with quiet_export():
        program = torch.onnx.export(
            model,
            (example,),
            dynamo=True,
            input_names=["image"],
            output_names=["logits"],
            dynamic_shapes=({0: torch.export.Dim("batch")},),
            verbose=False,
        )
    return program.model_proto


def _ort_logits(session: ort.InferenceSession, images: np.ndarray, batch: int = 500) -> np.ndarray:
    return np.concatenate(
        [
            session.run(["logits"], {"image": preprocess(images[i : i + batch])})[0]
            for i in range(0, len(images), batch)
        ]
    )


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: train, export, check against onnxruntime, write shapes.onnx + shapes.json."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "models")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--train-n", type=int, default=20000)
    parser.add_argument("--seed", type=int, default=1, help="training data and torch seed")
    parser.add_argument("--quick", action="store_true", help="tiny run (seconds), for tests")
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    if args.seed == HELDOUT_SEED:
        parser.error(f"--seed must differ from the held-out seed {HELDOUT_SEED}")
    if args.quick:
        args.epochs, args.train_n = 1, 256
    heldout_n = 128 if args.quick else HELDOUT_N
    logging.basicConfig(format="%(message)s")
    log.setLevel(logging.INFO)

    torch = _import_torch()
    torch.set_num_threads(2)
    _reuse_freed_memory()
    torch.manual_seed(args.seed)
    t0 = time.perf_counter()
    data = make_shapes(args.train_n, args.seed, SIZE)
    held = make_shapes(heldout_n, HELDOUT_SEED, SIZE)
    log.info(
        "generated %d + %d images in %.1f s", args.train_n, heldout_n, time.perf_counter() - t0
    )

    model = build_model()
    log.info("parameters: %d", sum(p.numel() for p in model.parameters()))
    t0 = time.perf_counter()
    train(model, data.images, data.labels, args.epochs, args.seed, (held.images, held.labels))
    train_seconds = time.perf_counter() - t0

    model = fold_batchnorm(model.eval())
    proto = export(model)
    session = SessionFactory(name="shapes")(proto)
    probe = held.images[:64]
    with torch.no_grad():
        expected = model(torch.from_numpy(preprocess(probe))).numpy()
    err = float(np.abs(_ort_logits(session, probe) - expected).max())
    if err > 1e-4:
        raise RuntimeError(f"onnxruntime and torch disagree by {err:.2e} (> 1e-4)")
    accuracy = float((_ort_logits(session, held.images).argmax(1) == held.labels).mean())
    log.info("onnxruntime max |diff| vs torch %.2e, held-out accuracy %.4f", err, accuracy)

    card = {
        "name": "shapes",
        "classes": list(CLASSES),
        "input": {"name": "image", "size": [SIZE, SIZE]},
        "preprocess": {
            "size": [SIZE, SIZE],
            "resize": "stretch",
            "scale": 1 / 255,
            "mean": list(MEAN),
            "std": list(STD),
            "channel_order": "RGB",
        },
        "output": "logits",
        "heldout_accuracy": round(accuracy, 4),
        "heldout_seed": HELDOUT_SEED,
        "heldout_n": heldout_n,
        "train_seed": args.seed,
        "train_n": args.train_n,
        "epochs": args.epochs,
        "train_seconds": round(train_seconds, 1),
        "torch_version": torch.__version__,
        "command": shlex.join(["python", "-m", "cnnviz.data.train_shapes", *argv]),
    }
    path = save_with_card(proto, card, args.out, "shapes")
    log.info("wrote %s (%d bytes) and shapes.json", path, path.stat().st_size)


def save_with_card(proto: onnx.ModelProto, card: dict, out: Path, name: str) -> Path:
    """Write ``out/name.onnx`` carrying ``card`` in its metadata (so the file alone knows
    its classes and preprocessing) and the same card as ``out/name.json``, atomically."""
    card_text = json.dumps(card, indent=2)
    props = {p.key: p.value for p in proto.metadata_props}
    onnx.helper.set_model_props(proto, {**props, CARD_KEY: card_text})
    onnx.checker.check_model(proto)
    path = out / f"{name}.onnx"
    atomic_write_bytes(path, proto.SerializeToString())
    atomic_write_text(out / f"{name}.json", card_text + "\n")
    return path


if __name__ == "__main__":
    main()
