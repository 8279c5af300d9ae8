"""The one validation layer of config files: recipes, their ``numerics`` policy, and sweeps.

Each of ``numerics.train.recipe``, ``numerics.nn.policy`` and ``numerics.sweeps.spec`` keeps its
own schema (which keys, which values) and checks it with these pieces:

- converters (``integer``, ``number``, ``choice``, ``sequence``, ...): a function from the value
  as written to its Python form, raising ``Invalid(what is allowed)`` otherwise;
- a ``Context``: which file set which key (a recipe's ``base`` chain) and which keys a ``--set``
  wrote, so that every error names the file, the dotted key, the value and what is allowed;
- ``Context.section`` (a mapping with known keys, unknown ones answered with "did you mean")
  and ``Context.convert`` (one value through a converter).

Errors are ``ConfigError`` (a ``UserError``): the caller's ``Context.error`` class, so a policy
read inside a recipe raises ``RecipeError`` and a bare policy ``PolicyError``.
"""

from __future__ import annotations

import difflib
import enum
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from numerics.enums import parse_enum
from numerics.errors import NO_VALUE, ConfigError

KeyPath = tuple[str | int, ...]  # a key path: ("train", "betas", 1)
Conv = Callable[[Any], Any]


class Invalid(Exception):
    """A converter's complaint: ``need`` (what is allowed) at ``at`` (a path below the key)."""

    def __init__(self, need: str, at: KeyPath = (), value: Any = None, hint: str = "") -> None:
        super().__init__(need)
        self.need, self.at, self.value, self.hint = need, at, value, hint


def dotted(path: KeyPath) -> str:
    """``("train", "betas", 1)`` -> ``train.betas[1]``."""
    out = ""
    for k in path:
        out += f"[{k}]" if isinstance(k, int) else (f".{k}" if out else str(k))
    return out


def did_you_mean(word: Any, allowed: Sequence[str], n: int = 1, sep: str = " (") -> str:
    """`` (did you mean lr?)`` for the closest of ``allowed``, or ``""``."""
    close = difflib.get_close_matches(str(word).lower(), list(allowed), n=n, cutoff=0.6)
    if not close:
        return ""
    return f"{sep}did you mean {', '.join(close)}?" + (")" if sep == " (" else "")


# ---------------------------------------------------------------------------------------------
# Converters: return the value in its Python form or raise Invalid(what is allowed)


def integer(lo: int | None = None, hi: int | None = None) -> Conv:
    """An int (not a bool), optionally within ``[lo, hi]``."""
    need = {None: "an integer", 0: "an integer >= 0", 1: "a positive integer"}.get(lo)
    need = need or f"an integer >= {lo}"
    if hi is not None:
        need = f"an integer in {lo}..{hi}" if lo is not None else f"an integer <= {hi}"

    def conv(v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int):
            raise Invalid(need, value=v)
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            raise Invalid(need, value=v)
        return v

    return conv


def number(
    lo: float | None = None, hi: float | None = None, lo_open: bool = False, hi_open: bool = False
) -> Conv:
    """A finite int or float (not a bool) as a float, optionally within ``[lo, hi]``."""
    if lo is not None and hi is not None:
        need = f"a number in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
    elif lo is not None:
        need = f"a number {'>' if lo_open else '>='} {lo:g}"
    else:
        need = "a finite number"

    def conv(v: Any) -> float:
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise Invalid(need, value=v)
        x = float(v)
        if lo is not None and not (x > lo if lo_open else x >= lo):
            raise Invalid(need, value=v)
        if hi is not None and not (x < hi if hi_open else x <= hi):
            raise Invalid(need, value=v)
        return x

    return conv


def optional(inner: Conv) -> Conv:
    def conv(v: Any) -> Any:
        if v is None:
            return None
        try:
            return inner(v)
        except Invalid as bad:
            need = bad.need if bad.at else bad.need + " or null"
            raise Invalid(need, bad.at, bad.value, bad.hint) from None

    return conv


def boolean(v: Any) -> bool:
    if not isinstance(v, bool):
        raise Invalid("true or false", value=v)
    return v


def string(v: Any) -> str:
    if not isinstance(v, str):
        raise Invalid("a string", value=v)
    return v


def name(v: Any) -> str:
    if not isinstance(v, str) or not v.strip():
        raise Invalid("a non-empty string", value=v)
    return v


def choice(cls: type[enum.Enum], aliases: Mapping[Any, str] | None = None) -> Conv:
    """A member of ``cls`` by value (case-insensitive); ``aliases`` maps non-strings first."""
    allowed = [str(m.value) for m in cls]

    def conv(v: Any) -> enum.Enum:
        if aliases and not isinstance(v, str) and v in aliases:
            v = aliases[v]
        if isinstance(v, str | cls):
            try:
                return parse_enum(cls, v, "value")
            except ValueError:
                pass
        raise Invalid(f"one of {', '.join(allowed)}", value=v, hint=did_you_mean(v, allowed))

    return conv


