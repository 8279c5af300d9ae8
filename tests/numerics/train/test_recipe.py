"""Recipe files (``numerics.train.recipe``) checked against the recipe spec.

Oracles: the schema and defaults written out by hand from the spec (the example recipe in the
issue), signatures of small fake constructors registered here (their options, types and
defaults are known), the preset definitions documented in ``numerics.nn.policy`` (bf16 keeps fp32
optimizer state, fp16_loss_scale scales dynamically) and files whose layout we choose (which
line holds a syntax error, which file of a base chain sets which key).
"""

from __future__ import annotations

import importlib
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from numerics.errors import MissingInputError
from numerics.nn.largebatch import Decay, ScalingRule
from numerics.nn.policy import Policy
from numerics.rounding import Rounding
from numerics.train.recipe import (
    OUTPUT_ONLY_LOGGING,
    LargeBatchConfig,
    LargeBatchRule,
    LoggingConfig,
    Optimizer,
    Recipe,
    RecipeError,
    TrainConfig,
    Wandb,
    apply_overrides,
    from_dict,
    load,
    merge,
    recipe_label,
)


# --- fake constructors -----------------------------------------------------------------------
def fake_resnet(info: dict[str, Any], *, depth: int = 20, width: int = 16, shortcut: str = "a"):
    return None


def fake_mlp(
    info: dict[str, Any],
    *,
    hidden: list[int] | None = None,
    dropout: float = 0.0,
    bias: bool = True,
    gains: list[float] | None = None,
    tags: list[str] | None = None,
    act: str = "relu",
):
    return None


def fake_lm(info: dict[str, Any], *, n_layer: int = 2):
    return None


def fake_dlrm(info: dict[str, Any], *, embed_dim: int = 8):
    return None


def fake_digits(*, seed: int = 0, noise: float = 0.0, limit: int | None = None):
    return None


def fake_text(*, seed: int = 0, block_size: int = 64):
    return None


def fake_ctr(*, seed: int = 0, rows: int = 1000):
    return None


@pytest.fixture(autouse=True)
def registered(monkeypatch: pytest.MonkeyPatch) -> None:
    """Register the fakes into the real registries for one test, then restore them."""
    # import the packages first, so their constructors register into the real dicts
    importlib.import_module("numerics.models")
    importlib.import_module("numerics.data")
    from numerics.data.base import DATASETS
    from numerics.models.base import MODELS

    for reg in (MODELS, DATASETS):
        monkeypatch.setattr(reg, "_items", dict(reg._items))
        monkeypatch.setattr(reg, "_meta", dict(reg._meta))
    MODELS.register("_test_resnet", task="image", overwrite=True)(fake_resnet)
    MODELS.register("_test_mlp", task="image", overwrite=True)(fake_mlp)
    MODELS.register("_test_lm", task="language", overwrite=True)(fake_lm)
    MODELS.register("_test_dlrm", task="recsys", overwrite=True)(fake_dlrm)
    DATASETS.register("_test_digits", task="image", overwrite=True)(fake_digits)
    DATASETS.register("_test_text", task="language", overwrite=True)(fake_text)
    DATASETS.register("_test_ctr", task="recsys", overwrite=True)(fake_ctr)


def minimal() -> dict[str, Any]:
    return {
        "task": "image",
        "model": {"name": "_test_resnet"},
        "data": {"name": "_test_digits"},
        "train": {"steps": 500, "batch_size": 128, "lr": 0.1},
    }


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def dump(path: Path, d: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(d))
    return path


