"""The CUDA kernels: the grid-stride drivers of the element rules (one model, and K models in
one launch), and the clipping kernels.

Imported only after `drivers.cuda_module()` found a GPU or the simulator. The kernels name
`cuda` as a module global, which is how the simulator swaps in its fake device API.

What the step kernels do to reach the memory bandwidth (the reasoning; tools/gpu_check.py
measures the result on a card):

- Memory-level parallelism: a step streams 4-8 float32 arrays and computes little, so its
  speed is the bytes in flight per SM. Each thread loads `tuning.CUDA_ELEMENTS_PER_THREAD`
  elements of p, g and every slot into registers before it updates any (`_elements`), since
  NVVM cannot move a later element's loads above an earlier element's stores (the arrays
  might alias). numba-cuda has no float4 loads; this gets the same bytes in flight from
  scalar, coalesced loads (a thread's elements are a grid stride apart).
- One full wave of blocks (tuning.CUDA_WAVES): the grid is the SM count times the blocks of
  this kernel that fit on an SM (asked from the occupancy API once per kernel and block
  size), so no block waits for a second wave while SMs idle; threads stride over the rest.
  Work smaller than that gets fewer blocks.
- float32 only (tools/check_cuda_ptx.py checks the PTX has no .f64 in the steps; its --ir
  mode, run by tests/test_cuda_ir.py, checks the NVVM IR without a GPU or NVVM), with
  IEEE division and square root, as torch's fused kernels: fastmath would flush denormal
  second moments to zero and round the update differently from the CPU kernels, for an
  arithmetic cost that hides under the memory traffic anyway.
- Per-step scalars come from the host: a tuple argument (one model) or one small (K, nh)
  device array (K models), read once per model per thread.
- Launch shapes are computed once per optimizer and size (`Optimizer` keeps them).
"""

import math
from functools import lru_cache

import numba
import numpy as np
from numba import config, cuda
from numba.core.extending import register_jitable

from optbench.optim import drivers, tuning
from optbench.optim.scalar import ONE

if config.ENABLE_CUDASIM:
    def to_fixed_tuple(row, n):  # the simulator runs kernels as Python
        return tuple(row)
else:
    from numba.cuda.np.unsafe.ndarray import to_fixed_tuple

MAX_THREADS_PER_BLOCK = 1024  # CUDA's limit; sizes sum_squares' shared buffer
MAX_GRID_Y = 65535  # CUDA's limit on gridDim.y: the batched kernel's models stride past it


def launch(n: int) -> tuple[int, int]:
    """(blocks, threads per block) of the clipping kernels over n elements: fixed by n."""
    tpb = tuning.CUDA_THREADS_PER_BLOCK
    return max(1, min(math.ceil(n / tpb), tuning.CUDA_MAX_BLOCKS)), tpb


