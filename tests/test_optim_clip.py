"""Gradient clipping by global norm and by value, on every backend (torch's results are
checked in test_optim_golden.py)."""

import math

import numba
import numpy as np
import pytest

from optbench import optim
from optbench.errors import UsageError
from optbench.optim import tuning

HOST = ["numpy", "cpu"]


def exact_norm(g) -> float:
    return math.sqrt(math.fsum(float(x) ** 2 for x in g.astype(np.float64)))


@pytest.mark.parametrize("n", [1, 1000, 3 * tuning.NORM_CHUNK + 7])
def test_the_norm_is_the_exact_norm_and_the_same_bits_on_any_thread_count(n):
    g = (np.random.default_rng(n).standard_normal(n) * 10.0 ** np.linspace(-3, 3, n)).astype(
        np.float32)
    norms = []
    threads = numba.get_num_threads()
    try:
        for t in sorted({1, threads}):
            numba.set_num_threads(t)
            for _ in range(2):
                norms.append(optim.clip_grad_norm(g.copy(), 1e30))
    finally:
        numba.set_num_threads(threads)
    assert len(set(norms)) == 1  # bit-identical: fixed chunks, exact merge
    assert norms[0] == pytest.approx(exact_norm(g), rel=1e-13)
    assert optim.clip_grad_norm(g.copy(), 1e30, backend="numpy") == pytest.approx(
        norms[0], rel=1e-13)


@pytest.mark.parametrize("backend", HOST)
def test_clipping_scales_to_max_norm_and_leaves_small_gradients_alone(backend):
    rng = np.random.default_rng(1)
    g = rng.standard_normal(5000).astype(np.float32)
    norm = exact_norm(g)
    small = g.copy()
    assert optim.clip_grad_norm(small, norm * 1.01, backend=backend) == pytest.approx(norm)
    np.testing.assert_array_equal(small, g)  # no clipping: not even a multiply by 1
    big = g.copy()
    assert optim.clip_grad_norm(big, 1.0, backend=backend) == pytest.approx(norm)
    np.testing.assert_allclose(big, g * np.float32(1.0 / (norm + 1e-6)), rtol=1e-6)
    assert exact_norm(big) == pytest.approx(1.0, rel=1e-5)


@pytest.mark.parametrize("backend", HOST)
def test_nonfinite_gradients_give_a_nonfinite_norm(backend):
    g = np.array([1.0, np.inf, -2.0], np.float32)
    with np.errstate(all="ignore"):
        assert optim.clip_grad_norm(g, 1.0, backend=backend) == math.inf
    np.testing.assert_array_equal(g[[0, 2]], [0.0, 0.0])  # scaled by max_norm / inf = 0
    g = np.array([1.0, np.nan, -2.0], np.float32)
    assert math.isnan(optim.clip_grad_norm(g, 1.0, backend=backend))
    np.testing.assert_array_equal(g, [1.0, np.nan, -2.0])  # a NaN norm scales nothing


@pytest.mark.parametrize("backend", HOST)
def test_clip_by_value_clamps_and_keeps_nan(backend):
    g = np.array([-3.0, -0.5, 0.0, 0.25, 2.0, np.nan, np.inf, -np.inf], np.float32)
    optim.clip_grad_value(g, 0.5, backend=backend)
    np.testing.assert_array_equal(g, [-0.5, -0.5, 0.0, 0.25, 0.5, np.nan, 0.5, -0.5])


@pytest.mark.cuda
def test_cuda_clipping_matches_the_host(monkeypatch):
    """Three blocks of 16 threads, each thread striding over several elements: the per-block
    tree and the host merge must give the host's norm."""
    from numba import cuda

    monkeypatch.setattr(tuning, "CUDA_THREADS_PER_BLOCK", 16)
    monkeypatch.setattr(tuning, "CUDA_MAX_BLOCKS", 3)
    g = (np.random.default_rng(2).standard_normal(150) * 10).astype(np.float32)
    d = cuda.to_device(g)
    norm = optim.clip_grad_norm(d, 1.0)  # backend inferred from the device array
    assert norm == pytest.approx(exact_norm(g), rel=1e-13)
    h = g.copy()
    optim.clip_grad_norm(h, 1.0, backend="cpu")
    np.testing.assert_array_equal(d.copy_to_host(), h)
    d = cuda.to_device(g)
    optim.clip_grad_value(d, 5.0)
    np.testing.assert_array_equal(d.copy_to_host(), np.clip(g, -5, 5))


@pytest.mark.parametrize("call,message", [
    (lambda g: optim.clip_grad_norm(g, 0.0), "max_norm=0.0 is out of range; allowed: 0 <"),
    (lambda g: optim.clip_grad_norm(g, -1), "max_norm=-1 is out of range"),
    (lambda g: optim.clip_grad_norm(g, math.nan), "max_norm=nan is out of range"),
    (lambda g: optim.clip_grad_norm(g, math.inf), "max_norm=inf is out of range"),
    (lambda g: optim.clip_grad_norm(g, "1"), "max_norm='1' must be a real number"),
    (lambda g: optim.clip_grad_norm(g, True), "max_norm=True must be a real number"),
    (lambda g: optim.clip_grad_value(g, 0), "clip_value=0 is out of range"),
    (lambda g: optim.clip_grad_norm(g.astype(np.float64), 1.0), "grads must be float32"),
    (lambda g: optim.clip_grad_norm(g[::2], 1.0), "grads must be contiguous"),
    (lambda g: optim.clip_grad_norm(list(g), 1.0), "grads must be a float32 numpy array or"),
    (lambda g: optim.clip_grad_norm(g, 1.0, backend="gpu"), "unknown backend 'gpu'"),
])
def test_bad_clipping_input_is_refused_before_anything_changes(call, message):
    g = np.full(10, 3.0, np.float32)
    with pytest.raises(UsageError, match=message):
        call(g)
    np.testing.assert_array_equal(g, np.full(10, 3.0, np.float32))
