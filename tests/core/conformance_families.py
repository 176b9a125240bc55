"""Small torch modules with the characteristic blocks of 32 CNN architecture families, for the
conformance suite (``test_conformance.py``). Each is a few blocks wide, sized for a 16 or 32
pixel input and 5 classes; the classic and modern blocks already written for other tests are
reused from ``test_backward_models.py`` and ``test_modern_blocks.py``.

``FAMILIES``: name -> (module maker, input side, what the family contributes)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from test_backward_models import (
    AlexNetish,
    DenseNetish,
    Inceptionish,
    MobileNetV2ish,
    ResNetish,
    SqueezeNetish,
    conv_bn,
)
from test_modern_blocks import ConvNeXtNet, CSPMishNet, MobileViTNet, ViTTiny
from torch import nn

CLASSES = 5


def head(c: int) -> nn.Module:
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, CLASSES))


class VGGAdaptive(nn.Module):
    """VGG: 3x3 conv stacks and max pools, adaptive average pooling to 2x2, two FC layers."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2),
        )  # fmt: skip
        self.pool = nn.AdaptiveAvgPool2d((2, 2))
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Dropout(), nn.Linear(16, CLASSES)
        )

    def forward(self, x):
        return self.classifier(self.pool(self.features(x)))


class ResNeXt(nn.Module):
    """ResNeXt: a bottleneck whose 3x3 conv is grouped (cardinality 4)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(conv_bn(3, 16, 3, 2), nn.ReLU())
        self.body = nn.Sequential(
            conv_bn(16, 16, 1), nn.ReLU(), conv_bn(16, 16, 3, groups=4), nn.ReLU(),
            conv_bn(16, 16, 1),
        )  # fmt: skip
        self.head = head(16)

    def forward(self, x):
        y = self.stem(x)
        return self.head(torch.relu(y + self.body(y)))


class SqueezeExcite(nn.Module):
    def __init__(self, c: int, r: int = 4, gate: nn.Module | None = None) -> None:
        super().__init__()
        self.fc = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Conv2d(c, c // r, 1), nn.ReLU(), nn.Conv2d(c // r, c, 1),
            gate or nn.Sigmoid(),
        )  # fmt: skip

    def forward(self, x):
        return x * self.fc(x)


class SENet(nn.Module):
    """SENet: a residual block re-weighted by squeeze-and-excitation."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(conv_bn(3, 16, 3, 2), nn.ReLU())
        self.body = nn.Sequential(conv_bn(16, 16), nn.ReLU(), conv_bn(16, 16), SqueezeExcite(16))
        self.head = head(16)

    def forward(self, x):
        y = self.stem(x)
        return self.head(torch.relu(y + self.body(y)))


class ECANet(nn.Module):
    """ECA-Net: channel attention by a 1-D conv over the pooled channel vector."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(conv_bn(3, 16, 3, 2), nn.ReLU())
        self.conv = nn.Conv1d(1, 1, 3, padding=1, bias=False)
        self.head = head(16)

    def forward(self, x):
        y = self.stem(x)
        w = y.mean((2, 3)).unsqueeze(1)  # (N, 1, C)
        w = torch.sigmoid(self.conv(w)).transpose(1, 2).unsqueeze(-1)  # (N, C, 1, 1)
        return self.head(y * w)


class CBAM(nn.Module):
    """CBAM: channel attention (avg and max pooled MLP), then spatial attention (a 7x7 conv
    over the channel mean and max)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(conv_bn(3, 16, 3, 2), nn.ReLU())
        self.mlp = nn.Sequential(nn.Conv2d(16, 4, 1), nn.ReLU(), nn.Conv2d(4, 16, 1))
        self.spatial = nn.Conv2d(2, 1, 7, padding=3)
        self.head = head(16)

    def forward(self, x):
        y = self.stem(x)
        avg, mx = F.adaptive_avg_pool2d(y, 1), F.adaptive_max_pool2d(y, 1)
        y = y * torch.sigmoid(self.mlp(avg) + self.mlp(mx))
        s = torch.cat([y.mean(1, keepdim=True), y.amax(1, keepdim=True)], 1)
        return self.head(y * torch.sigmoid(self.spatial(s)))


