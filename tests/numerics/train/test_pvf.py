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
from numerics.train import recipe as recipes
from numerics.train.pvf import components, pvf, pvf_table, wilson
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
    with pytest.raises(UserError, match=r"--bit: bit 32 is outside float32"):
        pvf_table(m, lambda mm: mm(x).argmax(-1), groups, faults=1, bits=[32])


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
    bf16 = tmp_path / "bf16"
    train(make({"numerics": {"format": "bf16"}}, steps=2), bf16)
    with pytest.raises(UserError, match="pvf takes fp32 runs"):
        pvf(bf16, tmp_path / "p")
    assert main(["pvf", str(tmp_path / "nowhere")]) == 2


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