def set_key(d: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    *head, last = dotted.split(".")
    node = d
    for k in head:
        node = node.setdefault(k, {})
    if value is DELETE:
        node.pop(last)
    else:
        node[last] = value
    return d


DELETE = object()

# The keys of each section, copied from the spec's example recipe.
TRAIN_KEYS = [
    "steps",
    "epochs",
    "batch_size",
    "base_batch_size",
    "lr",
    "optimizer",
    "momentum",
    "nesterov",
    "weight_decay",
    "betas",
    "eps",
    "lr_scaling",
    "warmup",
    "warmup_start_factor",
    "decay",
    "milestones",
    "gamma",
    "final_factor",
    "seed",
    "grad_clip",
    "eval_every",
    "eval_batch_size",
    "max_eval_batches",
    "checkpoint_every",
]
LARGE_BATCH_KEYS = [
    "rule",
    "r",
    "zeta",
    "clip_absent",
    "embedding_lr",
    "embedding_l2",
    "dense_rule",
    "trust_coefficient",
]
LOGGING_KEYS = ["every", "telemetry_every", "progress", "wandb", "project", "tensorboard",
                "histogram_every", "histogram_layers"]  # fmt: skip


# --- defaults and the spec's example ----------------------------------------------------------
def test_minimal_recipe_gets_the_spec_defaults() -> None:
    r = from_dict(minimal())
    t = r.train
    assert (t.steps, t.epochs, t.batch_size, t.lr) == (500, None, 128, 0.1)
    assert t.base_batch_size == 128  # default: batch_size
    assert t.optimizer is Optimizer.SGD and t.momentum == 0.9 and t.nesterov is False
    assert t.weight_decay == 0.0005 and t.betas == (0.9, 0.999) and t.eps == 1e-8
    assert t.lr_scaling is ScalingRule.LINEAR and t.decay is Decay.NONE
    assert (t.warmup, t.warmup_start_factor, t.milestones) == (0, None, ())
    assert (t.gamma, t.final_factor, t.seed, t.grad_clip) == (0.1, 0.0, 0, None)
    assert (t.eval_every, t.eval_batch_size, t.max_eval_batches, t.checkpoint_every) == (
        0,
        1024,
        None,
        0,
    )
    lb = r.large_batch
    assert lb.rule is LargeBatchRule.NONE and lb.dense_rule is ScalingRule.SQRT
    assert (lb.r, lb.zeta, lb.clip_absent, lb.embedding_lr, lb.embedding_l2) == (
        1.0,
        1e-5,
        False,
        None,
        0.0,
    )
    assert lb.trust_coefficient == 0.001
    lg = r.logging
    assert (lg.every, lg.telemetry_every, lg.progress, lg.project) == (10, 0, True, "numerics")
    assert lg.wandb is Wandb.OFF
    assert (lg.tensorboard, lg.histogram_every, lg.histogram_layers) == (False, 0, 3)
    assert r.numerics == Policy()  # no numerics section: plain fp32
    # constructor defaults are filled in from fake_resnet's signature
    assert r.model == {"name": "_test_resnet", "depth": 20, "width": 16, "shortcut": "a"}
    assert r.data == {"name": "_test_digits", "noise": 0.0, "limit": None}  # seed: train.seed
    assert r.model_options == {"depth": 20, "width": 16, "shortcut": "a"}


def test_dataclasses_have_the_spec_keys() -> None:
    import dataclasses

    assert [f.name for f in dataclasses.fields(TrainConfig)] == TRAIN_KEYS
    assert [f.name for f in dataclasses.fields(LargeBatchConfig)] == LARGE_BATCH_KEYS
    assert [f.name for f in dataclasses.fields(LoggingConfig)] == LOGGING_KEYS
    with pytest.raises(dataclasses.FrozenInstanceError):
        TrainConfig(batch_size=8, lr=0.1, steps=1).lr = 0.2  # type: ignore[misc]


def test_the_spec_example_recipe_loads(tmp_path: Path) -> None:
    f = write(
        tmp_path / "x.yaml",
        """\
        task: image
        model: {name: _test_resnet, width: 32}
        data: {name: _test_digits}
        train:
          steps: 500
          batch_size: 128
          base_batch_size: 64
          lr: 0.1
          optimizer: sgd
          momentum: 0.9
          nesterov: false
          weight_decay: 0.0005
          betas: [0.9, 0.999]
          eps: 1.0e-8
          lr_scaling: linear
          warmup: 100
          warmup_start_factor: null
          decay: cosine
          milestones: []
          gamma: 0.1
          final_factor: 0.0
          seed: 0
          grad_clip: null
          eval_every: 0
          eval_batch_size: 1024
          max_eval_batches: null
          checkpoint_every: 0
        numerics: {format: bf16}
        large_batch:
          rule: none
          r: 1.0
          zeta: 1.0e-5
          clip_absent: false
          embedding_lr: null
          embedding_l2: 0.0
          dense_rule: sqrt
          trust_coefficient: 0.001
        logging:
          every: 10
          telemetry_every: 0
          progress: true
          wandb: off
          project: numerics
        """,
    )
    r = load(f)
    assert r.source == str(f)
    assert r.model["width"] == 32 and r.train.base_batch_size == 64 and r.train.warmup == 100
    assert r.train.decay is Decay.COSINE and r.large_batch.zeta == 1e-5
    assert r.logging.wandb is Wandb.OFF  # YAML 1.1 reads `off` as false
    assert r.numerics.format == "bf16" and r.numerics.weights.format == "bf16"


def test_int_accepted_for_float_options_and_typed_lists() -> None:
    d = minimal()
    d["train"]["lr"] = 1
    d["model"] = {
        "name": "_test_mlp",
        "hidden": [64, 32],
        "dropout": 0,
        "bias": False,
        "gains": [1, 2.5],
        "tags": ["a", "b"],
    }
    r = from_dict(d)
    assert r.train.lr == 1.0 and isinstance(r.train.lr, float)
    assert r.model["dropout"] == 0.0 and isinstance(r.model["dropout"], float)
    assert r.model["gains"] == [1.0, 2.5] and all(isinstance(g, float) for g in r.model["gains"])
    assert r.model["hidden"] == [64, 32] and r.model["bias"] is False
    assert r.model["tags"] == ["a", "b"] and r.model["act"] == "relu"
    d["model"]["hidden"] = None  # X | None takes null
    assert from_dict(d).model["hidden"] is None


def test_model_name_is_case_insensitive_and_canonical() -> None:
    d = minimal()
    d["model"]["name"] = "_TEST_Resnet"
    assert from_dict(d).model["name"] == "_test_resnet"


# --- errors: file, key path, what is allowed ---------------------------------------------------
ERRORS = [
    # (key, value, message after "<file>: ", more fragments)
    (
        "trian",
        {"lr": 1},
        "trian: unknown key; allowed: task, model, data, train, numerics, large_batch, logging",
        ["did you mean train?"],
    ),
    (
        "train.optimizr",
        "adam",
        "train.optimizr: unknown key; allowed: steps, epochs, batch_size, "
        "base_batch_size, lr, optimizer",
        ["(did you mean optimizer?)"],
    ),
    ("large_batch.zetta", 1e-4, "large_batch.zetta: unknown key; allowed: rule, r, zeta", []),
    ("logging.evry", 5, "logging.evry: unknown key; allowed: every", ["did you mean every?"]),
    ("train.batch_size", "big", "train.batch_size: must be a positive integer, got 'big'", []),
    ("train.batch_size", True, "train.batch_size: must be a positive integer, got True", []),
    ("train.batch_size", 0, "train.batch_size: must be a positive integer, got 0", []),
    ("train.batch_size", 12.0, "train.batch_size: must be a positive integer, got 12.0", []),
    ("train.lr", 0, "train.lr: must be a number > 0, got 0", []),
    ("train.lr", "fast", "train.lr: must be a number > 0, got 'fast'", []),
    ("train.momentum", 1.0, "train.momentum: must be a number in [0, 1), got 1.0", []),
    (
        "train.optimizer",
        "adamm",
        "train.optimizer: must be one of sgd, adam, adamw, got 'adamm'",
        ["did you mean adam?"],
    ),
    ("train.decay", "linear", "train.decay: must be one of none, cosine, step", []),
    ("train.lr_scaling", "quad", "train.lr_scaling: must be one of none, linear, sqrt", []),
    ("train.warmup", 500, "train.warmup: must be < train.steps (500), got 500", []),
    ("train.warmup", -1, "train.warmup: must be an integer >= 0, got -1", []),
    ("train.betas", [0.9], "train.betas: must be a list of two numbers in [0, 1)", []),
    ("train.betas", [0.9, 1.5], "train.betas[1]: must be a number in [0, 1), got 1.5", []),
    ("train.milestones", [300, 100], "train.milestones: must be a strictly increasing list", []),
    ("train.decay", "step", "train.milestones: decay: step needs at least one milestone", []),
    ("train.epochs", 2.5, "train: exactly one of steps, epochs is required (both given)", []),
    ("train.steps", DELETE, "train: exactly one of steps, epochs is required (neither given)", []),
    ("train.grad_clip", -1.0, "train.grad_clip: must be a number > 0 or null, got -1.0", []),
    ("train.seed", None, "train.seed: must be an integer >= 0, got None", []),
    ("train.lr", DELETE, "train.lr: required", []),
    ("train.batch_size", DELETE, "train.batch_size: required", []),
    ("task", DELETE, "task: required", []),
    (
        "task",
        "imag",
        "task: unknown task 'imag'; allowed: image, language, recsys",
        ["did you mean image?"],
    ),
    ("model.name", DELETE, "model.name: required", ["known for task image:", "_test_resnet"]),
    ("data.name", DELETE, "data.name: required", ["_test_digits"]),
    (
        "model.name",
        "_test_resnt",
        "model.name: unknown model '_test_resnt'; did you mean _test_resnet",
        ["known for task image:", "_test_mlp"],
    ),
    (
        "model.name",
        "_test_lm",
        "model.name: model '_test_lm' is registered for task language, not task image",
        ["_test_resnet"],
    ),
    (
        "data.name",
        "_test_text",
        "data.name: dataset '_test_text' is registered for task language, not task image",
        ["_test_digits"],
    ),
    ("model.width", "wide", "model.width: must be int, got 'wide'", []),
    ("model.width", 16.0, "model.width: must be int, got 16.0", []),
    ("model.depth", True, "model.depth: must be int, got True", []),
    (
        "model.widht",
        32,
        "model: option 'widht' is not accepted by model '_test_resnet'; "
        "allowed: depth, width, shortcut",
        ["did you mean width?"],
    ),
    (
        "data.seed",
        3,
        "data: option 'seed' is not accepted by dataset '_test_digits'",
        ["train.seed", "allowed: noise, limit"],
    ),
    ("data.limit", "all", "data.limit: must be int or null, got 'all'", []),
    ("large_batch.rule", "lamb", "large_batch.rule: must be one of none, cowclip, lars", []),
    (
        "large_batch.rule",
        "cowclip",
        "large_batch.rule: cowclip clips embedding tables; "
        "allowed only with task recsys, got task image",
        [],
    ),
    ("large_batch.r", 0, "large_batch.r: must be a number > 0, got 0", []),
    ("logging.wandb", "cloud", "logging.wandb: must be one of off, offline, online", []),
    ("logging.progress", "yes please", "logging.progress: must be true or false", []),
    ("logging.tensorboard", "on", "logging.tensorboard: must be true or false", []),
    ("logging.histogram_every", -1, "logging.histogram_every: must be an integer >= 0", []),
    (
        "logging.histogram_layers",
        0,
        "logging.histogram_layers: must be a positive integer, got 0",
        [],
    ),
    ("numerics.format", "bf17", "numerics.format: unknown format 'bf17'", ["bf16"]),
    ("numerics.wieghts", "bf16", "numerics.wieghts: unknown key; allowed:", ["weights"]),
    (
        "numerics",
        "bf17",
        "numerics: 'bf17' is not a preset (presets: fp32, bf16,",
        ["fp16_loss_scale", "format", "bf16"],
    ),
]


@pytest.mark.parametrize(("key", "value", "message", "more"), ERRORS)
def test_error_names_file_key_and_allowed(
    tmp_path: Path, key: str, value: Any, message: str, more: list[str]
) -> None:
    f = dump(tmp_path / "recipes" / "x.yaml", set_key(minimal(), key, value))
    with pytest.raises(RecipeError) as exc:
        load(f)
    msg = str(exc.value)
    assert msg.startswith(f"{f}: {message}"), msg
    for fragment in more:
        assert fragment in msg, (fragment, msg)


def test_model_list_option_errors_name_the_item(tmp_path: Path) -> None:
    d = minimal()
    d["model"] = {"name": "_test_mlp", "hidden": [64, "x"]}
    with pytest.raises(RecipeError, match=r"x\.yaml: model\.hidden\[1\]: must be int, got 'x'"):
        load(dump(tmp_path / "x.yaml", d))
    d["model"]["hidden"] = 64
    with pytest.raises(RecipeError, match=r"model\.hidden: must be list\[int\] or null, got 64"):
        from_dict(d)
    d["model"] = {"name": "_test_mlp", "dropout": "0.1"}
    with pytest.raises(RecipeError, match=r"model\.dropout: must be float, got '0\.1'"):
        from_dict(d)


def test_errors_from_a_dict_start_with_recipe_placeholder() -> None:
    with pytest.raises(RecipeError) as exc:
        from_dict(set_key(minimal(), "train.optimizr", "adam"))
    assert str(exc.value).startswith("<recipe>: train.optimizr: unknown key; allowed:")
    with pytest.raises(RecipeError) as exc:
        from_dict(minimal() | {"base": "other.yaml"})
    assert str(exc.value).startswith("<recipe>: base:")
    with pytest.raises(RecipeError, match=r"^ci\.yaml: train\.lr: must be a number > 0"):
        from_dict(set_key(minimal(), "train.lr", -1.0), source="ci.yaml")


def test_lars_needs_sgd_and_nesterov_needs_momentum() -> None:
    d = set_key(set_key(minimal(), "large_batch.rule", "lars"), "train.optimizer", "adam")
    with pytest.raises(RecipeError, match=r"large_batch\.rule: .*sgd.*got adam"):
        from_dict(d)
    d = set_key(set_key(minimal(), "train.nesterov", True), "train.momentum", 0.0)
    with pytest.raises(RecipeError, match=r"train\.nesterov: .*momentum > 0"):
        from_dict(d)


def test_cowclip_allowed_for_recsys() -> None:
    d = {
        "task": "recsys",
        "model": {"name": "_test_dlrm"},
        "data": {"name": "_test_ctr"},
        "train": {"epochs": 1, "batch_size": 8192, "base_batch_size": 1024, "lr": 8e-4},
        "large_batch": {"rule": "cowclip", "zeta": 1e-4, "embedding_lr": 1e-4},
    }
    r = from_dict(d)
    assert r.large_batch.rule is LargeBatchRule.COWCLIP and r.train.epochs == 1.0
    assert r.train.base_batch_size == 1024 and r.large_batch.embedding_lr == 1e-4


def test_yaml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    f = write(
        tmp_path / "bad.yaml",
        """\
        task: image
        train:
          lr: 0.1: 2
          batch_size: 8
        """,
    )
    with pytest.raises(RecipeError) as exc:
        load(f)
    msg = str(exc.value)
    assert msg.startswith(f"{f}: line 3") and "YAML syntax error" in msg, msg


def test_missing_file_and_non_mapping_file(tmp_path: Path) -> None:
    with pytest.raises(MissingInputError, match=r"recipe file not found: .*nope\.yaml"):
        load(tmp_path / "nope.yaml")
    f = write(tmp_path / "list.yaml", "- 1\n- 2\n")
    with pytest.raises(RecipeError, match=r"list\.yaml: a recipe must be a mapping"):
        load(f)


# --- base chains -------------------------------------------------------------------------------
def chain(tmp_path: Path) -> Path:
    write(
        tmp_path / "recipes" / "image" / "base.yaml",
        """\
        task: image
        model: {name: _test_mlp, hidden: [64, 64, 64], dropout: 0.5}
        data: {name: _test_digits}
        train: {steps: 100, batch_size: 32, lr: 0.1, decay: step, milestones: [10, 20]}
        numerics: bf16
        """,
    )
    write(
        tmp_path / "recipes" / "common" / "mid.yaml",
        """\
        base: ../image/base.yaml
        model: {hidden: [16]}
        train: {lr: 0.2, milestones: [50]}
        """,
    )
    return write(
        tmp_path / "recipes" / "exp" / "top.yaml",
        """\
        base: ../common/mid.yaml
        train: {seed: 3}
        logging: {every: 5}
        """,
    )


def test_base_chain_two_levels_relative_to_each_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path / "..")  # paths resolve against the files, not the cwd
    top = chain(tmp_path)
    r = load(top)
    assert r.task == "image" and r.numerics.label() == "bf16"
    assert r.train.lr == 0.2 and r.train.batch_size == 32 and r.train.steps == 100  # deep merge
    assert r.train.seed == 3 and r.logging.every == 5
    assert r.train.milestones == (50,)  # lists replace, never concatenate
    assert r.model["hidden"] == [16] and r.model["dropout"] == 0.5
    assert "base" not in r.to_dict()


