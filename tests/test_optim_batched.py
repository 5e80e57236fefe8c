"""K models in one step (issue 8): a (K, P) step equals K separate 1-D steps, for every
optimizer and code path, with per-model hyper-parameters; per-model clipping; refusals.

Why bit-identical on the CPU: the batched driver runs the same element rule with the same
float32 scalars (each model's, computed on the host as for a 1-D step) over the same
elements, without fastmath, so every element sees the same IEEE operations in the same
order. Under the CUDA simulator the kernels run the same rules as Python; there the
batched kernel is compared exactly with the 1-D CUDA kernel and to tolerance with the CPU.
"""

import numba
import numpy as np
import pytest
from optim_cases import CASE_IDS, CASES, gradients

from optbench import optim
from optbench.errors import UsageError
from optbench.optim import tuning
from optbench.optim.spec import FLAGS

STEPS = 200
FACTORS = (1.0, 0.5, 0.9)  # model k's value = the case's value x FACTORS[k]
K = len(FACTORS)
F32 = np.float32


def per_model(name, hparams):
    """The case's hyper-parameters with every number different per model (betas as a (K, 2)
    array); zeros stay zero and switches stay, so the K models share one kernel."""
    spec = optim.spec(name)
    h = optim.create(name, backend="numpy", **hparams).hparams
    out = {}
    for key, v in h.items():
        if key in spec.fixed:
            continue
        if key in FLAGS:
            out[key] = v
        elif key == "betas":
            out[key] = np.array([[b * f for b in v] for f in FACTORS])
        else:
            out[key] = np.array([v * f for f in FACTORS])
    return out


def model(hp, k):
    """Model k's hyper-parameters from per_model's."""
    return {key: (tuple(v[k]) if key == "betas" else v[k]) if isinstance(v, np.ndarray) else v
            for key, v in hp.items()}


def to_host(x):
    return x if isinstance(x, np.ndarray) else x.copy_to_host()


def run_batched(name, hp, backend, size, steps, seed=0):
    """(params, slots, state) on the host after `steps` steps of K models in one optimizer."""
    rng = np.random.default_rng(seed)
    opt = optim.create(name, backend=backend, **hp)
    params = rng.standard_normal((K, size)).astype(F32)
    dev = _device(backend)
    params = dev(params)
    state = opt.init(params)
    for _ in range(steps):
        opt.step(params, dev(gradients(rng, K * size).reshape(K, size)), state)
    return to_host(params), [to_host(x) for x in state.slots], state


def run_separate(name, hp, backend, size, steps, seed=0):
    """The same data through K separate 1-D optimizers, one per row."""
    rng = np.random.default_rng(seed)
    opts = [optim.create(name, backend=backend, **model(hp, k)) for k in range(K)]
    params = rng.standard_normal((K, size)).astype(F32)
    dev = _device(backend)
    rows = [dev(params[k].copy()) for k in range(K)]
    states = [o.init(r) for o, r in zip(opts, rows)]
    for _ in range(steps):
        g = gradients(rng, K * size).reshape(K, size)
        for k in range(K):
            opts[k].step(rows[k], dev(g[k].copy()), states[k])
    slots = [np.stack([to_host(s.slots[j]) for s in states]) for j in range(len(states[0].slots))]
    return np.stack([to_host(r) for r in rows]), slots, states


def _device(backend):
    if backend != "cuda":
        return lambda x: x
    from numba import cuda

    return cuda.to_device


def assert_same(batched, separate, **tol):
    check = (np.testing.assert_allclose if tol else np.testing.assert_array_equal)
    check(batched[0], separate[0], **tol, err_msg="params")
    for j, (a, b) in enumerate(zip(batched[1], separate[1])):
        check(a, b, **({**tol, "atol": 1e-7} if tol else {}), err_msg=f"slot {j}")
    for row, state in zip(batched[2].rows, separate[2]):
        assert row.host == state.host and row.step == state.step


@pytest.fixture(params=["serial", "parallel"])
def threads(request, monkeypatch):
    """"parallel": thresholds lowered so 3 x 301 elements run in chunks of 64 elements of
    one row over the threads, a row's last chunk partial (the default sizes are checked in
    test_one_value_for_all_models_broadcasts)."""
    if request.param == "parallel":
        monkeypatch.setattr(tuning, "CPU_SERIAL_BELOW", 256)
        monkeypatch.setattr(tuning, "CPU_BATCH_CHUNK", 64)
    return request.param


@pytest.mark.parametrize("name,hparams", CASES, ids=CASE_IDS)
def test_a_batched_cpu_step_is_k_separate_steps_bit_for_bit(name, hparams, threads):
    """200 steps, every number of the case different per model."""
    hp = per_model(name, hparams)
    assert_same(run_batched(name, hp, "cpu", 301, STEPS),
                run_separate(name, hp, "cpu", 301, STEPS))


