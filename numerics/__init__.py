"""numerics: a numerics and quantization research workbench for PyTorch.

>>> import torch, numerics
>>> numerics.quantize(torch.tensor([70000.0, 1.0 + 2**-9]), "fp16").tolist()
[inf, 1.0]
"""

from numerics import formats
from numerics.quantize import quantize
from numerics.rounding import Rounding

__version__ = "0.1.0"

__all__ = ["Rounding", "__version__", "formats", "quantize"]