def test_base_chain_from_a_relative_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    chain(tmp_path)
    monkeypatch.chdir(tmp_path)
    r = load("recipes/exp/top.yaml")
    assert r.train.lr == 0.2 and r.train.seed == 3 and r.source == "recipes/exp/top.yaml"


def test_error_in_a_base_file_names_that_file(tmp_path: Path) -> None:
    top = chain(tmp_path)
    base = tmp_path / "recipes" / "image" / "base.yaml"
    base.write_text(base.read_text().replace("decay: step", "decay: step, optimizr: adam"))
    with pytest.raises(RecipeError) as exc:
        load(top)
    assert str(exc.value).startswith(f"{base}: train.optimizr: unknown key"), str(exc.value)


def test_base_cycle_is_an_error_naming_the_files(tmp_path: Path) -> None:
    a = write(tmp_path / "a" / "a.yaml", "base: ../b/b.yaml\ntask: image\n")
    write(tmp_path / "b" / "b.yaml", "base: ../a/a.yaml\n")
    with pytest.raises(RecipeError) as exc:
        load(a)
    msg = str(exc.value)
    assert "cycle" in msg and "a.yaml" in msg and "b.yaml" in msg and "base" in msg, msg
    me = write(tmp_path / "self.yaml", "base: self.yaml\n")
    with pytest.raises(RecipeError, match=r"self\.yaml: base: cycle"):
        load(me)