@pytest.mark.parametrize("name,hparams", CASES, ids=CASE_IDS)
def test_the_batched_reference_is_k_separate_reference_steps(name, hparams):
    hp = per_model(name, hparams)
    assert_same(run_batched(name, hp, "numpy", 301, STEPS),
                run_separate(name, hp, "numpy", 301, STEPS))


@pytest.mark.parametrize("name", ["adam", "nadam", "sgd"])
def test_one_value_for_all_models_broadcasts(name):
    """No array given: init((K, P)) steps K models that share every value; at the default
    thresholds and a size past one chunk (3 x 20000 over chunks of 2^14)."""
    assert K * 20000 >= tuning.CPU_SERIAL_BELOW and 20000 > tuning.CPU_BATCH_CHUNK
    hp = {"momentum": 0.9} if name == "sgd" else {"amsgrad": True} if name == "adam" else {}
    b = run_batched(name, hp, "cpu", 20000, 20)
    s = run_separate(name, hp, "cpu", 20000, 20)
    assert_same(b, s)
    assert optim.create(name, **hp).models is None


def test_batched_results_do_not_depend_on_the_thread_count():
    out = []
    threads = numba.get_num_threads()
    try:
        for t in sorted({1, threads}):
            numba.set_num_threads(t)
            out.append(run_batched("adam", per_model("adam", {}), "cpu", 20000, 5)[0])
    finally:
        numba.set_num_threads(threads)
    np.testing.assert_array_equal(out[0], out[-1])


@pytest.fixture
def tiny_cuda_grid(monkeypatch):
    """Blocks of 16 threads, at most 2 of them, 2 elements per thread: with K = 3 one block
    row steps models 0 and 2, and each thread strides over its row more than once, with a
    partial last stride."""
    monkeypatch.setattr(tuning, "CUDA_THREADS_PER_BLOCK", 16)
    monkeypatch.setattr(tuning, "CUDA_MAX_BLOCKS", 2)
    monkeypatch.setattr(tuning, "CUDA_ELEMENTS_PER_THREAD", 2)


@pytest.mark.cuda
@pytest.mark.parametrize("name,hparams", CASES, ids=CASE_IDS)
def test_a_batched_cuda_step_matches_k_separate_steps(name, hparams, tiny_cuda_grid):
    """200 steps against K separate 1-D CPU steps, to the 1-D CUDA test's tolerance (see
    test_optim.py: a GPU's FMAs round once where the CPU rounds twice)."""
    hp = per_model(name, hparams)
    assert_same(run_batched(name, hp, "cuda", 41, STEPS),
                run_separate(name, hp, "cpu", 41, STEPS), rtol=1e-5, atol=1e-5)


@pytest.mark.cuda
@pytest.mark.parametrize("name,hparams", [c for c in CASES if c[1]][::3])
def test_a_batched_cuda_step_equals_the_1d_cuda_kernel(name, hparams, tiny_cuda_grid):
    """Same rule, same scalars, same compiler: the same bits as K separate CUDA launches."""
    hp = per_model(name, hparams)
    assert_same(run_batched(name, hp, "cuda", 41, 20), run_separate(name, hp, "cuda", 41, 20))


# --- per-model hyper-parameters ------------------------------------------------------------

def test_per_model_values_and_their_forms():
    lr = np.array([1e-4, 3e-4, 1e-3])
    opt = optim.create("adam", lr=lr, betas=(np.array([0.9, 0.8, 0.7]), 0.99))
    assert len(opt.models) == 3
    assert [m["lr"] for m in opt.models] == lr.tolist()
    assert [m["betas"] for m in opt.models] == [(0.9, 0.99), (0.8, 0.99), (0.7, 0.99)]
    np.testing.assert_array_equal(opt.hparams["lr"], lr)
    assert opt.hparams["betas"].shape == (3, 2) and opt.hparams["eps"] == 1e-8
    same = optim.create("adam", lr=lr, betas=np.array([[0.9, 0.99], [0.8, 0.99], [0.7, 0.99]]))
    assert same.models == opt.models
    one = optim.create("adam", lr=np.array([1e-3]))  # K = 1 is a batch too
    assert one.init(np.zeros((1, 5), F32)).shape == (1, 5)
    state = optim.create("adagrad", initial_accumulator_value=np.array([0.0, 0.5])).init(
        np.zeros((2, 4), F32))
    np.testing.assert_array_equal(state["sum"], [[0.0] * 4, [0.5] * 4])
    np.testing.assert_array_equal(state.rows[1]["sum"], [0.5] * 4)  # a view of row 1


