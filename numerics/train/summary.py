"""The run summary: one typed record that the trainer writes and everything else reads.

``summary.json`` in a run directory is ``RunSummary.to_dict()``: the run's status, what ran
(task, recipe, label, model, data, format, numerics policy, seed), what came out (final
metrics, steps, time, memory, the numerics counters), where it ran (``provenance``: the code's
fingerprint and git commit, torch and Python, the CPU model, threads, device; see
``numerics.provenance``) and, for a run that did not complete,
why (``reason`` for a diverged run, ``error`` and ``traceback`` for a failed one). The trainer,
the sweep engine, the executors, ``numerics compare``/``docs`` and the CLI all read it through
``RunSummary.from_dict`` (``RunDir.read_summary``), so a field has one name and one type.

Every field is written, so the file shows the whole layout; fields a run did not produce (a
failed run's metrics, a hardening report without the periodic regularizer) are ``null``.
Keys the record does not know (written by a newer version, or added by hand) are kept in
``extra`` and written back unchanged. ``schema_version`` is the version of this layout; files
without one are version 0 (the same fields, before the version was recorded).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

SCHEMA_VERSION = 2  # 2: ``provenance`` (numerics.provenance); 1: the same without it
Status = Literal["completed", "diverged", "failed"]
STATUSES: tuple[Status, ...] = ("completed", "diverged", "failed")


class SummaryError(ValueError):
    """A summary.json that is not a run summary (no valid status, a field of the wrong kind)."""


@dataclass
class RunSummary:
    status: Status
    # what ran (a failed run written by an executor may know only its run id)
    task: str | None = None
    recipe: str | None = None
    label: str | None = None
    model: str | None = None
    data: str | None = None
    format: str | None = None
    numerics: dict[str, Any] | None = None
    seed: int | None = None
    run_id: str | None = None
    # what came out
    metrics: dict[str, float] = field(default_factory=dict)
    primary_metric: str | None = None
    steps: int | None = None
    total_steps: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    wall_s: float | None = None
    peak_memory_mb: float | None = None
    parameters: int | None = None
    device: str | None = None
    nproc: int | None = None
    resumes: int | None = None
    skipped_steps: int | None = None
    cancelled_update_fraction: float | None = None
    telemetry: dict[str, Any] | None = None
    embedding_bytes: int | None = None
    embedding_bytes_parts: dict[str, int] | None = None
    embedding_fraction_of_fp32: float | None = None
    data_info: dict[str, Any] = field(default_factory=dict)
    torch: str | None = None
    python: str | None = None
    provenance: dict[str, Any] | None = None  # the code, libraries and machine it ran on
    metrics_before_hardening: dict[str, float] | None = None
    hardening: dict[str, Any] | None = None
    eval_error: str | None = None
    wandb: str | None = None
    # why it did not complete
    reason: str | None = None
    error: str | None = None
    traceback: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise SummaryError(f"summary status {self.status!r}; allowed: {', '.join(STATUSES)}")

    @property
    def finished(self) -> bool:
        """Completed or diverged: a run a sweep keeps on --resume (a failed one runs again)."""
        return self.status in ("completed", "diverged")

    def to_dict(self) -> dict[str, Any]:
        """The JSON object: every field in declaration order, then the ``extra`` keys."""
        out: dict[str, Any] = {
            f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"
        }
        out.update({k: x for k, x in self.extra.items() if k not in out})
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunSummary:
        """The record of a summary.json object; unknown keys go to ``extra``."""
        if not isinstance(data, dict):
            raise SummaryError(f"a run summary is a JSON object, not {type(data).__name__}")
        if "status" not in data:
            raise SummaryError(f"a run summary has a status; allowed: {', '.join(STATUSES)}")
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        known = {k: v for k, v in data.items() if k in names}
        known.setdefault("schema_version", 0)
        for key in ("metrics", "data_info"):
            if known.get(key) is None:
                known.pop(key, None)
            elif not isinstance(known[key], dict):
                raise SummaryError(f"summary key {key!r} is {known[key]!r}; allowed: an object")
        extra = {k: v for k, v in data.items() if k not in names}
        return cls(extra=extra, **known)

    @classmethod
    def failed(
        cls, error: BaseException | str, traceback: str | None = None, **what: Any
    ) -> RunSummary:
        """A ``failed`` record: the error line (``Type: message``), its traceback, and what
        ran as far as it is known (``what``: the header fields, e.g. ``header(recipe)``)."""
        line = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        return cls(status="failed", error=line, traceback=traceback or None, **what)
