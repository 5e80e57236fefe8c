"""The one place that owns the model kernels' tunables and Numba options.

Every kernel in `optbench.nn` is compiled by `kernel` below, with the options from here,
and each Python function with exactly one option set (Numba's on-disk cache keys ignore
jit options).

fastmath: 'contract' lets LLVM fuse a*b + c into an FMA and 'reassoc' lets it vectorize
sums (e.g. the squared norm of dL/dh_t over the hidden units); 'nnan' / 'ninf' are left
out on purpose so that a NaN or inf still propagates to the loss, where the training loop
records it as a diverged run. The order of every sum is fixed at compile time, so results
stay bit-identical from run to run.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import llvmlite.binding as llvm
from numba import njit

FASTMATH = {"contract", "reassoc", "nsz", "arcp"}

# Serial kernels and the per-batch-chunk parallel kernels. error_model='numpy' lets loops
# with divisions vectorize (no ZeroDivisionError branch); cache=True so a second process
# loads the compiled kernels from disk instead of compiling them again.
JIT = {"cache": True, "error_model": "numpy", "fastmath": FASTMATH}
JIT_PARALLEL = {**JIT, "parallel": True}

# Register tile of the recurrent matrix product (optbench.nn._gemm): MR rows of the left
# operand times NV vectors of VECTOR_BYTES. With AVX-512 that is 8 x 32 float32 (16 of
# the 32 zmm registers as accumulators); with AVX2 4 x 16 float32 (8 of the 16 ymm), so
# neither spills registers. The taller tile halves the loads of the right operand per
# multiply-add, which is what bounds the weight-gradient product. Batch rows are split between threads in units of ROWS (a chunk
# that is not a multiple of MR ends with 4-row tiles).
# OPTBENCH_NN_VECTOR_BYTES=32 forces the AVX2 layout (for tests on an AVX-512 machine);
# it is part of the kernels' cache stamp (`kernel`), so switching it recompiles them.
NV = 2
LAYOUTS = {64: "AVX-512 (8 x 32 float32 tiles)", 32: "AVX2 (4 x 16 float32 tiles)"}


def enabled_features(flat: str) -> frozenset[str]:
    """The features a flattened LLVM feature string ('+avx2,-avx512f,...') switches on.
    LLVM lists every feature it knows, the disabled ones with '-', so a substring test
    finds 'avx512f' on a CPU without it."""
    return frozenset(f[1:] for f in flat.split(",") if f.startswith("+"))


def choose_vector_bytes(features: frozenset[str], forced: str | None = None) -> int:
    """64 where the CPU has AVX-512F, else 32 (AVX2 x86; arm64, whose 128-bit NEON LLVM
    splits 32-byte vectors into, with the 32 registers the 4 x 16 tile needs).
    `forced` ("32" or "64", from OPTBENCH_NN_VECTOR_BYTES) overrides the choice."""
    if forced:
        if forced.strip() not in ("32", "64"):
            raise ValueError(f"OPTBENCH_NN_VECTOR_BYTES={forced!r}; allowed: 32 (AVX2 layout), "
                             "64 (AVX-512 layout), or unset to choose by the CPU")
        return int(forced)
    return 64 if "avx512f" in features else 32


HOST_FEATURES = enabled_features(llvm.get_host_cpu_features().flatten())
VECTOR_BYTES = choose_vector_bytes(HOST_FEATURES, os.environ.get("OPTBENCH_NN_VECTOR_BYTES"))
MR = 8 if VECTOR_BYTES == 64 else 4


def layout() -> str:
    """The model kernels' register layout in words, and whether it was forced."""
    forced = os.environ.get("OPTBENCH_NN_VECTOR_BYTES")
    return LAYOUTS[VECTOR_BYTES] + (" (forced by OPTBENCH_NN_VECTOR_BYTES)" if forced else "")
ROWS = 4

# Rows of the time x batch sum per block in the weight-gradient product (_gemm.mm_tn):
# each block's partial sums are loaded and stored once per row tile, so longer blocks
# cost fewer of those; KC x NR of the right operand (64 KiB in float32 with AVX-512)
# then stays in L2 rather than L1, which the product's streaming access tolerates.
KC = 512


def panel_width(itemsize: int) -> int:
    """NR: the columns of one packed panel, in elements of `itemsize` bytes."""
    return NV * VECTOR_BYTES // itemsize


# predict / loss without backward stream through time (two state slots, not T); this
# caps the rows of one such pass so that its buffers stay small.
EVAL_ROWS = 256


def sources_stamp(directory: Path, vector_bytes: int) -> str:
    """sha256 over every module in `directory` and the vector layout."""
    digest = hashlib.sha256(f"VECTOR_BYTES={vector_bytes}".encode())
    for path in sorted(Path(directory).glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


STAMP = sources_stamp(Path(__file__).parent, VECTOR_BYTES)


def kernel(fn=None, *, parallel: bool = False):
    """`njit` with JIT (or JIT_PARALLEL), and an on-disk cache that goes stale whenever
    any module of optbench.nn changes or VECTOR_BYTES does.

    Numba stamps a cached function with the hash of its own file only, so an edit of a
    callee in another module (_gemm.mm, _act.tanh, a constant here) would leave the
    callers' stale machine code in use, in this checkout and in every process after it.
    The stamp is set on Numba's cache object (a private attribute: a Numba release
    that renames it fails here, at import, rather than serving stale code).
    """
    def wrap(f):
        dispatcher = njit(**(JIT_PARALLEL if parallel else JIT))(f)
        index = dispatcher._cache._cache_file
        index._source_stamp = (index._source_stamp, STAMP)
        return dispatcher

    return wrap if fn is None else wrap(fn)
