"""Properties of the optimizers over drawn hyper-parameters and data (hypothesis)."""

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from optbench import optim
from optbench.errors import UsageError

SETTINGS = settings(max_examples=40, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])
unit = st.floats(0.0, 0.999)  # betas, momentum, alpha: [0, 1)


# How to draw each built-in hyper-parameter by its torch name. A name not listed here (a
# new optimizer's own) is drawn from the values its spec's defaults and cases use; a bool
# default makes a switch, drawn both ways.
DRAW = {
    "lr": st.floats(1e-5, 0.1),
    "eps": st.floats(1e-10, 1e-2),
    "betas": st.tuples(unit, unit),
    "momentum": st.sampled_from([0.0, 0.5, 0.9]) | unit,
    "dampening": st.sampled_from([0.0]) | st.floats(0.0, 1.0),
    "alpha": unit,
    "lr_decay": st.floats(0.0, 0.1),
    "initial_accumulator_value": st.floats(0.0, 1.0),
    "momentum_decay": st.floats(0.0, 0.05),
    "weight_decay": st.floats(0.0, 0.1),
}


@st.composite
def hparams(draw, name, weight_decay=True):
    """Valid hyper-parameters for optimizer `name`, every option drawn (a combination that
    its spec refuses, as SGD's nesterov without momentum, is drawn again)."""
    spec = optim.spec(name)
    h = {}
    for key, default in spec.defaults.items():
        if key == "weight_decay" and not weight_decay:
            h[key] = 0.0
        elif key in DRAW:
            h[key] = draw(DRAW[key])
        elif isinstance(default, bool):
            h[key] = draw(st.booleans())
        else:
            seen = [default] + [c[key] for c in spec.cases if key in c]
            h[key] = draw(st.sampled_from([tuple(v) if isinstance(v, list) else v
                                           for v in seen]))
    try:
        optim.create(name, backend="numpy", **h)
    except UsageError:
        assume(False)
    return h


def optimizer_and_hparams(weight_decay=True):
    return st.sampled_from(optim.builtin_names()).flatmap(
        lambda name: st.tuples(st.just(name), hparams(name, weight_decay)))


@SETTINGS
@given(case=optimizer_and_hparams(weight_decay=False), seed=st.integers(0, 2**32 - 1),
       steps=st.integers(1, 6))
def test_zero_gradients_from_a_fresh_state_move_nothing(case, seed, steps):
    name, h = case
    p0 = np.random.default_rng(seed).standard_normal(33).astype(np.float32)
    for backend in ("numpy", "cpu"):
        opt = optim.create(name, backend=backend, **h)
        p = p0.copy()
        state = opt.init(p)
        for _ in range(steps):
            opt.step(p, np.zeros_like(p), state)
        np.testing.assert_array_equal(p, p0, err_msg=f"{name} {h} on {backend}")


@SETTINGS
@given(case=optimizer_and_hparams(), seed=st.integers(0, 2**32 - 1), n=st.integers(1, 80),
       steps=st.integers(1, 5), decades=st.integers(-20, 20), specials=st.booleans())
def test_cpu_kernels_equal_the_reference_for_any_hyper_parameters(case, seed, n, steps, decades,
                                                                  specials):
    """Bit for bit, for gradients of any scale, with NaN, +-inf and +-0 among them: a diverging
    run must diverge the same way (NaN stays NaN through max, sign, ...)."""
    name, h = case
    rng = np.random.default_rng(seed)
    p0 = rng.standard_normal(n).astype(np.float32)
    grads = [(rng.standard_normal(n) * 10.0**decades).astype(np.float32) for _ in range(steps)]
    if specials:
        for g in grads:
            hit = rng.random(n) < 0.2
            g[hit] = rng.choice(np.array([np.nan, np.inf, -np.inf, 0.0, -0.0], np.float32),
                                hit.sum())
    out = {}
    for backend in ("numpy", "cpu"):
        opt = optim.create(name, backend=backend, **h)
        p = p0.copy()
        state = opt.init(p)
        with np.errstate(all="ignore"):
            for g in grads:
                opt.step(p, g, state)
        out[backend] = (p, state.slots)
    np.testing.assert_array_equal(out["cpu"][0], out["numpy"][0])
    for a, b in zip(out["cpu"][1], out["numpy"][1]):
        np.testing.assert_array_equal(a, b)


