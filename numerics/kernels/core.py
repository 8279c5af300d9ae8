"""The rounding core: float32 bit patterns in, rounded bit patterns out, integer ops only.

Every kernel in the package ends here. A target grid is described per element by
- ``m``: explicit mantissa bits of the target;
- ``emin_f``: the target's minimum normal exponent as a float32 exponent field (``emin + 127``,
  at least 1); below it the grid is uniform with step ``2**(emin - m)`` (subnormals), and a
  fixed-point grid is the special case where ``emin`` is the exponent of its largest value;
- ``maxbits_pos`` / ``maxbits_neg``: the largest finite magnitude for positive / negative values,
  as float32 bit patterns (equal except for two's-complement fixed point);
- ``ovf``: the bit pattern an overflow rounded away from zero becomes (inf, or NaN for E4M3), or
  -1 to saturate to the maximum;
- ``minnorm``: results below this magnitude (bit pattern) flush to zero; 0 keeps subnormals;
  -1 marks a two's-complement grid (fixed point, integers), whose only zero is +0.

How it rounds: for ``|x|`` with float32 exponent field ``ex`` (``ee = max(ex, 1)``, so float32
subnormals share the first binade's step), the target step is ``2**(max(ee, emin_f) - 127 - m)``,
i.e. ``d = max(ee, emin_f) - ee + 23 - m`` low bits of the 24-bit significand are dropped. When
``d <= 23`` the rounded magnitude is ``((|x|_bits >> d) + up) << d``: the carry of a round-up
runs into the exponent field, which is exactly the next binade. When ``d > 23`` the step exceeds
``|x|`` and the result is 0 or one step. ``up`` is decided from the dropped bits by the mode.

Parameters arrive as int32 tensors (not Python numbers) so one compiled kernel serves every
format and no integer shift is specialised on a symbolic int.
"""

from __future__ import annotations

import torch

from numerics.kernels.layout import sr_index
from numerics.rounding import Rounding, random_bits

I32 = torch.int32
F32 = torch.float32
SIGN = -(2**31)
ABS = 0x7FFFFFFF
INF = 0x7F800000
QNAN = 0x7FC00000

# Slots of the int32 parameter vector ``p`` the kernels take.
P_M = 0
P_EMIN_F = 1
P_MAX_POS = 2
P_MAX_NEG = 3
P_OVF = 4
P_MINNORM = 5
P_SR_BITS = 6
P_KEY0 = 7
P_KEY1 = 8
P_EMAX_ELEM = 9
P_CEIL = 10
P_NBPA = 11  # stochastic block casts read in place: blocks per (padded) axis, see sr_random
P_SIZE = 12


def round_bits(
    b: torch.Tensor,
    m: torch.Tensor,
    emin_f: torch.Tensor,
    maxbits_pos: torch.Tensor,
    maxbits_neg: torch.Tensor,
    ovf: torch.Tensor,
    minnorm: torch.Tensor,
    mode: Rounding,
    rnd: torch.Tensor | None = None,
    sr_bits: torch.Tensor | None = None,
) -> torch.Tensor:
    """Round the float32 values whose bit patterns are ``b`` (int32) onto the target grid."""
    neg = b < 0
    a = b & ABS
    ex = a >> 23
    ee = torch.clamp(ex, min=1)
    top = torch.maximum(ee, emin_f)
    d0 = top - ee + (23 - m)  # bits to drop; > 23 means the step exceeds |x|
    d = torch.clamp(d0, max=25)  # 25 keeps every shift defined and half > any significand
    sig = (a & 0x7FFFFF) | ((ex > 0).to(I32) << 23)
    low = sig & ((1 << d) - 1)  # the dropped bits

    if mode is Rounding.NEAREST_EVEN:
        half = (1 << d) >> 1
        # Ties go to the even code. In the target's normal range the code's last bit is bit d
        # of the float32 pattern (an exponent bit when m = 0, matching the code there); in its
        # subnormal range the code is the significand count, sig >> d. Below one step the
        # lower neighbour is 0, which is even.
        odd = (((torch.where(top > ee, sig, a) >> d) & 1) == 1) & (d0 <= 23)
        up = (low > half) | ((low == half) & odd & (d > 0))  # d = 0: nothing dropped
    elif mode is Rounding.NEAREST_AWAY:
        half = (1 << d) >> 1
        up = (low >= half) & (low > 0)
    elif mode is Rounding.TOWARD_ZERO:
        up = torch.zeros_like(neg)
    elif mode is Rounding.UP:
        up = (low != 0) & ~neg
    elif mode is Rounding.DOWN:
        up = (low != 0) & neg
    elif mode is Rounding.STOCHASTIC:
        if rnd is None or sr_bits is None:
            raise ValueError("stochastic rounding needs random bits")
        # t = floor(f * 2**R): the dropped fraction truncated (or widened) to R bits.
        s = d0 - sr_bits
        t = torch.where(s >= 0, low >> torch.clamp(s, min=0, max=25), low << torch.clamp(-s, min=0))
        up = rnd < t
    else:  # pragma: no cover - the enum is closed
        raise ValueError(mode)

    upi = up.to(I32)
    small = ((torch.clamp(a, max=INF) >> d) + upi) << d  # NaN patterns must not overflow
    big = upi * ((top - m) << 23)  # one step, a normal float32 whenever d0 > 23
    y = torch.where(d0 > 23, big, small)

    return _finish(y, a, b, neg, maxbits_pos, maxbits_neg, ovf, minnorm, mode)


