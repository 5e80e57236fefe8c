"""The CUDA kernels: the grid-stride driver of the element rules, and the clipping kernels.

Imported only after `drivers.cuda_module()` found a GPU or the simulator. The kernels name
`cuda` as a module global, which is how the simulator swaps in its fake device API.
Launch shapes come from `tuning`: `launch(n)` gives (blocks, threads per block).
"""

import math
from functools import lru_cache

import numba
import numpy as np
from numba import cuda

from optbench.optim import drivers, tuning

MAX_THREADS_PER_BLOCK = 1024  # CUDA's limit; sizes sum_squares' shared buffer


def launch(n: int) -> tuple[int, int]:
    """(blocks, threads per block) for a grid-stride kernel over n elements."""
    tpb = tuning.CUDA_THREADS_PER_BLOCK
    return max(1, min(math.ceil(n / tpb), tuning.CUDA_MAX_BLOCKS)), tpb


@lru_cache(maxsize=None)
def step_kernel(rule, options: tuple):
    """The kernel `step[blocks, threads](p, g, s, h)` running `rule(*options)` over every
    element (see `drivers` for the rule's contract and the cache key)."""
    update = rule(*options)
    key = drivers.SOURCE_KEY

    @cuda.jit(cache=True)
    def step(p, g, s, h):
        key  # noqa: B018 - keeps the source hash in the cache key (see drivers)
        i = cuda.grid(1)
        stride = cuda.gridsize(1)
        while i < p.size:
            update(i, p, g, s, h)
            i += stride

    return step


@cuda.jit(cache=True)
def sum_squares(g, partial):
    """partial[block] = sum of g^2 over the block's grid-stride elements, in float64, reduced
    over the block's threads by a fixed tree (blockDim.x must be a power of 2)."""
    buf = cuda.shared.array(MAX_THREADS_PER_BLOCK, numba.float64)
    t = cuda.threadIdx.x
    i = cuda.grid(1)
    stride = cuda.gridsize(1)
    acc = 0.0
    while i < g.size:
        x = float(g[i])
        acc += x * x
        i += stride
    buf[t] = acc
    cuda.syncthreads()
    half = cuda.blockDim.x // 2
    while half > 0:
        if t < half:
            buf[t] += buf[t + half]
        cuda.syncthreads()
        half //= 2
    if t == 0:
        partial[cuda.blockIdx.x] = buf[0]


@cuda.jit(cache=True)
def scale(g, s):
    i = cuda.grid(1)
    while i < g.size:
        g[i] *= s
        i += cuda.gridsize(1)


@cuda.jit(cache=True)
def clamp(g, c):
    i = cuda.grid(1)
    while i < g.size:
        x = g[i]
        if x > c:
            g[i] = c
        elif x < -c:
            g[i] = -c
        i += cuda.gridsize(1)


def sum_squares_partials(g) -> np.ndarray:
    """The per-block float64 partial sums of g^2 (a fixed grid for a given size), on the host."""
    blocks, tpb = launch(g.size)
    if tpb & (tpb - 1) or tpb > MAX_THREADS_PER_BLOCK:
        raise ValueError(f"tuning.CUDA_THREADS_PER_BLOCK={tpb}: need a power of 2 <= 1024")
    partial = cuda.device_array(blocks, np.float64)
    sum_squares[blocks, tpb](g, partial)
    return partial.copy_to_host()
