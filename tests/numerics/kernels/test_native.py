"""The hand-written C++ kernels (numerics/kernels/native.py) against the eager kernels they
follow, bit for bit, and against the float64 reference; dispatch and fallback.

The eager kernels are themselves held to the reference and to hand-computed cases
(tests/numerics/test_quantize_block.py); here each C++ path (one and two vectors per block
with constant loop counts, a runtime count, every sub-block run, the ceil scale rule, every
rounding mode and random-bit width) meets awkward values: zeros of both signs, float32
subnormals, values at and beside the grid's midpoints, values that underflow in element
space beside a huge one, inf and NaN.
"""

import sys
import warnings

import pytest
import torch

import numerics
from numerics import formats
from numerics.formats.block import SharedMicroExpFormat
from numerics.kernels import compiled, native, settings
from numerics.kernels.block import block_kernel, smx_kernel
from numerics.kernels.core import P_NBPA
from numerics.kernels.element import element_kernel, element_path, int_kernel
from numerics.kernels.params import params_for
from numerics.rounding import Rounding, draw_keys

QMOD = sys.modules["numerics.quantize"]
MODES = list(Rounding)

pytestmark = pytest.mark.skipif(
    native.library() is None,
    reason="the C++ kernels are off (NUMERICS_NATIVE=0) or did not build (no C++ compiler)",
)

FIXED = ["bfp8_b16", "bfp4_b16", "mxint8", "mxint8_ceil", "bfp6_b48", "bfp3_b64_ceil"]
FLOAT = [
    *("mxfp8_e4m3", "mxfp8_e5m2", "mxfp6_e3m2", "mxfp6_e2m3", "mxfp4_e2m1"),
    *("mxfp6_e3m2_ceil", "mxfp4_e2m1_b16", "mxfp8_e4m3_b48"),
]
SMX = ["mx9", "mx6", "mx4"] + [f"smx{s}" for s in (1, 4, 8, 16)] + ["smx2_b32"]


def fmt_of(name: str):
    if name.startswith("smx"):
        sub = 2 if name == "smx2_b32" else int(name[3:])
        size = 32 if name == "smx2_b32" else 16
        return SharedMicroExpFormat(name, mbits=4, block_size=size, sub_block=sub)
    return formats.get(name)


def awkward(nblocks: int, block: int, seed: int = 0) -> torch.Tensor:
    """(nblocks, block) float32 over the whole exponent range, with special rows."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(nblocks, block, generator=g) * torch.logspace(-44, 38, nblocks)[:, None]
    x[0, :6] = torch.tensor([0.0, -0.0, 1e-45, -1e-45, 1e-40, -3e-39])
    x[1, 3] = float("nan")
    x[2, 5] = -float("inf")
    x[3] = 0.0
    x[4, ::2] = -0.0
    # underflow in element space beside a huge value: directed modes still see them
    x[5, :8] = torch.tensor([3e38, 1e-30, -1e-30, 1e-38, -1e-45, 5.0, -0.0, 0.0])
    x[6, :4] = torch.tensor([3.4028235e38, -3.4028235e38, 1.0, -1.0])  # float32's maximum
    # ties: with block maximum 1 (E = 0) the element grids' steps are 2**-6 (bfp8, mxint8,
    # mx9), 2**-3 (mx6), 2**-2 (bfp4) and 2**-1 (mx4); rows 7-9 hold the 2**-6 grid's
    # midpoints exactly and one float32 ulp above and below, rows 10-12 the others' midpoints
    k = torch.arange(block - 1, dtype=torch.float32)
    mid = (k + 0.5) * 2.0**-6
    rows = [
        mid,
        -torch.nextafter(mid, torch.tensor(2.0)),
        torch.nextafter(mid, torch.tensor(0.0)),
        (k % 8 + 0.5) * 2.0**-3,
        -(k % 4 + 0.5) * 2.0**-2,
        (k % 2 + 0.5) * 2.0**-1,
    ]
    for i, row in enumerate(rows, start=7):
        x[i, 0] = 1.0
        x[i, 1:] = row
    return x


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bit for bit, NaN by position (a NaN's payload is not part of the contract)."""
    nan = torch.isnan(a)
    return torch.equal(nan, torch.isnan(b)) and torch.equal(
        a.view(torch.int32)[~nan], b.view(torch.int32)[~nan]
    )


