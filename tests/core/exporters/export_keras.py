"""Export small Keras CNNs with tf2onnx and record TensorFlow's own answers.

Runs in the exporters' virtual environment (tensorflow-cpu + tf2onnx; see scripts/test.sh),
never in the test process: ``python export_keras.py OUT_DIR``. For each model it writes
``OUT_DIR/NAME.onnx`` (NHWC input, as tf2onnx writes it) and ``OUT_DIR/NAME.npz`` with the
NHWC input batch ``x``, a cotangent ``seed`` on the logits, and TensorFlow's ``logits`` and
input gradient ``grad`` (GradientTape of ``sum(logits * seed)``), in float32 and in float64
(``*64``: the same weights in a float64 copy of the model). The test module
``test_exporters_tf_paddle.py`` checks cnnviz against them.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import keras
import numpy as np
import tensorflow as tf
import tf2onnx

HEIGHT, WIDTH = 32, 24  # not square: a swapped H and W cannot pass
CLASSES = 5
L = keras.layers


def cnn(channels: int = 3) -> keras.Model:
    """Conv2D / BatchNorm / ReLU / MaxPool twice, GlobalAveragePooling, Dense."""
    x = inp = keras.Input((HEIGHT, WIDTH, channels))
    for width in (8, 16):
        x = L.Conv2D(width, 3, padding="same", use_bias=False)(x)
        x = L.BatchNormalization()(x)
        x = L.ReLU()(x)
        x = L.MaxPooling2D(2)(x)
    x = L.GlobalAveragePooling2D()(x)
    return keras.Model(inp, L.Dense(CLASSES)(x))


def depthwise() -> keras.Model:
    """MobileNet-style: strided conv, DepthwiseConv2D, BatchNorm, ReLU6, 1x1 conv, GAP."""
    x = inp = keras.Input((HEIGHT, WIDTH, 3))
    x = L.Conv2D(8, 3, strides=2, padding="same")(x)
    x = L.ReLU(6.0)(L.BatchNormalization()(x))
    x = L.DepthwiseConv2D(3, padding="same", use_bias=False)(x)
    x = L.ReLU(6.0)(L.BatchNormalization()(x))
    x = L.Conv2D(16, 1)(x)
    x = L.ReLU()(x)
    x = L.GlobalAveragePooling2D()(x)
    return keras.Model(inp, L.Dense(CLASSES)(x))


def residual() -> keras.Model:
    """A ResNet basic block (two 3x3 convs + BatchNorm, identity Add), then a Flatten head
    (tf2onnx transposes back to NHWC before the flatten)."""
    inp = keras.Input((HEIGHT, WIDTH, 3))
    x = L.ReLU()(L.BatchNormalization()(L.Conv2D(8, 3, strides=2, padding="same")(inp)))
    y = L.ReLU()(L.BatchNormalization()(L.Conv2D(8, 3, padding="same")(x)))
    y = L.BatchNormalization()(L.Conv2D(8, 3, padding="same")(y))
    x = L.ReLU()(L.Add()([x, y]))
    x = L.AveragePooling2D(4)(x)  # (4, 3, 8): the flatten order is NHWC
    return keras.Model(inp, L.Dense(CLASSES)(L.Flatten()(x)))


def mobilenet_v2() -> keras.Model:
    """``keras.applications.MobileNetV2`` (alpha 0.35, weights=None, 64x64, 5 classes, logits)."""
    return keras.applications.MobileNetV2(
        input_shape=(64, 64, 3),  # the last blocks still 2x2
        alpha=0.35,
        weights=None,
        classes=CLASSES,
        classifier_activation=None,
    )


#: name -> builder; ``gray`` (1 channel) and ``rgba`` (4 channels) are the CNN's variants
MODELS = {
    "keras_cnn": cnn,
    "keras_depthwise": depthwise,
    "keras_residual": residual,
    "keras_mobilenet_v2": mobilenet_v2,
    "keras_cnn_gray": lambda: cnn(1),
    "keras_cnn_rgba": lambda: cnn(4),
}


def randomize(model: keras.Model, rng: np.random.Generator) -> None:
    """Non-trivial BatchNorm statistics and affine parameters (not identities)."""
    for layer in model.layers:
        if isinstance(layer, L.BatchNormalization):
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights(
                [
                    rng.uniform(0.5, 1.5, gamma.shape).astype(gamma.dtype),
                    rng.normal(0, 0.1, beta.shape).astype(beta.dtype),
                    rng.normal(0, 0.2, mean.shape).astype(mean.dtype),
                    rng.uniform(0.5, 2.0, var.shape).astype(var.dtype),
                ]
            )


def reference(model: keras.Model, x: np.ndarray, seed: np.ndarray) -> tuple[np.ndarray, ...]:
    """TensorFlow's logits and d sum(logits * seed) / dx (inference mode)."""
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        logits = model(xt, training=False)
        score = tf.reduce_sum(logits * tf.constant(seed, dtype=logits.dtype))
    return logits.numpy(), tape.gradient(score, xt).numpy()


def export(name: str, out: Path) -> None:
    build = MODELS[name]
    keras.utils.set_random_seed(0)
    keras.config.set_floatx("float32")
    keras.config.set_dtype_policy("float32")
    model = build()
    rng = np.random.default_rng(0)
    randomize(model, rng)
    shape = model.input_shape[1:]
    x = rng.standard_normal((3, *shape)).astype(np.float32)
    seed = rng.standard_normal((3, CLASSES)).astype(np.float32)
    logits, grad = reference(model, x, seed)

    keras.config.set_floatx("float64")
    keras.config.set_dtype_policy("float64")
    model64 = build()
    model64.set_weights([w.astype(np.float64) for w in model.get_weights()])
    logits64, grad64 = reference(model64, x.astype(np.float64), seed.astype(np.float64))
    keras.config.set_floatx("float32")
    keras.config.set_dtype_policy("float32")

    spec = (tf.TensorSpec((None, *shape), tf.float32, name="input"),)
    function = tf.function(lambda images: model(images, training=False))
    tf2onnx.convert.from_function(
        function, input_signature=spec, opset=17, output_path=str(out / f"{name}.onnx")
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
    print("versions:", f"tensorflow {tf.__version__}", f"keras {keras.__version__}",
          f"tf2onnx {tf2onnx.__version__}")  # fmt: skip


if __name__ == "__main__":
    main()
