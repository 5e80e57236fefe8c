"""The drivers that run an element rule over a parameter vector: Numba CPU here, Numba CUDA
in `cuda_kernels` (imported only once `cuda_module()` found a GPU or the simulator).

A driver gets a rule in index form: `rule(*options)` returns the update
`update(i, p, g, s, h)`: p, g the parameter and gradient vectors, s the tuple of state
vectors (s[k][i]), h a tuple of float32 per-step scalars (`optbench.optim.contract` makes
it from a spec's element rule, with the options already bound). A driver only decides
which i each thread visits, and which h it passes:

- CPU: `@njit(parallel=True)`, `prange` over the elements (Numba hands each thread one
  contiguous range, which LLVM vectorizes); below `tuning.CPU_SERIAL_BELOW` elements a plain
  loop on the calling thread, because waking the workers costs more than the update.
- CPU, batched: K models as the rows of C-contiguous (K, P) arrays, passed
  raveled, with H a (K, len(h)) float32 array, row k model k's scalars. `prange` runs over
  fixed chunks of `tuning.CPU_BATCH_CHUNK` elements of one row each; a chunk unpacks its
  model's row of H into the tuple h once and runs the same rule over its flat indices, a
  plain loop LLVM vectorizes as in the 1-D step, provided its index is unsigned: with a
  signed index every p[i] carries Numba's negative-index wraparound, a branch that stops
  LLVM vectorizing the loop. Same rule, same scalars, no fastmath: each row's bits equal a
  1-D step of that model.
- CUDA (`cuda_kernels`): a grid-stride loop, so any grid covers any n; the batched kernel
  adds a grid y dimension over the models.

The options are closure constants of the update, so Numba prunes switched-off code paths
(amsgrad, nesterov, ...) from its own IR before LLVM sees them. From a runtime tuple LLVM
cannot always fold them after inlining, and a branch left in the loop stops vectorization.
For K models in one launch the options must
therefore agree across the models (`optbench.optim.batch`); their scalars may differ.

Caching: Numba keys its on-disk cache by the driver's source file and the closure's pickled
contents; module-level helpers a rule calls (`scalar.maximum`, ...) are pickled by name only,
so editing one would silently load stale machine code. The closures therefore also hold
`SOURCE_KEY`, a hash of every source file of this package, plus the rule's `source_key`, a
hash of the source of its code outside this package (a plugin's file and the helpers it
calls; `optbench.sources`): any edit recompiles on next use.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path

import numba
from numba.np.unsafe.ndarray import to_fixed_tuple

from optbench.errors import UsageError
from optbench.optim import tuning


def _source_key() -> str:
    digest = hashlib.sha256()
    for path in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


SOURCE_KEY = _source_key()


def cache_key(rule) -> str:
    """What a compiled step's closure holds so that Numba's cache key follows the source of
    this package and of the rule's own code."""
    return SOURCE_KEY + getattr(rule, "source_key", "")


@lru_cache(maxsize=None)
def cpu_step(rule, options: tuple):
    """The CPU step `step(p, g, s, h)` running `rule(*options)` over every element.

    error_model='numpy': x / 0 gives inf or NaN as in torch, instead of raising, and lets
    LLVM vectorize the serial loop too (the parallel one always runs with it)."""
    update = rule(*options)
    key = cache_key(rule)
    serial_below = tuning.CPU_SERIAL_BELOW

    @numba.njit(
        parallel=True, cache=True, error_model="numpy", fastmath=set(tuning.CPU_FASTMATH)
    )
    def step(p, g, s, h):
        key  # noqa: B018 - keeps the source hash in the cache key (see the module docstring)
        n = p.size
        if n < serial_below:
            for i in range(n):
                update(i, p, g, s, h)
        else:
            for i in numba.prange(n):
                update(i, p, g, s, h)

    return step


@lru_cache(maxsize=None)
def cpu_batched_step(rule, options: tuple, nh: int):
    """The batched CPU step `step(p, g, s, H, serial_below, chunk)` running `rule(*options)`
    over K models: p, g and the slots raveled (K * P,) views of C-contiguous (K, P) arrays,
    H (K, nh) float32 with model k's scalars in row k (see the module docstring); serial
    below `serial_below` elements in all, else threads take chunks of `chunk` elements of
    one row (tuning.CPU_SERIAL_BELOW, tuning.CPU_BATCH_CHUNK: loop bounds, so runtime
    arguments, and one compiled kernel serves any)."""
    update = rule(*options)
    key = cache_key(rule)

    @numba.njit(
        parallel=True, cache=True, error_model="numpy", fastmath=set(tuning.CPU_FASTMATH)
    )
    def step(p, g, s, H, serial_below, chunk):
        key  # noqa: B018 - keeps the source hash in the cache key (see the module docstring)
        models = H.shape[0]
        size = p.size // models
        if p.size < serial_below:
            for k in range(models):
                h = to_fixed_tuple(H[k], nh)
                for i in range(numba.uint64(k * size), numba.uint64((k + 1) * size)):
                    update(i, p, g, s, h)
        else:
            per_row = (size + chunk - 1) // chunk
            for c in numba.prange(models * per_row):
                k = c // per_row
                lo = k * size + (c - k * per_row) * chunk
                h = to_fixed_tuple(H[k], nh)
                for i in range(numba.uint64(lo), numba.uint64(min(lo + chunk, (k + 1) * size))):
                    update(i, p, g, s, h)

    return step


def cuda_module():
    """numba.cuda, or a UsageError saying how to get a GPU or the simulator."""
    how = (
        "install the cuda extra (pip install 'optbench[cuda]') on a machine with an NVIDIA GPU "
        "and driver, or set NUMBA_ENABLE_CUDASIM=1 before starting Python to run the CUDA "
        "kernels in Numba's simulator"
    )
    try:
        from numba import cuda
    except ImportError as exc:
        raise UsageError(f"backend 'cuda' is unavailable ({exc}); {how}") from None
    if not cuda.is_available():
        raise UsageError(f"backend 'cuda' is unavailable: no CUDA GPU or driver found; {how}")
    return cuda
