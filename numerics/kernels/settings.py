"""The settings that choose a cast's kernel, read from the environment once.

``current()`` is what ``numerics.route`` decides with; it is read from the environment on
first use and never again, so a run cannot change paths halfway. Tests (and code that wants
another choice for a while) use ``override``, which the plan cache keys on:

    with settings.override(cpp=False):
        quantize(x, "mx6")  # the Inductor kernel, not the C++ one
"""

from __future__ import annotations

import dataclasses
import os
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

_OFF = ("0", "false", "no", "off")


@dataclass(frozen=True)
class Settings:
    """Which kernels a cast may run; each field is read from one environment variable.

    - ``compile`` (``NUMERICS_COMPILE``, default on; ``0``, ``false``, ``no`` or ``off``
      turn it off): the ``auto`` backend may run Inductor-compiled kernels. Off, it runs
      eager kernels (``backend="compiled"`` still compiles).
    - ``compile_min_numel`` (``NUMERICS_COMPILE_MIN_NUMEL``, default 65536): below this many
      elements ``auto`` runs eager kernels, where a compiled call's fixed overhead would
      dominate (casts with a fast eager route have their own thresholds: see
      ``numerics.route``).
    - ``cpp`` (``NUMERICS_NATIVE``, default on): the hand-written C++ kernels
      (``numerics.kernels.native``) may run, at any size, under ``auto`` and ``compiled``.
    - ``lean_max_numel`` (``NUMERICS_LEAN_MAX_NUMEL``, default 1024): below this many
      elements ``auto`` runs nearest_even block casts the C++ kernels do not take on the
      lean eager kernels (``numerics.kernels.lean``): a compiled call beats them from
      about this size up, and below it a new shape layout would cost a compile for little
      gain. The tests raise it, so that every block layout a model test meets does not
      compile a kernel of its own. 0 leaves them ``compile_min_numel``.
    """

    compile: bool = True
    compile_min_numel: int = 65536
    cpp: bool = True
    lean_max_numel: int = 1024

    def __post_init__(self) -> None:
        for name in ("compile_min_numel", "lean_max_numel"):
            if getattr(self, name) < 0:
                raise ValueError(f"Settings: {name}={getattr(self, name)}; must be >= 0")

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Settings:
        """The settings the environment variables give (defaults where unset)."""

        def number(var: str, default: int) -> int:
            raw = env.get(var)
            if raw is None:
                return default
            try:
                return int(raw)
            except ValueError:
                raise ValueError(f"{var}={raw!r}: expected a whole number") from None

        return cls(
            compile=env.get("NUMERICS_COMPILE", "1") not in _OFF,
            compile_min_numel=number("NUMERICS_COMPILE_MIN_NUMEL", cls.compile_min_numel),
            cpp=env.get("NUMERICS_NATIVE", "1") not in _OFF,
            lean_max_numel=number("NUMERICS_LEAN_MAX_NUMEL", cls.lean_max_numel),
        )


_LOCK = threading.Lock()
_CURRENT: Settings | None = None


def current() -> Settings:
    """The settings in force: the environment's, read on first use, or an override's."""
    global _CURRENT
    if _CURRENT is None:
        with _LOCK:
            if _CURRENT is None:
                _CURRENT = Settings.from_env()
    return _CURRENT


@contextmanager
def override(**changes: Any) -> Iterator[Settings]:
    """Within the block, ``current()`` is the current settings with ``changes`` applied
    (field names of ``Settings``); restored on exit."""
    global _CURRENT
    before = current()
    _CURRENT = dataclasses.replace(before, **changes)
    try:
        yield _CURRENT
    finally:
        _CURRENT = before