def _finish(
    y: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    neg: torch.Tensor,
    maxbits_pos: torch.Tensor,
    maxbits_neg: torch.Tensor,
    ovf: torch.Tensor,
    minnorm: torch.Tensor,
    mode: Rounding,
    ftz: bool = True,
    twos: bool = True,
) -> torch.Tensor:
    """Overflow, flush-to-zero, inf and NaN inputs, and the sign, for a rounded magnitude y.

    ``ftz`` / ``twos`` (Python flags) let a caller that knows its grid skip the flush and
    two's-complement-zero steps that ``minnorm`` parameterises.
    """
    maxb = torch.where(neg, maxbits_neg, maxbits_pos)
    saturate = ovf < 0
    # Overflow rounded away from zero gives ``ovf`` (inf/NaN); toward zero, the maximum.
    if mode is Rounding.TOWARD_ZERO:
        ovf_val = maxb
    elif mode is Rounding.UP:
        ovf_val = torch.where(saturate | neg, maxb, ovf)
    elif mode is Rounding.DOWN:
        ovf_val = torch.where(saturate | ~neg, maxb, ovf)
    else:
        ovf_val = torch.where(saturate, maxb, ovf)
    y = torch.where(y > maxb, ovf_val, y)
    if ftz:
        y = torch.where(y < minnorm, 0, y)
    y = torch.where(a == INF, torch.where(saturate, maxb, ovf), y)
    y = torch.where(a > INF, a, y)  # NaN stays NaN
    if not twos:
        return y | (b & SIGN)
    sign = torch.where((minnorm < 0) & (y == 0), 0, b & SIGN)  # two's complement: +0 only
    return y | sign


# Slots of the float32 parameter vector ``q`` of the float-arithmetic fast path.
Q_LO = 0  # 2**emin
Q_HI = 1  # 2**(emax + 1)
Q_MAX_POS = 2
Q_MAX_NEG = 3
Q_SPECIAL = 4  # what overflow becomes when not saturating: inf or NaN
Q_SAT = 5  # 1.0: saturate
Q_MINNORM = 6  # flush results below this to zero (0: keep subnormals)
Q_TWOS = 7  # 1.0: two's-complement grid, zero is +0
Q_SPLIT = 8  # 2**(23 - m) + 1, Veltkamp's splitting constant
Q_C = 9  # 2**(emin + 23 - m): the adder constant of the subnormal binade
Q_SIZE = 10


def pow2_floor(v: torch.Tensor) -> torch.Tensor:
    """``2**floor(log2(v))`` for normal float32 ``v`` with ``v * 2**24`` finite, float ops only.

    Veltkamp splitting with ``s = 23`` leaves one significant bit: ``hi = p - (p - v)``, with
    ``p = v * (2**23 + 1)``, is v rounded to the nearest power of two; halving it when it lies
    above v gives the floor. (A bitcast to read the exponent would be cheaper in principle,
    but inside a compiled CPU kernel it becomes a scalar loop per element.)
    """
    p = v * 8388609.0
    hi = p - (p - v)
    return torch.where(hi > v, hi * 0.5, hi)