def test_missing_base_names_the_referring_file(tmp_path: Path) -> None:
    f = write(tmp_path / "x.yaml", "base: ../gone.yaml\n")
    with pytest.raises(RecipeError) as exc:
        load(f)
    assert str(exc.value).startswith(f"{f}: base:") and "gone.yaml" in str(exc.value)


# --- overrides --------------------------------------------------------------------------------
def test_override_value_types(tmp_path: Path) -> None:
    d = minimal()
    d["model"] = {"name": "_test_mlp"}
    f = dump(tmp_path / "x.yaml", d)
    r = load(
        f,
        [
            "train.seed=2",
            "train.weight_decay=5E-4",
            "logging.progress=false",
            "model.hidden=[64,64]",  # a new key inside model
            "model.act=gelu",
            "train.optimizer=adam",
            "logging.project=my-proj",
            "train.grad_clip=1",
            "logging.wandb=off",
        ],
    )
    assert r.train.seed == 2 and r.train.weight_decay == 5e-4 and r.logging.progress is False
    assert r.model["hidden"] == [64, 64] and r.model["act"] == "gelu"
    assert r.train.optimizer is Optimizer.ADAM and r.logging.project == "my-proj"
    assert r.train.grad_clip == 1.0 and r.logging.wandb is Wandb.OFF
    for text in ("1e-3", "1.0e-3", "+1e-3", "0.1e-1"):
        lr = load(f, [f"train.lr={text}"]).train.lr
        assert lr == pytest.approx(float(text)) and isinstance(lr, float), text


