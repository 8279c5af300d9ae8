"""Hand-written C++ kernels on the CPU, beside the Inductor ones, for every family of formats.

Which casts, each in every rounding mode:
- OCP MX (mxfp8/6/4, mxint8), BFP (bfp8_b16, msfp12/16, user BFP formats) and the shared
  micro-exponent formats (mx9/mx6/mx4): blocks along the last axis (contiguous (nblocks,
  block) rows) of a whole number of 16-lane vectors with micro-exponent runs of 1 to 16
  elements, and blocks along another axis read in place ((nblocks, block, post), any block
  and run);
- the element formats (fp8, fp6, fp4, eXmY, fixed point, bf16 and fp16 variants): the
  float-arithmetic nearest_even where ``kernels.element.rne_path`` picks it, the integer
  core on the bit patterns otherwise;
- int8/int4 with a scale per tensor or per channel.
Left to Inductor: nearest_even of the grids that are torch's own bf16/fp16 casts (which it
vectorises already), last-axis blocks that are not whole vectors (bfp8_b8), runs longer
than 16, and everything on CUDA.

Source: ``native.cpp`` beside this file. It follows ``kernels/block.py``, ``kernels/grid.py``
and ``kernels/core.py`` operation for operation, and the tests hold it equal to the eager
kernels bit for bit (tests/numerics/kernels/test_native.py).

Why: a 16-element block is one AVX-512 vector, and Inductor's code for the block kernels
runs a per-block loop with a horizontal reduction and scalar scale work per vector, which
the element pass's vectors wait behind. The C++ kernels are written with GCC/Clang vector
extensions (16 float32 lanes), take the block maximum as an integer maximum of the ``|x|``
bit patterns (which orders non-NaN values as floats and marks inf and NaN as patterns >=
0x7F800000), and keep the scale work in vector registers. At 16M elements against
torch.clone (``numerics bench``, Inductor's kernels -> these) bfp8_b16 went from 0.58x to
0.87x and mx6 from 0.42-0.43x to 0.86-0.88x; the README's Speed section has the table,
docs/formats.md the before and after of each family.

How they are built: on first use, with the system C++ compiler (``$CXX``, else ``c++``;
Inductor needs one on a CPU too), ``-O3 -march=native -fopenmp -ffp-contract=off``: no
fast-math, so every float operation is the IEEE operation the eager kernel performs. About
a second, once per machine: the library is cached under ``$XDG_CACHE_HOME/numerics/native``
(or ``NUMERICS_NATIVE_CACHE``; where that cannot be written, the temporary folder), named by
a hash of the source, the flags, the compiler's version and the CPU's feature flags, and
written atomically. The library's ``libgomp.so.1``
resolves to the one torch has loaded, so its threads are torch's OpenMP threads
(``torch.get_num_threads()``).

``NUMERICS_NATIVE=0`` turns them off (``Settings.cpp`` in ``numerics.kernels.settings``;
the Inductor kernels run instead). A build or load failure warns once and does the same, so
a missing compiler never costs a result. Which casts they run is decided by
``numerics.route``, from ``blocks_view`` and ``element_takes`` here.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import warnings
from pathlib import Path

import torch

from numerics.kernels import core
from numerics.kernels import settings as _settings
from numerics.kernels.layout import BlockView
from numerics.rounding import Rounding

_SOURCE = Path(__file__).with_name("native.cpp")
_FLAGS = ("-O3", "-march=native", "-fopenmp", "-ffp-contract=off", "-fPIC", "-shared", "-std=c++17")
# The parameter slots the C++ reads, passed as macros from core's constants.
_SLOTS = (
    *("P_SR_BITS", "P_KEY0", "P_KEY1", "P_EMAX_ELEM", "P_CEIL", "P_NBPA"),
    *("Q_MAX_POS", "Q_MAX_NEG", "Q_C", "Q_LO", "Q_SPLIT", "Q_HI", "Q_SAT", "Q_SPECIAL"),
    *("Q_MINNORM", "Q_TWOS", "P_M", "P_EMIN_F", "P_MAX_POS", "P_MAX_NEG", "P_OVF", "P_MINNORM"),
)
_MODES = {
    Rounding.NEAREST_EVEN: 0,
    Rounding.NEAREST_AWAY: 1,
    Rounding.TOWARD_ZERO: 2,
    Rounding.DOWN: 3,
    Rounding.UP: 4,
    Rounding.STOCHASTIC: 5,
}
# Below this many elements a call runs on one thread: waking the others costs more.
PARALLEL_MIN_NUMEL = 1 << 15

# Each entry point's arguments between (x, out) and (mode, threads); all return 0, or -1
# for arguments they refuse.
_I64, _PTR, _INT = ctypes.c_int64, ctypes.c_void_p, ctypes.c_int
_SIGNATURES = {
    "numerics_block": (_I64, _I64, _PTR, _PTR, _INT),  # nblocks, vectors per block, p, q, fixed
    "numerics_smx": (_I64, _I64, _INT, _PTR, _PTR),  # nblocks, vectors per block, sub, p, q
    "numerics_block_post": (_I64, _I64, _I64, _PTR, _PTR, _INT),  # nblocks, block, post, ...
    "numerics_smx_post": (_I64, _I64, _I64, _I64, _PTR, _PTR),  # nblocks, block, post, sub, ...
    "numerics_element": (_I64, _PTR, _PTR, _INT),  # n, p, q, variant
    "numerics_scaled_int": (_I64, _I64, _PTR, _PTR, ctypes.c_float),  # rows, n, p, q, qmax
}

_LOCK = threading.Lock()
_LIB: ctypes.CDLL | None = None
_FAILED = False


def _cache_dir() -> Path:
    if override := os.environ.get("NUMERICS_NATIVE_CACHE"):
        return Path(override)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "numerics" / "native"


def _cpu_flags() -> str:
    """What -march=native depends on: the CPU's feature flags (Linux), else the machine."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _command(compiler: str, out: Path) -> list[str]:
    macros = [f"-D{name}={getattr(core, name)}" for name in _SLOTS]
    return [compiler, *_FLAGS, *macros, str(_SOURCE), "-o", str(out)]