@pytest.mark.parametrize("kwargs,message", [
    (dict(lr=np.array([[1e-3, 1e-4]])), "lr as an array must be 1-D with one value per model"),
    (dict(lr=np.array([])), "got shape (0,)"),
    (dict(lr=[1e-3, 1e-4]), "lr=[0.001, 0.0001] must be a real number, not list"),
    (dict(lr=np.array([1e-3, -1.0])), "lr=-1.0 is out of range; allowed: 0.0 <= lr < inf "
     "(model 1 of 2)"),
    (dict(lr=np.array([1e-3, 1e-4, 1e-5]), eps=np.array([1e-8, 1e-7])),
     "need one value per model, the same K for all; got lr 3, eps 2"),
    (dict(betas=np.array([[0.9, 0.99, 0.9]])), "betas of shape (1, 3): a per-model betas array "
     "has shape (K, 2)"),
    (dict(betas=(np.array([0.9, 0.8]), np.array([0.99, 0.98, 0.97]))),
     "betas[0] has 2 per-model values, betas[1] 3"),
    (dict(betas=(np.array([0.9, 1.0]), 0.99)), "betas[0]=1.0 is out of range"),
    (dict(amsgrad=np.array([False, True])), "models 0 and 1 need different compiled kernels "
     "(amsgrad=False vs True)"),
    (dict(weight_decay=np.array([0.01, 0.0, 0.02]), lr=np.array([1e-3, 2e-3, 3e-3])),
     "models 0 and 1 need different compiled kernels (weight_decay=0.01 vs 0.0)"),
])
def test_bad_per_model_values_are_refused_in_one_line(kwargs, message):
    with pytest.raises(UsageError) as exc:
        optim.create("adam", **kwargs)
    assert message in str(exc.value) and "\n" not in str(exc.value)


def test_momentum_zero_for_some_models_only_is_refused():
    with pytest.raises(UsageError, match=r"\(momentum=0.0 vs 0.9\): switches"):
        optim.create("sgd", momentum=np.array([0.0, 0.9]))


def _batch(name="adam", k=3, size=8, backend="cpu", **hp):
    opt = optim.create(name, backend=backend, lr=np.full(k, 1e-3), **hp)
    p = np.linspace(-1, 1, k * size, dtype=F32).reshape(k, size)
    return opt, p, opt.init(p)


@pytest.mark.parametrize("make_args,message", [
    (lambda p, g, s: (p[:2], g[:2], s), "per-model hyper-parameters .lr. for K = 3 models: "
     r"params and grads must be \(3, P\) arrays"),
    (lambda p, g, s: (p, g[:, :4].copy(), s), r"grads has shape \(3, 4\), params \(3, 8\)"),
    (lambda p, g, s: (p, g.astype(np.float64), s), "grads must be float32"),
    (lambda p, g, s: (p, np.asfortranarray(g), s), "grads must be contiguous"),
    (lambda p, g, s: (p.reshape(-1), g.reshape(-1), s), r"params must be a \(K, P\) array"),
    (lambda p, g, s: (p.reshape(3, 2, 4), g, s), r"must be one flat 1-D vector, or \(K, P\)"),
    (lambda p, g, s: (p, g, _batch(size=4)[2]), r"state was made for \(3, 4\) params on the "
     r"host; this step has \(3, 8\)"),
    (lambda p, g, s: (p, g, _batch("sgd", momentum=0.9)[2]), "state does not belong"),
    (lambda p, g, s: (p[0], g[0], optim.create("adam").init(p[0].copy())),
     r"per-model hyper-parameters .lr. for K = 3 models"),
])
def test_bad_batched_arrays_are_refused_before_anything_changes(make_args, message):
    opt, p, state = _batch()
    g = np.ones_like(p)
    before = (p.copy(), [x.copy() for x in state.slots])
    with pytest.raises(UsageError, match=message) as exc:
        opt.step(*make_args(p, g, state))
    assert "\n" not in str(exc.value)
    np.testing.assert_array_equal(p, before[0])
    for x, y in zip(state.slots, before[1]):
        np.testing.assert_array_equal(x, y)
    assert state.step == 0 and all(row.step == 0 for row in state.rows)


@pytest.mark.parametrize("shape,message", [
    ((8,), r"per-model hyper-parameters \(lr\) for K = 3 models: params and grads must be "
     r"\(3, P\) arrays, one row per model; got shape \(8,\)"),
    ((4, 8), r"must be \(3, P\) arrays"),
    ((3, 0), r"params must be a \(K, P\) array, one row of P > 0 parameters"),
])
def test_init_refuses_params_that_do_not_fit_the_models(shape, message):
    opt = optim.create("adam", lr=np.array([1e-3, 1e-4, 1e-5]))
    with pytest.raises(UsageError, match=message):
        opt.init(np.zeros(shape, F32))


