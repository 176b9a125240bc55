"""Export a small Paddle CNN with paddle2onnx and record Paddle's own answers.

Runs in the exporters' virtual environment (paddlepaddle + paddle2onnx; see scripts/test.sh),
never in the test process: ``python export_paddle.py OUT_DIR``. Writes ``OUT_DIR/NAME.onnx``
(NCHW input, symbolic batch) and ``OUT_DIR/NAME.npz`` with the input batch ``x``, a cotangent
``seed`` on the logits, and Paddle's ``logits`` and input gradient ``grad`` (autograd of
``sum(logits * seed)``), in float32 and in float64 (``*64``: the same weights in a float64
copy). The test module ``test_exporters_tf_paddle.py`` checks cnnviz against them.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
os.environ.setdefault("GLOG_minloglevel", "3")

import numpy as np
import paddle
import paddle2onnx

SIZE = 32
CLASSES = 5
nn = paddle.nn


class PaddleCNN(nn.Layer):
    """Conv / BatchNorm / ReLU / MaxPool, a depthwise conv with Hardswish, a squeeze-excite
    gate (Hardsigmoid), adaptive average pooling, Flatten, Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2D(3, 8, 3, padding=1, bias_attr=False), nn.BatchNorm2D(8), nn.ReLU(),
            nn.MaxPool2D(2),
        )  # fmt: skip
        self.dw = nn.Sequential(
            nn.Conv2D(8, 8, 3, padding=1, groups=8, bias_attr=False), nn.BatchNorm2D(8),
            nn.Hardswish(),
        )  # fmt: skip
        self.se_reduce, self.se_expand = nn.Conv2D(8, 4, 1), nn.Conv2D(4, 8, 1)
        self.pw = nn.Sequential(nn.Conv2D(8, 16, 1), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2D(1)
        self.head = nn.Linear(16, CLASSES)

    def forward(self, x):
        y = self.dw(self.stem(x))
        gate = nn.functional.hardsigmoid(self.se_expand(nn.functional.relu(self.se_reduce(
            self.pool(y)))))  # fmt: skip
        y = self.pool(self.pw(y * gate))
        return self.head(paddle.flatten(y, 1))


MODELS = {"paddle_cnn": PaddleCNN}


def randomize(model: nn.Layer, rng: np.random.Generator) -> None:
    """Non-trivial BatchNorm statistics and affine parameters (not identities)."""
    for layer in model.sublayers():
        if isinstance(layer, nn.BatchNorm2D):
            c = layer.weight.shape[0]
            layer.weight.set_value(rng.uniform(0.5, 1.5, c).astype(np.float32))
            layer.bias.set_value(rng.normal(0, 0.1, c).astype(np.float32))
            layer._mean.set_value(rng.normal(0, 0.2, c).astype(np.float32))
            layer._variance.set_value(rng.uniform(0.5, 2.0, c).astype(np.float32))


def reference(model: nn.Layer, x: np.ndarray, seed: np.ndarray) -> tuple[np.ndarray, ...]:
    """Paddle's logits and d sum(logits * seed) / dx (eval mode)."""
    xt = paddle.to_tensor(x, stop_gradient=False)
    logits = model(xt)
    (logits * paddle.to_tensor(seed)).sum().backward()
    return logits.numpy(), xt.grad.numpy()


def export(name: str, out: Path) -> None:
    paddle.seed(0)
    paddle.set_default_dtype("float32")
    model = MODELS[name]()
    rng = np.random.default_rng(0)
    randomize(model, rng)
    model.eval()
    x = rng.standard_normal((3, 3, SIZE, SIZE)).astype(np.float32)
    seed = rng.standard_normal((3, CLASSES)).astype(np.float32)
    logits, grad = reference(model, x, seed)

    paddle.set_default_dtype("float64")
    model64 = MODELS[name]()
    model64.set_state_dict({k: v.astype("float64") for k, v in model.state_dict().items()})
    model64.eval()
    logits64, grad64 = reference(model64, x.astype(np.float64), seed.astype(np.float64))
    paddle.set_default_dtype("float32")

    spec = [paddle.static.InputSpec([None, 3, SIZE, SIZE], "float32", "x")]
    with tempfile.TemporaryDirectory() as folder:
        prefix = os.path.join(folder, name)
        paddle.jit.save(model, prefix, input_spec=spec)
        model_file = next(
            f"{prefix}{ext}" for ext in (".json", ".pdmodel") if os.path.exists(prefix + ext)
        )
        paddle2onnx.export(
            model_file, f"{prefix}.pdiparams", str(out / f"{name}.onnx"), opset_version=13
        )
    np.savez(
        out / f"{name}.npz",
        x=x,
        seed=seed,
        logits=logits,
        grad=grad,
        logits64=logits64,
        grad64=grad64,
    )


def main() -> None:
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    for name in sys.argv[2:] or MODELS:
        export(name, out)
    print("versions:", f"paddlepaddle {paddle.__version__}",
          f"paddle2onnx {paddle2onnx.__version__}")  # fmt: skip


if __name__ == "__main__":
    main()
