"""numerics evaluate: a trained run under another policy. The oracle for the run's own policy
is the run's own final evaluation (bit for bit); for another format, the model rebuilt by hand
from the checkpoint's weights under that format."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

from numerics.cli import main
from numerics.errors import MissingInputError, UserError
from numerics.nn.modules import quantize_model
from numerics.nn.policy import from_dict as policy_from_dict
from numerics.sweeps.compare import aggregate, load_runs
from numerics.train import tasks
from numerics.train.evaluate import evaluate, evaluate_many
from numerics.train.trainer import BatchSampler, data_and_model, train
from tests.numerics.train.test_trainer import make, weights

BF16 = "bf16-opt:bf16-comm:bf16"  # numerics.format=bf16's label ("bf16" is the preset's)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("run") / "r"
    train(make(), out)
    return out


def by_hand(
    run: Path, change: Callable[[nn.Module], nn.Module], after_load: bool = False
) -> dict[str, float]:
    """The recipe's model with ``change`` applied (before or after loading the run's
    weights), evaluated by the task on the test set."""
    recipe = make()
    data, model = data_and_model(recipe)
    if not after_load:
        model = change(model)
    model.load_state_dict(weights(run))
    if after_load:
        model = change(model)
    model.eval()
    t = recipe.train
    return tasks.get("image").evaluate(
        model, data.test, t.eval_batch_size, None, torch.device("cpu")
    )


def test_the_runs_own_policy_gives_its_own_final_metrics(trained: Path, tmp_path: Path) -> None:
    own = json.loads((trained / "summary.json").read_text())
    s = evaluate(trained, [], tmp_path / "e")
    assert s.metrics == own["metrics"]  # bit for bit: same weights, casts, evaluation
    assert s.format == "fp32" and s.extra["trained_format"] == "fp32"


def test_another_format_equals_the_model_rebuilt_by_hand(trained: Path, tmp_path: Path) -> None:
    s = evaluate(trained, ["numerics.format=mxfp4_e2m1"], tmp_path / "e")
    assert s.format == "mxfp4_e2m1" and s.extra["source_run"] == str(trained)
    # by hand: the recipe's model, mxfp4 casts, the checkpoint's weights, the task's evaluation
    policy = policy_from_dict({"format": "mxfp4_e2m1"})
    assert s.metrics == by_hand(trained, lambda model: quantize_model(model, policy))
    fp32 = json.loads((trained / "summary.json").read_text())["metrics"]
    assert s.metrics["loss"] != fp32["loss"]  # the cast changed the outputs
    on_disk = json.loads((tmp_path / "e" / "summary.json").read_text())
    assert on_disk["metrics"] == s.metrics and on_disk["status"] == "completed"


def test_compare_tables_evaluations_by_inference_format(trained: Path, tmp_path: Path) -> None:
    for f in ("fp32", "bf16"):
        evaluate(trained, [f"numerics.format={f}"], tmp_path / "evals" / f)
    table = aggregate(load_runs(tmp_path / "evals"))
    assert {c for _, c in table.cells} == {"fp32", BF16}


def test_bad_input_is_named(trained: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"--set: 'train.lr=3'.*allowed: numerics"):
        evaluate(trained, ["train.lr=3"], tmp_path / "e")
    with pytest.raises(MissingInputError, match="no such run directory"):
        evaluate(tmp_path / "nowhere", [])
    (tmp_path / "nockpt").mkdir()
    (tmp_path / "nockpt" / "config.yaml").write_text((trained / "config.yaml").read_text())
    with pytest.raises(MissingInputError, match=r"no checkpoint\.pt"):
        evaluate(tmp_path / "nockpt", [])
    with pytest.raises(UserError, match=r"numerics\.format"):
        evaluate(trained, ["numerics.format=fp7"], tmp_path / "e")
    assert main(["evaluate", str(tmp_path / "nockpt")]) == 2
    assert not (tmp_path / "e").exists()  # nothing written for refused input


def test_many_runs_and_formats_each_once(trained: Path, tmp_path: Path) -> None:
    folder = tmp_path / "sweep"
    folder.mkdir()
    (folder / "r").symlink_to(trained, target_is_directory=True)  # a folder of runs
    done = evaluate_many([folder], ["fp32", "bf16"], [], tmp_path / "evals")
    assert [s.format for s in done] == ["fp32", BF16]
    assert sorted(p.name for p in (tmp_path / "evals").iterdir()) == [f"r--{BF16}", "r--fp32"]
    stamp = (tmp_path / "evals" / f"r--{BF16}" / "summary.json").stat().st_mtime_ns
    again = evaluate_many([trained], ["bf16"], [], tmp_path / "evals")  # kept, not redone
    assert again[0].metrics == done[1].metrics
    assert (tmp_path / "evals" / f"r--{BF16}" / "summary.json").stat().st_mtime_ns == stamp
    with pytest.raises(MissingInputError, match="neither a run directory nor a folder"):
        evaluate_many([tmp_path / "evals"], ["fp32"])


def test_rowwise_weights_equal_torchs_fbgemm_rows(trained: Path, tmp_path: Path) -> None:
    # an independent oracle: the fp32 model holding unpack(prepack(W)) of every weight
    s = evaluate(trained, ["numerics.weights=int8_rowwise"], tmp_path / "e")
    ops = torch.ops.quantized

    def fbgemm_rows(model: torch.nn.Module) -> torch.nn.Module:
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, torch.nn.Linear):
                    w = m.weight
                    w.copy_(ops.embedding_bag_byte_unpack(ops.embedding_bag_byte_prepack(w)))
        return model

    assert s.metrics == by_hand(trained, fbgemm_rows, after_load=True)
    fp32 = json.loads((trained / "summary.json").read_text())["metrics"]
    assert s.metrics["loss"] != fp32["loss"]  # the weights did change


def test_calibrated_int8_equals_torch_fake_quant_at_scales_found_by_hand(
    trained: Path, tmp_path: Path
) -> None:
    """The oracle: the fp32 model, each Linear's input amax recorded by hooks over the run's
    first two training batches, then torch's per-tensor fake quantization of every input at
    amax / 127 and of every weight at its own amax / 127."""
    s = evaluate(trained, ["numerics.format=int8"], tmp_path / "e", calibrate=2)
    assert s.format == "int8-cal2" and s.extra["calibration_batches"] == 2
    assert s.extra["calibrated_casts"] == 2  # the MLP's two Linear layers

    recipe = make()
    data, model = data_and_model(recipe)
    model.load_state_dict(weights(trained))
    model.eval()
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    amax = dict.fromkeys(linears, 0.0)

    def record(m: nn.Module, args: tuple[torch.Tensor]) -> None:
        amax[m] = max(amax[m], float(args[0].abs().max()))

    hooks = [m.register_forward_pre_hook(record) for m in linears]
    t = recipe.train
    sampler = BatchSampler(len(data.train), t.batch_size, t.seed, data.sampling)
    with torch.no_grad():
        for step in range(2):
            model(data.train.batch(sampler.indices(step))["x"])
    for h in hooks:
        h.remove()

    def fq(x: torch.Tensor, a: float) -> torch.Tensor:
        return torch.fake_quantize_per_tensor_affine(x, a / 127, 0, -127, 127)

    with torch.no_grad():
        for m in linears:
            m.weight.copy_(fq(m.weight, float(m.weight.abs().max())))
            m.register_forward_pre_hook(lambda m, args: (fq(args[0], amax[m]),))
    oracle = tasks.get("image").evaluate(
        model, data.test, t.eval_batch_size, None, torch.device("cpu")
    )
    assert s.metrics == oracle
    dynamic = evaluate(trained, ["numerics.format=int8"], tmp_path / "d")
    assert dynamic.format == "int8" and dynamic.extra["calibration_batches"] == 0
    assert s.metrics["loss"] != dynamic.metrics["loss"]  # static scales change the outputs


def test_calibration_leaves_a_policy_without_tensor_scales_as_it_is(
    trained: Path, tmp_path: Path
) -> None:
    s = evaluate(trained, ["numerics.format=mxint8"], tmp_path / "e", calibrate=3)
    assert s.format == "mxint8" and s.extra["calibration_batches"] == 0
    plain = evaluate(trained, ["numerics.format=mxint8"], tmp_path / "p")
    assert s.metrics == plain.metrics
    with pytest.raises(UserError, match=r"--calibrate: must be the number of training batches"):
        evaluate(trained, [], tmp_path / "x", calibrate=-1)