def round_magnitude(
    v: torch.Tensor, split: torch.Tensor, lo: torch.Tensor, c: torch.Tensor
) -> torch.Tensor:
    """nearest_even of non-negative float32 ``v`` to a float grid with m mantissa bits.

    From ``lo = 2**emin`` up, the grid is every value with m + 1 significant bits: Veltkamp's
    splitting ``hi = p - (p - v)``, ``p = v * (2**(23-m) + 1)``, rounds v to that many bits,
    ties to even, in float32 round-to-nearest-even arithmetic (checked exhaustively over
    whole binades against ml_dtypes in the tests). Below ``lo`` the step is fixed at
    ``2**(emin - m)``: ``(v + c) - c`` with ``c = 2**(emin + 23 - m)`` rounds to it (v + c
    lies in c's binade, whose ulp is the step, and c is an even multiple of it). Needs
    ``m <= 22`` and ``v * split`` finite (the callers clamp v to ``2**(emax + 1)``, emax <= 102);
    NaN stays NaN.
    """
    p = v * split
    return torch.where(v < lo, (v + c) - c, p - (p - v))


def round_nearest_even_float(
    x: torch.Tensor, q: torch.Tensor, ftz: bool = True, twos: bool = True
) -> torch.Tensor:
    """nearest_even by float32 arithmetic (``round_magnitude``), no bit patterns.

    |x| is clamped to ``2**(emax + 1)`` first: values above the range come out above the
    maximum, where overflow takes over; inf clamps the same way; NaN stays NaN. Needs
    ``m <= 22`` and ``emax <= 102`` (the caller checks, see ``rne_path``). ``ftz`` and
    ``twos`` (Python flags, so compiled variants without them skip the work) enable the
    flush-to-zero and two's-complement-zero steps that ``q`` parameterises.
    """
    ax = x.abs()
    y = round_magnitude(torch.clamp(ax, max=q[Q_HI]), q[Q_SPLIT], q[Q_LO], q[Q_C])
    # x < 0 is the sign test: -0 and NaN, which it misses, can never overflow.
    maxf = torch.where(x < 0, q[Q_MAX_NEG], q[Q_MAX_POS])
    y = torch.where(y > maxf, torch.where(q[Q_SAT] > 0, maxf, q[Q_SPECIAL]), y)
    if ftz:
        y = torch.where(y < q[Q_MINNORM], 0.0, y)
    out = torch.copysign(y, x)
    if twos:
        out = torch.where((q[Q_TWOS] > 0) & (y == 0), 0.0, out)
    return out


def round_nearest_even_cast(x: torch.Tensor, q: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """nearest_even by torch's own cast, for grids that are exactly a torch dtype's (bf16, fp16).

    The cast rounds to nearest even, keeps subnormals, -0 and NaN, and overflows to inf, as the
    format does; saturation clamps to the maximum first (a value above it rounds to it or
    overflows, so clamping never changes any other result). Compiled, the cast is a vectorised
    conversion, unlike the integer paths; Inductor must be told to keep it
    (``emulate_precision_casts``, set in ``compiled``), or it folds the round trip away.
    """
    hi = torch.where(q[Q_SAT] > 0, q[Q_MAX_POS], torch.inf)
    return torch.clamp(x, min=-hi, max=hi).to(dtype).to(torch.float32)


def round_nearest_even_shift(
    b: torch.Tensor,
    m: torch.Tensor,
    maxbits_pos: torch.Tensor,
    maxbits_neg: torch.Tensor,
    ovf: torch.Tensor,
    minnorm: torch.Tensor,
    ftz: bool = True,
) -> torch.Tensor:
    """nearest_even for formats whose subnormals start where float32's do (emin = -126).

    The step is then ``2**-(m)`` of every binade including float32's subnormal one, i.e. the
    low ``d = 23 - m`` bits of the pattern: add ``2**(d-1) - 1`` plus the kept part's last bit
    and truncate (the carry runs into the exponent, which is the next binade).
    """
    a = b & ABS
    d = 23 - m
    inc = torch.clamp((((1 << d) >> 1) - 1) + ((a >> d) & 1), min=0)  # 0 when d = 0
    y = ((torch.clamp(a, max=INF) + inc) >> d) << d  # NaN patterns must not overflow int32
    return _finish(
        y,
        a,
        b,
        b < 0,
        maxbits_pos,
        maxbits_neg,
        ovf,
        minnorm,
        Rounding.NEAREST_EVEN,
        ftz=ftz,
        twos=False,
    )


def sr_random(shape: torch.Size, p: torch.Tensor, device: torch.device) -> torch.Tensor:
    """R-bit random integers for each element of a kernel input of ``shape``, numbered by
    its position in the padded axis-last layout (``layout.sr_index``; ``p[P_NBPA]`` blocks
    per padded axis for blocks read in place)."""
    idx = sr_index(shape, p[P_NBPA] if len(shape) == 3 else 1, device)
    return random_bits(idx, p[P_KEY0 : P_KEY1 + 1], p[P_SR_BITS])
