"""numerics pvf: bit flips against planted models whose answers are known by hand, Wilson
intervals against scipy, restoration, reproducibility, a trained run end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from scipy.stats import binomtest
from torch import Tensor, nn

from numerics.cli import main
from numerics.errors import MissingInputError, UserError
from numerics.nn.modules import quantize_model
from numerics.train import recipe as recipes
from numerics.train.pvf import components, pvf, pvf_table, stored_parameters, wilson
from numerics.train.trainer import train
from tests.numerics.train.test_trainer import make

ROOT = Path(__file__).resolve().parents[3]


class Planted(nn.Module):
    """Two classes, logits (x * a, x * b); ``unused`` never touches the output."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.tensor([1.0]))
        self.b = nn.Parameter(torch.tensor([0.5]))
        self.unused = nn.Parameter(torch.randn(16))

    def forward(self, x: Tensor) -> Tensor:
        return torch.stack([x * self.a, x * self.b], dim=-1)


X = torch.tensor([1.0, 2.0, -1.0, 3.0, 0.0, -4.0])  # five nonzero inputs


def decide(m: nn.Module) -> Tensor:
    return m(X).argmax(-1)


@pytest.mark.parametrize("k, n", [(0, 10), (5, 20), (37, 1000), (10, 10)])
def test_wilson_matches_scipy(k: int, n: int) -> None:
    ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    assert wilson(k, n) == pytest.approx((ci.low, ci.high), abs=1e-9)


def test_a_sign_flip_changes_exactly_the_decisions_it_must() -> None:
    # a -> -a: for x > 0 class 1 (0.5x > -x) instead of 0, for x < 0 class 0 instead of 1;
    # x = 0 ties at 0 and stays class 0: five of six decisions change on every fault
    m = Planted()
    (cell,) = pvf_table(m, decide, {"a": ["a"]}, faults=7, bits=[31])
    assert (cell.faults, cell.trials, cell.changed) == (7, 42, 35)
    # the lowest mantissa bit of a: 1 + 2**-23 still beats 0.5 everywhere it did
    (cell,) = pvf_table(m, decide, {"a": ["a"]}, faults=7, bits=[0])
    assert cell.changed == 0
    # all 32 bits of a at once: 0x3F800000 -> 0xC07FFFFF, about -4: the same five decisions
    # change, and the 32 flips are undone
    (cell,) = pvf_table(m, decide, {"a": ["a"]}, faults=3, flips=32)
    assert (cell.flips, cell.changed) == (32, 15) and m.a.item() == 1.0
    with pytest.raises(UserError, match="--flips: a fault of several bits draws its positions"):
        pvf_table(m, decide, {"a": ["a"]}, faults=1, bits=[3], flips=2)
    with pytest.raises(UserError, match="stores no element of 33 bits or more"):
        pvf_table(m, decide, {"a": ["a"]}, faults=1, flips=33)


def test_a_parameter_that_never_reaches_the_output_never_counts() -> None:
    m = Planted()
    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    cells = pvf_table(m, decide, {"unused": ["unused"]}, faults=300, bits=[None, 30, 31])
    assert [c.changed for c in cells] == [0, 0, 0] and all(c.trials == 1800 for c in cells)
    after = dict(m.named_parameters())
    assert all(torch.equal(before[n], after[n]) for n in before)  # every flip restored


def test_same_seed_same_faults_and_components_are_named() -> None:
    m = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    x = torch.randn(32, 4, generator=torch.Generator().manual_seed(1))
    groups = components(m)
    assert groups == {"0": ["0.weight", "0.bias"], "2": ["2.weight", "2.bias"]}
    one = pvf_table(m, lambda mm: mm(x).argmax(-1), groups, faults=50, seed=3)
    two = pvf_table(m, lambda mm: mm(x).argmax(-1), groups, faults=50, seed=3)
    assert one == two
    assert components(m, ["head=2.*"]) == {"head": ["2.weight", "2.bias"]}
    with pytest.raises(UserError, match=r"--component: 'nope\*' matches no parameter"):
        components(m, ["nope*"])
    with pytest.raises(UserError, match=r"stores no element with a bit 32.*element: 32 bits"):
        pvf_table(m, lambda mm: mm(x).argmax(-1), groups, faults=1, bits=[32])
    with pytest.raises(UserError, match=r"--field/--bit: component '0' stores no scale"):
        pvf_table(m, lambda mm: mm(x).argmax(-1), groups, faults=1, fields=["scale"])


