"""Modern CNN blocks end to end: a ConvNeXt block (depthwise 7x7, channels-last LayerNorm,
GELU MLP, layer scale, residual) and a MobileViT-style block (GroupNorm, patches unfolded to
tokens, multi-head attention with batched MatMul + Softmax, MLP, folded back), written as
torch modules, exported with the dynamo exporter (opset 20) and, for the ConvNeXt block, with
the legacy exporter at opset 17 (LayerNormalization, the Erf form of GELU, a Shape-driven
flatten), and a one-block ViT (class token expanded to the batch, scaled dot-product
attention) with both exporters.

Each is checked: onnxruntime forward = torch; input gradient = torch autograd (the float32
engine within 3x torch's own float32-vs-float64 error, the float64 ``forward="numpy"`` path
within 1e-6); Grad-CAM and guided backprop run; occlusion ``auto`` = ``naive``."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from cnnviz.attribution import gradcam, guided_backprop, occlusion
from cnnviz_core import Model, Preprocess
from cnnviz_core.backward import gradients

torch = pytest.importorskip("torch")
nn = torch.nn
SIZE = 16
CLASSES = 5


class ConvNeXtBlock(nn.Module):
    """Liu et al. 2022: dwconv 7x7 -> permute -> LayerNorm -> Linear -> GELU -> Linear -> layer
    scale -> permute -> residual."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.dw = nn.Conv2d(c, c, 7, padding=3, groups=c)
        self.norm = nn.LayerNorm(c, eps=1e-6)
        self.fc1, self.act, self.fc2 = nn.Linear(c, 4 * c), nn.GELU(), nn.Linear(4 * c, c)
        self.gamma = nn.Parameter(torch.rand(c) + 0.5)

    def forward(self, x):
        y = self.dw(x).permute(0, 2, 3, 1)
        y = self.fc2(self.act(self.fc1(self.norm(y)))) * self.gamma
        return x + y.permute(0, 3, 1, 2)


class ConvNeXtNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 2, 2)
        self.block = ConvNeXtBlock(8)
        self.head = nn.Linear(8, CLASSES)

    def forward(self, x):
        y = self.block(self.stem(x)).mean((2, 3))
        return self.head(y.view(y.size(0), -1))


