"""Image classifiers: the CIFAR ResNet of He et al., a small CNN and an MLP.

``resnet20`` is the network He, Zhang, Ren and Sun use for CIFAR-10 in "Deep Residual Learning
for Image Recognition" (arXiv:1512.03385, section 4.2): a 3x3 convolution with ``w`` filters,
then three stages of ``n`` basic blocks (two 3x3 conv-BN layers and a shortcut) on feature maps
of ``w``, ``2w`` and ``4w`` channels, the first convolution of stages 2 and 3 striding by 2,
then global average pooling and one linear layer. Depth ``6n + 2`` counts the weighted layers:
20, 32, 44, 56, 110 give the paper's Table 6 rows (0.27M, 0.46M, 0.66M, 0.85M, 1.7M
parameters with ``w = 16``).

Where the channel count grows, the shortcut must change shape. Option ``"a"`` (the paper's
choice for CIFAR) is parameter-free: subsample by taking every second pixel and append zero
channels, as Facebook's fb.resnet.torch reproduction does (``Concat(Identity, MulConstant(0))``
after a strided 1x1 average pool). Some PyTorch ports pad the zeros on both sides of the
channel dimension instead; which channels hold the zeros makes no difference to what the
network can learn. Option ``"b"`` uses a 1x1 convolution with batch norm (a projection) on those
blocks only, identity elsewhere. Convolutions are initialised with He (Kaiming) normal init,
fan-out mode as in fb.resnet.torch; batch norms with weight 1 and bias 0.

The models use plain ``nn.Conv2d`` / ``nn.Linear`` / ``nn.BatchNorm2d`` so that
``numerics.nn.modules.quantize_model`` can swap every product. Initial weights come from torch's
global generator: seed it (``torch.manual_seed``) before calling a constructor. Every model
works on any square input size, the 8x8 digits as well as 32x32 CIFAR images.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from numerics.models.base import MODELS

SHORTCUTS = ("a", "b")


def image_info(info: Mapping[str, Any]) -> tuple[int, int, int]:
    """``(num_classes, in_channels, image_size)`` from a dataset's facts, checked."""
    out = []
    for key in ("num_classes", "in_channels", "image_size"):
        if key not in info:
            raise ValueError(
                f"dataset info lacks {key!r} (has {sorted(info)}); an image model needs "
                "num_classes, in_channels and image_size"
            )
        value = info[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"dataset info {key}={value!r}; expected a positive integer")
        out.append(value)
    return out[0], out[1], out[2]


def _positive(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}={value!r}; expected a positive integer")
    return value


def _dropout(value: float) -> float:
    if not 0.0 <= value < 1.0:
        raise ValueError(f"dropout={value!r}; allowed 0 <= dropout < 1")
    return float(value)


def shortcut_a(x: Tensor, out_channels: int, stride: int) -> Tensor:
    """Option A shortcut: keep every ``stride``-th pixel, append zero channels up to
    ``out_channels``. (B, C, H, W) -> (B, out_channels, ceil(H/stride), ceil(W/stride))."""
    if stride > 1:
        x = x[:, :, ::stride, ::stride]
    extra = out_channels - x.shape[1]
    if extra < 0:
        raise ValueError(f"shortcut_a: out_channels={out_channels} < input channels {x.shape[1]}")
    return F.pad(x, (0, 0, 0, 0, 0, extra)) if extra else x


class PadShortcut(nn.Module):
    """``shortcut_a`` as a module (no parameters)."""

    def __init__(self, out_channels: int, stride: int) -> None:
        super().__init__()
        self.out_channels, self.stride = out_channels, stride

    def forward(self, x: Tensor) -> Tensor:
        return shortcut_a(x, self.out_channels, self.stride)

    def extra_repr(self) -> str:
        return f"out_channels={self.out_channels}, stride={self.stride}"