def _compiler() -> str:
    compiler = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")
    if not compiler:
        raise RuntimeError("no C++ compiler found (set CXX)")
    return compiler


def _build() -> Path:
    """The library's path, compiled unless a build of the same source, flags, compiler and
    CPU is cached."""
    compiler = _compiler()
    version = subprocess.run(
        [compiler, "--version"], capture_output=True, text=True, check=True
    ).stdout
    digest = hashlib.sha256()
    for part in (_SOURCE.read_bytes(), " ".join(_command("", Path())).encode(), version.encode()):
        digest.update(part)
    digest.update(_cpu_flags().encode())
    name = f"kernels-{digest.hexdigest()[:20]}.so"
    # the cache folder, or where that cannot be written, the temporary folder
    for folder in (_cache_dir(), Path(tempfile.gettempdir()) / "numerics-native"):
        target = folder / name
        if target.exists():
            return target
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(suffix=".so", dir=folder)
            break
        except OSError as exc:
            unwritable = exc
    else:
        raise unwritable
    os.close(fd)
    try:
        done = subprocess.run(_command(compiler, Path(tmp)), capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"{compiler} failed: {done.stderr.strip()[:500]}")
        os.replace(tmp, target)  # atomic: a concurrent build writes the same bytes
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def library() -> ctypes.CDLL | None:
    """The loaded kernels, built on first use; None when disabled or the build failed."""
    global _LIB, _FAILED
    if not _settings.current().cpp:
        return None
    if _LIB is not None or _FAILED:
        return _LIB
    with _LOCK:
        if _LIB is None and not _FAILED:
            try:
                lib = ctypes.CDLL(str(_build()))
                for entry, args in _SIGNATURES.items():
                    fn = getattr(lib, entry)
                    fn.argtypes = [_PTR, _PTR, *args, _INT, _INT]
                    fn.restype = _INT
                _LIB = lib
            except Exception as exc:
                _FAILED = True
                warnings.warn(
                    f"numerics: building the native kernels failed ({type(exc).__name__}: "
                    f"{str(exc)[:300]}); using the compiled (Inductor) kernels instead",
                    RuntimeWarning,
                    stacklevel=3,
                )
    return _LIB


LANES = 16  # float32 lanes of the C++ kernels' vectors; a block is a whole number of them
SUB_BLOCKS = (1, 2, 4, 8, 16)  # the micro-exponent runs they take


def _takes(view: BlockView, sub: int) -> bool:
    if view.post == 1 and (view.block % LANES or sub not in SUB_BLOCKS):
        return False
    return view.block % sub == 0


def blocks_view(view: BlockView, sub: int = 1) -> BlockView | None:
    """The layout in which the block kernels take these blocks (runs of ``sub``): ``view``
    itself, or, for a last axis shorter than a block whose length is not whole 16-lane
    vectors, that axis padded to one whole block; None where they take neither."""
    if _takes(view, sub):
        return view
    if view.post == 1 and view.short and _takes(view.whole(), sub):
        return view.whole()
    return None


