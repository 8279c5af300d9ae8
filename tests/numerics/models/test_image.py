"""Image models (``numerics.models.image``).

Oracles: the parameter count of He et al.'s CIFAR ResNet written out layer by layer from the
architecture (and the paper's Table 6: 0.27M, 0.46M, 0.66M, 0.85M for depth 20/32/44/56), the
option-A shortcut built by hand from slicing and zero channels, the "6n+2 weighted layers" of
the depth, and a learning check against the digits' held-out split.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import pytest
import torch
from torch import nn

from numerics.data.image import digits
from numerics.models.base import MODELS
from numerics.models.image import (
    BasicBlock,
    PadShortcut,
    count_parameters,
    resnet20,
    shortcut_a,
)
from numerics.nn.modules import QConv2d, QLinear, quantize_model

CIFAR = {"num_classes": 10, "in_channels": 3, "image_size": 32}
DIGITS = {"num_classes": 10, "in_channels": 1, "image_size": 8}


def resnet_parameters(n: int, w: int = 16, cin: int = 3, k: int = 10, proj: bool = False) -> int:
    """The CIFAR ResNet's parameter count, written out from the architecture (no biases in
    the convolutions; a batch norm has a weight and a bias per channel)."""

    def conv3(a: int, b: int) -> int:
        return 3 * 3 * a * b

    def bn(c: int) -> int:
        return 2 * c

    total = conv3(cin, w) + bn(w)  # stem
    for stage in range(3):
        c = w * 2**stage
        c_in = w if stage == 0 else c // 2
        total += conv3(c_in, c) + bn(c) + conv3(c, c) + bn(c)  # first block
        if proj and stage > 0:  # option B: 1x1 conv + BN where the shape changes
            total += c_in * c + bn(c)
        total += (n - 1) * (2 * conv3(c, c) + 2 * bn(c))  # the other n-1 blocks
    return total + 4 * w * k + k  # linear classifier


M = TypeVar("M", bound=nn.Module)


def with_seed(seed: int, fn: Callable[..., M], *args: Any, **kwargs: Any) -> M:
    """Build a model with torch's global generator seeded, leaving the caller's state alone."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return fn(*args, **kwargs)


@pytest.mark.parametrize(
    ("depth", "paper_millions"), [(20, 0.27), (32, 0.46), (44, 0.66), (56, 0.85), (110, 1.7)]
)
def test_resnet_parameter_count_matches_formula_and_paper(
    depth: int, paper_millions: float
) -> None:
    n = (depth - 2) // 6
    model = resnet20(CIFAR, depth=depth)
    assert count_parameters(model) == resnet_parameters(n)
    digits_of_table = 1 if depth == 110 else 2
    assert round(count_parameters(model) / 1e6, digits_of_table) == paper_millions
    projected = resnet20(CIFAR, depth=depth, shortcut="b")
    assert count_parameters(projected) == resnet_parameters(n, proj=True)


def test_resnet_parameter_count_other_width_and_input() -> None:
    model = resnet20({"num_classes": 7, "in_channels": 1, "image_size": 8}, width=8)
    assert count_parameters(model) == resnet_parameters(3, w=8, cin=1, k=7)


@pytest.mark.parametrize("depth", [20, 32])
def test_depth_counts_weighted_layers(depth: int) -> None:
    """6n+2 = the stem, 6n convolutions in the blocks and the classifier (option A adds no
    weighted layers)."""
    model = resnet20(CIFAR, depth=depth)
    weighted = [m for m in model.modules() if type(m) in (nn.Conv2d, nn.Linear)]
    assert len(weighted) == depth


@pytest.mark.parametrize("bad", [21, 19, 2, 0, -4, 20.0, True])
def test_resnet_bad_depth(bad: Any) -> None:
    with pytest.raises(ValueError, match=r"depth=.*6n\+2"):
        resnet20(CIFAR, depth=bad)


def test_resnet_bad_shortcut_and_width() -> None:
    with pytest.raises(ValueError, match=r"shortcut='c'.*'a'.*'b'"):
        resnet20(CIFAR, shortcut="c")
    with pytest.raises(ValueError, match="width=0"):
        resnet20(CIFAR, width=0)
    with pytest.raises(ValueError, match="num_classes"):
        resnet20({"in_channels": 3, "image_size": 32})


def test_shortcut_a_is_subsample_and_zero_channels() -> None:
    x = torch.randn(2, 16, 8, 8)
    # by hand: keep the even rows and columns, then append 16 all-zero channels
    rows = [torch.stack([x[:, :, i, j] for j in range(0, 8, 2)], -1) for i in range(0, 8, 2)]
    sub = torch.stack(rows, -2)  # (2, 16, 4, 4)
    expected = torch.cat([sub, torch.zeros(2, 16, 4, 4)], dim=1)
    assert torch.equal(shortcut_a(x, 32, 2), expected)
    assert torch.equal(PadShortcut(32, 2)(x), expected)
    odd = torch.randn(1, 4, 7, 7)  # ceil(7/2) = 4, as a stride-2 3x3 conv with padding 1 gives
    assert shortcut_a(odd, 8, 2).shape == (1, 8, 4, 4)


