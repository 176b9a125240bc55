"""Whole-model gradients: against torch autograd on classic architectures exported to ONNX by
torch 2.13's default (dynamo) exporter, and against finite differences on the real models of
../shared/data."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from cnnviz_core import Model, Preprocess
from cnnviz_core.backward import forward_values, gradients, plan_backward

torch = pytest.importorskip("torch")
pytest.importorskip("onnxscript")
nn = torch.nn


def conv_bn(c_in: int, c_out: int, k: int = 3, stride: int = 1, groups: int = 1) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, k, stride, k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(c_out),
    )


class AlexNetish(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 5, 2, 2), nn.ReLU(), nn.LocalResponseNorm(5, 1e-4, 0.75, 2.0),
            nn.MaxPool2d(3, 2), nn.Conv2d(16, 24, 3, 1, 1), nn.ReLU(),
            nn.LocalResponseNorm(3), nn.MaxPool2d(3, 2, ceil_mode=True),
        )  # fmt: skip
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Dropout(), nn.Linear(24 * 5 * 5, 32), nn.ReLU(), nn.Linear(32, 5)
        )

    def forward(self, x):
        return self.classifier(self.features(x))


class VGGish(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        layers, c = [], 3
        for width in (8, 16, 16):
            layers += [
                nn.Conv2d(c, width, 3, padding=1),
                nn.ReLU(),
                nn.Conv2d(width, width, 3, padding=1),
                nn.ReLU(),
                nn.MaxPool2d(2),
            ]
            c = width
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(16 * 4 * 4, 5))

    def forward(self, x):
        return self.head(self.features(x))


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.a, self.b = conv_bn(c_in, c_out, 3, stride), conv_bn(c_out, c_out)
        self.down = conv_bn(c_in, c_out, 1, stride) if stride > 1 or c_in != c_out else None

    def forward(self, x):
        skip = x if self.down is None else self.down(x)
        return torch.relu(self.b(torch.relu(self.a(x))) + skip)


class Bottleneck(nn.Module):
    def __init__(self, c: int, mid: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            conv_bn(c, mid, 1), nn.ReLU(), conv_bn(mid, mid, 3), nn.ReLU(), conv_bn(mid, c, 1)
        )

    def forward(self, x):
        return torch.relu(self.body(x) + x)


class ResNetish(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(conv_bn(3, 8, 3, 2), nn.ReLU(), nn.MaxPool2d(3, 2, 1))
        self.blocks = nn.Sequential(BasicBlock(8, 8, 1), BasicBlock(8, 16, 2), Bottleneck(16, 4))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 5))

    def forward(self, x):
        return self.head(self.blocks(self.stem(x)))


class Fire(nn.Module):
    def __init__(self, c_in: int, squeeze: int, expand: int) -> None:
        super().__init__()
        self.squeeze = nn.Sequential(nn.Conv2d(c_in, squeeze, 1), nn.ReLU())
        self.e1 = nn.Sequential(nn.Conv2d(squeeze, expand, 1), nn.ReLU())
        self.e3 = nn.Sequential(nn.Conv2d(squeeze, expand, 3, padding=1), nn.ReLU())

    def forward(self, x):
        s = self.squeeze(x)
        return torch.cat([self.e1(s), self.e3(s)], 1)


class SqueezeNetish(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, 2), nn.ReLU(), nn.MaxPool2d(3, 2, ceil_mode=True),
            Fire(16, 4, 8), Fire(16, 4, 8), nn.MaxPool2d(3, 2, ceil_mode=True), Fire(16, 6, 12),
        )  # fmt: skip
        self.classifier = nn.Sequential(
            nn.Dropout(), nn.Conv2d(24, 5, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()
        )

    def forward(self, x):
        return self.classifier(self.features(x))


class InvertedResidual(nn.Module):
    def __init__(self, c: int, expand: int) -> None:
        super().__init__()
        hidden = c * expand
        self.body = nn.Sequential(
            conv_bn(c, hidden, 1), nn.ReLU6(), conv_bn(hidden, hidden, 3, groups=hidden),
            nn.ReLU6(), conv_bn(hidden, c, 1),
        )  # fmt: skip

    def forward(self, x):
        return x + self.body(x)


class MobileNetV2ish(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(conv_bn(3, 8, 3, 2), nn.ReLU6())
        self.blocks = nn.Sequential(InvertedResidual(8, 4), InvertedResidual(8, 2))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5))

    def forward(self, x):
        return self.head(self.blocks(self.stem(x)))


class DenseLayer(nn.Module):
    def __init__(self, c_in: int, growth: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.BatchNorm2d(c_in), nn.ReLU(), nn.Conv2d(c_in, growth, 3, padding=1, bias=False)
        )

    def forward(self, x):
        return torch.cat([x, self.body(x)], 1)


class DenseNetish(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.block = nn.Sequential(DenseLayer(8, 4), DenseLayer(12, 4))
        self.transition = nn.Sequential(
            nn.BatchNorm2d(16), nn.ReLU(), nn.Conv2d(16, 8, 1), nn.AvgPool2d(2)
        )
        self.head = nn.Sequential(
            nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5)
        )

    def forward(self, x):
        return self.head(self.transition(self.block(self.stem(x))))


class Inceptionish(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU())
        self.b1 = nn.Sequential(nn.Conv2d(8, 4, 1), nn.ReLU())
        self.b3 = nn.Sequential(
            nn.Conv2d(8, 4, 1), nn.ReLU(), nn.Conv2d(4, 6, 3, padding=1), nn.ReLU()
        )
        self.b5 = nn.Sequential(
            nn.Conv2d(8, 2, 1), nn.ReLU(), nn.Conv2d(2, 4, 5, padding=2), nn.ReLU()
        )
        self.pool = nn.Sequential(nn.MaxPool2d(3, 1, 1), nn.Conv2d(8, 4, 1), nn.ReLU())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(18, 5))

    def forward(self, x):
        x = self.stem(x)
        return self.head(torch.cat([self.b1(x), self.b3(x), self.b5(x), self.pool(x)], 1))


ARCHITECTURES = {
    "alexnet": (AlexNetish, 48),
    "vgg": (VGGish, 32),
    "resnet": (ResNetish, 32),
    "squeezenet": (SqueezeNetish, 48),
    "mobilenetv2": (MobileNetV2ish, 32),
    "densenet": (DenseNetish, 16),
    "inception": (Inceptionish, 32),
}


def randomize_batchnorm(net: nn.Module, generator: torch.Generator) -> None:
    """Non-trivial running statistics, so that BatchNormalization is not an identity."""
    for module in net.modules():
        if isinstance(module, nn.BatchNorm2d):
            c = module.num_features
            module.running_mean.copy_(torch.randn(c, generator=generator) * 0.1)
            module.running_var.copy_(torch.rand(c, generator=generator) + 0.5)
            module.weight.data.copy_(torch.rand(c, generator=generator) + 0.5)
            module.bias.data.copy_(torch.randn(c, generator=generator) * 0.1)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(torch net, cnnviz Model, input size) per architecture, exported once."""
    folder = tmp_path_factory.mktemp("architectures")
    cache: dict[str, tuple] = {}

    def get(name: str):
        if name not in cache:
            make, size = ARCHITECTURES[name]
            generator = torch.Generator().manual_seed(0)
            torch.manual_seed(0)
            net = make().eval()
            randomize_batchnorm(net, generator)
            path = folder / f"{name}.onnx"
            x = torch.randn(2, 3, size, size)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the exporter's own deprecation notices
                torch.onnx.export(
                    net, (x,), str(path), dynamo=True, verbose=False,
                    dynamic_shapes=({0: torch.export.Dim("batch")},),
                )  # fmt: skip
            cache[name] = (net, Model(path, preprocess=Preprocess(scale=1.0)), size)
        return cache[name]

    return get


