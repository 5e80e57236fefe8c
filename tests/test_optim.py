"""The optimizer library: every optimizer x backend against the numpy reference, first steps
computed by hand, known equivalences, and the refusals of bad input.

Why the CPU kernels must equal the reference bit for bit: the element rules perform the same
float32 operations in the same order as the numpy reference, the per-step scalars are the
same Python floats rounded once to float32, and the CPU kernels are compiled without
fastmath (no FMA contraction, no reassociation). IEEE +, -, *, /, sqrt are correctly rounded,
so vector or scalar, Numba or numpy, the bits agree.
"""

import math

import numpy as np
import pytest
from optim_cases import CASE_IDS, CASES, run

from optbench import optim
from optbench.errors import UsageError
from optbench.optim import tuning

STEPS = 200


@pytest.mark.parametrize("name,hparams", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("n", [1000, tuning.CPU_SERIAL_BELOW + 3001], ids=["serial", "parallel"])
def test_cpu_kernel_equals_the_reference_bit_for_bit(name, hparams, n):
    ref_p, ref_s = run(name, hparams, "numpy", n, STEPS)
    p, s = run(name, hparams, "cpu", n, STEPS)
    np.testing.assert_array_equal(p, ref_p)
    for k in ref_s:
        np.testing.assert_array_equal(s[k], ref_s[k], err_msg=f"state {k}")


@pytest.mark.parametrize("name,hparams", CASES, ids=CASE_IDS)
def test_a_diverging_run_diverges_like_the_reference(name, hparams):
    """NaN and inf gradients, then finite ones: the CPU kernel must keep NaN where the
    reference (and torch: torch.maximum, sign) keeps it, in params and state alike."""
    first = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1.0, -1e30, 1e30], np.float32)
    out = {}
    for backend in ("numpy", "cpu"):
        opt = optim.create(name, backend=backend, **hparams)
        p = np.linspace(-2, 2, 8, dtype=np.float32)
        state = opt.init(p)
        with np.errstate(all="ignore"):
            for g in (first, np.ones(8, np.float32), np.full(8, -0.5, np.float32)):
                opt.step(p, g, state)
        out[backend] = (p, state.slots)
    np.testing.assert_array_equal(out["cpu"][0], out["numpy"][0])
    for a, b in zip(out["cpu"][1], out["numpy"][1]):
        np.testing.assert_array_equal(a, b)
    assert np.isnan(out["cpu"][0][0])  # the NaN gradient's parameter is NaN: divergence shows


@pytest.fixture
def small_cuda_grid(monkeypatch):
    """Blocks of 16 threads and at most 3 blocks: several blocks run, and each thread
    strides over more than one element, while the simulator stays quick."""
    monkeypatch.setattr(tuning, "CUDA_THREADS_PER_BLOCK", 16)
    monkeypatch.setattr(tuning, "CUDA_MAX_BLOCKS", 3)


@pytest.mark.cuda
@pytest.mark.parametrize("name,hparams", CASES, ids=CASE_IDS)
def test_cuda_kernel_matches_the_reference(name, hparams, small_cuda_grid):
    """Same rules as the CPU kernels; under the simulator the results are identical. On a GPU
    NVVM contracts a*b + c into FMAs (one rounding instead of two), so each step may differ
    by an ulp; the gradients here do not depend on the parameters, so such differences add
    up without growing: 200 steps at |param| <= ~5 stay far inside 1e-5."""
    n = 100
    ref_p, ref_s = run(name, hparams, "numpy", n, STEPS)
    p, s = run(name, hparams, "cuda", n, STEPS)
    np.testing.assert_allclose(p, ref_p, rtol=1e-5, atol=1e-5)
    for k in ref_s:
        np.testing.assert_allclose(s[k], ref_s[k], rtol=1e-5, atol=1e-7, err_msg=f"state {k}")


# --- first steps by hand ------------------------------------------------------------------

G = np.array([0.5, -2.0, 3e-3, 0.0, 7.0], np.float32)
THETA = np.array([1.0, -1.0, 0.25, 2.0, -3.0], np.float32)


def one_step(name, backend, g=G, theta=THETA, steps=1, **hp):
    opt = optim.create(name, backend=backend, **hp)
    p = theta.copy()
    state = opt.init(p)
    for _ in range(steps):
        opt.step(p, g.copy(), state)
    return p.astype(np.float64), state


G64 = G.astype(np.float64)


def sign_step(lr, eps, g=G64):
    """lr * g / (|g| + eps): the first step of Adam, Adamax and Adagrad."""
    return lr * g / (np.abs(g) + eps)