def kernels(fmt, mode: Rounding, sr_bits: int = 23, nbpa: int = 0):
    """(native, eager) callables of float32 blocks for a format: (nblocks, block), or
    (nblocks, block, post) with ``nbpa`` blocks per axis."""
    keys = draw_keys(12345) if mode is Rounding.STOCHASTIC else None
    name, _, extra, p, q = QMOD._block_kernel(fmt, keys, sr_bits, torch.device("cpu"))
    p = p.clone()
    p[P_NBPA] = nbpa
    if name == "smx":
        return (
            lambda b: native.smx(b, p, q, extra, mode),
            lambda b: smx_kernel(b, p, q, extra, mode=mode),
        )
    return (
        lambda b: native.block(b, p, q, extra, mode),
        lambda b: block_kernel(b, p, q, extra, mode=mode)[0],
    )


@pytest.mark.parametrize("name", FIXED + FLOAT + SMX)
@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.value)
def test_native_equals_eager(name, mode):
    fmt = fmt_of(name)
    x = awkward(40, fmt.block_size)
    fast, slow = kernels(fmt, mode)
    assert same_bits(fast(x), slow(x))


@pytest.mark.parametrize("sr_bits", [1, 5, 13, 24])
@pytest.mark.parametrize("name", ["bfp8_b16", "mxfp4_e2m1", "mx6"])
def test_native_stochastic_rounding_with_few_random_bits(name, sr_bits):
    fmt = fmt_of(name)
    x = awkward(40, fmt.block_size, seed=1)
    fast, slow = kernels(fmt, Rounding.STOCHASTIC, sr_bits)
    assert same_bits(fast(x), slow(x))


@pytest.mark.parametrize("name", ["bfp8_b16", "mx6", "mxfp8_e4m3"])
@pytest.mark.parametrize("mode", [Rounding.NEAREST_EVEN, Rounding.STOCHASTIC], ids=str)
def test_native_on_several_threads_equals_eager(name, mode):
    """Above PARALLEL_MIN_NUMEL the blocks are shared among threads; the random bits are
    numbered by position, so the split must not show."""
    fmt = fmt_of(name)
    n = 2 * native.PARALLEL_MIN_NUMEL // fmt.block_size + 3
    x = awkward(n, fmt.block_size, seed=2)
    fast, slow = kernels(fmt, mode)
    assert same_bits(fast(x), slow(x))


def post_blocks(nblocks: int, block: int, post: int, seed: int) -> torch.Tensor:
    """(nblocks, block, post) with blocks along dim 1, the awkward rows of ``awkward`` laid
    along the block at every position of post."""
    rows = awkward(nblocks * post, block, seed)  # (nblocks * post, block)
    return rows.reshape(nblocks, post, block).transpose(1, 2).contiguous()


@pytest.mark.parametrize("name", ["bfp8_b16", "mxint8_ceil", *FLOAT[:5], "mx6", "smx4", "smx16"])
@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.value)
def test_native_blocks_read_in_place_equal_eager(name, mode):
    """Blocks along a non-last axis, (nblocks, block, post), post a whole number of vectors
    or not (a last tile of 5 or 7 positions) and more than one band of 1,024 positions;
    stochastic rounding numbered as the axis-last layout with 1, 2 or 3 blocks per axis."""
    fmt = fmt_of(name)
    for nblocks, post, nbpa in ((12, 37, 3), (6, 16, 2), (4, 5, 1), (2, 1030, 2)):
        x = post_blocks(nblocks, fmt.block_size, post, seed=nblocks)
        fast, slow = kernels(fmt, mode, nbpa=nbpa)
        assert same_bits(fast(x), slow(x)), (nblocks, post)


ELEMENTS = ["fp8_e4m3", "fp8_e5m2", "fp6_e3m2", "fp4_e2m1", "e3m4", "fp16_ftz", "fixed8_4"]


