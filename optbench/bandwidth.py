"""The machine's memory bandwidth, measured in this process with STREAM-triad-like loops.

Two float32 loops over arrays far larger than the caches, both counted at 12 bytes per
element, as STREAM counts:

- "update", a <- a + s*b: every line written was just read, which is how an optimizer step
  moves memory (it reads and writes back p and its state in place). This is the figure the
  kernels benchmark divides by.
- "triad", a <- b + s*c (STREAM's triad): the store to a also costs a read-for-ownership the
  count leaves out, so on most CPUs it reads lower than "update".

`measure()` reports medians (and the best) over repeats, after one untimed pass that
faults the pages in and compiles (Numba's cache makes later processes start warm).
"""

from __future__ import annotations

import time

import numba
import numpy as np

BYTES_PER_ELEMENT = 12  # two float32 reads and one float32 write


@numba.njit(parallel=True, cache=True)
def _update(a, b, s):
    for i in numba.prange(a.size):
        a[i] = a[i] + s * b[i]


@numba.njit(parallel=True, cache=True)
def _triad(a, b, c, s):
    for i in numba.prange(a.size):
        a[i] = b[i] + s * c[i]


@numba.njit(parallel=True, cache=True)
def _fill(a, value):
    for i in numba.prange(a.size):
        a[i] = value


def measure(n: int = 1 << 25, repeat: int = 10) -> dict:
    """Bandwidth in GB/s (1e9 bytes/s) of the two loops over n float32 elements."""
    a, b, c = (np.empty(n, np.float32) for _ in range(3))
    for x, value in ((a, 1.0), (b, 2.0), (c, 3.0)):
        _fill(x, np.float32(value))  # first touch by the worker threads, as the loops run
    s = np.float32(1e-3)
    loops = {"update": lambda: _update(a, b, s), "triad": lambda: _triad(a, b, c, s)}
    seconds: dict[str, list[float]] = {k: [] for k in loops}
    for fn in loops.values():
        fn()
    for _ in range(repeat):
        for name, fn in loops.items():
            t0 = time.perf_counter()
            fn()
            seconds[name].append(time.perf_counter() - t0)
    nbytes = BYTES_PER_ELEMENT * n
    out = {"n": n, "repeat": repeat, "bytes_per_element": BYTES_PER_ELEMENT,
           "threads": numba.get_num_threads()}
    for name, ts in seconds.items():
        out[f"{name}_GBps"] = nbytes / float(np.median(ts)) / 1e9
        out[f"{name}_best_GBps"] = nbytes / min(ts) / 1e9
    return out