class BasicBlock(nn.Module):
    """relu(bn(conv(relu(bn(conv(x))))) + shortcut(x)), both convolutions 3x3."""

    def __init__(self, cin: int, cout: int, stride: int, shortcut: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut: nn.Module
        if stride == 1 and cin == cout:
            self.shortcut = nn.Identity()
        elif shortcut == "a":
            self.shortcut = PadShortcut(cout, stride)
        else:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))  # (B, cout, H/s, W/s)
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """Stem, three stages of ``n`` blocks, global average pool, linear classifier."""

    def __init__(
        self, num_classes: int, in_channels: int, n: int, width: int, shortcut: str
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        stages: list[nn.Module] = []
        cin = width
        for i in range(3):
            cout = width * 2**i
            blocks = [
                BasicBlock(cin if j == 0 else cout, cout, 2 if i > 0 and j == 0 else 1, shortcut)
                for j in range(n)
            ]
            stages.append(nn.Sequential(*blocks))
            cin = cout
        self.layer1, self.layer2, self.layer3 = stages
        self.fc = nn.Linear(cin, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.bn1(self.conv1(x)))  # (B, w, H, W)
        x = self.layer3(self.layer2(self.layer1(x)))  # (B, 4w, H/4, W/4)
        x = x.mean(dim=(2, 3))  # (B, 4w)
        return self.fc(x)  # (B, num_classes)


@MODELS.register("resnet20", task="image")
def resnet20(
    info: Mapping[str, Any], *, depth: int = 20, width: int = 16, shortcut: str = "a"
) -> nn.Module:
    """He et al.'s CIFAR ResNet with ``depth = 6n + 2`` (20, 32, 44, 56, 110, ...)."""
    num_classes, in_channels, _ = image_info(info)
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 8 or (depth - 2) % 6:
        raise ValueError(f"depth={depth!r}; allowed 6n+2 for n >= 1: 8, 14, 20, 32, 44, 56, 110")
    _positive("width", width)
    if shortcut not in SHORTCUTS:
        raise ValueError(
            f"shortcut={shortcut!r}; allowed 'a' (zero-padding identity) or 'b' (1x1 projection)"
        )
    return CifarResNet(num_classes, in_channels, (depth - 2) // 6, width, shortcut)


class SmallCNN(nn.Module):
    """conv3x3-BN-ReLU(-maxpool 2x2) per entry of ``channels``, then a hidden linear layer."""

    def __init__(
        self,
        num_classes: int,
        in_channels: int,
        image_size: int,
        channels: list[int],
        hidden: int,
        dropout: float,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin, size = in_channels, image_size
        for cout in channels:
            layers += [
                nn.Conv2d(cin, cout, 3, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(),
            ]
            if size >= 2:  # pool while there is something left to pool
                layers.append(nn.MaxPool2d(2))
                size //= 2
            cin = cout
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(cin * size * size, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )
        for m in self.features:
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))  # (B, C', S, S) -> (B, num_classes)


@MODELS.register("cnn", task="image")
def cnn(
    info: Mapping[str, Any],
    *,
    channels: list[int] = [32, 64],  # noqa: B006 (read, never mutated: the recipe default)
    hidden: int = 128,
    dropout: float = 0.0,
) -> nn.Module:
    """A small CNN: one conv3x3-BN-ReLU (and a 2x2 max-pool while the maps are at least 2x2)
    per entry of ``channels``, then Linear(hidden)-ReLU-Dropout-Linear."""
    num_classes, in_channels, image_size = image_info(info)
    channels = list(channels)
    if not channels:
        raise ValueError("channels=[]; give at least one convolution width, e.g. [32, 64]")
    for i, c in enumerate(channels):
        _positive(f"channels[{i}]", c)
    return SmallCNN(
        num_classes,
        in_channels,
        image_size,
        channels,
        _positive("hidden", hidden),
        _dropout(dropout),
    )


@MODELS.register("mlp", task="image")
def mlp(
    info: Mapping[str, Any],
    *,
    hidden: list[int] = [256, 256],  # noqa: B006 (read, never mutated: the recipe default)
    dropout: float = 0.0,
) -> nn.Module:
    """Flatten, then Linear-ReLU(-Dropout) per entry of ``hidden``, then a linear classifier;
    ``hidden=[]`` is multinomial logistic regression."""
    num_classes, in_channels, image_size = image_info(info)
    hidden = list(hidden)
    p = _dropout(dropout)
    layers: list[nn.Module] = [nn.Flatten()]  # (B, C*H*W)
    fan_in = in_channels * image_size * image_size
    for i, h in enumerate(hidden):
        layers += [nn.Linear(fan_in, _positive(f"hidden[{i}]", h)), nn.ReLU()]
        if p > 0:
            layers.append(nn.Dropout(p))
        fan_in = h
    layers.append(nn.Linear(fan_in, num_classes))
    return nn.Sequential(*layers)


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters (what the paper's tables count)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


__all__ = [
    "SHORTCUTS",
    "BasicBlock",
    "CifarResNet",
    "PadShortcut",
    "SmallCNN",
    "cnn",
    "count_parameters",
    "image_info",
    "mlp",
    "resnet20",
    "shortcut_a",
]