@pytest.mark.torch
@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_input_gradient_equals_torch_autograd(exported, name):
    net, model, size = exported(name)
    rng = np.random.default_rng(1)
    batch = rng.standard_normal((3, 3, size, size)).astype(np.float32)
    seed = rng.standard_normal((3, 5)).astype(np.float32)
    ours = gradients(model, batch, {model.output_names[0]: seed}).grads[model.input_name]
    x = torch.from_numpy(batch).requires_grad_()
    (net(x) * torch.from_numpy(seed)).sum().backward()
    theirs = x.grad.numpy()
    for i in range(len(batch)):
        error = np.linalg.norm(ours[i] - theirs[i]) / np.linalg.norm(theirs[i])
        assert error <= 1e-4, (name, i, error)


@pytest.mark.shared
@pytest.mark.parametrize(("name", "preset", "seed_layer", "image"), [
    ("squeezenet1.1_fp32.onnx", "caffe", "pool10_1", "photos/fish.png"),
    ("mnist_cntk.onnx", "grey01", "Plus214_Output_0", "digits/mnist_3.jpg"),
    ("cifar10_tutorial_cnn.onnx", "unit", "modelOutput", "photos/kitten_224.png"),
])  # fmt: skip
def test_real_models_match_directional_finite_differences(
    shared_data, name, preset, seed_layer, image
):
    """float64 gradients against central differences of the float64 forward, on real inputs
    (ReLU and max-pool kinks make single directions occasionally rough: most must be tight,
    all close)."""
    model = Model(shared_data / "models" / name, preprocess=preset)
    rng = np.random.default_rng(2)
    batch = model.prepare(shared_data / image)
    # a little noise breaks the exact max-pool ties of flat image regions (non-differentiable)
    batch += 0.01 * batch.std() * rng.standard_normal(batch.shape).astype(np.float32)
    plan = plan_backward(model, [seed_layer])
    shape = forward_values(model, batch, plan)[model.tensor_name(seed_layer)].shape
    seed = rng.standard_normal(shape)
    x64 = batch.astype(np.float64)
    grad = gradients(model, x64, {seed_layer: seed}, forward="numpy").grads[model.input_name]
    grad32 = gradients(model, batch, {seed_layer: seed}).grads[model.input_name]
    # float32 forward values flip a few ReLU/max decisions of a deep real model: loose check
    assert np.linalg.norm(grad32 - grad) <= 1e-2 * np.linalg.norm(grad)

    def objective(x: np.ndarray) -> float:
        return float((forward_values(model, x, plan, "numpy")[plan.seeds[0]] * seed).sum())

    errors = []
    for _ in range(4):
        direction = rng.standard_normal(batch.shape)
        eps = 1e-7 * np.linalg.norm(x64) / np.linalg.norm(direction)
        numeric = (objective(x64 + eps * direction) - objective(x64 - eps * direction)) / (2 * eps)
        analytic = float((grad * direction).sum())
        errors.append(abs(numeric - analytic) / max(abs(analytic), 1e-12))
    assert sorted(errors)[2] <= 1e-4 and max(errors) <= 1e-2, errors