BY_HAND = {
    # Adam, step 1: m = (1-b1) g, v = (1-b2) g^2, so mhat = g and vhat = g^2.
    "adam": lambda: THETA - sign_step(1e-3, 1e-8),
    # Adamax, step 1: m = (1-b1) g, u = |g| + eps, so lr / (1 - b1) * m / u = lr g / (|g| + eps).
    "adamax": lambda: THETA - sign_step(2e-3, 1e-8),
    # Adagrad, step 1: G = g^2, lr * g / (|g| + eps).
    "adagrad": lambda: THETA - sign_step(1e-2, 1e-10),
    # RMSprop, step 1: v = (1-alpha) g^2.
    "rmsprop": lambda: THETA - 1e-2 * G / (math.sqrt(0.01) * np.abs(G.astype(np.float64)) + 1e-8),
    # SGD: theta - lr g.
    "sgd": lambda: THETA - 1e-3 * G.astype(np.float64),
    # Lion, step 1: c = (1-b1) g, so the update is -lr sign(g).
    "lion": lambda: THETA - 1e-4 * np.sign(G),
    # RAdam, steps 1-4 with beta2 = 0.999: rho_t <= 5, so theta - lr mhat = theta - lr g.
    "radam": lambda: THETA - 1e-3 * G.astype(np.float64),
}


@pytest.mark.parametrize("backend", ["numpy", "cpu"])
@pytest.mark.parametrize("name", sorted(BY_HAND))
def test_first_step_by_hand(name, backend):
    p, state = one_step(name, backend)
    np.testing.assert_allclose(p, BY_HAND[name](), rtol=2e-7, atol=1e-7)
    assert state.step == 1


def test_nadam_first_step_by_hand():
    b1, psi, lr, eps = 0.9, 4e-3, 2e-3, 1e-8
    mu1, mu2 = (b1 * (1 - 0.5 * 0.96 ** (t * psi)) for t in (1, 2))
    g = G.astype(np.float64)
    delta = np.abs(g) + eps  # sqrt(v / (1 - b2)) + eps with v = (1 - b2) g^2
    expected = THETA - lr * g / delta - lr * mu2 / (1 - mu1 * mu2) * (1 - b1) * g / delta
    for backend in ("numpy", "cpu"):
        p, state = one_step("nadam", backend)
        np.testing.assert_allclose(p, expected, rtol=2e-7, atol=1e-7)
        assert state.host["mu_product"] == np.float32(mu1)


@pytest.mark.parametrize("backend", ["numpy", "cpu"])
def test_sgd_momentum_dampening_and_nesterov_by_hand(backend):
    g1, g2 = G, G[::-1].copy()
    lr, mu, tau = 0.1, 0.9, 0.25
    opt = optim.create("sgd", backend=backend, lr=lr, momentum=mu, dampening=tau)
    p = THETA.copy()
    state = opt.init(p)
    opt.step(p, g1, state)  # the buffer starts as a copy of g1: no dampening on step 1
    np.testing.assert_allclose(p, THETA - lr * g1, rtol=1e-6)
    opt.step(p, g2, state)
    b2 = mu * g1.astype(np.float64) + (1 - tau) * g2
    np.testing.assert_allclose(state["momentum_buffer"], b2, rtol=1e-6)
    np.testing.assert_allclose(p, THETA - lr * g1 - lr * b2, rtol=1e-6, atol=1e-7)

    nes = optim.create("sgd", backend=backend, lr=lr, momentum=mu, nesterov=True)
    p = THETA.copy()
    state = nes.init(p)
    nes.step(p, g1, state)  # b = g1; update g1 + mu * b
    np.testing.assert_allclose(p, THETA - lr * (1 + mu) * g1.astype(np.float64), rtol=1e-6)


# --- equivalences ---------------------------------------------------------------------------

@pytest.mark.parametrize("backend", ["numpy", "cpu"])
def test_adamw_is_adam_with_decoupled_weight_decay(backend):
    hp = dict(lr=3e-3, weight_decay=0.05, amsgrad=True)
    p_w, s_w = run("adamw", hp, backend, 500, 50)
    p_a, s_a = run("adam", {**hp, "decoupled_weight_decay": True}, backend, 500, 50)
    np.testing.assert_array_equal(p_w, p_a)
    p_w0, _ = run("adamw", {"weight_decay": 0.0}, backend, 500, 50)
    p_a0, _ = run("adam", {}, backend, 500, 50)
    np.testing.assert_array_equal(p_w0, p_a0)  # AdamW without decay is Adam