def test_a_flip_in_an_mx_scale_byte_changes_what_the_spec_says() -> None:
    # logits (w0 . x, w1 . x), w0 all 1 and w1 all 2, one MXFP4 block of 32 each: w0 is
    # stored as elements 4.0 (E2M1's top binade) with scale code 125 (2**-2), w1 as 4.0 with
    # 126. Flipping bit 1 of a scale byte multiplies its row by 4 (125 -> 127) or by 1/4
    # (126 -> 124): the rows trade places, every decision with a nonzero input changes.
    # Bit 0 multiplies by 1/2 (w0 -> 0.5) or 2 (w1 -> 4): the order, and every decision, stays.
    lin = nn.Linear(32, 2, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.stack([torch.ones(32), torch.full((32,), 2.0)]))
    m = quantize_model(nn.Sequential(lin), {"format": "fp32", "weights": "mxfp4_e2m1"})
    xs = X[:, None] * torch.ones(32) / 32  # sums 1, 2, -1, 3, 0, -4

    def decide_q(mm: nn.Module) -> Tensor:
        return mm(xs).argmax(-1)

    clean = decide_q(m)
    stored = stored_parameters(m)
    assert torch.equal(decide_q(m), clean)  # storing the codes changes no output
    st = stored["0.weight"]
    assert st.encoded is not None and st.encoded.scales.tolist() == [125, 126]  # type: ignore[union-attr]
    assert {f: (st.fields[f].width, st.fields[f].units) for f in st.fields} == {
        "element": (4, 64), "scale": (8, 2)}  # fmt: skip
    groups = {"w": ["0.weight"]}
    one, zero = pvf_table(m, decide_q, groups, faults=9, bits=[1, 0], fields=["scale"],
                          stored=stored)  # fmt: skip
    assert (one.field, one.bit, one.trials, one.changed) == ("scale", 1, 54, 45)
    assert (zero.bit, zero.changed) == (0, 0)
    assert torch.equal(decide_q(m), clean)  # every fault was undone
    # the element's sign bit (bit 3) negates one of 32 terms: w0 . x loses 2/32 of its sum
    # and w1 . x 4/32 of its, never enough to reorder 1 against 2
    (sign,) = pvf_table(m, decide_q, groups, faults=9, bits=[3], stored=stored)
    assert sign.changed == 0


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("run") / "r"
    train(make(), out)
    return out


def test_a_trained_run_end_to_end(trained: Path, tmp_path: Path) -> None:
    s = pvf(trained, tmp_path / "p", bits=[30, 0], faults=40, examples=64, seed=1)
    # the MLP's top-level modules with parameters: Flatten, Linear (1), ReLU, Dropout, Linear (4)
    assert set(s.metrics) == {f"pvf/{c}/bit{b}" for c in ("1", "4") for b in (30, 0)}
    table = json.loads((tmp_path / "p" / "pvf.json").read_text())
    by_bit = {(r["component"], r["bit"]): r for r in table["cells"]}
    for comp in {c for c, _ in by_bit}:
        # the exponent's top bit turns a weight into ~1e38 or ~1e-38: it changes decisions;
        # the mantissa's last bit moves a weight by one ulp
        assert by_bit[(comp, 30)]["pvf"] > by_bit[(comp, 0)]["pvf"]
        assert by_bit[(comp, 30)]["trials"] == 40 * 64
    again = pvf(trained, tmp_path / "q", bits=[30, 0], faults=40, examples=64, seed=1)
    assert again.metrics == s.metrics  # reproducible from the seed


