"""Format descriptors and the registry.

``get(name)`` returns a format; ``names()`` lists the registered ones; ``register(fmt)`` adds a
user's own. Every format exposes its facts through ``fmt.facts()`` and as properties.
"""

from numerics.formats.block import BlockFormat, ScaleRule, SharedMicroExpFormat, bfp_element
from numerics.formats.element import FloatFormat, NanStyle, finite, ieee
from numerics.formats.integer import FixedFormat, IntFormat
from numerics.formats.registry import (
    Format,
    UnknownFormatError,
    aliases,
    get,
    names,
    register,
)
from numerics.formats.rowwise import RowwiseFormat

__all__ = [
    "BlockFormat",
    "FixedFormat",
    "FloatFormat",
    "Format",
    "IntFormat",
    "NanStyle",
    "RowwiseFormat",
    "ScaleRule",
    "SharedMicroExpFormat",
    "UnknownFormatError",
    "aliases",
    "bfp_element",
    "finite",
    "get",
    "ieee",
    "names",
    "register",
]