@pytest.mark.parametrize("backend", ["numpy", "cpu"])
def test_rmsprop_is_adam_without_momentum_once_bias_correction_vanishes(backend):
    """optax's equivalence: Adam with beta1 = 0 and no bias correction is RMSprop. With
    beta2 = 0.5, Adam's bias correction sqrt(1 - beta2^t) rounds to 1 in float32 long before
    t = 60, and from there the updates match. Each step starts both from params 0, so the
    params equal minus the update; they differ only by the rounding of Adam's m = m + (g - m),
    at most an ulp of the previous m (~1e-7), times lr / sqrt(v)."""
    rng = np.random.default_rng(3)
    n, lr = 300, 1e-2
    adam = optim.create("adam", backend=backend, lr=lr, betas=(0.0, 0.5), eps=1e-8)
    rms = optim.create("rmsprop", backend=backend, lr=lr, alpha=0.5, eps=1e-8)
    pa, pr = np.zeros(n, np.float32), np.zeros(n, np.float32)
    sa, sr = adam.init(pa), rms.init(pr)
    for t in range(1, 81):
        g = rng.standard_normal(n).astype(np.float32)
        pa[:] = pr[:] = 0
        adam.step(pa, g, sa)
        rms.step(pr, g, sr)
        np.testing.assert_array_equal(sa["exp_avg_sq"], sr["square_avg"])
        if t >= 60:
            np.testing.assert_allclose(pa, pr, rtol=1e-6, atol=1e-6 * lr)


@pytest.mark.parametrize("backend", ["numpy", "cpu"])
def test_lion_without_momentum_is_sign_descent(backend):
    rng = np.random.default_rng(4)
    opt = optim.create("lion", backend=backend, lr=1e-2, betas=(0.0, 0.0))
    p = rng.standard_normal(200).astype(np.float32)
    state = opt.init(p)
    for _ in range(20):
        g = rng.standard_normal(200).astype(np.float32)
        expected = p - np.float32(1e-2) * np.sign(g)
        opt.step(p, g, state)
        np.testing.assert_array_equal(p, expected)


def test_the_optimizers_have_torchs_defaults():
    assert optim.builtin_names() == optim.names()[:9] == (
        "sgd", "adagrad", "rmsprop", "adam", "adamw", "nadam", "radam", "adamax", "lion")
    assert optim.create("adam").hparams == dict(
        lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False,
        decoupled_weight_decay=False, epsilon_hat=False)
    assert optim.create("adamw").hparams["weight_decay"] == 1e-2
    assert optim.create("adamw").hparams["decoupled_weight_decay"] is True
    assert optim.create("lion").hparams == dict(lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0)
    assert optim.create("sgd").hparams["lr"] == 1e-3
    assert optim.create("rmsprop").hparams["alpha"] == 0.99
    for name in optim.builtin_names():
        doc = optim.spec(name).doc
        assert "Keras" in doc and "=" in doc, name  # the rule, and where others differ


def test_state_slots_follow_torchs_names_and_the_options():
    p = np.zeros(4, np.float32)
    assert optim.create("adam").init(p).names == ("exp_avg", "exp_avg_sq")
    assert optim.create("adam", amsgrad=True).init(p).names == (
        "exp_avg", "exp_avg_sq", "max_exp_avg_sq")
    assert optim.create("sgd").init(p).names == ()
    assert optim.create("rmsprop", momentum=0.5, centered=True).init(p).names == (
        "square_avg", "momentum_buffer", "grad_avg")
    state = optim.create("adagrad", initial_accumulator_value=0.5).init(p)
    np.testing.assert_array_equal(state["sum"], np.full(4, 0.5, np.float32))
    with pytest.raises(KeyError, match="exp_avg"):
        state["exp_avg"]
    assert optim.create("adam").bytes_per_param == 28
    assert optim.create("sgd").bytes_per_param == 12


# --- refusals -------------------------------------------------------------------------------