def test_apply_overrides_parses_yaml_and_keeps_input() -> None:
    d = {"train": {"lr": 0.1}, "numerics": "bf16"}
    out = apply_overrides(
        d,
        [
            "train.lr=1e-3",
            "train.seed=7",
            "train.nesterov=false",
            "model.hidden=[1, 2]",
            "train.seed=8",  # later wins
            "numerics.loss_scale=dynamic",
            "logging.project=run 1",
            "train.grad_clip=",
        ],
    )
    assert out["train"] == {"lr": 0.001, "seed": 8, "nesterov": False, "grad_clip": None}
    assert out["model"] == {"hidden": [1, 2]} and out["logging"] == {"project": "run 1"}
    assert out["numerics"] == {"preset": "bf16", "loss_scale": "dynamic"}
    assert d == {"train": {"lr": 0.1}, "numerics": "bf16"}  # untouched


@pytest.mark.parametrize("bad", ["train.seed", "=3", "train..seed=1", " =1"])
def test_malformed_override_names_it(tmp_path: Path, bad: str) -> None:
    f = dump(tmp_path / "x.yaml", minimal())
    with pytest.raises(RecipeError) as exc:
        load(f, [bad])
    msg = str(exc.value)
    assert msg.startswith(f"{f}: ") and bad in msg and "KEY.PATH=VALUE" in msg, msg


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ("train.optimizr=adam", "train.optimizr: unknown key; allowed:"),
        ("trian.seed=1", "trian: unknown key; allowed:"),
        ("model.widht=3", "model: option 'widht' is not accepted"),
        ("train.batch_size=big", "train.batch_size: must be a positive integer, got 'big'"),
    ],
)
def test_bad_key_from_override_mentions_set(tmp_path: Path, override: str, fragment: str) -> None:
    f = dump(tmp_path / "x.yaml", minimal())
    with pytest.raises(RecipeError) as exc:
        load(f, [override])
    msg = str(exc.value)
    assert msg.startswith(f"{f}: {fragment}") and f"--set {override}" in msg, msg


