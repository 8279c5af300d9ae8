"""User errors: one exception family for bad input, so the CLI can tell them from bugs.

A ``UserError`` is something the person running ``numerics`` can fix: a recipe, policy or sweep
value that is not allowed, a file or folder that is not there, a bad argument. It carries the
file, the dotted key, the value and what is allowed, and its ``str()`` is the one line the CLI
prints (``numerics <command>: <message>``, exit code 2). Any other exception is a bug and keeps
its traceback (exit code 1).

``UserError`` is a ``ValueError``, so callers that caught bad input as ``ValueError`` before
still do.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

#: ``UserError.value`` when no single value is at fault (a missing key, a missing file).
NO_VALUE: Any = type("NoValue", (), {"__repr__": lambda self: "NO_VALUE"})()


class UserError(ValueError):
    """Bad input: ``[<file>: ][<key>: ]<detail>``.

    ``file`` is the file that holds the offending key (or the one that is missing), ``key`` the
    dotted key path (``train.lr``, ``parameters.train.lr``) or the argument (``--ci``),
    ``value`` the offending value, ``allowed`` what would have been accepted, and ``detail`` the
    human sentence that says so. ``note`` is appended last (e.g. `` [from --set K=V]``).
    """

    def __init__(
        self,
        detail: str,
        *,
        file: str | None = None,
        key: str | None = None,
        value: Any = NO_VALUE,
        allowed: str | None = None,
        note: str = "",
    ) -> None:
        self.detail, self.file, self.key = detail, file, key
        self.value, self.allowed, self.note = value, allowed, note
        parts = [p for p in (file, key) if p]
        super().__init__(": ".join([*parts, detail]) + note)

    def __str__(self) -> str:
        return str(self.args[0])


class ConfigError(UserError):
    """A recipe, policy or sweep file (or a ``--set``) that does not validate.

    ``set_by`` is the ``KEY.PATH`` of the override (``--set``, a sweep parameter) that wrote the
    offending key, if one did.
    """

    def __init__(self, detail: str, *, set_by: str | None = None, **fields: Any) -> None:
        super().__init__(detail, **fields)
        self.set_by = set_by


class MissingInputError(UserError):
    """A file or folder named on the command line or in a config that does not exist."""


def run_command(command: str, func: Callable[[], int], debug: bool = False) -> int:
    """``func()``; a ``UserError`` becomes one line on stderr and exit code 2 (re-raised with
    its traceback under ``debug`` or ``NUMERICS_DEBUG=1``). Anything else propagates: a bug."""
    try:
        return int(func())
    except UserError as exc:
        if debug or os.environ.get("NUMERICS_DEBUG", "0") not in ("", "0"):
            raise
        print(f"numerics {command}: {exc}", file=sys.stderr)
        return 2