def supports(blocks: torch.Tensor, sub: int = 1) -> bool:
    """Whether the native block kernels take these blocks: float32 and contiguous on the
    CPU, either (nblocks, block) with block a multiple of 16 and micro-exponent runs of
    ``sub`` in ``SUB_BLOCKS``, or (nblocks, block, post), blocks along dim 1 (read in place),
    any block and any run dividing it."""
    if not (
        blocks.device.type == "cpu"
        and blocks.dtype == torch.float32
        and blocks.is_contiguous()
        and blocks.dim() in (2, 3)
    ):
        return False
    if blocks.dim() == 2 and (blocks.shape[1] % LANES or sub not in SUB_BLOCKS):
        return False
    return blocks.shape[1] % sub == 0 and library() is not None


def _threads(numel: int) -> int:
    return torch.get_num_threads() if numel >= PARALLEL_MIN_NUMEL else 1


def _run(entry: str, x: torch.Tensor, *args: int | float, mode: Rounding) -> torch.Tensor:
    """The library's ``entry(x, out, *args, mode, threads)`` into a fresh output like x."""
    lib = library()
    assert lib is not None and x.is_contiguous()
    out = torch.empty_like(x)
    status = getattr(lib, entry)(
        x.data_ptr(), out.data_ptr(), *args, _MODES[mode], _threads(x.numel())
    )
    if status:
        raise ValueError(f"numerics: native {entry} refused its arguments {args} ({mode})")
    return out


def block(
    blocks: torch.Tensor, p: torch.Tensor, q: torch.Tensor, fixed: bool, mode: Rounding
) -> torch.Tensor:
    """``block_kernel(blocks, p, q, fixed, mode=mode)[0]`` (MX / BFP)."""
    assert supports(blocks)
    args = (p.data_ptr(), q.data_ptr(), int(fixed))
    if blocks.dim() == 3:
        return _run("numerics_block_post", blocks, *blocks.shape, *args, mode=mode)
    nb, size = blocks.shape
    return _run("numerics_block", blocks, nb, size // LANES, *args, mode=mode)


def smx(
    blocks: torch.Tensor, p: torch.Tensor, q: torch.Tensor, sub: int, mode: Rounding
) -> torch.Tensor:
    """``smx_kernel(blocks, p, q, sub, mode=mode)`` (shared micro-exponents)."""
    assert supports(blocks, sub)
    if blocks.dim() == 3:
        args = (*blocks.shape, sub, p.data_ptr(), q.data_ptr())
        return _run("numerics_smx_post", blocks, *args, mode=mode)
    nb, size = blocks.shape
    return _run(
        "numerics_smx", blocks, nb, size // LANES, sub, p.data_ptr(), q.data_ptr(), mode=mode
    )


# nearest_even by float arithmetic on these element paths (kernels.element.rne_path); every
# other mode, and nearest_even on the "shift" and "generic" paths, on the bit patterns
_FLOAT_VARIANTS = {"float": 0, "float_ftz": 1, "float_twos": 2}
_BITS = 3


def element_takes(path: str, mode: Rounding) -> bool:
    """Whether ``element`` takes this element path in this mode: everything but the
    nearest_even paths that are torch's own casts (bf16, fp16)."""
    return not (mode is Rounding.NEAREST_EVEN and path.startswith("cast"))


def supports_element(x: torch.Tensor, path: str, mode: Rounding) -> bool:
    """Whether ``element`` takes float32 ``x`` (contiguous, on the CPU) on this element path
    in this mode (``element_takes``)."""
    return (
        element_takes(path, mode)
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and x.is_contiguous()
        and library() is not None
    )


def element(
    x: torch.Tensor, p: torch.Tensor, q: torch.Tensor, path: str, mode: Rounding
) -> torch.Tensor:
    """``element_kernel(x, x.view(int32), p, q, path, mode=mode)`` as float32, for float32
    ``x`` (contiguous, its elements numbered row-major for stochastic rounding)."""
    assert supports_element(x, path, mode)
    near = mode is Rounding.NEAREST_EVEN and path in _FLOAT_VARIANTS
    variant = _FLOAT_VARIANTS[path] if near else _BITS
    return _run("numerics_element", x, x.numel(), p.data_ptr(), q.data_ptr(), variant, mode=mode)


def supports_rows(rows: torch.Tensor) -> bool:
    """Whether ``scaled_int`` takes these rows: float32, contiguous (rows, n), on the CPU."""
    return (
        rows.device.type == "cpu"
        and rows.dtype == torch.float32
        and rows.dim() == 2
        and rows.is_contiguous()
        and library() is not None
    )


def scaled_int(
    rows: torch.Tensor, p: torch.Tensor, q: torch.Tensor, qmax: float, mode: Rounding
) -> torch.Tensor:
    """``int_kernel(rows, p, q, qmax, mode=mode)``: symmetric integers, a scale per row."""
    assert supports_rows(rows)
    nrows, n = rows.shape
    return _run("numerics_scaled_int", rows, nrows, n, p.data_ptr(), q.data_ptr(), qmax, mode=mode)