class MobileNetV3(nn.Module):
    """MobileNetV3: inverted residual with Hardswish and a Hardsigmoid-gated SE."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(conv_bn(3, 8, 3, 2), nn.Hardswish())
        self.block = nn.Sequential(
            conv_bn(8, 24, 1), nn.Hardswish(), conv_bn(24, 24, 3, groups=24), nn.Hardswish(),
            SqueezeExcite(24, 4, nn.Hardsigmoid()), conv_bn(24, 8, 1),
        )  # fmt: skip
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 16), nn.Hardswish(),
            nn.Linear(16, CLASSES),
        )  # fmt: skip

    def forward(self, x):
        y = self.stem(x)
        return self.head(y + self.block(y))


class SameConv(nn.Conv2d):
    """TensorFlow's 'same' padding (EfficientNet ports): asymmetric pad computed from the
    input size, then a padless conv."""

    def forward(self, x):
        h, w = x.shape[-2:]
        kh, kw = self.kernel_size
        sh, sw = self.stride
        ph = max((-(-h // sh) - 1) * sh + kh - h, 0)
        pw = max((-(-w // sw) - 1) * sw + kw - w, 0)
        x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class EfficientNet(nn.Module):
    """EfficientNet (TF port): 'same'-padded strided convs, MBConv with SiLU and SE."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(SameConv(3, 8, 3, 2, bias=False), nn.BatchNorm2d(8), nn.SiLU())
        self.block = nn.Sequential(
            nn.Conv2d(8, 24, 1, bias=False), nn.BatchNorm2d(24), nn.SiLU(),
            SameConv(24, 24, 5, 2, groups=24, bias=False), nn.BatchNorm2d(24), nn.SiLU(),
            SqueezeExcite(24, 4), nn.Conv2d(24, 16, 1, bias=False), nn.BatchNorm2d(16),
        )  # fmt: skip
        self.head = head(16)

    def forward(self, x):
        return self.head(self.block(self.stem(x)))


class Ghost(nn.Module):
    """GhostNet: half the channels from a conv, the other half by a cheap depthwise conv of
    them, concatenated and sliced to the width."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.c_out = c_out
        half = (c_out + 1) // 2
        self.primary = nn.Sequential(conv_bn(c_in, half, 1), nn.ReLU())
        self.cheap = nn.Sequential(conv_bn(half, half, 3, groups=half), nn.ReLU())

    def forward(self, x):
        y = self.primary(x)
        return torch.cat([y, self.cheap(y)], 1)[:, : self.c_out]


class GhostNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(conv_bn(3, 8, 3, 2), nn.ReLU())
        self.a, self.b = Ghost(8, 14), Ghost(14, 8)
        self.head = head(8)

    def forward(self, x):
        y = self.stem(x)
        return self.head(y + self.b(self.a(y)))


class RegNet(nn.Module):
    """RegNetY: a bottleneck with a group conv (group width 4) and SE."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(conv_bn(3, 16, 3, 2), nn.ReLU())
        self.body = nn.Sequential(
            conv_bn(16, 16, 1), nn.ReLU(), conv_bn(16, 16, 3, 2, groups=4), nn.ReLU(),
            SqueezeExcite(16), conv_bn(16, 24, 1),
        )  # fmt: skip
        self.short = conv_bn(16, 24, 1, 2)
        self.head = head(24)

    def forward(self, x):
        y = self.stem(x)
        return self.head(torch.relu(self.body(y) + self.short(y)))


class StdConv(nn.Conv2d):
    """Weight standardization (NFNet's ScaledStdConv, BiT's StdConv2d): the kernel normalized
    per output channel in the graph at every call."""

    def forward(self, x):
        w = self.weight
        mean = w.mean((1, 2, 3), keepdim=True)
        var = w.var((1, 2, 3), keepdim=True, unbiased=False)
        w = (w - mean) / torch.sqrt(var + 1e-5) * w[0].numel() ** -0.5
        return F.conv2d(x, w, self.bias, self.stride, self.padding, self.dilation, self.groups)