def test_block_adds_the_option_a_shortcut() -> None:
    """With the residual branch silenced (last BN's scale 0), a downsampling block returns
    relu(shortcut) -- so the block really adds the hand-built shortcut."""
    block = with_seed(0, BasicBlock, 16, 32, 2, "a").eval()
    assert sum(p.numel() for p in block.shortcut.parameters()) == 0
    nn.init.zeros_(block.bn2.weight)
    x = torch.randn(3, 16, 8, 8)
    expected = torch.relu(torch.cat([x[:, :, ::2, ::2], torch.zeros(3, 16, 4, 4)], dim=1))
    torch.testing.assert_close(block(x), expected, rtol=0, atol=0)


def test_identity_block_shortcut() -> None:
    block = with_seed(0, BasicBlock, 16, 16, 1, "a").eval()
    nn.init.zeros_(block.bn2.weight)
    x = torch.randn(2, 16, 8, 8)
    assert torch.equal(block(x), torch.relu(x))


IMAGE_MODELS = MODELS.names(task="image")


def test_image_models_registered() -> None:
    assert {"resnet20", "cnn", "mlp"} <= set(IMAGE_MODELS)


@pytest.mark.parametrize("name", IMAGE_MODELS)
@pytest.mark.parametrize(
    "info",
    [DIGITS, CIFAR, {"num_classes": 3, "in_channels": 2, "image_size": 7}],
    ids=["8x8", "32x32", "7x7"],
)
def test_output_shape(name: str, info: dict[str, int]) -> None:
    model = with_seed(0, MODELS.get(name), info)
    s = info["image_size"]
    out = model(torch.randn(4, info["in_channels"], s, s))
    assert out.shape == (4, info["num_classes"])
    assert torch.isfinite(out).all()


def test_resnet_shortcut_b_shapes() -> None:
    model = resnet20(DIGITS, shortcut="b")
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 10)


def test_cnn_pools_while_the_maps_allow() -> None:
    model = MODELS.get("cnn")(DIGITS, channels=[4, 4, 4, 4, 4], hidden=16)
    pools = [m for m in model.modules() if isinstance(m, nn.MaxPool2d)]
    assert len(pools) == 3  # 8 -> 4 -> 2 -> 1, then no more
    first_linear = next(m for m in model.modules() if isinstance(m, nn.Linear))
    assert first_linear.in_features == 4 * 1 * 1
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 10)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [4] * 5


def test_cnn_and_mlp_bad_options() -> None:
    with pytest.raises(ValueError, match="channels"):
        MODELS.get("cnn")(DIGITS, channels=[])
    with pytest.raises(ValueError, match=r"channels\[1\]=0"):
        MODELS.get("cnn")(DIGITS, channels=[8, 0])
    with pytest.raises(ValueError, match=r"dropout=1\.5"):
        MODELS.get("cnn")(DIGITS, dropout=1.5)
    with pytest.raises(ValueError, match=r"hidden\[0\]=-1"):
        MODELS.get("mlp")(DIGITS, hidden=[-1])


def test_mlp_layers() -> None:
    model = MODELS.get("mlp")(DIGITS, hidden=[32, 16])
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(64, 32), (32, 16), (16, 10)]
    logistic = MODELS.get("mlp")(DIGITS, hidden=[])
    assert count_parameters(logistic) == 64 * 10 + 10


@pytest.mark.parametrize("name", IMAGE_MODELS)
def test_quantize_model_swaps_every_product(name: str) -> None:
    model = with_seed(0, MODELS.get(name), DIGITS)
    x = torch.randn(8, 1, 8, 8)
    model.eval()
    ref = model(x)
    n_linear = sum(type(m) is nn.Linear for m in model.modules())
    n_conv = sum(type(m) is nn.Conv2d for m in model.modules())
    assert n_linear + n_conv > 0
    quantize_model(model, "bf16")
    assert sum(isinstance(m, QLinear) for m in model.modules()) == n_linear
    assert sum(isinstance(m, QConv2d) for m in model.modules()) == n_conv
    assert not any(type(m) in (nn.Linear, nn.Conv2d) for m in model.modules())
    out = model(x)  # bf16 products: close to fp32, but not identical
    assert not torch.equal(out, ref)
    torch.testing.assert_close(out, ref, rtol=0.1, atol=0.1)


def test_mlp_learns_digits() -> None:
    data = digits(seed=0)
    model = with_seed(0, MODELS.get("mlp"), data.info, hidden=[128])
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    xtr, ytr = data.train.tensors["x"], data.train.tensors["y"]
    g = torch.Generator().manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matmuls: a second thread only costs sync (~0.2 s vs 2-10 s)
    try:
        for _ in range(300):
            idx = torch.randint(len(ytr), (64,), generator=g)
            loss = nn.functional.cross_entropy(model(xtr[idx]), ytr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    model.eval()
    with torch.no_grad():
        pred = model(data.test.tensors["x"]).argmax(1)
    accuracy = (pred == data.test.tensors["y"]).float().mean().item()
    assert accuracy >= 0.9
