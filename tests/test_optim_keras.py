"""Adam with Keras's epsilon convention (epsilon_hat=True): the closed form of a constant
gradient, the CPU and CUDA kernels and the batched steps against the numpy reference, as
for every other code path of the optimizers (test_optim.py, test_optim_batched.py say
why bit for bit). Keras's own trajectories: test_keras_golden.py."""

import numpy as np
import pytest
from optim_cases import run
from test_optim_batched import (
    assert_same,
    per_model,
    run_batched,
    run_separate,
    threads,  # noqa: F401 - the serial / parallel fixture
)

from optbench import optim
from optbench.errors import UsageError
from optbench.optim import tuning

KERAS = [("adam", {"eps": 1e-7, "epsilon_hat": True}),
         ("adam", {"eps": 1e-7, "epsilon_hat": True, "amsgrad": True}),
         ("adamw", {"eps": 1e-7, "epsilon_hat": True, "weight_decay": 0.004}),
         ("adam", {"eps": 1e-7, "epsilon_hat": True, "weight_decay": 0.01, "amsgrad": True})]
IDS = ["adam", "adam-amsgrad", "adamw", "adam-l2-amsgrad"]
STEPS = 200


def constant_gradient_path(g, steps, lr=1e-3, betas=(0.9, 0.999), eps=1e-7, hat=True):
    """theta_t - theta_0 in float64 for a constant gradient g. Then m_t = (1 - beta1^t) g
    and v_t = (1 - beta2^t) g^2, so Keras's step lr sqrt(1 - beta2^t) / (1 - beta1^t) *
    m_t / (sqrt(v_t) + eps) is lr g / (|g| + eps / sqrt(1 - beta2^t)); torch's, with eps
    outside the corrected root, lr g / (|g| + eps)."""
    g = np.asarray(g, np.float64)
    total = np.zeros_like(g)
    for t in range(1, steps + 1):
        total -= lr * g / (np.abs(g) + (eps / np.sqrt(1 - betas[1]**t) if hat else eps))
    return total


@pytest.mark.parametrize("backend", ["numpy", "cpu"])
@pytest.mark.parametrize("amsgrad", [False, True])
def test_constant_gradient_follows_the_closed_form(backend, amsgrad):
    """Ten steps from theta = 0, gradients from 1e-8 (where eps decides the step) to 10.
    Everything summed has one sign per element, so float32 errors stay relative: the
    moments' recurrences round about twice a step (at most 4 t u at step t, u = 2^-24),
    the step and the sum into theta a few times more: within 100 u = 6e-6 over 10 steps.
    The torch convention's path is far from it where |g| is near eps."""
    g = np.array([1e-8, -3e-7, 1e-6, 2.5e-5, -0.5, 10.0], np.float32)
    theta = np.zeros(g.size, np.float32)
    opt = optim.create("adam", backend=backend, eps=1e-7, epsilon_hat=True, amsgrad=amsgrad)
    p = theta.copy()
    state = opt.init(p)
    for _ in range(10):
        opt.step(p, g.copy(), state)
    moved = p.astype(np.float64) - theta
    np.testing.assert_allclose(moved, constant_gradient_path(g, 10), rtol=100 * 2.0**-24)
    torch_form = constant_gradient_path(g, 10, hat=False)
    assert (np.abs(moved - torch_form) > 0.1 * np.abs(torch_form))[:3].all()


@pytest.mark.parametrize("name,hparams", KERAS, ids=IDS)
@pytest.mark.parametrize("n", [1000, tuning.CPU_SERIAL_BELOW + 3001], ids=["serial", "parallel"])
def test_cpu_kernel_equals_the_reference_bit_for_bit(name, hparams, n):
    ref_p, ref_s = run(name, hparams, "numpy", n, STEPS)
    p, s = run(name, hparams, "cpu", n, STEPS)
    np.testing.assert_array_equal(p, ref_p)
    for k in ref_s:
        np.testing.assert_array_equal(s[k], ref_s[k], err_msg=f"state {k}")


@pytest.mark.cuda
@pytest.mark.parametrize("name,hparams", KERAS[::3], ids=IDS[::3])
def test_cuda_kernel_matches_the_reference(name, hparams, monkeypatch):
    """As test_optim.py's CUDA test (same grid and tolerance, same reasons). The option
    changes only the host scalars, so the plain and the fullest path suffice."""
    monkeypatch.setattr(tuning, "CUDA_THREADS_PER_BLOCK", 16)
    monkeypatch.setattr(tuning, "CUDA_MAX_BLOCKS", 3)
    ref_p, ref_s = run(name, hparams, "numpy", 100, STEPS)
    p, s = run(name, hparams, "cuda", 100, STEPS)
    np.testing.assert_allclose(p, ref_p, rtol=1e-5, atol=1e-5)
    for k in ref_s:
        np.testing.assert_allclose(s[k], ref_s[k], rtol=1e-5, atol=1e-7, err_msg=f"state {k}")


@pytest.mark.parametrize("name,hparams", KERAS, ids=IDS)
def test_a_batched_cpu_step_is_k_separate_steps_bit_for_bit(name, hparams, threads):  # noqa: F811
    hp = per_model(name, hparams)
    assert_same(run_batched(name, hp, "cpu", 301, STEPS),
                run_separate(name, hp, "cpu", 301, STEPS))


def test_models_of_one_batch_may_differ_in_the_convention(threads):  # noqa: F811
    """epsilon_hat changes only the host scalars, not the compiled rule: a batch may mix it."""
    hp = {**per_model("adam", {"eps": 1e-7}), "epsilon_hat": np.array([True, False, True])}
    assert [m["epsilon_hat"] for m in optim.create("adam", **hp).models] == [True, False, True]
    batched = run_batched("adam", hp, "cpu", 301, 50)
    assert_same(batched, run_separate("adam", hp, "cpu", 301, 50))
    plain = run_separate("adam", {**hp, "epsilon_hat": False}, "cpu", 301, 50)
    assert not np.array_equal(batched[0][0], plain[0][0])  # the option is not ignored
    np.testing.assert_array_equal(batched[0][1], plain[0][1])


@pytest.mark.cuda
def test_a_batched_cuda_step_equals_the_1d_cuda_kernel(monkeypatch):
    monkeypatch.setattr(tuning, "CUDA_THREADS_PER_BLOCK", 16)
    monkeypatch.setattr(tuning, "CUDA_MAX_BLOCKS", 2)
    monkeypatch.setattr(tuning, "CUDA_ELEMENTS_PER_THREAD", 2)
    hp = per_model(*KERAS[1])
    assert_same(run_batched("adam", hp, "cuda", 41, 20), run_separate("adam", hp, "cuda", 41, 20))


@pytest.mark.parametrize("value", [1, "yes", None])
def test_epsilon_hat_must_be_a_bool(value):
    with pytest.raises(UsageError) as exc:
        optim.create("adam", epsilon_hat=value)
    assert f"adam: epsilon_hat={value!r} must be True or False" == str(exc.value)


def test_the_default_is_torchs_convention():
    assert optim.create("adam").hparams["epsilon_hat"] is False
    assert optim.create("adamw").hparams["epsilon_hat"] is False
    assert "epsilon_hat" in optim.spec("adam").doc