@pytest.mark.shared
@pytest.mark.parametrize(("name", "preset", "image"), [
    ("squeezenet1.1_fp32.onnx", "caffe", "photos/fish.png"),  # opset 9: converted to 17
    ("mnist_cntk.onnx", "grey01", "digits/mnist_3.jpg"),
    ("cifar10_tutorial_cnn.onnx", "unit", "photos/kitten_224.png"),
])  # fmt: skip
def test_real_models_take_the_compiled_path_equal_to_the_engine(shared_data, name, preset, image):
    """The default path (the compiled graph) on real exports of old opsets: their conversion
    puts a Flatten before the softmax, and the class seeds must still go to the given
    model's score tensor (they went to the Flatten's new name, and the scores were lost)."""
    model = Model(shared_data / "models" / name, preprocess=preset)
    batch = model.prepare([shared_data / image] * 2)
    for target in (None, 1):
        compiled = gradients(model, batch, target)
        engine = gradients(model, batch, target, forward="onnxruntime")
        assert compiled.forward == "compiled" and engine.forward == "onnxruntime"
        ours, reference = compiled.grads[model.input_name], engine.grads[model.input_name]
        assert np.abs(ours - reference).max() <= 1e-5 * np.abs(reference).max()
        np.testing.assert_allclose(compiled.scores, engine.scores, rtol=1e-5)
        assert [t.class_index for t in compiled.targets] == [t.class_index for t in engine.targets]
