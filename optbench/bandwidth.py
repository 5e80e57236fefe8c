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

`measure_device()` is the GPU's figure: a device-to-device copy (cuMemcpyDtoD), counted as
8 bytes per element (read and write), timed with CUDA events (`device_seconds`).
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


def device_seconds(step, k: int) -> float:
    """Seconds k back-to-back calls of `step` take on the GPU's clock: CUDA events recorded
    before and after on the default stream (the host clock under the simulator, whose
    events record nothing)."""
    from numba import config, cuda

    if config.ENABLE_CUDASIM:
        t0 = time.perf_counter()
        for _ in range(k):
            step()
        return time.perf_counter() - t0
    start, end = cuda.event(), cuda.event()
    start.record()
    for _ in range(k):
        step()
    end.record()
    end.synchronize()
    return cuda.event_elapsed_time(start, end) / 1e3


def measure_device(n: int = 1 << 28, repeat: int = 10) -> dict:
    """Device-to-device copy bandwidth in GB/s of n float32 elements on the current GPU."""
    from numba import cuda

    src, dst = cuda.device_array(n, np.float32), cuda.device_array(n, np.float32)
    copy = lambda: dst.copy_to_device(src)  # noqa: E731
    copy()
    seconds = [device_seconds(copy, 1) for _ in range(repeat)]
    nbytes = 8 * n
    return {"n": n, "repeat": repeat, "bytes_per_element": 8,
            "device": device_name(),
            "copy_GBps": nbytes / float(np.median(seconds)) / 1e9,
            "copy_best_GBps": nbytes / min(seconds) / 1e9}


def device_name() -> str:
    """The current GPU's name ("CUDA simulator" under NUMBA_ENABLE_CUDASIM=1)."""
    from numba import cuda

    name = getattr(cuda.get_current_device(), "name", "CUDA simulator")
    return name.decode() if isinstance(name, bytes) else str(name)
