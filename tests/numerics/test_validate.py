"""The shared validation layer (``numerics.validate``) and the user-error family
(``numerics.errors``), checked directly rather than through a recipe, policy or sweep.

Oracles: messages and fields written out by hand for small inputs whose faults we choose.
"""

from __future__ import annotations

import enum
from typing import Any

import pytest

from numerics import validate as val
from numerics.errors import NO_VALUE, ConfigError, MissingInputError, UserError


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"


@pytest.mark.parametrize(
    ("conv", "value", "need"),
    [
        (val.integer(), 1.5, "an integer"),
        (val.integer(), True, "an integer"),
        (val.integer(1), 0, "a positive integer"),
        (val.integer(0), -1, "an integer >= 0"),
        (val.integer(2, 16), 17, "an integer in 2..16"),
        (val.number(), float("nan"), "a finite number"),
        (val.number(0.0, lo_open=True), 0, "a number > 0"),
        (val.number(0.0, 1.0, hi_open=True), 1.0, "a number in [0, 1)"),
        (val.optional(val.integer(1)), 0, "a positive integer or null"),
        (val.boolean, "yes", "true or false"),
        (val.string, 3, "a string"),
        (val.name, " ", "a non-empty string"),
        (val.choice(Color), "blue", "one of red, green"),
        (val.one_of(("round", "kahan")), "kahn", "one of round, kahan"),
        (val.sequence(val.integer(), "a list of integers"), 3, "a list of integers"),
        (val.increasing(val.sequence(val.integer(1), "a list")), [2, 1], "a strictly increasing"),
        (val.renamed(val.integer(), "int"), "x", "int"),
    ],
)
def test_converters_say_what_is_allowed(conv: val.Conv, value: Any, need: str) -> None:
    with pytest.raises(val.Invalid) as exc:
        conv(value)
    assert exc.value.need.startswith(need), exc.value.need
    assert exc.value.value is value or exc.value.value == value


def test_converters_return_the_python_form() -> None:
    assert val.number()(3) == 3.0 and isinstance(val.number()(3), float)
    assert val.integer(2, 16)(16) == 16
    assert val.optional(val.integer())(None) is None
    assert val.choice(Color)("RED") is Color.RED
    assert val.choice(Color, {False: "red"})(False) is Color.RED
    assert val.sequence(val.integer(), "ints", n=2)([1, 2]) == (1, 2)
    assert val.sequence(val.integer(), "ints", as_tuple=False)([1]) == [1]


def test_a_list_item_is_named_by_its_index_and_choices_suggest() -> None:
    with pytest.raises(val.Invalid) as exc:
        val.sequence(val.integer(), "ints")([1, "x"])
    assert exc.value.at == (1,) and exc.value.value == "x"
    with pytest.raises(val.Invalid) as exc:
        val.choice(Color)("gren")
    assert exc.value.hint == " (did you mean green?)"
    assert val.did_you_mean("zzz", ["lr"]) == ""
    assert val.dotted(("train", "betas", 1)) == "train.betas[1]" and val.dotted(()) == ""


class PlanError(ConfigError):
    pass


def test_context_names_the_file_of_each_key_and_the_set_that_wrote_it() -> None:
    ctx = val.Context(
        "child.yaml",
        # recipe.load marks a key written by --set as the named file's
        files={
            ("train",): "base.yaml",
            ("train", "lr"): "child.yaml",
            ("train", "seed"): "child.yaml",
        },
        sets=[(("train", "seed"), "--set train.seed='x'")],
        error=PlanError,
    )
    assert ctx.file(("train", "lr")) == "child.yaml" and ctx.file(("train", "steps")) == "base.yaml"
    assert ctx.file(("model",)) == "child.yaml"
    with pytest.raises(PlanError) as exc:
        ctx.convert("x", val.integer(0), ("train", "seed"))
    e = exc.value
    assert (
        str(e)
        == "child.yaml: train.seed: must be an integer >= 0, got 'x' [from --set train.seed='x']"
    )
    assert (e.file, e.key, e.value, e.allowed, e.set_by) == (
        "child.yaml",
        "train.seed",
        "x",
        "an integer >= 0",
        "train.seed",
    )
    with pytest.raises(PlanError) as exc:
        ctx.convert(-1, val.integer(0), ("train", "warmup"))
    assert exc.value.set_by is None and "--set" not in str(exc.value)
    assert str(exc.value).startswith("base.yaml: train.warmup:")


def test_context_sections_check_keys_and_types() -> None:
    ctx = val.Context("f.yaml")
    convs = {"every": val.integer(1), "progress": val.boolean}
    assert ctx.section({"every": 3}, convs, ("logging",)) == {"every": 3}
    assert ctx.section(None, convs, ("logging",)) == {}
    with pytest.raises(ConfigError) as exc:
        ctx.section({"evrey": 3}, convs, ("logging",))
    assert str(exc.value) == (
        "f.yaml: logging.evrey: unknown key; allowed: every, progress (did you mean every?)"
    )
    assert exc.value.value == "evrey" and exc.value.allowed == "every, progress"
    with pytest.raises(ConfigError, match=r"^f\.yaml: logging: must be a mapping with keys every"):
        ctx.section([1], convs, ("logging",))
    # no file: the message starts at the key
    with pytest.raises(ConfigError, match=r"^logging\.every: must be a positive integer, got 0$"):
        val.Context(None).section({"every": 0}, convs, ("logging",))


def test_user_error_is_one_line_with_its_fields() -> None:
    e = UserError("must be numbers", key="VALUES", value=["x"])
    assert str(e) == "VALUES: must be numbers" and isinstance(e, ValueError)
    assert (e.file, e.key, e.value, e.allowed) == (None, "VALUES", ["x"], None)
    m = MissingInputError("sweep file not found: s.yaml")
    assert str(m) == "sweep file not found: s.yaml" and m.value is NO_VALUE
    c = ConfigError("unknown key", file="r.yaml", key="train.x", note=" [from --set train.x=1]")
    assert str(c) == "r.yaml: train.x: unknown key [from --set train.x=1]"
    assert isinstance(c, UserError)