class NFNet(nn.Module):
    """NFNet: standardized convs, scaled GELU, a residual with a skip gain (no norm layers)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = StdConv(3, 16, 3, 2, 1)
        self.a, self.b = StdConv(16, 16, 3, 1, 1), StdConv(16, 16, 3, 1, 1)
        self.gain = nn.Parameter(torch.tensor(0.7))
        self.head = head(16)

    def forward(self, x):
        y = F.gelu(self.stem(x)) * 1.7
        return self.head(y + self.gain * self.b(F.gelu(self.a(y)) * 1.7))


class BiTResNetV2(nn.Module):
    """BiT (ResNetV2): pre-activation blocks of GroupNorm + ReLU + weight-standardized conv."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = StdConv(3, 16, 3, 2, 1)
        self.gn1, self.conv1 = nn.GroupNorm(4, 16), StdConv(16, 16, 3, 1, 1)
        self.gn2, self.conv2 = nn.GroupNorm(4, 16), StdConv(16, 16, 3, 1, 1)
        self.head = nn.Sequential(nn.GroupNorm(4, 16), nn.ReLU(), head(16))

    def forward(self, x):
        y = self.stem(x)
        z = self.conv1(torch.relu(self.gn1(y)))
        return self.head(y + self.conv2(torch.relu(self.gn2(z))))


class RepVGG(nn.Module):
    """RepVGG (training form): 3x3 + 1x1 + identity-BN branches summed, then ReLU."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(conv_bn(3, 16, 3, 2), nn.ReLU())
        self.b3, self.b1, self.bid = conv_bn(16, 16, 3), conv_bn(16, 16, 1), nn.BatchNorm2d(16)
        self.head = head(16)

    def forward(self, x):
        y = self.stem(x)
        return self.head(torch.relu(self.b3(y) + self.b1(y) + self.bid(y)))


class DLA(nn.Module):
    """DLA: two levels aggregated by an aggregation node (concat -> 1x1 conv -> BN -> ReLU,
    with the residual of its first input)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(conv_bn(3, 8, 3, 2), nn.ReLU())
        self.l1 = nn.Sequential(conv_bn(8, 8), nn.ReLU())
        self.l2 = nn.Sequential(conv_bn(8, 8), nn.ReLU())
        self.root = conv_bn(16, 8, 1)
        self.head = head(8)

    def forward(self, x):
        a = self.l1(self.stem(x))
        b = self.l2(a)
        return self.head(torch.relu(self.root(torch.cat([a, b], 1)) + a))


class HRNetFusion(nn.Module):
    """HRNet: a high- and a low-resolution branch exchanging features (strided conv down,
    1x1 conv + nearest upsampling up), summed."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(conv_bn(3, 8, 3, 2), nn.ReLU())
        self.high = nn.Sequential(conv_bn(8, 8), nn.ReLU())
        self.low = nn.Sequential(conv_bn(8, 16, 3, 2), nn.ReLU())
        self.down, self.up = conv_bn(8, 16, 3, 2), conv_bn(16, 8, 1)
        self.head = head(24)

    def forward(self, x):
        y = self.stem(x)
        h, lo = self.high(y), self.low(y)
        h2 = torch.relu(h + F.interpolate(self.up(lo), scale_factor=2.0, mode="nearest"))
        l2 = torch.relu(lo + self.down(h))
        return self.head(torch.cat([F.avg_pool2d(h2, 2), l2], 1))


class VoVNet(nn.Module):
    """VoVNet: one-shot aggregation (a chain of 3x3 convs, all outputs concatenated once),
    ceil-mode max pooling."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(conv_bn(3, 8, 3, 2), nn.ReLU())
        self.convs = nn.ModuleList(nn.Sequential(conv_bn(8, 8), nn.ReLU()) for _ in range(3))
        self.concat = nn.Sequential(conv_bn(32, 16, 1), nn.ReLU())
        self.pool = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.head = head(16)

    def forward(self, x):
        y = self.stem(x)
        outs = [y]
        for conv in self.convs:
            outs.append(conv(outs[-1]))
        return self.head(self.pool(self.concat(torch.cat(outs, 1))))