class MobileViTBlock(nn.Module):
    """Mehta & Rastegari 2022, reduced: local conv, GroupNorm, unfold 2x2 patches into token
    sequences, pre-norm multi-head attention and MLP, fold back, fuse with the input."""

    def __init__(self, c: int, heads: int = 2, patch: int = 2) -> None:
        super().__init__()
        self.heads, self.patch = heads, patch
        self.local = nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.SiLU(), nn.Conv2d(c, c, 1))
        self.gn = nn.GroupNorm(2, c)
        self.norm1, self.qkv, self.proj = nn.LayerNorm(c), nn.Linear(c, 3 * c), nn.Linear(c, c)
        self.norm2 = nn.LayerNorm(c)
        self.mlp = nn.Sequential(nn.Linear(c, 2 * c), nn.GELU("tanh"), nn.Linear(2 * c, c))
        self.fuse = nn.Conv2d(2 * c, c, 3, padding=1)

    def forward(self, x):
        y = self.gn(self.local(x))
        n, c, h, w = y.shape
        p, heads = self.patch, self.heads
        t = y.reshape(n, c, h // p, p, w // p, p).permute(0, 3, 5, 2, 4, 1)
        t = t.reshape(n * p * p, (h // p) * (w // p), c)
        q, k, v = self.qkv(self.norm1(t)).reshape(t.shape[0], -1, 3, heads, c // heads).unbind(2)
        q, k, v = (z.transpose(1, 2) for z in (q, k, v))
        attn = ((q @ k.transpose(-2, -1)) * (c // heads) ** -0.5).softmax(-1)
        t = t + self.proj((attn @ v).transpose(1, 2).reshape(t.shape))
        t = t + self.mlp(self.norm2(t))
        y = t.reshape(n, p, p, h // p, w // p, c).permute(0, 5, 3, 1, 4, 2).reshape(n, c, h, w)
        return self.fuse(torch.cat([x, y], 1))


class MobileViTNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.BatchNorm2d(8), nn.SiLU())
        self.block = MobileViTBlock(8)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, CLASSES))

    def forward(self, x):
        return self.head(self.block(self.stem(x)))


class ViTTiny(nn.Module):
    """Dosovitskiy et al. 2021, one block: 4x4 patches, class token expanded to the batch
    (a Shape-driven Expand), position embedding, pre-norm attention through
    ``F.scaled_dot_product_attention``, GELU MLP, the class token's features to the head."""

    def __init__(self, c: int = 16, heads: int = 2) -> None:
        super().__init__()
        self.heads = heads
        self.patch = nn.Conv2d(3, c, 4, 4)
        self.cls = nn.Parameter(torch.randn(1, 1, c) * 0.5)
        self.pos = nn.Parameter(torch.randn(1, (SIZE // 4) ** 2 + 1, c) * 0.1)
        self.norm1, self.qkv, self.proj = nn.LayerNorm(c), nn.Linear(c, 3 * c), nn.Linear(c, c)
        self.norm2, self.norm = nn.LayerNorm(c), nn.LayerNorm(c)
        self.mlp = nn.Sequential(nn.Linear(c, 2 * c), nn.GELU(), nn.Linear(2 * c, c))
        self.head = nn.Linear(c, CLASSES)

    def forward(self, x):
        t = self.patch(x).flatten(2).transpose(1, 2)
        t = torch.cat([self.cls.expand(t.shape[0], -1, -1), t], 1) + self.pos
        n, length, c = t.shape
        qkv = self.qkv(self.norm1(t)).reshape(n, length, 3, self.heads, c // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        a = nn.functional.scaled_dot_product_attention(q, k, v)
        t = t + self.proj(a.transpose(1, 2).reshape(n, length, c))
        t = t + self.mlp(self.norm2(t))
        return self.head(self.norm(t)[:, 0])


class CSPMishNet(nn.Module):
    """A CSP-style stage (Wang et al. 2020; YOLOv4's Mish backbone): the channels split, one
    half through conv + Mish + conv with a leaky gate written as ``torch.where`` on the data
    (comparison ops on the path), Softplus, concatenated back."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, 2, 1)
        self.a = nn.Conv2d(4, 4, 3, padding=1)
        self.b = nn.Conv2d(4, 4, 1)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, CLASSES))

    def forward(self, x):
        left, right = nn.functional.mish(self.stem(x)).chunk(2, 1)
        y = self.b(nn.functional.mish(self.a(right)))
        y = torch.where((y > 0) & (y < 2), y, 0.1 * y)
        return self.head(torch.cat([left, nn.functional.softplus(y)], 1))


#: name -> (module maker, exporter: "dynamo" or a legacy opset)
BLOCKS = {
    "convnext-dynamo": (ConvNeXtNet, "dynamo"),
    "convnext-legacy17": (ConvNeXtNet, 17),
    "csp-mish-dynamo": (CSPMishNet, "dynamo"),
    "mobilevit-dynamo": (MobileViTNet, "dynamo"),
    "vit-dynamo": (ViTTiny, "dynamo"),
    "vit-legacy17": (ViTTiny, 17),
}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(torch net, cnnviz Model) per block, exported once with a dynamic batch."""
    folder = tmp_path_factory.mktemp("modern")
    cache: dict[str, tuple] = {}

    def get(name: str):
        if name not in cache:
            make, exporter = BLOCKS[name]
            torch.manual_seed(0)
            net = make().eval()
            for module in net.modules():  # non-trivial norms: not identities
                if isinstance(module, (nn.LayerNorm, nn.GroupNorm, nn.BatchNorm2d)):
                    module.weight.data.uniform_(0.5, 1.5)
                    module.bias.data.normal_(0, 0.1)
            path = folder / f"{name}.onnx"
            x = torch.randn(2, 3, SIZE, SIZE)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the exporters' own deprecation notices
                if exporter == "dynamo":
                    pytest.importorskip("onnxscript")
                    torch.onnx.export(
                        net, (x,), str(path), dynamo=True, verbose=False, opset_version=20,
                        dynamic_shapes=({0: torch.export.Dim("batch")},),
                    )  # fmt: skip
                else:
                    torch.onnx.export(
                        net, (x,), str(path), dynamo=False, opset_version=exporter,
                        input_names=["x"], dynamic_axes={"x": {0: "N"}},
                    )  # fmt: skip
            cache[name] = (net, Model(path, preprocess=Preprocess(scale=1.0)))
        return cache[name]

    return get


def _batch(n: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 3, SIZE, SIZE)).astype(np.float32)


def _torch_input_grad(net, batch: np.ndarray, seed: np.ndarray, dtype) -> np.ndarray:
    net = net.to(dtype)
    x = torch.from_numpy(batch).to(dtype).requires_grad_()
    (net(x) * torch.from_numpy(seed).to(dtype)).sum().backward()
    net.float()
    return x.grad.double().numpy()


def _relative(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.mark.torch
@pytest.mark.parametrize("name", sorted(BLOCKS))
def test_onnxruntime_forward_equals_torch(exported, name):
    net, model = exported(name)
    batch = _batch(3)
    with torch.no_grad():
        expected = net(torch.from_numpy(batch)).numpy()
    got = model.run(batch)[model.output_names[0]]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.torch
@pytest.mark.parametrize("name", sorted(BLOCKS))
@pytest.mark.parametrize("n", [1, 3])
def test_input_gradient_equals_torch_autograd(exported, name, n):
    """float32: within 3x torch's own float32 error (against torch float64); the engine's
    float64 path: within 1e-6 of torch float64."""
    net, model = exported(name)
    batch = _batch(n)
    seed = np.random.default_rng(2).standard_normal((n, CLASSES)).astype(np.float32)
    reference = _torch_input_grad(net, batch, seed, torch.float64)
    torch32 = _torch_input_grad(net, batch, seed, torch.float32)
    output = model.output_names[0]
    ours32 = gradients(model, batch, {output: seed}).grads[model.input_name]
    ours64 = gradients(model, batch.astype(np.float64), {output: seed.astype(np.float64)},
                       forward="numpy").grads[model.input_name]  # fmt: skip
    for i in range(n):
        own_error = _relative(torch32[i], reference[i])
        assert _relative(ours32[i], reference[i]) <= 3 * own_error + 1e-6, (i, own_error)
        assert _relative(ours64[i], reference[i]) <= 1e-6, i


@pytest.mark.torch
@pytest.mark.parametrize("name", sorted(BLOCKS))
def test_gradcam_and_guided_backprop_run(exported, name):
    _, model = exported(name)
    batch = _batch(2)
    cam = gradcam(model, batch)
    guided = guided_backprop(model, batch)
    assert cam.maps.shape == (2, SIZE, SIZE) and np.isfinite(cam.maps).all()
    assert guided.maps.shape[0] == 2 and np.isfinite(guided.maps).all()
    assert np.abs(guided.maps).sum() > 0


@pytest.mark.torch
@pytest.mark.parametrize("name", sorted(BLOCKS))
def test_occlusion_auto_equals_naive(exported, name):
    _, model = exported(name)
    batch = _batch(1)
    auto = occlusion(model, batch, 0, window=6, stride=5)
    naive = occlusion(model, batch, 0, window=6, stride=5, engine="naive")
    np.testing.assert_allclose(auto.maps, naive.maps, rtol=1e-4, atol=1e-5)