def test_error_not_from_override_does_not_mention_set(tmp_path: Path) -> None:
    f = dump(tmp_path / "x.yaml", set_key(minimal(), "train.optimizr", "adam"))
    with pytest.raises(RecipeError) as exc:
        load(f, ["train.seed=1"])
    assert "--set" not in str(exc.value)


def test_set_numerics_key_on_a_string_numerics(tmp_path: Path) -> None:
    # preset string: the preset's other choices stay (bf16 keeps fp32 optimizer state)
    f = dump(tmp_path / "p.yaml", minimal() | {"numerics": "bf16"})
    pol = load(f, ["numerics.format=fp16"]).numerics
    assert pol.weights.format == "fp16" and pol.errors.format == "fp16"
    assert pol.optimizer_state.format == "fp32" and pol.communication.format == "fp32"
    # format string: the format applies everywhere, loss scaling added on top
    f = dump(tmp_path / "f.yaml", minimal() | {"numerics": "fp16"})
    pol = load(f, ["numerics.loss_scale=dynamic"]).numerics
    assert pol.weights.format == "fp16" and pol.optimizer_state.format == "fp16"
    assert pol.loss_scale.kind == "dynamic"


def test_set_inside_a_model_given_by_name(tmp_path: Path) -> None:
    f = dump(tmp_path / "x.yaml", minimal() | {"model": "_test_resnet"})
    r = load(f, ["model.width=32"])
    assert r.model == {"name": "_test_resnet", "depth": 20, "width": 32, "shortcut": "a"}


def test_set_into_a_scalar_is_an_error(tmp_path: Path) -> None:
    f = dump(tmp_path / "x.yaml", minimal())
    with pytest.raises(RecipeError, match=r"--set train\.lr\.x=1.*train\.lr is 0\.1"):
        load(f, ["train.lr.x=1"])


# --- string numerics, round trip, label ---------------------------------------------------------
def test_numerics_string_preset_vs_format() -> None:
    preset = from_dict(minimal() | {"numerics": "bf16"}).numerics
    plain = from_dict(minimal() | {"numerics": {"format": "bf16"}}).numerics
    # the bf16 preset (Kalamkar et al.) keeps optimizer state and all-reduce in fp32
    assert preset.weights.format == "bf16" and preset.optimizer_state.format == "fp32"
    assert plain.optimizer_state.format == "bf16"
    assert preset != plain and preset.label() == "bf16"
    ls = from_dict(minimal() | {"numerics": "fp16_loss_scale"}).numerics
    assert ls.loss_scale.kind == "dynamic" and ls.weights.format == "fp16"
    fmt = from_dict(minimal() | {"numerics": "fp16"}).numerics  # not a preset: a format
    assert fmt.loss_scale.kind == "none" and fmt.optimizer_state.format == "fp16"
    block = from_dict(minimal() | {"numerics": "mxfp8_e4m3"}).numerics
    assert block.weights.format == "mxfp8_e4m3" and block.label() == "mxfp8_e4m3"


COMPLEX_NUMERICS = {
    "format": "bf16",
    "weights": {"format": "mxfp8_e4m3", "rounding": "stochastic", "saturate": True},
    "errors": "fp8_e5m2",
    "optimizer_state": "fp32",
    "loss_scale": {"kind": "dynamic", "init": 1024.0, "growth_interval": 100},
    "overrides": [
        {"match": ["fc*", "head"], "format": "fp32"},
        {"match": "conv1", "grads": "fp16"},
    ],
    "master_weights": False,
    "update_rounding": "stochastic",
    "seed": 5,
}


