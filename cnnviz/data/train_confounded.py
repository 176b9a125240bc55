"""Train the confounded shapes model (the husky-vs-wolf lesson) with the shapes training code.

``python -m cnnviz.data.train_confounded --out cnnviz/data/models`` reproduces
``shapes_confounded.onnx`` + ``shapes_confounded.json``: the architecture, optimiser, BatchNorm
folding and export of :mod:`cnnviz.data.train_shapes`, trained on
:func:`cnnviz.data.confounded.make_confounded` (every star on snow, nothing else ever).
The card records the accuracy on the confounded held-out set, on plain (unconfounded)
held-out images, and how often non-star shapes put on snow are called stars.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cnnviz.data import train_shapes as ts
from cnnviz.data.confounded import SNOW_CLASS, make_confounded, on_snow
from cnnviz.data.shapes import CLASSES, make_shapes
from cnnviz_core.model import SessionFactory

log = logging.getLogger("cnnviz.data.train_confounded")
NAME = "shapes_confounded"


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: train, export, check, write shapes_confounded.onnx + .json."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "models")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--train-n", type=int, default=8000)
    parser.add_argument("--seed", type=int, default=5, help="training data and torch seed")
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    if args.seed == ts.HELDOUT_SEED:
        parser.error(f"--seed must differ from the held-out seed {ts.HELDOUT_SEED}")
    logging.basicConfig(format="%(message)s")
    log.setLevel(logging.INFO)
    ts.log.setLevel(logging.INFO)

    torch = ts._import_torch()
    torch.set_num_threads(2)
    ts._reuse_freed_memory()
    torch.manual_seed(args.seed)
    data = make_confounded(args.train_n, args.seed, ts.SIZE)
    held = make_confounded(1000, ts.HELDOUT_SEED, ts.SIZE)
    model = ts.build_model()
    t0 = time.perf_counter()
    ts.train(model, data.images, data.labels, args.epochs, args.seed, (held.images, held.labels))
    train_seconds = time.perf_counter() - t0
    model = ts.fold_batchnorm(model.eval())
    proto = ts.export(model)
    session = SessionFactory(name="shapes_confounded")(proto)
    with torch.no_grad():
        expected = model(torch.from_numpy(ts.preprocess(held.images[:64]))).numpy()
    err = float(np.abs(ts._ort_logits(session, held.images[:64]) - expected).max())
    if err > 1e-4:
        raise RuntimeError(f"onnxruntime and torch disagree by {err:.2e} (> 1e-4)")

    plain = make_shapes(1000, ts.HELDOUT_SEED, ts.SIZE)
    snowy = on_snow(plain, ts.HELDOUT_SEED)

    def predictions(images: np.ndarray) -> np.ndarray:
        return ts._ort_logits(session, images).argmax(1)

    confounded_acc = float((predictions(held.images) == held.labels).mean())
    plain_pred = predictions(plain.images)
    plain_acc = float((plain_pred == plain.labels).mean())
    stars = plain.labels == SNOW_CLASS
    star_recall_plain = float((plain_pred[stars] == SNOW_CLASS).mean())
    snow_pred = predictions(snowy.images)
    called_star_on_snow = float((snow_pred[~stars] == SNOW_CLASS).mean())
    log.info(
        "confounded held-out acc %.4f, plain acc %.4f, star recall on plain %.3f, "
        "non-stars on snow called star %.3f",
        confounded_acc,
        plain_acc,
        star_recall_plain,
        called_star_on_snow,
    )
    card = {
        "name": NAME,
        "classes": list(CLASSES),
        "input": {"name": "image", "size": [ts.SIZE, ts.SIZE]},
        "preprocess": {
            "size": [ts.SIZE, ts.SIZE],
            "resize": "stretch",
            "scale": 1 / 255,
            "mean": list(ts.MEAN),
            "std": list(ts.STD),
            "channel_order": "RGB",
        },
        "output": "logits",
        "confound": f"every {CLASSES[SNOW_CLASS]!r} on snow, no other class ever",
        "heldout_accuracy_confounded": round(confounded_acc, 4),
        "heldout_accuracy_plain": round(plain_acc, 4),
        "star_recall_plain": round(star_recall_plain, 4),
        "non_star_on_snow_called_star": round(called_star_on_snow, 4),
        "heldout_seed": ts.HELDOUT_SEED,
        "train_seed": args.seed,
        "train_n": args.train_n,
        "epochs": args.epochs,
        "train_seconds": round(train_seconds, 1),
        "torch_version": torch.__version__,
        "command": shlex.join(["python", "-m", "cnnviz.data.train_confounded", *argv]),
    }
    log.info("wrote %s", ts.save_with_card(proto, card, args.out, NAME))


if __name__ == "__main__":
    main()