def element_values(n: int) -> torch.Tensor:
    """Every float32 binade, both signs, specials first, the midpoints of fp8_e4m3's and
    fp4_e2m1's grids and one ulp either side, and n values in all."""
    g = torch.Generator().manual_seed(6)
    x = torch.randn(n, generator=g) * torch.logspace(-45, 38, n)
    e4m3 = torch.tensor([1.0625, 1.1875, 2.0**-10, 3.0 * 2.0**-10, 464.0, 248.0])
    e2m1 = torch.tensor([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, 7.0])
    mids = torch.cat([e4m3, e2m1])
    special = [0.0, -0.0, float("inf"), -float("inf"), float("nan"), 1e-45, 3.4e38, -448.5]
    head = torch.cat(
        [
            torch.tensor(special),
            mids,
            -mids,
            torch.nextafter(mids, torch.tensor(0.0)),
            torch.nextafter(mids, torch.tensor(1e9)),
        ]
    )
    x[: head.numel()] = head
    return x


@pytest.mark.parametrize(
    ("name", "saturate"),
    [(n, s) for n in ELEMENTS for s in (False, True) if s or not formats.get(n).default_saturate],
)
@pytest.mark.parametrize("n", [5, 1001, 2 * native.PARALLEL_MIN_NUMEL + 7])
def test_native_element_nearest_equals_eager(name, saturate, n):
    """Short tensors (the tail only), odd lengths and several threads; with and without
    saturation where the format has a choice."""
    fmt = formats.get(name)
    path = element_path(fmt)
    assert native.supports_element(torch.zeros(1), path, Rounding.NEAREST_EVEN), path
    x = element_values(max(n, 64))[:n]
    p, q = params_for(fmt, saturate, None, 23, torch.device("cpu"))
    want = element_kernel(x, x.view(torch.int32), p, q, path, mode=Rounding.NEAREST_EVEN)
    assert same_bits(native.element(x, p, q, path, Rounding.NEAREST_EVEN), want)


# every element path: float arithmetic, the e8 family's shift, the general core (e3m23: 23
# mantissa bits), and the casts (bf16), whose modes but nearest_even run the core
BIT_ELEMENTS = ["fp8_e4m3", "fp6_e2m3", "fp4_e2m1", "fixed8_4", "bf16", "bf16_ftz", "e3m23"]
BIT_ELEMENTS += ["fp16_ftz", "fp16", "e5m2", "int8_elem"]


@pytest.mark.parametrize("name", BIT_ELEMENTS)
@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.value)
@pytest.mark.parametrize("saturate", [None, True])
def test_native_element_modes_equal_eager(name, mode, saturate):
    """The integer core (every mode but nearest_even on the float paths, and nearest_even on
    the others), against the eager element kernel, over the same awkward values; odd
    length, several threads; stochastic rounding with 23, 5 and 24 random bits."""
    fmt = formats.get(name) if name != "int8_elem" else formats.get("bfp8_b16").element
    path = element_path(fmt)
    if not native.supports_element(torch.zeros(1), path, mode):
        assert mode is Rounding.NEAREST_EVEN and path.startswith("cast")
        return
    sat = fmt.default_saturate if saturate is None else True
    x = element_values(2 * native.PARALLEL_MIN_NUMEL + 7)
    for bits in (23, 5, 24) if mode is Rounding.STOCHASTIC else (23,):
        keys = draw_keys(77) if mode is Rounding.STOCHASTIC else None
        p, q = params_for(fmt, sat, keys, bits, torch.device("cpu"))
        want = element_kernel(x, x.view(torch.int32), p, q, path, mode=mode)
        got = native.element(x, p, q, path, mode)
        assert same_bits(got, want.view(torch.float32)), (path, bits)


@pytest.mark.parametrize("name", ["int8", "int4"])
@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.value)
def test_native_scaled_integers_equal_eager(name, mode):
    """One long row (a per-tensor scale: several chunks, several threads, a ragged end) and
    many short ones (per channel), with NaN, inf, all-zero rows and rows so tiny that
    1 / scale overflows (the kernel divides instead)."""
    fmt = formats.get(name)
    keys = draw_keys(21) if mode is Rounding.STOCHASTIC else None
    p, q = params_for(fmt.grid, True, keys, 23, torch.device("cpu"))
    g = torch.Generator().manual_seed(8)
    long = torch.randn(1, 3 * 16384 + 5, generator=g)
    long[0, :4] = torch.tensor([2.5, -3.5, 1e-30, -0.0]) * long.abs().max() / fmt.qmax
    short = torch.randn(40, 37, generator=g) * torch.logspace(-44, 38, 40)[:, None]
    short[1, 3], short[2, 5], short[3] = float("nan"), -float("inf"), 0.0
    short[4, :3] = torch.tensor([1e-44, -3e-45, 0.0])  # amax / qmax underflows: 1/scale = inf
    for x in (long, short, short[:, :1].contiguous()):
        want = int_kernel(x, p, q, float(fmt.qmax), mode=mode)
        assert same_bits(native.scaled_int(x, p, q, float(fmt.qmax), mode), want)