@pytest.mark.parametrize("numerics", [COMPLEX_NUMERICS, "fp16_loss_scale", "fp16", None])
def test_to_dict_round_trip(tmp_path: Path, numerics: Any) -> None:
    d = minimal()
    d["model"] = {"name": "_test_mlp", "hidden": [8, 8], "gains": [1, 2]}
    d["train"] |= {"milestones": [100, 200], "decay": "step", "betas": [0.8, 0.9], "seed": 4}
    d["logging"] = {"wandb": "offline", "every": 3}
    if numerics is not None:
        d["numerics"] = numerics
    r = from_dict(d)
    out = r.to_dict()
    assert list(out) == [
        "task",
        "model",
        "data",
        "train",
        "numerics",
        "large_batch",
        "logging",
    ]
    assert list(out["train"]) == TRAIN_KEYS and list(out["large_batch"]) == LARGE_BATCH_KEYS
    assert list(out["logging"]) == [k for k in LOGGING_KEYS if k not in OUTPUT_ONLY_LOGGING]
    assert out["train"]["decay"] == "step" and out["train"]["milestones"] == [100, 200]
    assert out["train"]["base_batch_size"] == 128 and out["logging"]["wandb"] == "offline"
    text = yaml.safe_dump(out)  # plain data only: safe_dump refuses enums and tuples
    again = from_dict(yaml.safe_load(text))
    assert again == r and again.numerics.label() == r.numerics.label()
    f = write(tmp_path / "run" / "config.yaml", text)
    assert load(f) == r  # a run's config.yaml is a recipe


def test_round_trip_keeps_complex_policy_parts() -> None:
    r = from_dict(minimal() | {"numerics": COMPLEX_NUMERICS})
    pol = from_dict(yaml.safe_load(yaml.safe_dump(r.to_dict()))).numerics
    assert pol.weights.rounding is Rounding.STOCHASTIC and pol.weights.saturate is True
    assert pol.errors.format == "fp8_e5m2" and pol.activations.format == "bf16"
    assert pol.loss_scale.kind == "dynamic" and pol.loss_scale.init == 1024.0
    assert pol.loss_scale.growth_interval == 100 and pol.master_weights is False
    assert pol.for_layer("head").weights.format == "fp32"
    assert pol.for_layer("conv1").grads.format == "fp16"
    assert pol.for_layer("conv1").weights.format == "mxfp8_e4m3"
    assert pol.for_layer("layer1").weights.format == "mxfp8_e4m3"
    assert pol.seed == 5


def test_recipe_equality_ignores_source(tmp_path: Path) -> None:
    f = dump(tmp_path / "x.yaml", minimal())
    assert load(f) == from_dict(minimal()) and load(f).source == str(f)
    assert load(f) != from_dict(set_key(minimal(), "train.seed", 1))


def test_recipe_label() -> None:
    r = from_dict(minimal() | {"numerics": "bf16"} | {"train": minimal()["train"] | {"seed": 3}})
    assert recipe_label(r) == "image-_test_resnet-_test_digits-bf16-s3"
    assert isinstance(r, Recipe)


def test_merge_helper() -> None:
    base = {"a": {"x": 1, "y": [1, 2]}, "b": 1, "n": {"format": "bf16"}}
    over = {"a": {"y": [3]}, "c": 2, "n": "fp16"}
    assert merge(base, over) == {"a": {"x": 1, "y": [3]}, "b": 1, "c": 2, "n": "fp16"}
    assert base == {"a": {"x": 1, "y": [1, 2]}, "b": 1, "n": {"format": "bf16"}}
    assert over == {"a": {"y": [3]}, "c": 2, "n": "fp16"}


def test_docs_recipes_md_lists_every_key_with_its_default() -> None:
    """docs/recipes.md's tables name every schema key of each section with its default."""
    import dataclasses as dc
    import re as _re
    from pathlib import Path as _Path

    from numerics.nn.periodic import PeriodicSpec
    from numerics.train import recipe as r

    doc = (_Path(__file__).resolve().parents[3] / "docs" / "recipes.md").read_text()
    sections = {
        "train": r.TrainConfig,
        "large_batch": r.LargeBatchConfig,
        "logging": r.LoggingConfig,
        "numerics.periodic": PeriodicSpec,
    }
    for section, cls in sections.items():
        body = doc.split(f"### `{section}`", 1)[1].split("\n### ", 1)[0]
        rows = dict(_re.findall(r"^\| `(\w+)` \| ([^|]+) \|", body, flags=_re.M))
        assert set(rows) == {f.name for f in dc.fields(cls)}, section
        for f in dc.fields(cls):
            if f.default is dc.MISSING:
                assert rows[f.name].strip() == "required", f.name
                continue
            value = f.default.value if hasattr(f.default, "value") else f.default
            value = list(value) if isinstance(value, tuple) else value
            cell = rows[f.name].strip()
            parsed = cell if isinstance(value, str) else yaml.safe_load(cell)  # YAML: off=false
            assert parsed == value, (section, f.name)


