"""The format registry: canonical names, aliases, parsed families, and user registration.

Besides the registered names, ``get`` parses families of names:
- ``eXmY`` (1 <= X <= 8, 0 <= Y <= 23): IEEE-style with inf and NaN;
- any float format name + ``_ftz``: the same format with subnormals flushed to zero;
- ``fixedW_F``: two's-complement fixed point, W-bit words, F fraction bits;
- ``bfpN_bK``: block floating point, sign + (N-1)-bit magnitude, blocks of K;
- any block-format name + ``_bK`` (block size K) and/or ``_ceil`` / ``_floor`` (scale rule),
  e.g. ``mxfp8_e4m3_b16_ceil``.
"""

from __future__ import annotations

import difflib
import re

from numerics.errors import UserError
from numerics.formats.block import (
    BlockFormat,
    ScaleRule,
    SharedMicroExpFormat,
    bfp_element,
)
from numerics.formats.element import FloatFormat, NanStyle, finite, ieee
from numerics.formats.integer import FixedFormat, IntFormat
from numerics.formats.rowwise import RowwiseFormat

Format = FloatFormat | FixedFormat | IntFormat | BlockFormat | SharedMicroExpFormat | RowwiseFormat


class UnknownFormatError(UserError, KeyError):
    """An unknown format name; the message lists close matches. A ``UserError`` (bad input),
    and a ``KeyError`` for callers that look names up like a mapping."""


_REGISTRY: dict[str, Format] = {}
_ALIASES: dict[str, str] = {}


def _norm(name: str) -> str:
    return name.strip().lower().replace("-", "_")


def register(fmt: Format, *, overwrite: bool = False) -> Format:
    """Add a format (and its aliases) to the registry; returns it."""
    key = _norm(fmt.name)
    names = [key, *(_norm(a) for a in fmt.aliases)]
    if not overwrite:
        for n in names:
            if n in _REGISTRY or n in _ALIASES:
                raise ValueError(f"format name {n!r} is already registered (overwrite=True?)")
    _REGISTRY[key] = fmt
    for alias in names[1:]:
        _ALIASES[alias] = key
    return fmt


def names(pattern: str | None = None) -> list[str]:
    """Canonical names of the registered formats, in registration order.

    ``pattern`` is a shell-style wildcard (``"mx*"``).
    """
    import fnmatch

    out = list(_REGISTRY)
    if pattern:
        out = [n for n in out if fnmatch.fnmatch(n, _norm(pattern))]
    return out


def aliases() -> dict[str, str]:
    return dict(_ALIASES)


_EXMY = re.compile(r"^e(\d+)m(\d+)$")
_FIXED = re.compile(r"^fixed(\d+)_(\d+)$")
_BFP = re.compile(r"^bfp(\d+)_b(\d+)$")
_BLOCK_SIZE = re.compile(r"^(.*)_b(\d+)$")


def _parse(key: str) -> Format | None:
    m = _EXMY.match(key)
    if m:
        return ieee(int(m.group(1)), int(m.group(2)))
    m = _FIXED.match(key)
    if m:
        return FixedFormat(key, int(m.group(1)), int(m.group(2)))
    m = _BFP.match(key)
    if m:
        return BlockFormat(key, bfp_element(int(m.group(1)) - 1), int(m.group(2)), family="bfp")
    if key.endswith("_ftz"):
        base = _lookup(key[: -len("_ftz")])
        if isinstance(base, FloatFormat):
            return base.replace(name=key, subnormals=False, aliases=())
        return None
    for rule in ("_ceil", "_floor"):
        if key.endswith(rule):
            base = _lookup(key[: -len(rule)])
            if isinstance(base, BlockFormat):
                return base.replace(name=key, aliases=(), scale_rule=ScaleRule(rule[1:]))
            return None
    m = _BLOCK_SIZE.match(key)
    if m:
        base = _lookup(m.group(1))
        if isinstance(base, BlockFormat | SharedMicroExpFormat):
            return base.replace(name=key, aliases=(), block_size=int(m.group(2)))
    return None


def _lookup(key: str) -> Format | None:
    key = _ALIASES.get(key, key)
    if key in _REGISTRY:
        return _REGISTRY[key]
    return _parse(key)