def use_native(on: bool):
    """The C++ kernels on or off within a ``with`` block (plans are cached per setting)."""
    return settings.override(cpp=on)


@pytest.mark.parametrize("name", ["bfp8_b16", "mx6", "mxfp6_e2m3"])
@pytest.mark.parametrize("mode", ["nearest_even", "up", "stochastic"])
@pytest.mark.parametrize("axis", [-1, 0, 1])
def test_quantize_dispatches_to_native_and_agrees_with_the_reference(monkeypatch, name, mode, axis):
    """quantize's compiled backend takes the C++ kernel (counted) for blocks along the last
    axis, with a ragged last block, along axis 0 of a 3-d tensor (read in place, post 70)
    and along axis 1 (post 10: through a transposed copy, an axis shorter than a block);
    the result equals the float64 reference and the Inductor kernel's."""
    calls = []
    for kernel in ("block", "smx"):
        real = getattr(native, kernel)
        monkeypatch.setattr(
            native, kernel, lambda *a, _real=real, **k: calls.append(1) or _real(*a, **k)
        )
    x = awkward(16, 70, seed=3)
    if axis >= 0:
        x = x.reshape(4, 4, 70) if axis == 0 else x.reshape(-1)[:1120].reshape(7, 16, 10)
        x = torch.cat([x, x.narrow(axis, 0, 1)], dim=axis)  # 5 or 17 along it: a ragged block
    with use_native(True):
        got = numerics.quantize(x, name, mode, generator=9, axis=axis, backend="compiled")
    assert calls, "the native kernel did not run"
    ref = numerics.quantize(x, name, mode, generator=9, axis=axis, backend="reference")
    assert same_bits(got, ref)
    count = len(calls)
    with use_native(False):
        inductor = numerics.quantize(x, name, mode, generator=9, axis=axis, backend="compiled")
    assert len(calls) == count
    assert same_bits(got, inductor)


@pytest.mark.parametrize("name", ["int8", "int4_pc"])
def test_quantize_takes_native_scaled_integers(monkeypatch, name):
    calls = []
    real = native.scaled_int
    monkeypatch.setattr(native, "scaled_int", lambda *a, **k: calls.append(1) or real(*a, **k))
    x = element_values(3000).reshape(30, 100)
    x[x.isnan() | x.isinf()] = 1.0
    for mode in ("nearest_even", "stochastic"):
        for axis in (0, 1):
            with use_native(True):
                got = numerics.quantize(x, name, mode, generator=1, axis=axis, backend="compiled")
            ref = numerics.quantize(x, name, mode, generator=1, axis=axis, backend="reference")
            assert same_bits(got, ref), (mode, axis)
    assert len(calls) == 4


@pytest.mark.parametrize("name", ["fp8_e4m3", "fixed8_4", "bf16"])
def test_quantize_takes_native_element_kernels(monkeypatch, name):
    """Prepared (nearest_even) and stochastic element casts take the C++ kernel, but for the
    cast paths' nearest_even; against the float64 reference."""
    calls = []
    real = native.element
    monkeypatch.setattr(native, "element", lambda *a, **k: calls.append(1) or real(*a, **k))
    x = element_values(3000).reshape(30, 100)
    for mode in ("nearest_even", "stochastic", "down"):
        with use_native(True):
            got = numerics.quantize(x, name, mode, generator=1, backend="compiled")
        ref = numerics.quantize(x, name, mode, generator=1, backend="reference")
        assert same_bits(got, ref), mode
    assert len(calls) == (2 if name == "bf16" else 3)


