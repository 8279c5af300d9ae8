"""Reading recipe files: YAML (with ``1e-3`` as a float), deep merges of ``base:`` chains, and
``KEY.PATH=VALUE`` overrides (the CLI's ``--set``, a sweep's parameters). ``numerics.train.recipe``
validates what these produce; the sweep engine reuses ``merge`` and ``apply_overrides``.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from numerics.errors import ConfigError, MissingInputError
from numerics.nn import policy as policy_mod


class RecipeError(ConfigError):
    """A recipe that cannot be used: ``<file>: <key.path>: what is wrong; what is allowed``."""


class YamlLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that also reads ``1e-3``, ``1.0e3`` and ``-2E+5`` as floats."""


YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _numerics_mapping(value: str) -> dict[str, Any]:
    return {"preset": value} if value in policy_mod.PRESETS else {"format": value}


def merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """Deep merge: mappings merge key by key, anything else (lists included) replaces."""
    out = copy.deepcopy(dict(base))
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


Override = str | tuple[str, Any]


def _parse_override(item: Override, source: str) -> tuple[tuple[str, ...], Any, str]:
    if isinstance(item, tuple):
        key, value, text = str(item[0]), item[1], f"--set {item[0]}={item[1]!r}"
    else:
        text = f"--set {item}"
        if not isinstance(item, str) or "=" not in item:
            raise RecipeError(
                "malformed override; expected KEY.PATH=VALUE (e.g. train.seed=2)",
                file=source,
                key=repr(text),
                value=item,
            )
        key, raw = item.split("=", 1)
        try:
            value = yaml.load(raw, Loader=YamlLoader)  # a SafeLoader
        except yaml.YAMLError as exc:
            problem = getattr(exc, "problem", None) or "cannot parse"
            raise RecipeError(
                f"the value is not valid YAML ({problem})", file=source, key=repr(text), value=raw
            ) from None
    path = tuple(k.strip() for k in key.split("."))
    if not all(path):
        raise RecipeError(
            "empty key; expected KEY.PATH=VALUE (e.g. train.seed=2)", file=source, key=repr(text)
        )
    return path, value, text


def _apply(
    d: Mapping[str, Any], overrides: Sequence[Override], source: str
) -> tuple[dict[str, Any], list[tuple[tuple[str, ...], str]]]:
    out = copy.deepcopy(dict(d))
    done = []
    for item in [overrides] if isinstance(overrides, str) else overrides:
        path, value, text = _parse_override(item, source)
        node: dict[str, Any] = out
        for i, key in enumerate(path[:-1]):
            child = node.get(key)
            if child is None:
                child = node[key] = {}
            elif isinstance(child, str) and i == 0 and key in ("numerics", "model", "data"):
                child = node[key] = (
                    _numerics_mapping(child) if key == "numerics" else {"name": child}
                )
            elif not isinstance(child, dict):
                raise RecipeError(
                    f"{'.'.join(path[: i + 1])} is {child!r}, not a mapping",
                    file=source,
                    key=repr(text),
                    value=child,
                )
            node = child
        node[path[-1]] = value
        done.append((path, text))
    return out, done


def apply_overrides(
    d: Mapping[str, Any], overrides: Sequence[Override], source: str | None = None
) -> dict[str, Any]:
    """``d`` with ``KEY.PATH=VALUE`` overrides applied in order (a new dict; ``d`` is kept).

    The value is parsed as YAML (``1e-3`` is a float); a ``(key, value)`` pair sets an already
    parsed value. Missing mappings on the way are created; a ``numerics`` string is first
    turned into its mapping (``{preset: NAME}`` or ``{format: NAME}``), a ``model``/``data``
    string into ``{name: NAME}``.
    """
    return _apply(d, overrides, source or "<recipe>")[0]


def _read(path: str, referrer: str | None) -> dict[str, Any]:
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        if referrer is None:
            raise MissingInputError(f"recipe file not found: {path}", value=path) from None
        raise RecipeError(
            f"file not found: {path}", file=referrer, key="base", value=path
        ) from None
    try:
        data = yaml.load(text, Loader=YamlLoader)  # a SafeLoader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise RecipeError(f"{at}YAML syntax error: {problem}", file=path) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise RecipeError(
            "a recipe must be a mapping of sections (task, model, data, train, ...), "
            f"got {type(data).__name__}",
            file=path,
        )
    return data


def _mark(files: dict[tuple[Any, ...], str], path: tuple[Any, ...], name: str) -> None:
    """Record that ``name`` set the key at ``path`` (replacing whatever was below it)."""
    for stale in [p for p in files if p[: len(path)] == path]:
        del files[stale]
    files[path] = name


def _record(
    files: dict[tuple[Any, ...], str], d: Mapping[str, Any], name: str, prefix: tuple[Any, ...] = ()
) -> None:
    """Record the file of every key of ``d`` merged on top (mappings merge, others replace)."""
    for key, value in d.items():
        path = (*prefix, key)
        if isinstance(value, Mapping):
            files[path] = name
            _record(files, value, name, path)
        else:
            _mark(files, path, name)