@pytest.mark.parametrize("name,kwargs,message", [
    ("adan", {}, "unknown optimizer 'adan'; choose one of: sgd, adagrad"),
    ("adam", {"backend": "gpu"}, "unknown backend 'gpu'; choose one of: numpy, cpu, cuda"),
    ("adam", {"momentum": 0.9}, "unknown hyper-parameter 'momentum'; allowed: lr, betas"),
    ("adamw", {"decoupled_weight_decay": False}, "unknown hyper-parameter"),
    ("adam", {"lr": -1e-3}, "lr=-0.001 is out of range; allowed: 0.0 <= lr < inf"),
    ("adam", {"lr": float("nan")}, "lr=nan is out of range"),
    ("adam", {"lr": True}, "lr=True must be a real number, not bool"),
    ("adam", {"lr": "1e-3"}, "must be a real number, not str"),
    ("adam", {"betas": (0.9, 1.0)}, "betas[1]=1.0 is out of range; allowed: 0.0 <= betas[1] < 1.0"),
    ("adam", {"betas": (-0.1, 0.9)}, "betas[0]=-0.1 is out of range"),
    ("adam", {"betas": 0.9}, "betas=0.9 must be a pair (beta1, beta2) with 0.0 <= beta < 1.0"),
    ("adam", {"betas": (0.9, 0.99, 0.999)}, "must be a pair"),
    ("adam", {"eps": 0.0}, "eps=0.0 is out of range; allowed: 0.0 < eps < inf"),
    ("adam", {"weight_decay": -1}, "weight_decay=-1 is out of range"),
    ("adam", {"amsgrad": 1}, "amsgrad=1 must be True or False"),
    ("sgd", {"momentum": 1.0}, "momentum=1.0 is out of range; allowed: 0.0 <= momentum < 1.0"),
    ("sgd", {"nesterov": True}, "nesterov=True needs momentum > 0 and dampening = 0"),
    ("sgd", {"nesterov": True, "momentum": 0.9, "dampening": 0.1}, "needs momentum > 0"),
    ("rmsprop", {"alpha": 1.5}, "alpha=1.5 is out of range"),
    ("adagrad", {"lr_decay": -1.0}, "lr_decay=-1.0 is out of range"),
    ("adagrad", {"initial_accumulator_value": -0.1}, "initial_accumulator_value=-0.1"),
    ("nadam", {"momentum_decay": -1.0}, "momentum_decay=-1.0 is out of range"),
])
def test_bad_hyper_parameters_are_refused_in_one_line(name, kwargs, message):
    with pytest.raises(UsageError) as exc:
        optim.create(name, **kwargs)
    assert message in str(exc.value)
    assert "\n" not in str(exc.value)


def _fresh(name="adam", n=8, backend="cpu"):
    opt = optim.create(name, backend=backend)
    p = np.linspace(-1, 1, n, dtype=np.float32)
    return opt, p, opt.init(p)


@pytest.mark.parametrize("backend", ["numpy", "cpu"])
@pytest.mark.parametrize("make_args,message", [
    (lambda p, g, s: (p.astype(np.float64), g, s), "params must be float32, got float64"),
    (lambda p, g, s: (p, g.astype(np.float16), s), "grads must be float32, got float16"),
    (lambda p, g, s: (p.reshape(2, 4), g, s), "params must be one flat 1-D vector"),
    (lambda p, g, s: (p, np.repeat(g, 2)[::2], s), "grads must be contiguous"),
    (lambda p, g, s: (p, g[:4], s), "grads has 4 elements, params 8"),
    (lambda p, g, s: (list(p), g, s), "params must be a numpy.ndarray"),
    (lambda p, g, s: (p, g, optim.create("sgd", momentum=0.9).init(p)),
     "state does not belong to this adam optimizer"),
    (lambda p, g, s: (p, g, None), "state does not belong"),
    (lambda p, g, s: (p[:4], g[:4], s), "state was made for 8 params on the host; this step"),
])
def test_bad_arrays_are_refused_before_anything_changes(backend, make_args, message):
    opt, p, state = _fresh(backend=backend)
    g = np.ones_like(p)
    before = (p.copy(), [x.copy() for x in state.slots], state.step)
    with pytest.raises(UsageError, match=message):
        opt.step(*make_args(p, g, state))
    np.testing.assert_array_equal(p, before[0])
    for x, y in zip(state.slots, before[1]):
        np.testing.assert_array_equal(x, y)
    assert state.step == before[2]


def test_read_only_params_are_refused():
    opt, p, state = _fresh()
    p.flags.writeable = False
    with pytest.raises(UsageError, match="params is read-only"):
        opt.step(p, np.ones_like(p), state)
    grads = np.ones_like(p)
    grads.flags.writeable = False
    p.flags.writeable = True
    opt.step(p, grads, state)  # read-only gradients are fine: steps only read them
    assert state.step == 1


@pytest.mark.cuda
def test_cuda_backend_needs_device_arrays_and_its_own_state():
    from numba import cuda

    opt = optim.create("adam", backend="cuda")
    p = np.zeros(8, np.float32)
    with pytest.raises(UsageError, match="params must be a Numba CUDA device array"):
        opt.init(p)
    d = cuda.to_device(p)
    host_state = optim.create("adam", backend="cpu").init(p)
    with pytest.raises(UsageError, match="made for 8 params on the host; .* backend 'cuda'"):
        opt.step(d, cuda.to_device(p), host_state)


def test_cuda_without_gpu_or_simulator_says_how_to_get_either(monkeypatch):
    from numba import cuda

    monkeypatch.setattr(cuda, "is_available", lambda: False)
    with pytest.raises(UsageError) as exc:
        optim.create("adam", backend="cuda")
    msg = str(exc.value)
    assert "no CUDA GPU or driver found" in msg
    assert "pip install 'optbench[cuda]'" in msg and "NUMBA_ENABLE_CUDASIM=1" in msg
    with pytest.raises(UsageError, match="NUMBA_ENABLE_CUDASIM=1"):
        optim.clip_grad_norm(np.ones(4, np.float32), 1.0, backend="cuda")
