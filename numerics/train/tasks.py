"""The three tasks a recipe can train: how a batch becomes a loss and a split becomes metrics.

- image: cross-entropy over classes; metrics ``accuracy`` (fraction correct) and ``loss``.
- language: next-byte cross-entropy; validation over non-overlapping windows that tile the
  held-out bytes from the start (the same windows for every run, so formats compare on the same
  text); metrics ``val_loss`` (nats per byte) and ``bits_per_byte`` (val_loss / ln 2). The
  reference beside the dataset's unigram entropy: ``kneser_ney_bits_per_byte``, an interpolated
  Kneser-Ney n-gram model of order ``kneser_ney_order`` fitted on the training bytes and scored
  on the same validation bytes with the same window context (``numerics.ngram``).
- recsys: binary cross-entropy from the click logit; metrics ``auc`` and ``logloss`` over the
  whole held-out split.

Evaluation runs the model as trained, casts included: a format that holds the weights and
activations in training holds them in inference too.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from numerics import metrics, ngram
from numerics.data.base import Dataset, Split, WindowSplit

Batch = dict[str, Tensor]

# The language task's n-gram reference: order 5 is the top of the 3..5 range such references
# use (issue 16) and the strongest of them; fitting takes 8 bytes of memory per training byte,
# so a corpus over KNESER_NEY_MAX_BYTES gets none.
KNESER_NEY_ORDER = 5
KNESER_NEY_MAX_BYTES = 2**28


class TaskName(enum.Enum):
    IMAGE = "image"
    LANGUAGE = "language"
    RECSYS = "recsys"


def _image_loss(model: nn.Module, batch: Batch) -> Tensor:
    return F.cross_entropy(model(batch["x"]), batch["y"])


def _language_loss(model: nn.Module, batch: Batch) -> Tensor:
    logits = model(batch["x"])  # (B, T, V)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch["y"].reshape(-1))


def _recsys_loss(model: nn.Module, batch: Batch) -> Tensor:
    return F.binary_cross_entropy_with_logits(
        model(batch["dense"], batch["sparse"]), batch["label"]
    )


def _eval_index_batches(n: int, batch_size: int, max_batches: int | None) -> list[Tensor]:
    out = list(torch.arange(n).split(batch_size))
    return out[:max_batches] if max_batches is not None else out


def _to(batch: Batch, device: torch.device) -> Batch:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


@torch.no_grad()
def _image_eval(
    model: nn.Module, split: Split, batch_size: int, max_batches: int | None, device: torch.device
) -> dict[str, float]:
    correct, total, loss_sum = 0, 0, 0.0
    for idx in _eval_index_batches(len(split), batch_size, max_batches):
        b = _to(split.batch(idx), device)
        logits = model(b["x"])
        loss_sum += float(F.cross_entropy(logits.float(), b["y"], reduction="sum"))
        correct += int((logits.argmax(-1) == b["y"]).sum())
        total += len(idx)
    return {"accuracy": correct / total, "loss": loss_sum / total}


def language_eval_windows(
    split: WindowSplit, batch_size: int, max_batches: int | None
) -> list[Tensor]:
    """The start offsets of the windows language validation scores, batch by batch:
    non-overlapping windows tiling the split from its first byte, the first ``max_batches``
    batches of them. The n-gram reference scores the same windows."""
    starts = torch.arange(0, len(split), split.block_size)
    batches = list(starts.split(batch_size))
    return batches[:max_batches] if max_batches is not None else batches


@torch.no_grad()
def _language_eval(
    model: nn.Module, split: Split, batch_size: int, max_batches: int | None, device: torch.device
) -> dict[str, float]:
    assert isinstance(split, WindowSplit)
    nats, count = 0.0, 0
    for idx in language_eval_windows(split, batch_size, max_batches):
        b = _to(split.batch(idx), device)
        logits = model(b["x"]).float()
        nats += float(
            F.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), b["y"].reshape(-1), reduction="sum"
            )
        )
        count += b["y"].numel()
    val_loss = nats / count
    return {"val_loss": val_loss, "bits_per_byte": metrics.bits_per_byte(val_loss)}


def _language_reference(
    data: Dataset, batch_size: int, max_batches: int | None
) -> dict[str, float | int]:
    """The interpolated Kneser-Ney model of order ``KNESER_NEY_ORDER`` fitted on the training
    bytes, scored on the windows validation scores (``numerics.ngram``); nothing for a corpus
    over ``KNESER_NEY_MAX_BYTES`` training bytes."""
    train, test = data.train, data.test
    assert isinstance(train, WindowSplit) and isinstance(test, WindowSplit)
    if len(train.data) > KNESER_NEY_MAX_BYTES:
        return {}
    starts = torch.cat(language_eval_windows(test, batch_size, max_batches)).numpy()
    args = (train.data.numpy(), test.data.numpy(), starts, test.block_size, KNESER_NEY_ORDER)
    bpb = ngram.cached_window_bits_per_byte(*args, data.info.get("corpus_sha256"))
    return {"kneser_ney_bits_per_byte": bpb, "kneser_ney_order": KNESER_NEY_ORDER}


@torch.no_grad()
def _recsys_eval(
    model: nn.Module, split: Split, batch_size: int, max_batches: int | None, device: torch.device
) -> dict[str, float]:
    logits, labels = [], []
    for idx in _eval_index_batches(len(split), batch_size, max_batches):
        b = _to(split.batch(idx), device)
        logits.append(model(b["dense"], b["sparse"]).float().cpu())
        labels.append(b["label"].cpu())
    z, y = torch.cat(logits), torch.cat(labels)
    if not bool(torch.isfinite(z).all()):
        return {"auc": math.nan, "logloss": math.nan}
    return {"auc": metrics.auc(z, y), "logloss": metrics.logloss(z, y)}


@dataclass(frozen=True)
class Task:
    """What the trainer needs to know about a task."""

    name: TaskName
    loss: Callable[[nn.Module, Batch], Tensor]
    evaluate: Callable[[nn.Module, Split, int, int | None, torch.device], dict[str, float]]
    primary: str  # the headline metric
    higher_is_better: bool
    unit: str  # what throughput counts: examples or bytes
    # reference values for the summary's data_info that depend on the evaluated slice
    # (dataset, eval batch size, max eval batches); None: the dataset's info says it all
    reference: Callable[[Dataset, int, int | None], dict[str, float | int]] | None = None

    def units(self, batch: Batch) -> int:
        """Examples (image, recsys) or bytes (language) in a batch, for throughput."""
        key = "y" if self.name is not TaskName.RECSYS else "label"
        return int(batch[key].numel())


TASKS: dict[TaskName, Task] = {
    TaskName.IMAGE: Task(TaskName.IMAGE, _image_loss, _image_eval, "accuracy", True, "ex"),
    TaskName.LANGUAGE: Task(
        TaskName.LANGUAGE,
        _language_loss,
        _language_eval,
        "bits_per_byte",
        False,
        "B",
        reference=_language_reference,
    ),
    TaskName.RECSYS: Task(TaskName.RECSYS, _recsys_loss, _recsys_eval, "auc", True, "ex"),
}


def get(name: str | TaskName) -> Task:
    from numerics.enums import parse_enum

    return TASKS[parse_enum(TaskName, name, "task")]