def adam_bound(beta1, beta2, t):
    """Cauchy-Schwarz bound on |mhat_t| / sqrt(vhat_t) for any gradients: mhat and vhat are
    weighted sums sum_i a_i g_i and sum_i b_i g_i^2, so |mhat| <= sqrt(sum_i a_i^2 / b_i)
    sqrt(vhat). It is exactly 1 at t = 1 and stays near 1 while beta1^2 << beta2; it is why
    Adam's step is "about lr" (Kingma & Ba 2015, section 2.1) but can exceed it."""
    a = [(1 - beta1) * beta1 ** (t - i) / (1 - beta1**t) for i in range(1, t + 1)]
    b = [(1 - beta2) * beta2 ** (t - i) / (1 - beta2**t) for i in range(1, t + 1)]
    return math.sqrt(sum(x * x / y for x, y in zip(a, b)))


@SETTINGS
@given(beta1=st.floats(0.0, 0.95), beta2=st.floats(0.5, 0.999), lr=st.floats(1e-4, 1e-1),
       amsgrad=st.booleans(), seed=st.integers(0, 2**32 - 1), steps=st.integers(1, 30),
       spread=st.integers(0, 12))
def test_adam_steps_are_bounded_by_about_lr(beta1, beta2, lr, amsgrad, seed, steps, spread):
    rng = np.random.default_rng(seed)
    opt = optim.create("adam", backend="cpu", lr=lr, betas=(beta1, beta2), amsgrad=amsgrad)
    p = np.zeros(64, np.float32)
    state = opt.init(p)
    for t in range(1, steps + 1):
        g = (rng.standard_normal(64) * 10.0 ** rng.uniform(-spread, spread, 64)).astype(np.float32)
        before = p.copy()
        opt.step(p, g, state)
        bound = lr * adam_bound(beta1, beta2, t)
        step = np.abs(p.astype(np.float64) - before)
        assert step.max() <= bound * (1 + 1e-5) + 2 * np.spacing(np.abs(p)).max(), (t, bound)
        if t == 1:
            assert step.max() <= lr * (1 + 1e-5) + np.spacing(np.abs(p)).max()


@SETTINGS
@given(lr=st.floats(1e-5, 1e-1), betas=st.tuples(unit, unit), seed=st.integers(0, 2**32 - 1))
def test_lion_moves_every_element_by_exactly_lr_or_not_at_all(lr, betas, seed):
    rng = np.random.default_rng(seed)
    opt = optim.create("lion", backend="cpu", lr=lr, betas=betas)
    p = np.zeros(100, np.float32)  # from 0, p - lr * sign(c) is exact
    state = opt.init(p)
    g = rng.standard_normal(100).astype(np.float32)
    g[::7] = 0.0
    opt.step(p, g, state)
    np.testing.assert_array_equal(p, -np.float32(lr) * np.sign(g))


@pytest.mark.parametrize("name", ["adam", "rmsprop", "adagrad", "adamax", "lion"])
@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), k=st.integers(-30, 30), steps=st.integers(1, 8))
def test_adaptive_updates_ignore_the_scale_of_the_gradients(name, seed, k, steps):
    """Kingma & Ba 2015, section 2.1: scaling the gradients by c leaves the update unchanged.
    For c a power of two every float32 operation scales exactly (gradients within 1e-2..1e2
    in size keep every intermediate clear of subnormals and overflow for |log2 c| <= 30), and
    with eps = 1e-30 the epsilon is absorbed in rounding, so the parameters agree bit for bit."""
    rng = np.random.default_rng(seed)
    grads = [(rng.choice([-1.0, 1.0], 50) * 10.0 ** rng.uniform(-2, 2, 50)).astype(np.float32)
             for _ in range(steps)]
    h = {} if name == "lion" else {"eps": 1e-30}
    out = []
    for c in (1.0, 2.0**k):
        opt = optim.create(name, backend="cpu", lr=1e-2, **h)
        p = np.ones(50, np.float32)
        state = opt.init(p)
        for g in grads:
            opt.step(p, g * np.float32(c), state)
        out.append(p)
    np.testing.assert_array_equal(out[0], out[1])
