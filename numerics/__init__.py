"""numerics: a numerics and quantization research workbench for PyTorch.

The public face, importable from ``numerics``:

- ``quantize(x, fmt, ...)``: round a tensor to a number format (``numerics.quantize``);
- ``formats``: the format descriptors and their registry (``numerics.formats``);
- ``Rounding``: the rounding modes (``numerics.rounding``);
- ``encode`` / ``decode``: a tensor to its bit codes (and scales) and back
  (``numerics.encoding``);
- ``quantize_model(model, policy)``: swap a model's layers for quantized ones
  (``numerics.nn.modules``);
- ``Policy``: which format each tensor role of each layer is cast to (``numerics.nn.policy``).

The last four are loaded on first use (a module ``__getattr__``), so ``import numerics`` stays
light. Everything else lives in its layer (``tests/test_layers.py``): the core at the top level,
the training library in ``numerics.nn``, the model and data zoo (``numerics.models``,
``numerics.data``, ``numerics.ngram``, ``numerics.zoo``), one training run in ``numerics.train``,
sweeps and their comparison in ``numerics.sweeps``, the command line in ``numerics.cli``.

>>> import torch, numerics
>>> numerics.quantize(torch.tensor([70000.0, 1.0 + 2**-9]), "fp16").tolist()
[inf, 1.0]
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from numerics import formats
from numerics.quantize import quantize
from numerics.rounding import Rounding

if TYPE_CHECKING:
    from numerics.encoding import decode, encode
    from numerics.nn.modules import quantize_model
    from numerics.nn.policy import Policy

__version__ = "0.1.0"

__all__ = [
    "Policy",
    "Rounding",
    "__version__",
    "decode",
    "encode",
    "formats",
    "quantize",
    "quantize_model",
]

# name -> its home module, imported on first use
_LAZY = {
    "encode": "numerics.encoding",
    "decode": "numerics.encoding",
    "quantize_model": "numerics.nn.modules",
    "Policy": "numerics.nn.policy",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'numerics' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
