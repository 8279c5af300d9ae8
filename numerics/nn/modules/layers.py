"""Quantized layers: torch's own modules with a policy's casts in forward and backward.

Each ``Q*`` class subclasses the torch module it replaces and shares its parameters, so a
model converted by ``quantize_model`` keeps its state dict, its optimizer and its hooks. With
an identity layer policy (fp32) each calls the parent's forward unchanged, which makes the
fp32 policy bit-identical to plain PyTorch.

``Matmul`` is a module the models use for their activation-by-activation products (attention
scores and attention-weighted values): plain ``a @ b`` until ``quantize_model`` swaps it for
``QMatmul``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from numerics.nn.modules.caster import Caster
from numerics.nn.modules.functional import CastFn, QConvFn, QLinearFn, QMatmulFn
from numerics.nn.policy import LayerNumerics


class Matmul(nn.Module):
    """``a @ b`` as a module, so that a policy can reach it (see ``QMatmul``)."""

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a @ b


class Quantized:
    """Mixin state of a quantized layer: its casts, the shared caster, its qualified name,
    and (layers with a ``weight``) the axis its weights cast blocks along."""

    numerics: LayerNumerics
    weight_axis: int | None = None
    caster: Caster
    qualified_name: str

    @classmethod
    def convert(cls, module: nn.Module, numerics: LayerNumerics, caster: Caster, name: str) -> Any:
        new = cls.__new__(cls)
        new.__dict__.update(module.__dict__)  # shares parameters, buffers, hooks
        new.numerics, new.caster, new.qualified_name = numerics, caster, name
        return new

    def extra_repr(self) -> str:
        base = super().extra_repr()  # type: ignore[misc]
        n = self.numerics
        casts = ", ".join(
            f"{r}={getattr(n, r).label()}" for r in ("weights", "activations", "errors", "grads")
        )
        return f"{base}, {casts}" if base else casts


class QLinear(Quantized, nn.Linear):
    weight_axis = QLinearFn.weight_axis

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.numerics.is_identity:
            return super().forward(x)
        return QLinearFn.apply(
            x, self.weight, self.bias, self.numerics, self.caster, self.qualified_name
        )


class _QConvMixin(Quantized):
    dims: int
    weight_axis = QConvFn.weight_axis

    def _qconv(self, x: torch.Tensor) -> torch.Tensor:
        conv: Any = self
        padding = conv.padding
        if conv.padding_mode != "zeros":
            x = F.pad(x, conv._reversed_padding_repeated_twice, mode=conv.padding_mode)
            padding = 0
        elif isinstance(padding, str):  # "same" / "valid": resolve to explicit sizes
            if padding == "valid":
                padding = 0
            else:
                total = [d * (k - 1) for d, k in zip(conv.dilation, conv.kernel_size, strict=True)]
                if any(t % 2 for t in total):  # asymmetric "same": pad the input explicitly
                    pads: list[int] = []
                    for t in reversed(total):
                        pads += [t // 2, t - t // 2]
                    x = F.pad(x, pads)
                    padding = 0
                else:
                    padding = tuple(t // 2 for t in total)
        spec = (self.dims, conv.stride, padding, conv.dilation, conv.groups)
        return QConvFn.apply(
            x, conv.weight, conv.bias, self.numerics, self.caster, self.qualified_name, spec
        )


class QConv1d(_QConvMixin, nn.Conv1d):
    dims = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) if self.numerics.is_identity else self._qconv(x)


class QConv2d(_QConvMixin, nn.Conv2d):
    dims = 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) if self.numerics.is_identity else self._qconv(x)


class _QEmbeddingMixin(Quantized):
    """Embeddings: the table cast to the weights format (rows are the blocks: axis -1), the
    output's gradient to the errors format, the table's gradient to the grads format."""

    weight_axis = -1

    def _table(self) -> torch.Tensor:
        n, name, c = self.numerics, self.qualified_name, self.caster
        weight: torch.Tensor = self.weight  # type: ignore[attr-defined]
        ax = self.weight_axis
        return CastFn.apply(weight, (n.weights, "weights"), (n.grads, "grads"), ax, c, name)

    def _errors(self, out: torch.Tensor) -> torch.Tensor:
        n = self.numerics
        return CastFn.apply(out, None, (n.errors, "errors"), -1, self.caster, self.qualified_name)


class QEmbedding(_QEmbeddingMixin, nn.Embedding):
    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if self.numerics.is_identity:
            return super().forward(ids)
        out = F.embedding(
            ids,
            self._table(),
            self.padding_idx,
            self.max_norm,
            self.norm_type,
            self.scale_grad_by_freq,
            self.sparse,
        )
        return self._errors(out)


class QEmbeddingBag(_QEmbeddingMixin, nn.EmbeddingBag):
    def forward(
        self,
        ids: torch.Tensor,
        offsets: torch.Tensor | None = None,
        per_sample_weights: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if self.numerics.is_identity:
            return super().forward(ids, offsets, per_sample_weights)
        out = F.embedding_bag(
            ids,
            self._table(),
            offsets,
            self.max_norm,
            self.norm_type,
            self.scale_grad_by_freq,
            self.mode,
            self.sparse,
            per_sample_weights,
            self.include_last_offset,
            self.padding_idx,
        )
        return self._errors(out)


class QMatmul(Quantized, Matmul):
    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if self.numerics.is_identity:
            return a @ b
        if a.shape[:-2] != b.shape[:-2]:
            raise ValueError(
                f"{self.qualified_name}: quantized matmul needs equal batch dims, got "
                f"{tuple(a.shape)} @ {tuple(b.shape)}"
            )
        return QMatmulFn.apply(a, b, self.numerics, self.caster, self.qualified_name)


#: Which quantized class replaces which torch module (exact types only).
SWAPS: dict[type[nn.Module], type[nn.Module]] = {
    nn.Linear: QLinear,
    nn.Conv1d: QConv1d,
    nn.Conv2d: QConv2d,
    nn.Embedding: QEmbedding,
    nn.EmbeddingBag: QEmbeddingBag,
    Matmul: QMatmul,
}