def launcher(kernel, args, per_thread: int, size: int, models: int = 1):
    """`kernel` (made with `per_thread` elements per thread), specialized to the types of
    `args` (no type dispatch per call) and configured for `models` rows of `size` elements:
    tuning.CUDA_THREADS_PER_BLOCK threads, (blocks per model, blocks across models) blocks,
    at most tuning.CUDA_WAVES waves of this kernel and at most what gives every thread
    elements to update. Call it with args."""
    tpb = tuning.CUDA_THREADS_PER_BLOCK
    kernel = kernel.specialize(*args)
    if config.ENABLE_CUDASIM:
        blocks = tuning.CUDA_MAX_BLOCKS
    else:
        wave = next(iter(kernel.overloads.values())).max_cooperative_grid_blocks(tpb)
        blocks = wave * tuning.CUDA_WAVES
    rows = min(models, blocks, MAX_GRID_Y)
    per_row = math.ceil(size / (tpb * per_thread))
    return kernel[(max(1, min(per_row, blocks // rows)), rows), tpb]


@lru_cache(maxsize=None)
def _elements(rule, options: tuple, slots: int, per_thread: int):
    """The device loop `run(p, g, s, h, first, stop, stride)`: updates elements first,
    first + stride, ... below stop with `rule(*options)`, per_thread at a time: loads all,
    updates all (in registers: the rule sees thread-local arrays), stores all."""
    update = rule(*options)
    rows = max(slots, 1)
    f32 = numba.float32

    @register_jitable
    def run(p, g, s, h, first, stop, stride):
        lp = cuda.local.array(per_thread, f32)
        lg = cuda.local.array(per_thread, f32)
        ls = cuda.local.array((rows, per_thread), f32)
        i = first
        while i < stop:
            for u in range(per_thread):
                j = i + u * stride
                if j < stop:
                    lp[u] = p[j]
                    lg[u] = g[j]
                    for k in range(slots):
                        ls[k, u] = s[k][j]
            for u in range(per_thread):
                if i + u * stride < stop:
                    update(u, lp, lg, ls, h)
            for u in range(per_thread):
                j = i + u * stride
                if j < stop:
                    p[j] = lp[u]
                    for k in range(slots):
                        s[k][j] = ls[k, u]
            i += per_thread * stride

    return run


@lru_cache(maxsize=None)
def step_kernel(rule, options: tuple, slots: int, per_thread: int):
    """The kernel `step[blocks, threads](p, g, s, h)` running `rule(*options)` over every
    element of one model (see `drivers` for the rule's contract and the cache key)."""
    run = _elements(rule, options, slots, per_thread)
    key = drivers.cache_key(rule)

    @cuda.jit(cache=True)
    def step(p, g, s, h):
        key  # noqa: B018 - keeps the source hash in the cache key (see drivers)
        run(p, g, s, h, cuda.grid(1), p.size, cuda.gridsize(1))

    return step


@lru_cache(maxsize=None)
def batched_step_kernel(rule, options: tuple, slots: int, per_thread: int, nh: int):
    """The kernel `step[(bx, by), threads](p, g, s, H)` for K models: p, g and the slots
    raveled (K * P,) views of (K, P) arrays, H the (K, nh) device array of per-model scalars.
    Block row y updates models y, y + by, ...; along x, a grid-stride loop over the row."""
    run = _elements(rule, options, slots, per_thread)
    key = drivers.cache_key(rule)

    @cuda.jit(cache=True)
    def step(p, g, s, H):
        key  # noqa: B018 - keeps the source hash in the cache key (see drivers)
        models = H.shape[0]
        size = p.size // models
        first = cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x
        stride = cuda.gridDim.x * cuda.blockDim.x
        for k in range(cuda.blockIdx.y, models, cuda.gridDim.y):
            h = to_fixed_tuple(H[k], nh)
            run(p, g, s, h, k * size + first, (k + 1) * size, stride)

    return step


@cuda.jit(cache=True)
def sum_squares(g, partial):
    """partial[k, block] = sum of g[k]^2 over the block's grid-stride elements of row k, in
    float64, reduced over the block's threads by a fixed tree (blockDim.x a power of 2);
    block row y takes rows y, y + gridDim.y, ..."""
    buf = cuda.shared.array(MAX_THREADS_PER_BLOCK, numba.float64)
    t = cuda.threadIdx.x
    stride = cuda.gridDim.x * cuda.blockDim.x
    for k in range(cuda.blockIdx.y, g.shape[0], cuda.gridDim.y):
        i = cuda.blockIdx.x * cuda.blockDim.x + t
        acc = 0.0
        while i < g.shape[1]:
            x = float(g[k, i])
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
            partial[k, cuda.blockIdx.x] = buf[0]
        cuda.syncthreads()  # buf is reused for the next row


@cuda.jit(cache=True)
def scale(g, s):
    """g[k] *= s[k] for the rows whose s[k] != 1 (the rows torch would leave alone)."""
    stride = cuda.gridDim.x * cuda.blockDim.x
    for k in range(cuda.blockIdx.y, g.shape[0], cuda.gridDim.y):
        if s[k] != ONE:
            i = cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x
            while i < g.shape[1]:
                g[k, i] *= s[k]
                i += stride


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


def rows_grid(shape: tuple[int, int]) -> tuple[tuple[int, int], int]:
    """((blocks per row, row blocks), threads) of the clipping kernels over (K, P): fixed by
    the shape, so the norms are deterministic."""
    models, size = shape
    blocks, tpb = launch(size)
    return (blocks, min(models, MAX_GRID_Y)), tpb


def sum_squares_partials(g) -> np.ndarray:
    """The (K, blocks) float64 partial sums of g^2 per row of the (K, P) device array g
    (a fixed grid for a given shape), on the host."""
    grid, tpb = rows_grid(g.shape)
    if tpb & (tpb - 1) or tpb > MAX_THREADS_PER_BLOCK:
        raise ValueError(f"tuning.CUDA_THREADS_PER_BLOCK={tpb}: need a power of 2 <= 1024")
    partial = cuda.device_array((g.shape[0], grid[0]), np.float64)
    sum_squares[grid, tpb](g, partial)
    return partial.copy_to_host()