@pytest.mark.parametrize("name", ["fp8_e4m3", "bf16", "int8", "int8_pc", "mxfp8_e4m3", "mx6"])
@pytest.mark.parametrize("mode", ["nearest_even", "stochastic"])
def test_strided_inputs(monkeypatch, name, mode):
    """Every element of a strided 1-d view and of a transposed matrix reaches the kernels in
    the order the reference numbers it, with the C++ kernels and with Inductor's (whose
    traces are for dense inputs: a strided one once failed their stride check, and the
    kernel fell back to eager for the rest of the process)."""
    g = torch.Generator().manual_seed(10)
    for on in (True, False):
        dense, strided = torch.randn(134, generator=g), torch.randn(402, generator=g)[::3]
        for x in (dense, strided, torch.randn(64, 48, generator=g).t()):
            for backend in ("compiled", "auto"):
                with use_native(on):
                    got = numerics.quantize(x, name, mode, generator=2, backend=backend)
                ref = numerics.quantize(x, name, mode, generator=2, backend="reference")
                assert same_bits(got, ref), (x.shape, backend, on)
    assert not compiled._BROKEN


def test_other_layouts_keep_the_compiled_kernels(monkeypatch):
    """Blocks along the last axis that are not whole vectors, and sub-blocks longer than a
    vector, stay with Inductor."""
    calls = []
    monkeypatch.setattr(native, "block", lambda *a, **k: calls.append(1))
    monkeypatch.setattr(native, "smx", lambda *a, **k: calls.append(1))
    x = awkward(64, 64, seed=4)
    with use_native(True):
        numerics.quantize(x, "mxfp8_e4m3_b8", backend="compiled")
        numerics.quantize(x, "bfp8_b8", backend="compiled")
        smx32 = SharedMicroExpFormat("smx_sub32", mbits=4, block_size=64, sub_block=32)
        numerics.quantize(x, smx32, backend="compiled")
    assert not calls


def test_a_failed_build_warns_once_and_falls_back(monkeypatch, tmp_path):
    """A compiler that fails: one warning, then the Inductor kernels, with the same results,
    and no partial library left in the cache."""
    cxx = tmp_path / "cxx"
    cxx.write_text('#!/bin/sh\n[ "$1" = --version ] && echo fake 1.0 && exit 0\nexit 1\n')
    cxx.chmod(0o755)
    cache = tmp_path / "cache"
    monkeypatch.setattr(native, "_LIB", None)
    monkeypatch.setattr(native, "_FAILED", False)
    monkeypatch.setenv("NUMERICS_NATIVE_CACHE", str(cache))
    monkeypatch.setenv("CXX", str(cxx))
    QMOD._plan.cache_clear()
    x = awkward(16, 32, seed=5)
    with pytest.warns(RuntimeWarning, match="native kernels failed"):
        y = numerics.quantize(x, "bfp8_b16", backend="compiled")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        numerics.quantize(x, "mx6", backend="compiled")
    assert not [w for w in seen if "native" in str(w.message)]  # warned once only
    assert same_bits(y, numerics.quantize(x, "bfp8_b16", backend="reference"))
    assert cache.is_dir() and not list(cache.iterdir())
    QMOD._plan.cache_clear()


def test_the_library_is_cached_by_content(monkeypatch, tmp_path):
    """A second build of the same source, flags, compiler and CPU loads the cached library:
    the compiler is asked its version, nothing more."""
    monkeypatch.setenv("NUMERICS_NATIVE_CACHE", str(tmp_path))
    first = native._build()
    assert first.parent == tmp_path and first.exists()
    commands = []
    real = native.subprocess.run
    monkeypatch.setattr(
        native.subprocess, "run", lambda cmd, **k: commands.append(cmd) or real(cmd, **k)
    )
    assert native._build() == first
    assert [c[1:] for c in commands] == [["--version"]]


def test_an_unwritable_cache_folder_builds_in_the_temporary_folder(monkeypatch, tmp_path):
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    monkeypatch.setenv("NUMERICS_NATIVE_CACHE", str(blocked / "native"))
    monkeypatch.setattr(native.tempfile, "gettempdir", lambda: str(tmp_path / "tmp"))
    built = native._build()
    assert built.parent == tmp_path / "tmp" / "numerics-native" and built.exists()
    assert native._build() == built  # and found there next time
