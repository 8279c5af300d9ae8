"""A name -> constructor registry (models, datasets): register with a decorator, list with a
wildcard, and an unknown name raises an error that lists close matches and every known name.

Modelled on timm's ``_registry.py``: constructors are plain functions with keyword options, so a
recipe's ``model:`` / ``data:`` section is checked against the constructor's signature
(``numerics.train.recipe``) and stays inert data.
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T", bound=Callable[..., object])


class UnknownNameError(KeyError):
    """An unknown registry name; the message lists close matches and the known names."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


def unknown_name_message(kind: str, name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return f"unknown {kind} {name!r}{hint} (known: {', '.join(sorted(known))})"


class Registry(Generic[T]):
    """Constructors of one kind (``"model"``, ``"dataset"``) keyed by lowercase name."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self._meta: dict[str, dict[str, Any]] = {}

    def register(self, name: str, *, overwrite: bool = False, **meta: Any) -> Callable[[T], T]:
        """Decorator: ``@MODELS.register("resnet20", task="image")``; ``meta`` is kept as
        facts about the entry (``task`` says which recipe task it serves)."""
        key = name.strip().lower()

        def add(fn: T) -> T:
            if key in self._items and not overwrite:
                raise ValueError(f"{self.kind} {key!r} is already registered (overwrite=True?)")
            self._items[key] = fn
            self._meta[key] = dict(meta)
            return fn

        return add

    def get(self, name: str) -> T:
        key = str(name).strip().lower()
        if key not in self._items:
            raise UnknownNameError(unknown_name_message(self.kind, str(name), list(self._items)))
        return self._items[key]

    def meta(self, name: str) -> dict[str, Any]:
        """The facts given at registration (``{"task": "image"}``)."""
        self.get(name)
        return dict(self._meta[str(name).strip().lower()])

    def names(self, pattern: str | None = None, **meta: Any) -> list[str]:
        """Registered names, optionally filtered by a wildcard and by meta (``task="image"``)."""
        out = [n for n in self._items if all(self._meta[n].get(k) == v for k, v in meta.items())]
        return [n for n in out if fnmatch.fnmatch(n, pattern.lower())] if pattern else out

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.strip().lower() in self._items
