"""Gradient clipping, by global norm (Pascanu, Mikolov & Bengio 2013, ICML, "On the difficulty
of training recurrent neural networks", Algorithm 1) and by value, on numpy, cpu and cuda.

Both work in place on one flat float32 gradient vector and so with every optimizer, or on
K models' gradients as the rows of a (K, P) array, each row clipped alone (the benchmark
clips each model separately): one launch, K norms back, each row's result the bits of
clipping that row on its own. `clip_grad_norm` follows torch.nn.utils.clip_grad_norm_: it
returns the L2 norm before clipping and scales by max_norm / (norm + 1e-6) when that is
below 1. The norm is
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
from optbench.optim.optimizer import BACKENDS, checked_shape


def clip_grad_norm(grads, max_norm, backend: str | None = None):
    """Scale `grads` in place so its L2 norm is at most about `max_norm`; return the norm
    before clipping. For (K, P) grads each row is one model's gradient: max_norm is one
    value or a numpy array of K, and the K norms come back as a float64 array. `backend`
    defaults to "cpu" for numpy arrays, "cuda" for device arrays; "numpy" runs the plain
    reference."""
    backend = _backend(grads, backend)
    shape = checked_shape(grads, "grads", backend, writeable=True)
    rows = grads.reshape(1, shape[0]) if len(shape) == 1 else grads
    c = _max_norms(max_norm, shape)
    if backend == "numpy":
        norms = np.sqrt(np.sum(rows.astype(np.float64) ** 2, axis=1))
    else:
        partial = (_cpu_sum_squares(rows, tuning.NORM_CHUNK) if backend == "cpu"
                   else _cuda().sum_squares_partials(rows))
        norms = np.array([math.sqrt(math.fsum(row)) for row in partial])
    # A bound near float64's maximum (clipping "off") over a norm below 1 overflows to inf,
    # which is still "no clipping": the warning would only alarm the user.
    with np.errstate(over="ignore"):
        scale = c / (norms + 1e-6)
    s = np.where(scale < 1, scale, 1).astype(np.float32)  # NaN norms: left alone
    if (s != 1).any():
        if backend == "numpy":
            for row, factor in zip(rows, s):
                if factor != 1:
                    row *= factor
        elif backend == "cpu":
            _cpu_scale(rows, s, tuning.NORM_CHUNK)
        else:
            k = _cuda()
            k.scale[k.rows_grid(rows.shape)](rows, k.cuda.to_device(s))
    return float(norms[0]) if len(shape) == 1 else norms


def clip_grad_value(grads, clip_value: float, backend: str | None = None) -> None:
    """Clamp every element of `grads` (a vector, or (K, P)) to [-clip_value, clip_value] in
    place (NaN stays NaN), as torch.nn.utils.clip_grad_value_."""
    backend = _backend(grads, backend)
    c = np.float32(_positive("clip_value", clip_value))
    checked_shape(grads, "grads", backend, writeable=True)
    flat = grads.reshape(grads.size)
    if backend == "numpy":
        np.clip(flat, -c, c, out=flat)
    elif backend == "cpu":
        _cpu_clamp(flat, c)
    else:
        k = _cuda()
        k.clamp[k.launch(flat.size)](flat, c)


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


def _max_norms(max_norm, shape) -> np.ndarray:
    """max_norm as one float64 per row; an array only for (K, P) grads, K values."""
    if not isinstance(max_norm, np.ndarray):
        return np.array(_positive("max_norm", max_norm))
    if len(shape) != 2 or max_norm.shape != shape[:1]:
        raise UsageError(f"max_norm as an array needs (K, P) grads and K values, one per "
                         f"model; got max_norm of shape {max_norm.shape}, grads {shape}")
    return np.array([_positive(f"max_norm[{k}]", x) for k, x in enumerate(max_norm.tolist())])


@numba.njit(parallel=True, cache=True, fastmath={"reassoc", "contract"})
def _cpu_sum_squares(g, chunk):
    """Sum of g[k]^2 per fixed chunk of `chunk` elements of each row k, in float64
    ('reassoc' lets LLVM vectorize within a chunk; the order is fixed by the machine code,
    not the threads, and is the same for a row of K as for that row alone)."""
    models, n = g.shape
    per_row = (n + chunk - 1) // chunk
    partial = np.empty((models, per_row), np.float64)
    for c in numba.prange(models * per_row):
        k = c // per_row
        j = c - k * per_row
        acc = 0.0
        for i in range(j * chunk, min(n, (j + 1) * chunk)):
            x = np.float64(g[k, i])
            acc += x * x
        partial[k, j] = acc
    return partial


@numba.njit(parallel=True, cache=True)
def _cpu_scale(g, s, chunk):
    """g[k] *= s[k] for the rows whose s[k] != 1, in chunks of one row."""
    models, n = g.shape
    per_row = (n + chunk - 1) // chunk
    for c in numba.prange(models * per_row):
        k = c // per_row
        if s[k] != 1:
            lo = (c - k * per_row) * chunk
            for i in range(lo, min(n, lo + chunk)):
                g[k, i] *= s[k]


@numba.njit(parallel=True, cache=True)
def _cpu_clamp(g, c):
    for i in numba.prange(g.size):
        x = g[i]
        if x > c:
            g[i] = c
        elif x < -c:
            g[i] = -c
