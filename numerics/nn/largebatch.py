"""Large-batch training rules: lr scaling, gradual warmup, LARS and CowClip.

**Learning-rate scaling** (Goyal et al., arXiv 1706.02677): when the batch grows k-fold from a
base batch size, multiply the lr by k ("linear") or, the common alternative for adaptive
optimizers, by sqrt(k) ("sqrt").

**Gradual warmup** (1706.02677, sec. 2.2): the lr starts at the unscaled eta and grows linearly
to the scaled k*eta over the warmup steps; afterwards it stays there, follows a cosine to
``final_factor`` at ``total_steps``, or is multiplied by ``gamma`` at each step milestone. To start
from the unscaled lr as the paper does, pass ``start_factor = 1 / lr_scale_factor(...)``.

**LARS** (You et al., arXiv 1708.03888): each layer's step is rescaled by the trust ratio
``eta * ||w|| / (||g|| + wd * ||w||)``, so the update is a fixed fraction of the weight norm
whatever the gradient's scale. We differ from the paper's Algorithm 1 in one place: the global lr
multiplies the momentum buffer (``buf = m*buf + trust*(g + wd*w); w -= lr*buf``, as
``torch.optim.SGD`` does) rather than entering the buffer; the two agree while the lr is constant.
Biases and norm parameters (ndim <= 1) get plain SGD with momentum, no trust ratio and no weight
decay (per group: ``exclude_1d``; ``adapt=False`` turns the trust ratio off for a whole group).

**CowClip** (Zheng et al., arXiv 2204.06240): in CTR models most ids are rare, and a large batch
makes a rare id's gradient relatively huge. CowClip clips each embedding row's gradient by a
threshold proportional to the row's own weight norm and to how often the id occurs in the batch.
What the authors' code does (github.com/bytedance/LargeBatchCTR, commit d01fd8e ``clip.py``
``clip_id_norm``, the dense-gradient branch used in training; ``train.py`` ``train_step``):

* ``train.py``: ``lower_bound = args.clip * sqrt(args.sparse_embed_dim) * args.bound``, i.e.
  ``r * sqrt(d) * zeta``, passed as ``min_w``, with per-field counts from ``tf.unique_with_counts``.
* ``clip.py``: ``clipnorm = tf.maximum(tf.norm(w, axis=-1), min_w)``; the counts are scattered into
  ``tf.ones([num_rows])`` and ``clipnorm = clipnorm * cnts``; ``clip_t = ratio * clipnorm``;
  ``g_clip = g * clip_t / tf.maximum(||g||_row, clip_t)`` (a zero-gradient row stays zero).

So the row threshold is ``r * c * max(||w_row||, r * sqrt(d) * zeta)``: the formula in our issue,
r appearing twice (the paper's Algorithm 1 writes ``c * max(r * ||w_row||, zeta)``; with r = 1
the two differ only in the floor, by sqrt(d)). The gradient clipped is that of the batch-mean loss
(Algorithm 1 line 3 divides by b; ``train.py`` compiles ``SUM_OVER_BATCH_SIZE``), so a present
row is clipped only when the mean of its per-occurrence gradients exceeds
``b * r * max(||w_row||, floor)``: at a fixed weight norm the clip loosens in proportion to the
batch, and binds mostly on rows whose norm the L2 term has pulled towards the floor.

Two details go beyond that formula. (1) Ids absent from the batch get count 1,
not 0 (the scatter into ones). That matters only if an absent row's gradient is non-zero, and in
the authors' setup it is: their L2 is a Keras ``embeddings_regularizer`` added to the loss, so
``2*lambda*w`` of every row is in the gradient that is clipped. By default we leave count-0 rows
untouched (in PyTorch, an optimizer's weight_decay is not in ``.grad``, so they are zero anyway);
``clip_absent=True`` reproduces the authors. Where the L2 term is in the gradient (the trainer
adds it so), an absent row's gradient is ``2*lambda*w``, which the count-1 threshold clips only if
``2*lambda > r``: far from the authors' values, so the choice is inert there. (2) ``train.py``
skips the wide part's 1-wide "linear" embedding tables; ``CowClip`` clips exactly the modules it
is given.

Defaults, from the repository's README: r = 1 (``--clip 1`` in every large-batch command) and
zeta = 1e-5 for Criteo (1e-4 for Avazu from 4K up, 1e-3 at 1K/2K). The README's Criteo table is
the scaling rule of ``cowclip_scaling``: from bs 1K, dense lr 8e-4 scaled by sqrt(k) (11.31e-4 at
2K ... 90.50e-4 at 128K), L2 scaled by k (1e-5 ... 128e-5 since the README's 2023-02-08 revision,
which agrees with its example commands, ``--l2 8e-05`` at 8K; the table read 1e-4 ... 128e-4
before), embedding lr 1e-4 at every size. ``train.py``: Adam for both groups; only the dense lr is
warmed up, linearly from 1e-8 over one epoch, then held (no decay); the embedding lr is constant;
10 epochs (the ``--epoch`` default, which the README's commands keep); the DeepFM's 1-wide
"linear" tables take the embedding lr and the L2 (``l2_reg_linear``) but no clip; the DNN has no
L2; ``--init_stddev 1e-2`` in the large-batch commands.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Callable, Sequence
from typing import overload

import torch
from torch import Tensor, nn
from torch.optim.lr_scheduler import LambdaLR
from torch.optim.optimizer import Optimizer, ParamsT

from numerics.enums import parse_enum

COWCLIP_R = 1.0  # README: --clip 1
COWCLIP_ZETA_CRITEO = 1e-5  # README: Criteo table, every batch size
COWCLIP_ZETA_AVAZU = 1e-4  # README: Avazu table, batch sizes 4K..128K


class ScalingRule(enum.Enum):
    NONE = "none"
    LINEAR = "linear"
    SQRT = "sqrt"


class Decay(enum.Enum):
    NONE = "none"
    COSINE = "cosine"
    STEP = "step"


def parse_rule(rule: ScalingRule | str) -> ScalingRule:
    """A ``ScalingRule`` from its name; the error names ``rule`` and the allowed values."""
    out = parse_enum(ScalingRule, rule, "rule")
    assert isinstance(out, ScalingRule)
    return out


def _positive(value: float, arg: str) -> None:
    if not value > 0:
        raise ValueError(f"{arg}={value!r}; must be > 0")


def lr_scale_factor(batch_size: int, base_batch_size: int, rule: ScalingRule | str) -> float:
    """The lr multiplier for ``batch_size`` = k * ``base_batch_size``: 1, k or sqrt(k)."""
    _positive(batch_size, "batch_size")
    _positive(base_batch_size, "base_batch_size")
    k = batch_size / base_batch_size
    return {ScalingRule.NONE: 1.0, ScalingRule.LINEAR: k, ScalingRule.SQRT: math.sqrt(k)}[
        parse_rule(rule)
    ]


def scale_lr(
    lr: float, batch_size: int, base_batch_size: int, rule: ScalingRule | str = "linear"
) -> float:
    """``lr`` tuned at ``base_batch_size``, rescaled for ``batch_size`` (1706.02677)."""
    return lr * lr_scale_factor(batch_size, base_batch_size, rule)


# --- gradual warmup ---------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class WarmupFactor:
    """The lr multiplier at a step: a linear ramp, then a decay. A ``LambdaLR`` lr_lambda.

    Step s < ``warmup_steps``: ``start_factor + (1 - start_factor) * s / warmup_steps`` (1 at the
    end of warmup). Then ``NONE``: 1; ``COSINE``: from 1 to ``final_factor`` at ``total_steps``
    (held there after); ``STEP``: ``gamma ** (number of milestones <= s)``.
    """

    warmup_steps: int
    total_steps: int
    start_factor: float
    decay: Decay = Decay.NONE
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1
    final_factor: float = 0.0

    def __post_init__(self) -> None:
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps={self.warmup_steps}; must be >= 0")
        if self.total_steps < self.warmup_steps:
            raise ValueError(
                f"total_steps={self.total_steps}; must be >= warmup_steps={self.warmup_steps}"
            )
        if not 0.0 <= self.start_factor <= 1.0:
            raise ValueError(f"start_factor={self.start_factor}; allowed 0..1")
        if not 0.0 <= self.final_factor <= 1.0:
            raise ValueError(f"final_factor={self.final_factor}; allowed 0..1")
        if list(self.milestones) != sorted(self.milestones):
            raise ValueError(f"milestones={self.milestones}; must be increasing")
        if self.decay is Decay.STEP and not self.milestones:
            raise ValueError("milestones=(); decay='step' needs at least one milestone")

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return self.start_factor + (1.0 - self.start_factor) * step / self.warmup_steps
        if self.decay is Decay.COSINE:
            span = self.total_steps - self.warmup_steps
            t = 1.0 if span == 0 else min(1.0, (step - self.warmup_steps) / span)
            return self.final_factor + (1.0 - self.final_factor) * 0.5 * (1 + math.cos(math.pi * t))
        if self.decay is Decay.STEP:
            return float(self.gamma ** sum(step >= m for m in self.milestones))
        return 1.0


def warmup_schedule(
    optimizer: Optimizer,
    warmup_steps: int,
    total_steps: int,
    start_factor: float,
    decay: Decay | str = "none",
    milestones: Sequence[int] = (),
    gamma: float = 0.1,
    final_factor: float = 0.0,
) -> LambdaLR:
    """A ``LambdaLR`` for gradual warmup (1706.02677) then an optional decay.

    Set the optimizer's lr to the *scaled* lr; the schedule multiplies it by ``WarmupFactor``.
    Call ``scheduler.step()`` once per optimizer step. Goyal et al. start from the unscaled lr:
    ``start_factor = 1 / lr_scale_factor(batch_size, base_batch_size, rule)``.
    """
    d = parse_enum(Decay, decay, "decay")
    assert isinstance(d, Decay)
    factor = WarmupFactor(
        warmup_steps, total_steps, start_factor, d, tuple(milestones), gamma, final_factor
    )
    return LambdaLR(optimizer, factor)


# --- LARS -------------------------------------------------------------------------------------
class LARS(Optimizer):
    """SGD with momentum and a layer-wise trust ratio (You et al., 1708.03888).

    For each adapted parameter w with gradient g (norms over the whole tensor):
    ``trust = trust_coefficient * ||w|| / (||g|| + weight_decay * ||w|| + eps)`` (1 where ||w|| or
    ||g|| is 0), ``buf = momentum * buf + trust * (g + weight_decay * w)``, ``w -= lr * buf``.
    Parameters with ndim <= 1 (when the group's ``exclude_1d``) and every parameter of a group with
    ``adapt=False`` take ``buf = momentum * buf + g`` instead: plain SGD-momentum, no decay.
    """

    def __init__(
        self,
        params: ParamsT,
        lr: float,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        trust_coefficient: float = 0.001,
        eps: float = 1e-8,
        exclude_1d: bool = True,
        adapt: bool = True,
    ) -> None:
        if not lr >= 0:
            raise ValueError(f"lr={lr!r}; must be >= 0")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum={momentum!r}; allowed [0, 1)")
        if not weight_decay >= 0:
            raise ValueError(f"weight_decay={weight_decay!r}; must be >= 0")
        _positive(trust_coefficient, "trust_coefficient")
        if not eps >= 0:
            raise ValueError(f"eps={eps!r}; must be >= 0")
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "weight_decay": weight_decay,
            "trust_coefficient": trust_coefficient,
            "eps": eps,
            "exclude_1d": exclude_1d,
            "adapt": adapt,
        }
        super().__init__(params, defaults)

    @overload
    def step(self, closure: None = None) -> None: ...
    @overload
    def step(self, closure: Callable[[], float]) -> float: ...

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            wd = group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                if g.is_sparse:
                    raise RuntimeError("LARS does not support sparse gradients")
                if group["adapt"] and not (group["exclude_1d"] and p.ndim <= 1):
                    w_norm = torch.linalg.vector_norm(p)
                    g_norm = torch.linalg.vector_norm(g)
                    ratio = (
                        group["trust_coefficient"] * w_norm / (g_norm + wd * w_norm + group["eps"])
                    )
                    trust = torch.where((w_norm > 0) & (g_norm > 0), ratio, 1.0)
                    g = g.add(p, alpha=wd).mul_(trust)
                state = self.state[p]
                if group["momentum"] != 0:
                    if "momentum_buffer" not in state:
                        state["momentum_buffer"] = g.clone()
                    else:
                        state["momentum_buffer"].mul_(group["momentum"]).add_(g)
                    g = state["momentum_buffer"]
                p.add_(g, alpha=-group["lr"])
        return loss


# --- CowClip ----------------------------------------------------------------------------------
def id_counts(ids: Tensor, num_rows: int) -> Tensor:
    """How often each of ``num_rows`` ids occurs in ``ids`` (any shape): int64, (num_rows,)."""
    if ids.dtype.is_floating_point or ids.dtype.is_complex or ids.dtype == torch.bool:
        raise ValueError(f"ids: dtype {ids.dtype}; must be an integer dtype")
    flat = ids.reshape(-1).long()
    if flat.numel() and (int(flat.min()) < 0 or int(flat.max()) >= num_rows):
        raise ValueError(f"ids: values must lie in [0, {num_rows})")
    return torch.bincount(flat, minlength=num_rows)


def cowclip_(
    embedding_weight: Tensor,
    grad: Tensor,
    counts: Tensor,
    r: float = COWCLIP_R,
    zeta: float = COWCLIP_ZETA_CRITEO,
    *,
    clip_absent: bool = False,
) -> Tensor:
    """Clip each row of ``grad`` (num_rows, d) in place to ``r * c * max(||w||, r*sqrt(d)*zeta)``.

    ``c`` is the row's id count in the batch (``counts``, (num_rows,)). A row with norm above the
    threshold is scaled down onto it; rows with count 0 are untouched unless ``clip_absent``, which
    clips them as if c were 1, as the authors' code does. Returns ``grad``.
    """
    if embedding_weight.dim() != 2:
        raise ValueError(f"embedding_weight: shape {tuple(embedding_weight.shape)}; must be 2-d")
    if grad.shape != embedding_weight.shape or grad.is_sparse:
        raise ValueError(
            f"grad: a dense tensor of shape {tuple(embedding_weight.shape)} expected, got "
            f"{tuple(grad.shape)}{' (sparse)' if grad.is_sparse else ''}"
        )
    if counts.shape != (grad.shape[0],):
        raise ValueError(f"counts: shape ({grad.shape[0]},) expected, got {tuple(counts.shape)}")
    _positive(r, "r")
    if not zeta >= 0:
        raise ValueError(f"zeta={zeta!r}; must be >= 0")
    with torch.no_grad():
        floor = r * math.sqrt(grad.shape[1]) * zeta
        w_norm = torch.linalg.vector_norm(embedding_weight.float(), dim=1)  # (num_rows,)
        c = counts.to(device=grad.device, dtype=torch.float32)
        clip_t = r * w_norm.clamp(min=floor) * (c.clamp(min=1.0) if clip_absent else c)
        g_norm = torch.linalg.vector_norm(grad.float(), dim=1)
        g_norm = torch.where(g_norm > 0, g_norm, torch.ones_like(g_norm))  # authors' safe norm
        # clip_t / max(||g||, clip_t) is exactly 1 for a row within its threshold
        scale = clip_t / torch.maximum(g_norm, clip_t)
        if not clip_absent:
            scale = torch.where(c > 0, scale, torch.ones_like(scale))
        grad.mul_(scale.to(grad.dtype).unsqueeze(1))
    return grad


class CowClip:
    """CowClip for a model's embedding tables: call ``clip_(ids)`` between backward and step.

    ``ids[i]`` is the batch's ids for ``embeddings[i]`` (any shape; for an ``nn.EmbeddingBag``
    the flat input or the (B, bag) input). Tables need dense gradients (``sparse=False``); a table
    with no gradient is skipped. A table shared by several features: concatenate their ids.
    """

    def __init__(
        self,
        embeddings: Sequence[nn.Embedding | nn.EmbeddingBag],
        r: float = COWCLIP_R,
        zeta: float = COWCLIP_ZETA_CRITEO,
        clip_absent: bool = False,
    ) -> None:
        for m in embeddings:
            if not isinstance(m, nn.Embedding | nn.EmbeddingBag):
                raise ValueError(f"embeddings: {type(m).__name__}; allowed Embedding, EmbeddingBag")
        if len({id(m) for m in embeddings}) != len(embeddings):
            raise ValueError("embeddings: a table is listed twice; concatenate its ids instead")
        _positive(r, "r")
        if not zeta >= 0:
            raise ValueError(f"zeta={zeta!r}; must be >= 0")
        self.embeddings = list(embeddings)
        self.r, self.zeta, self.clip_absent = r, zeta, clip_absent

    def clip_(self, ids: Sequence[Tensor]) -> None:
        if len(ids) != len(self.embeddings):
            raise ValueError(f"ids: {len(ids)} tensors for {len(self.embeddings)} tables")
        for m, table_ids in zip(self.embeddings, ids, strict=True):
            if m.weight.grad is None:
                continue
            counts = id_counts(table_ids, m.num_embeddings)
            cowclip_(
                m.weight, m.weight.grad, counts, self.r, self.zeta, clip_absent=self.clip_absent
            )


@dataclasses.dataclass(frozen=True)
class CowClipHparams:
    """The hyperparameters at ``batch_size`` under CowClip's scaling rule."""

    batch_size: int
    embedding_lr: float
    dense_lr: float
    embedding_l2: float


def cowclip_scaling(
    batch_size: int,
    base_batch_size: int,
    embedding_lr: float,
    dense_lr: float,
    embedding_l2: float,
    dense_rule: ScalingRule | str = "sqrt",
) -> CowClipHparams:
    """CowClip's scaling rule (2204.06240; README tables): embedding lr unchanged, dense lr by
    sqrt(k) (``dense_rule``), embedding L2 by k, for ``batch_size`` = k * ``base_batch_size``.

    The L2 coefficient keeps the caller's convention (the authors': ``loss += l2 * sum(w**2)``
    over the whole table, in the gradient before clipping).
    """
    _positive(batch_size, "batch_size")
    _positive(base_batch_size, "base_batch_size")
    if not embedding_l2 >= 0:
        raise ValueError(f"embedding_l2={embedding_l2!r}; must be >= 0")
    return CowClipHparams(
        batch_size=batch_size,
        embedding_lr=embedding_lr,
        dense_lr=scale_lr(dense_lr, batch_size, base_batch_size, dense_rule),
        embedding_l2=embedding_l2 * batch_size / base_batch_size,
    )