def one_of(allowed: Sequence[str]) -> Conv:
    """One of the strings ``allowed``, exactly as written."""

    def conv(v: Any) -> str:
        if not isinstance(v, str) or v not in allowed:
            raise Invalid(f"one of {', '.join(allowed)}", value=v, hint=did_you_mean(v, allowed))
        return v

    return conv


def sequence(inner: Conv, need: str, n: int | None = None, as_tuple: bool = True) -> Conv:
    def conv(v: Any) -> Any:
        if not isinstance(v, list | tuple) or (n is not None and len(v) != n):
            raise Invalid(need, value=v)
        out = []
        for i, x in enumerate(v):
            try:
                out.append(inner(x))
            except Invalid as bad:
                raise Invalid(bad.need, (i, *bad.at), bad.value, bad.hint) from None
        return tuple(out) if as_tuple else out

    return conv


def increasing(inner: Conv) -> Conv:
    def conv(v: Any) -> Any:
        out = inner(v)
        if list(out) != sorted(set(out)):
            raise Invalid("a strictly increasing list of positive integers", value=v)
        return out

    return conv


def renamed(inner: Conv, need: str) -> Conv:
    """``inner`` with its complaint about the value itself replaced by ``need``."""

    def conv(v: Any) -> Any:
        try:
            return inner(v)
        except Invalid as bad:
            raise Invalid(need if not bad.at else bad.need, bad.at, bad.value) from None

    return conv


# ---------------------------------------------------------------------------------------------
# Error context: which file a key came from, and which keys came from --set


@dataclass
class Context:
    """Where the keys being checked came from, and the error class to raise.

    ``source`` is the file named by the user (``<recipe>`` for a plain dict); ``files`` maps a
    key path to the file of a ``base`` chain that set it; ``sets`` lists ``(key path, "--set
    K=V")`` for the keys that overrides wrote.
    """

    source: str | None
    files: dict[tuple[Any, ...], str] = field(default_factory=dict)
    sets: list[tuple[tuple[str, ...], str]] = field(default_factory=list)
    error: type[ConfigError] = ConfigError

    def file(self, at: KeyPath) -> str | None:
        """The file that set the key at ``at`` (or its nearest parent)."""
        for i in range(len(at), 0, -1):
            if at[:i] in self.files:
                return self.files[at[:i]]
        return self.source

    def set_by(self, at: KeyPath) -> tuple[tuple[str, ...], str] | None:
        """The last override (key path, ``--set K=V``) that set this key, a parent or a child."""
        sets = [(p, t) for p, t in self.sets if p[: len(at)] == at or at[: len(p)] == p]
        return sets[-1] if sets else None

    def err(
        self,
        path: KeyPath,
        msg: str,
        at: KeyPath | None = None,
        value: Any = NO_VALUE,
        allowed: str | None = None,
    ) -> ConfigError:
        """The error for the key at ``path`` (``at``: the key whose file and --set to name)."""
        at = path if at is None else at
        by = self.set_by(at)
        return self.error(
            msg,
            file=self.file(at),
            key=dotted(path) or None,
            value=value,
            allowed=allowed,
            note=f" [from {by[1]}]" if by else "",
            set_by=".".join(by[0]) if by else None,
        )

    def unknown(self, path: KeyPath, allowed: Sequence[str], why: str = "") -> ConfigError:
        hint = did_you_mean(path[-1], allowed)
        allowed_s = ", ".join(allowed)
        return self.err(
            path, f"unknown key{why}; allowed: {allowed_s}{hint}", value=path[-1], allowed=allowed_s
        )

    def convert(self, value: Any, conv: Conv, path: KeyPath) -> Any:
        try:
            return conv(value)
        except Invalid as bad:
            full = (*path, *bad.at)
            msg = f"must be {bad.need}, got {bad.value!r}{bad.hint}"
            raise self.err(full, msg, value=bad.value, allowed=bad.need) from None

    def check_keys(self, raw: Mapping[Any, Any], allowed: Sequence[str], path: KeyPath) -> None:
        for key in raw:
            if key not in allowed:
                raise self.unknown((*path, str(key)), list(allowed))

    def mapping(self, raw: Any, keys: Sequence[str], path: KeyPath) -> Mapping[Any, Any]:
        """``raw`` as a mapping (``{}`` for null) whose keys are all among ``keys``."""
        if raw is None:
            return {}
        if not isinstance(raw, Mapping):
            raise self.err(
                path, f"must be a mapping with keys {', '.join(keys)}, got {raw!r}", value=raw
            )
        self.check_keys(raw, keys, path)
        return raw

    def section(self, raw: Any, convs: Mapping[str, Conv], path: KeyPath) -> dict[str, Any]:
        """A mapping of known keys, each value through its converter."""
        raw = self.mapping(raw, list(convs), path)
        return {k: self.convert(v, convs[k], (*path, k)) for k, v in raw.items()}
