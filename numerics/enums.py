"""Enums from strings at the YAML/CLI boundary, with an error naming the argument."""

from __future__ import annotations

import enum
from typing import TypeVar

E = TypeVar("E", bound=enum.Enum)


def parse_enum(cls: type[E], value: object, arg: str) -> E:
    """``value`` as a member of ``cls`` (a member, or its value in any case); otherwise a
    ValueError ``"<arg>=<value>; allowed: ..."``."""
    if isinstance(value, cls):
        return value
    try:
        return cls(str(value).strip().lower())
    except ValueError:
        allowed = ", ".join(str(m.value) for m in cls)
        raise ValueError(f"{arg}={value!r}; allowed: {allowed}") from None