# --- the periodic regularizer: part of the policy, the old spellings say what to write ----------
PERIODIC = {"kind": "sin2", "bits": 3, "lambda_max": 1e-3}


def test_periodic_regularizer_is_numerics_periodic(tmp_path: Path) -> None:
    r = from_dict(minimal() | {"numerics": {"format": "fp32", "periodic": PERIODIC}})
    spec = r.numerics.periodic
    assert spec is not None and (spec.kind.value, spec.bits, spec.lambda_max) == ("sin2", 3, 1e-3)
    assert (spec.start_fraction, spec.ramp_fraction) == (0.5, 0.25)  # the defaults
    assert recipe_label(r) == "image-_test_resnet-_test_digits-periodic_sin2_b3-s0"
    assert r.to_dict()["numerics"]["periodic"] == PERIODIC | {
        "start_fraction": 0.5,
        "ramp_fraction": 0.25,
    }
    assert from_dict(yaml.safe_load(yaml.safe_dump(r.to_dict()))) == r
    assert "periodic" not in from_dict(minimal()).to_dict()["numerics"]
    # on the command line, over a string numerics
    f = dump(tmp_path / "x.yaml", minimal() | {"numerics": "fp32"})
    over = load(f, ["numerics.periodic.kind=hat", "numerics.periodic.bits=4"]).numerics
    assert over.periodic is not None and over.periodic.name == "periodic_hat_b4"


@pytest.mark.parametrize(
    ("recipe", "overrides", "starts", "fragments"),
    [
        (
            {"numerics": {"format": "periodic_sin2_b3"}},
            [],
            "numerics.format: 'periodic_sin2_b3' is no longer a format",
            ["numerics: {format: fp32, periodic: {kind: sin2, bits: 3}}"],
        ),
        (
            {"numerics": "periodic_hat_b4"},
            [],
            "numerics: 'periodic_hat_b4' is no longer a format",
            ["periodic: {kind: hat, bits: 4}", "--set numerics.periodic.bits=4"],
        ),
        (
            {},
            ["numerics.format=periodic_sin2_b2"],
            "numerics.format: 'periodic_sin2_b2' is no longer a format",
            ["[from --set numerics.format=periodic_sin2_b2]"],
        ),
        (
            {"periodic": {"lambda_max": 1e-4, "start_fraction": 0.5}},
            [],
            "periodic: the periodic regularizer is part of the policy now",
            ["write numerics.periodic.lambda_max, numerics.periodic.start_fraction"],
        ),
        (
            {"numerics": {"periodic": {"kind": "sine", "bits": 3}}},
            [],
            "numerics.periodic.kind: must be one of sin2, hat, got 'sine'",
            [],
        ),
    ],
)
def test_old_periodic_spellings_say_what_to_write_instead(
    tmp_path: Path, recipe: dict[str, Any], overrides: list[str], starts: str, fragments: list[str]
) -> None:
    f = dump(tmp_path / "old.yaml", minimal() | recipe)
    with pytest.raises(RecipeError) as exc:
        load(f, overrides)
    msg = str(exc.value)
    assert msg.startswith(f"{f}: {starts}"), msg
    for fragment in fragments:
        assert fragment in msg, (fragment, msg)
    assert exc.value.file == str(f) and exc.value.key == starts.split(":")[0]


def test_errors_carry_file_key_value_and_allowed(tmp_path: Path) -> None:
    f = dump(tmp_path / "x.yaml", set_key(minimal(), "train.optimizer", "adamm"))
    with pytest.raises(RecipeError) as exc:
        load(f)
    e = exc.value
    assert (e.file, e.key, e.value, e.allowed) == (
        str(f),
        "train.optimizer",
        "adamm",
        "one of sgd, adam, adamw",
    )
    assert "(did you mean adam?)" in str(e) and "\n" not in str(e)


def test_tensorboard_keys_are_written_only_when_set() -> None:
    """The keys that only add output files stay out of to_dict at their defaults, so configs
    (and run ids) from before they existed are unchanged; set, they are written and read back."""
    assert set(OUTPUT_ONLY_LOGGING) == {"tensorboard", "histogram_every", "histogram_layers"}
    assert not set(OUTPUT_ONLY_LOGGING) & set(from_dict(minimal()).to_dict()["logging"])
    d = minimal()
    d["logging"] = {"tensorboard": True, "histogram_every": 25}
    r = from_dict(d)
    out = r.to_dict()["logging"]
    assert out["tensorboard"] is True and out["histogram_every"] == 25
    assert "histogram_layers" not in out  # still its default
    assert from_dict(yaml.safe_load(yaml.safe_dump(r.to_dict()))) == r