def get(name: str | Format) -> Format:
    """The format called ``name`` (a registered name, an alias, or a parsed family name)."""
    if not isinstance(name, str):
        return name
    key = _norm(name)
    fmt = _lookup(key)
    if fmt is None:
        known = list(_REGISTRY) + list(_ALIASES)
        close = difflib.get_close_matches(key, known, n=5, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise UnknownFormatError(
            f"unknown format {name!r}{hint} (see `numerics formats` for all; families eXmY, "
            "fixedW_F, bfpN_bK and the suffixes _ftz, _bK, _ceil are parsed)",
            value=name,
        )
    return fmt


def _builtin() -> None:
    r = register
    r(ieee(8, 23, "fp32", aliases=("float32", "e8m23"), description="IEEE binary32 (identity)"))
    r(ieee(8, 7, "bf16", aliases=("bfloat16", "e8m7"), description="bfloat16"))
    r(ieee(5, 10, "fp16", aliases=("float16", "half", "e5m10"), description="IEEE binary16"))
    r(ieee(5, 2, "fp8_e5m2", aliases=("e5m2", "float8_e5m2"), description="OCP FP8 E5M2"))
    r(
        finite(
            4,
            3,
            "fp8_e4m3",
            nan=True,
            aliases=("e4m3fn", "float8_e4m3fn", "fp8"),
            description="OCP FP8 E4M3 (FN: no inf, NaN only at S.1111.111)",
        )
    )
    r(
        finite(
            3,
            2,
            "fp6_e3m2",
            nan=False,
            aliases=("e3m2fn", "float6_e3m2fn", "fp6"),
            description="OCP FP6 E3M2 (no inf/NaN, saturates)",
        )
    )
    r(
        finite(
            2,
            3,
            "fp6_e2m3",
            nan=False,
            aliases=("e2m3fn", "float6_e2m3fn"),
            description="OCP FP6 E2M3 (no inf/NaN, saturates)",
        )
    )
    r(
        finite(
            2,
            1,
            "fp4_e2m1",
            nan=False,
            aliases=("e2m1fn", "float4_e2m1fn", "fp4"),
            description="OCP FP4 E2M1 (no inf/NaN, saturates)",
        )
    )
    r(IntFormat("int8", 8, description="symmetric int8, per-tensor fp32 scale"))
    r(IntFormat("int4", 4, description="symmetric int4, per-tensor fp32 scale"))
    r(
        IntFormat(
            "int8_pc",
            8,
            per_channel=True,
            aliases=("int8_per_channel",),
            description="symmetric int8, fp32 scale per slice along the axis",
        )
    )
    r(
        IntFormat(
            "int4_pc",
            4,
            per_channel=True,
            aliases=("int4_per_channel",),
            description="symmetric int4, fp32 scale per slice along the axis",
        )
    )
    for bits, sbits in ((8, 32), (4, 16), (2, 16)):
        r(
            RowwiseFormat(
                f"int{bits}_rowwise",
                bits,
                sbits,
                description=f"fbgemm row-wise: uint{bits} codes, fp{sbits} scale and bias per row",
            )
        )
    r(FixedFormat("fixed16_8", 16, 8, description="Q7.8 fixed point"))
    r(FixedFormat("fixed8_4", 8, 4, description="Q3.4 fixed point"))
    mx_elems: list[tuple[str, FloatFormat | FixedFormat]] = [
        ("mxfp8_e4m3", _REGISTRY["fp8_e4m3"]),  # type: ignore[list-item]
        ("mxfp8_e5m2", _REGISTRY["fp8_e5m2"]),  # type: ignore[list-item]
        ("mxfp6_e3m2", _REGISTRY["fp6_e3m2"]),  # type: ignore[list-item]
        ("mxfp6_e2m3", _REGISTRY["fp6_e2m3"]),  # type: ignore[list-item]
        ("mxfp4_e2m1", _REGISTRY["fp4_e2m1"]),  # type: ignore[list-item]
        ("mxint8", bfp_element(7)),
    ]
    for mx_name, elem in mx_elems:
        short = mx_name.split("_")[0] if mx_name.startswith("mxfp4") else mx_name
        al = (short,) if short != mx_name else ()
        r(
            BlockFormat(
                mx_name,
                elem,
                32,
                family="mx",
                aliases=al,
                description=f"OCP MX v1.0, {elem.name} elements, E8M0 scale per 32",
            )
        )
    r(
        BlockFormat(
            "bfp8_b16",
            bfp_element(7),
            16,
            family="bfp",
            aliases=("msfp16",),
            description="block floating point: sign + 7-bit magnitude, 8-bit exp per 16",
        )
    )
    r(
        BlockFormat(
            "bfp4_b16",
            bfp_element(3),
            16,
            family="bfp",
            aliases=("msfp12",),
            description="block floating point: sign + 3-bit magnitude, 8-bit exp per 16",
        )
    )
    for smx_name, mbits in (("mx9", 7), ("mx6", 4), ("mx4", 2)):
        r(
            SharedMicroExpFormat(
                smx_name,
                mbits,
                description=f"shared micro-exponents (2302.08007): {mbits}-bit "
                "magnitude, 8-bit exp per 16, 1-bit micro-exp per 2",
            )
        )


_builtin()

__all__ = [
    "Format",
    "NanStyle",
    "UnknownFormatError",
    "aliases",
    "get",
    "names",
    "register",
]
