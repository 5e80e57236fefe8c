"""Gradient clipping, by global norm (Pascanu, Mikolov & Bengio 2013, ICML, "On the difficulty
of training recurrent neural networks", Algorithm 1) and by value, on numpy, cpu and cuda.

Both work in place on one flat float32 gradient vector and so with every optimizer.
`clip_grad_norm` follows torch.nn.utils.clip_grad_norm_: it returns the L2 norm before
clipping and scales by max_norm / (norm + 1e-6) when that is below 1. The norm is
deterministic: float64 sums over fixed chunks (CPU) or a fixed grid (CUDA), merged
exactly with math.fsum, so the same gradient gives the same bits whatever the thread count.
A NaN or inf norm is returned as it is (the caller records the divergence); an inf norm
scales by 0, a NaN norm leaves the gradient untouched.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from optbench.errors import UsageError
from optbench.optim import drivers, tuning
from optbench.optim.optimizer import BACKENDS, vector_size


def clip_grad_norm(grads, max_norm: float, backend: str | None = None) -> float:
    """Scale `grads` in place so its L2 norm is at most about `max_norm`; return the norm
    before clipping. `backend` defaults to "cpu" for numpy arrays, "cuda" for device arrays;
    "numpy" runs the plain reference."""
    backend = _backend(grads, backend)
    c = _positive("max_norm", max_norm)
    vector_size(grads, "grads", backend)
    if backend == "numpy":
        norm = math.sqrt(float(np.sum(grads.astype(np.float64) ** 2)))
    elif backend == "cpu":
        norm = math.sqrt(math.fsum(_cpu_sum_squares(grads, tuning.NORM_CHUNK)))
    else:
        norm = math.sqrt(math.fsum(_cuda().sum_squares_partials(grads)))
    scale = c / (norm + 1e-6)
    if scale < 1:
        s = np.float32(scale)
        if backend == "numpy":
            grads *= s
        elif backend == "cpu":
            _cpu_scale(grads, s)
        else:
            k = _cuda()
            k.scale[k.launch(grads.size)](grads, s)
    return norm


def clip_grad_value(grads, clip_value: float, backend: str | None = None) -> None:
    """Clamp every element of `grads` to [-clip_value, clip_value] in place (NaN stays NaN),
    as torch.nn.utils.clip_grad_value_."""
    backend = _backend(grads, backend)
    c = np.float32(_positive("clip_value", clip_value))
    vector_size(grads, "grads", backend)
    if backend == "numpy":
        np.clip(grads, -c, c, out=grads)
    elif backend == "cpu":
        _cpu_clamp(grads, c)
    else:
        k = _cuda()
        k.clamp[k.launch(grads.size)](grads, c)


def _backend(grads, backend):
    if backend is None:
        if isinstance(grads, np.ndarray):
            return "cpu"
        if not hasattr(grads, "copy_to_host"):
            raise UsageError(
                "grads must be a float32 numpy array or a Numba CUDA device array; got "
                f"{type(grads).__name__}"
            )
        backend = "cuda"
    if backend not in BACKENDS:
        raise UsageError(f"unknown backend {backend!r}; choose one of: {', '.join(BACKENDS)}")
    if backend == "cuda":
        drivers.cuda_module()
    return backend


def _cuda():
    from optbench.optim import cuda_kernels  # after _backend() checked a GPU or the simulator

    return cuda_kernels


def _positive(name, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise UsageError(f"{name}={value!r} must be a real number > 0")
    x = float(value)
    if not (math.isfinite(x) and x > 0):
        raise UsageError(f"{name}={value!r} is out of range; allowed: 0 < {name} < inf")
    return x


@numba.njit(parallel=True, cache=True, fastmath={"reassoc", "contract"})
def _cpu_sum_squares(g, chunk):
    """Sum of g^2 per fixed chunk of `chunk` elements, in float64 ('reassoc' lets LLVM
    vectorize within a chunk; the order is fixed by the machine code, not the threads)."""
    n = g.size
    partial = np.empty((n + chunk - 1) // chunk, np.float64)
    for c in numba.prange(partial.size):
        acc = 0.0
        for i in range(c * chunk, min(n, (c + 1) * chunk)):
            x = np.float64(g[i])
            acc += x * x
        partial[c] = acc
    return partial


@numba.njit(parallel=True, cache=True)
def _cpu_scale(g, s):
    for i in numba.prange(g.size):
        g[i] *= s


@numba.njit(parallel=True, cache=True)
def _cpu_clamp(g, c):
    for i in numba.prange(g.size):
        x = g[i]
        if x > c:
            g[i] = c
        elif x < -c:
            g[i] = -c