class Xception(nn.Module):
    """Xception: separable convs (depthwise + pointwise) with a strided 1x1 residual."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(conv_bn(3, 8, 3, 2), nn.ReLU())

        def separable(c_in: int, c_out: int) -> nn.Module:
            return nn.Sequential(
                nn.Conv2d(c_in, c_in, 3, padding=1, groups=c_in, bias=False),
                nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out),
            )  # fmt: skip

        self.body = nn.Sequential(
            separable(8, 16), nn.ReLU(), separable(16, 16), nn.MaxPool2d(3, 2, 1)
        )
        self.short = conv_bn(8, 16, 1, 2)
        self.head = head(16)

    def forward(self, x):
        y = self.stem(x)
        return self.head(self.body(y) + self.short(y))


class EfficientFormer(nn.Module):
    """EfficientFormer: a MetaBlock4D (pooling token mixer: x + pool(x) - x, conv MLP), then
    the map flattened to tokens for a MetaBlock3D (LayerNorm, multi-head attention, MLP)."""

    def __init__(self, c: int = 16, heads: int = 2) -> None:
        super().__init__()
        self.heads = heads
        self.stem = nn.Sequential(conv_bn(3, c, 3, 2), nn.ReLU())
        self.pool = nn.AvgPool2d(3, 1, 1, count_include_pad=False)
        self.mlp4 = nn.Sequential(nn.Conv2d(c, 2 * c, 1), nn.GELU(), nn.Conv2d(2 * c, c, 1))
        self.norm1, self.qkv, self.proj = nn.LayerNorm(c), nn.Linear(c, 3 * c), nn.Linear(c, c)
        self.norm2 = nn.LayerNorm(c)
        self.mlp3 = nn.Sequential(nn.Linear(c, 2 * c), nn.GELU(), nn.Linear(2 * c, c))
        self.out = nn.Linear(c, CLASSES)

    def forward(self, x):
        y = self.stem(x)
        y = y + (self.pool(y) - y)
        y = y + self.mlp4(y)
        t = y.flatten(2).transpose(1, 2)
        n, length, c = t.shape
        qkv = self.qkv(self.norm1(t)).reshape(n, length, 3, self.heads, c // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        attn = ((q @ k.transpose(-2, -1)) * (c // self.heads) ** -0.5).softmax(-1)
        t = t + self.proj((attn @ v).transpose(1, 2).reshape(n, length, c))
        t = t + self.mlp3(self.norm2(t))
        return self.out(t.mean(1))


class YOLOHead(nn.Module):
    """YOLOv5-style: Focus stem (four strided slices concatenated), SiLU convs, SPP max pools,
    nearest upsampling with a skip concat, a 1x1 detection conv; the per-cell outputs are
    flattened (N, cells * 6) and mixed to 5 scores."""

    def __init__(self) -> None:
        super().__init__()
        self.focus = nn.Sequential(conv_bn(12, 8, 3), nn.SiLU())
        self.down = nn.Sequential(conv_bn(8, 16, 3, 2), nn.SiLU())
        self.spp = nn.ModuleList(nn.MaxPool2d(k, 1, k // 2) for k in (3, 5))
        self.fuse = nn.Sequential(conv_bn(48, 16, 1), nn.SiLU())
        self.merge = nn.Sequential(conv_bn(24, 8, 3), nn.SiLU())
        self.detect = nn.Conv2d(8, 6, 1)
        self.mix = nn.Linear(6 * 8 * 8, CLASSES)

    def forward(self, x):
        x = torch.cat(
            [x[..., ::2, ::2], x[..., 1::2, ::2], x[..., ::2, 1::2], x[..., 1::2, 1::2]], 1
        )
        a = self.focus(x)
        b = self.down(a)
        b = self.fuse(torch.cat([b, *(pool(b) for pool in self.spp)], 1))
        c = self.merge(torch.cat([a, F.interpolate(b, scale_factor=2.0, mode="nearest")], 1))
        return self.mix(self.detect(c).flatten(1))


class ShuffleNet(nn.Module):
    """ShuffleNetV2: split channels, one half through 1x1 -> depthwise 3x3 -> 1x1, concat,
    channel shuffle (reshape -> transpose -> reshape)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(conv_bn(3, 16, 3, 2), nn.ReLU())
        self.branch = nn.Sequential(
            conv_bn(8, 8, 1), nn.ReLU(), conv_bn(8, 8, 3, groups=8), conv_bn(8, 8, 1), nn.ReLU()
        )
        self.head = head(16)

    def forward(self, x):
        y = self.stem(x)
        left, right = y.chunk(2, 1)
        y = torch.cat([left, self.branch(right)], 1)
        n, c, h, w = y.shape
        y = y.reshape(n, 2, c // 2, h, w).transpose(1, 2).reshape(n, c, h, w)
        return self.head(y)


class DeepLabASPP(nn.Module):
    """DeepLabV3: atrous spatial pyramid pooling (dilated 3x3 convs, an image-pooling branch
    upsampled bilinearly), concatenated and projected."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(conv_bn(3, 8, 3, 2), nn.ReLU())
        self.branches = nn.ModuleList(
            nn.Sequential(nn.Conv2d(8, 8, 3, padding=d, dilation=d), nn.ReLU()) for d in (1, 2, 3)
        )
        self.image = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(8, 8, 1), nn.ReLU())
        self.project = nn.Sequential(conv_bn(32, 16, 1), nn.ReLU())
        self.head = head(16)

    def forward(self, x):
        y = self.stem(x)
        pooled = F.interpolate(self.image(y), size=y.shape[-2:], mode="bilinear")
        return self.head(self.project(torch.cat([b(y) for b in self.branches] + [pooled], 1)))


class UNet(nn.Module):
    """U-Net: an encoder level, a transposed-conv decoder with a skip concat, and a per-pixel
    class map averaged into scores."""

    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.Sequential(conv_bn(3, 8), nn.ReLU())
        self.down = nn.Sequential(nn.MaxPool2d(2), conv_bn(8, 16), nn.ReLU())
        self.up = nn.ConvTranspose2d(16, 8, 2, 2)
        self.dec = nn.Sequential(conv_bn(16, 8), nn.ReLU(), nn.Conv2d(8, CLASSES, 1))

    def forward(self, x):
        e = self.enc(x)
        return self.dec(torch.cat([e, self.up(self.down(e))], 1)).mean((2, 3))


class PixelShuffleNet(nn.Module):
    """Sub-pixel convolution (ESPCN, super-resolution heads): PixelShuffle (DepthToSpace)."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(conv_bn(3, 16, 3, 2), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1))
        self.shuffle = nn.PixelShuffle(2)
        self.head = head(4)

    def forward(self, x):
        return self.head(torch.relu(self.shuffle(self.body(x))))


#: name -> (module maker, input side)
FAMILIES: dict[str, tuple[type[nn.Module], int]] = {
    "alexnet-lrn": (AlexNetish, 48),
    "bit-resnetv2-gn-ws": (BiTResNetV2, 16),
    "cbam": (CBAM, 16),
    "convnext": (ConvNeXtNet, 16),
    "csp-mish-leaky": (CSPMishNet, 16),
    "deeplab-aspp": (DeepLabASPP, 16),
    "densenet": (DenseNetish, 16),
    "dla": (DLA, 16),
    "ecanet": (ECANet, 16),
    "efficientformer": (EfficientFormer, 16),
    "efficientnet-same": (EfficientNet, 16),
    "ghostnet": (GhostNet, 16),
    "hrnet-fusion": (HRNetFusion, 16),
    "inception": (Inceptionish, 32),
    "mobilenetv2": (MobileNetV2ish, 32),
    "mobilenetv3": (MobileNetV3, 16),
    "mobilevit": (MobileViTNet, 16),
    "nfnet-ws": (NFNet, 16),
    "pixelshuffle": (PixelShuffleNet, 16),
    "regnet": (RegNet, 16),
    "repvgg": (RepVGG, 16),
    "resnet": (ResNetish, 32),
    "resnext": (ResNeXt, 16),
    "senet": (SENet, 16),
    "shufflenetv2": (ShuffleNet, 16),
    "squeezenet": (SqueezeNetish, 48),
    "unet": (UNet, 16),
    "vgg-adaptive": (VGGAdaptive, 32),
    "vit-tiny": (ViTTiny, 16),
    "vovnet-ceil": (VoVNet, 16),
    "xception": (Xception, 16),
    "yolo-head": (YOLOHead, 16),
}