def test_a_one_model_state_refuses_k_models():
    opt = optim.create("adam")
    p = np.zeros(8, F32)
    state = opt.init(p)
    with pytest.raises(UsageError, match="params must be one flat 1-D vector"):
        opt.step(np.zeros((2, 4), F32), np.zeros((2, 4), F32), state)


@pytest.mark.cuda
def test_cuda_batched_needs_device_arrays():
    opt = optim.create("adam", backend="cuda", lr=np.array([1e-3, 1e-4]))
    with pytest.raises(UsageError, match="params must be a Numba CUDA device array"):
        opt.init(np.zeros((2, 4), F32))


# --- clipping each model alone -------------------------------------------------------------

def _grads(seed=5, k=4, size=3 * tuning.NORM_CHUNK + 11):
    rng = np.random.default_rng(seed)
    g = rng.standard_normal((k, size)) * np.array([1e-3, 1.0, 30.0, 1e3])[:k, None]
    return g.astype(F32)


@pytest.mark.parametrize("backend", ["cpu", "numpy"])
def test_clipping_k_rows_is_clipping_each_row_alone(backend):
    g = _grads()
    max_norm = np.array([1.0, 1e9, 5.0, 2.0])  # row 1 stays as it is
    batched = g.copy()
    norms = optim.clip_grad_norm(batched, max_norm, backend=backend)
    assert norms.shape == (4,) and norms.dtype == np.float64
    for k in range(4):
        row = g[k].copy()
        assert norms[k] == optim.clip_grad_norm(row, max_norm[k], backend=backend)
        np.testing.assert_array_equal(batched[k], row)
    np.testing.assert_array_equal(batched[1], g[1])
    one = g.copy()
    np.testing.assert_array_equal(optim.clip_grad_norm(one, 2.0, backend=backend),
                                  optim.clip_grad_norm(g.copy(), np.full(4, 2.0), backend=backend))


def test_a_diverged_model_does_not_touch_the_others():
    g = _grads(size=100)
    g[1, 3] = np.nan
    g[2, 5] = np.inf
    with np.errstate(all="ignore"):
        norms = optim.clip_grad_norm(g, 1.0)
    assert np.isnan(norms[1]) and np.isinf(norms[2]) and np.isfinite(norms[[0, 3]]).all()
    assert np.isnan(g[1, 3]) and np.isfinite(np.delete(g[1], 3)).all()  # NaN norm: untouched
    assert (np.delete(g[2], 5) == 0).all()  # inf norm: scaled by 0, as torch
    assert np.linalg.norm(g[3].astype(np.float64)) == pytest.approx(1.0, rel=1e-5)


def test_clip_by_value_clamps_every_row():
    g = _grads(size=10)
    optim.clip_grad_value(g, 0.5)
    assert np.abs(g).max() == np.float32(0.5) and g.shape == (4, 10)


@pytest.mark.cuda
def test_cuda_clipping_of_k_rows_matches_the_host(monkeypatch):
    """Three blocks of 16 threads per row, rows over two block rows: each row's tree and
    host merge give the host's norm, and the same clipped bits."""
    from numba import cuda

    from optbench.optim import cuda_kernels

    monkeypatch.setattr(tuning, "CUDA_THREADS_PER_BLOCK", 16)
    monkeypatch.setattr(tuning, "CUDA_MAX_BLOCKS", 3)
    monkeypatch.setattr(cuda_kernels, "MAX_GRID_Y", 2)
    g = _grads(size=150)
    d = cuda.to_device(g)
    norms = optim.clip_grad_norm(d, np.array([1.0, 1e9, 5.0, 2.0]))
    host = g.copy()
    expected = optim.clip_grad_norm(host, np.array([1.0, 1e9, 5.0, 2.0]), backend="cpu")
    np.testing.assert_allclose(norms, expected, rtol=1e-13)
    np.testing.assert_allclose(d.copy_to_host(), host, rtol=1e-7)


@pytest.mark.parametrize("call,message", [
    (lambda g: optim.clip_grad_norm(g[0], np.array([1.0])), "max_norm as an array needs (K, P) "
     "grads and K values, one per model; got max_norm of shape (1,), grads (10,)"),
    (lambda g: optim.clip_grad_norm(g, np.ones(3)), "got max_norm of shape (3,), grads (4, 10)"),
    (lambda g: optim.clip_grad_norm(g, np.array([1.0, -1.0, 1.0, 1.0])),
     "max_norm[1]=-1.0 is out of range; allowed: 0 < max_norm[1] < inf"),
    (lambda g: optim.clip_grad_norm(np.asfortranarray(g), 1.0), "grads must be contiguous"),
])
def test_bad_per_model_clipping_is_refused_before_anything_changes(call, message):
    g = _grads(size=10)
    before = g.copy()
    with pytest.raises(UsageError) as exc:
        call(g)
    assert message in str(exc.value)
    np.testing.assert_array_equal(g, before)