def test_bad_input(trained: Path, tmp_path: Path) -> None:
    with pytest.raises(MissingInputError, match="not a run directory with a checkpoint"):
        pvf(tmp_path / "nowhere", tmp_path / "p")
    sr = tmp_path / "sr"
    train(make({"numerics": {"format": "bf16", "rounding": "stochastic"}}, steps=2), sr)
    with pytest.raises(UserError, match=r"stochastic rounding.*no one stored encoding"):
        pvf(sr, tmp_path / "p")
    with pytest.raises(UserError, match="--set"):
        pvf(trained, tmp_path / "p", overrides=["train.lr=1"])
    assert main(["pvf", str(tmp_path / "nowhere")]) == 2


def test_a_run_in_a_format_flips_its_codes(trained: Path, tmp_path: Path) -> None:
    # the fp32 run evaluated with MXINT8 weights: linear weights are stored as 8-bit codes
    # and E8M0 scales, biases as float32; the scale's top bit multiplies a block by 2**128
    # or 2**-128, which changes decisions far more often than the code's lowest bit
    s = pvf(trained, tmp_path / "m", overrides=["numerics.weights=mxint8"], fields=["scale"],
            bits=[7, 0], faults=30, examples=64, seed=2)  # fmt: skip
    doc = json.loads((tmp_path / "m" / "pvf.json").read_text())
    assert doc["stored"]["1.weight"] == {"element": 8, "scale": 8}
    assert doc["stored"]["1.bias"] == {"element": 32}
    assert s.metrics["pvf/1/scale/bit7"] > s.metrics["pvf/1/scale/bit0"]
    for plot in ("pvf_bits_scale.png", "pvf_components.png"):  # heat map, bar chart
        assert (tmp_path / "m" / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the main command line prints the table
    assert main(["pvf", str(trained), "--set", "numerics.weights=mxint8", "--field", "element",
                 "--bit", "7", "--faults", "3", "--examples", "8",
                 "--out", str(tmp_path / "c")]) == 0  # fmt: skip


def test_the_gpts_natural_groups_cover_every_parameter_once() -> None:
    from numerics.train.trainer import data_and_model

    recipe = recipes.load(ROOT / "recipes" / "demo" / "stdlib_gpt_small.yaml")
    _, model = data_and_model(recipe)
    groups = components(model, model_name="gpt")
    assert list(groups) == ["embeddings", "attention", "mlp", "norms"]
    members = [n for ns in groups.values() for n in ns]
    assert sorted(members) == sorted(n for n, _ in model.named_parameters())  # once each
    assert groups["embeddings"] == ["wte.weight", "wpe.weight"]
    assert all(".attn." in n for n in groups["attention"])
    assert all(".mlp." in n for n in groups["mlp"])


class ConvEmb(nn.Module):
    """A convolution, an embedding bag and a linear layer: each casts its weights along its
    own axis (input channels; the row; in_features)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(32, 4, 3)
        self.emb = nn.EmbeddingBag(10, 32, mode="sum")
        self.fc = nn.Linear(4 * 4 * 4 + 32, 3)

    def forward(self, x: Tensor, ids: Tensor) -> Tensor:
        return self.fc(torch.cat([self.conv(x).flatten(1), self.emb(ids)], dim=1))


@pytest.mark.parametrize("fmt", ["mx6", "mxfp4_e2m1", "int4_rowwise", "int8_pc"])
def test_storing_the_codes_changes_no_output(fmt: str) -> None:
    # the stored encoding is taken along each layer's own cast axis: along any other axis a
    # block or row format gives other values, and the outputs would differ
    torch.manual_seed(0)
    m = quantize_model(ConvEmb(), {"format": "fp32", "weights": fmt})
    x, ids = torch.randn(5, 32, 6, 6), torch.randint(10, (5, 3))
    with torch.no_grad():
        before = m(x, ids)
        stored = stored_parameters(m)
        after = m(x, ids)
    assert torch.equal(before, after)
    assert stored["conv.weight"].encoded is not None and stored["conv.bias"].encoded is None
    assert stored["conv.weight"].encoded.axis == 1 and stored["emb.weight"].encoded.axis == 1
