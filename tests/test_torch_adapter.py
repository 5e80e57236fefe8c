"""Any torch.optim optimizer as a contestant (optbench.optim.torch_adapter).

These tests need torch (the `compare` extra, which CI installs): they skip only where torch
is absent. Tolerances:

- Against optbench's own Adam on the golden noisy quadratic (tests/test_optim_golden.py's
  problem, 300 steps): 2e-6 absolute, the bound that test justifies for the numpy reference
  against torch's single-tensor Adam (torch divides by the bias correction and uses lerp
  where optbench multiplies: a few float32 roundings apart per step, and on a contracting
  problem such differences do not grow).
- A whole cell (LSTM(8) on the adding problem, 100 steps at lr 1e-2, clipped): training
  feeds each step's parameters into the next gradient, so those few roundings per step can
  grow. Measured here: the validation curves of the two cells agree to 4e-8 relative (and
  to 2e-4 after 400 steps, once the loss has dropped by 20x and the dynamics sharpen).
  The test takes the 100-step horizon and rtol 1e-5: 250 times the measured drift, and 100
  times smaller than what a real difference in the rule moves (a bias correction left
  out, eps inside the root: 1e-3 and more after a few steps).
"""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from optim_cases import FIXTURES, GOLDEN  # noqa: E402

from optbench import matrix as mx  # noqa: E402
from optbench import optim  # noqa: E402
from optbench.cell import Cell  # noqa: E402
from optbench.errors import UsageError  # noqa: E402
from optbench.plugins import code_key  # noqa: E402
from optbench.train import run_cell  # noqa: E402

DATA = np.load(FIXTURES / "optim_golden.npz")


POINTERS = []


class RecordingSGD(torch.optim.SGD):
    """SGD that records where its parameter's and gradient's memory is."""

    def step(self, closure=None):
        p = self.param_groups[0]["params"][0]
        POINTERS.append((p.data_ptr(), p.grad.data_ptr()))
        return super().step(closure)


def quadratic(name, steps, **hparams):
    opt = optim.create(name, backend="cpu", **hparams)
    theta = DATA["theta0"].copy()
    state = opt.init(theta)
    for t in range(steps):
        grads = DATA["curvature"] * (theta - DATA["center"]) + DATA["noise"][t]
        opt.step(theta, grads.astype(np.float32), state)
    return theta


@pytest.mark.parametrize("name,torch_name,hparams", [
    ("adam", "torch.optim.Adam", {}),
    ("adam", "torch.optim.Adam", dict(lr=3e-3, betas=(0.8, 0.99), eps=1e-3, weight_decay=1e-2,
                                      amsgrad=True)),
    ("sgd", "torch.optim.SGD", dict(lr=0.01, momentum=0.9, dampening=0.1, weight_decay=1e-2)),
])
def test_torch_through_the_adapter_follows_optbench_on_the_golden_problem(name, torch_name,
                                                                          hparams):
    ours = quadratic(name, GOLDEN["steps"], **hparams)
    theirs = quadratic(torch_name, GOLDEN["steps"], **hparams)
    assert np.abs(ours - DATA["theta0"]).max() > 1e-2  # it moved: the comparison means something
    np.testing.assert_allclose(theirs, ours, rtol=1e-6, atol=2e-6)


def test_torch_adam_through_the_adapter_reproduces_the_builtin_adams_cell():
    cells = {}
    for name in ("adam", "torch.optim.Adam"):
        hp = json.loads(json.dumps(optim.create(name, backend="numpy").hparams))
        cells[name] = run_cell(Cell(task="adding", length=10, hidden=8, optimizer=name,
                                    hparams={**hp, "lr": 1e-2}, steps=100, eval_every=25,
                                    batch_size=16, code=code_key(name, "adding")))
    ours, theirs = cells["adam"], cells["torch.optim.Adam"]
    assert (theirs.outcome, theirs.steps_run) == (ours.outcome, ours.steps_run)
    for key in ("val_loss", "val_metric", "train_loss", "grad_norm"):
        a = [row[key] for row in ours.curves[1:]]
        b = [row[key] for row in theirs.curves[1:]]
        np.testing.assert_allclose(b, a, rtol=1e-5, err_msg=key)
    np.testing.assert_allclose(theirs.test_metric, ours.test_metric, rtol=1e-5)
    assert ours.curves[-1]["val_metric"] < 0.9 * ours.curves[0]["val_metric"]  # it trained


def test_params_and_grads_are_shared_with_torch_without_copies():
    POINTERS.clear()
    opt = optim.create("test_torch_adapter:RecordingSGD", lr=0.5)
    assert optim.origin("test_torch_adapter:RecordingSGD").startswith("torch adapter")
    p = np.ones(8, np.float32)
    g = np.full(8, 2.0, np.float32)
    state = opt.init(p)
    opt.step(p, g, state)
    np.testing.assert_array_equal(p, np.zeros(8, np.float32))  # 1 - 0.5 * 2, in place
    assert POINTERS == [(p.ctypes.data, g.ctypes.data)]
    opt.step(p, g, state, lr=0.25)  # a schedule's lr for this step only
    np.testing.assert_array_equal(p, np.full(8, -0.5, np.float32))
    with pytest.raises(UsageError, match="params must be the vector this state was made for"):
        opt.step(p.copy(), g, state)


def test_a_torch_table_in_a_matrix_is_tuned_like_any_optimizer():
    m = mx.expand(dict(tasks=["adding"], lengths=[6], hidden=[4], seeds=1, steps=20,
                       eval_every=10, name="t",
                       optimizers=[{"torch": "torch.optim.ASGD", "lr": 1e-2, "t0": 100.0}],
                       tuning={"lr_points": 3, "lr_decades": 2.0}))
    cells = m.cells
    assert {c.optimizer for c in cells} == {"torch.optim.ASGD"}
    assert sorted(c.lr for c in cells) == [1e-3, 1e-2, 1e-1]
    assert cells[0].hparams == {"lr": cells[0].lr, "lambd": 1e-4, "alpha": 0.75, "t0": 100.0,
                                "weight_decay": 0, "maximize": False}
    assert cells[0].code is not None  # torch's version and its module's source
    result = run_cell(cells[0])
    assert result.outcome in ("budget", "solved") and result.steps_run >= 10


@pytest.mark.parametrize("entry,message", [
    ({"torch": "torch.optim.LBFGS"}, "its step needs a closure"),
    ({"torch": "torch.optim.Nope"}, "torch.optim has no class 'Nope'"),
    ({"torch": "no_such_package.mod:Opt"}, "cannot import 'no_such_package.mod'"),
    ({"torch": "torch.optim.ASGD", "nope": 1}, "not a hyper-parameter of torch.optim.ASGD"),
    ({"torch": "torch.optim.Adam", "lr": 1e-3, "betas": [0.9, 1.5]},
     "Invalid beta parameter at index 1: 1.5"),
    ({"torch": "torch.optim.Adam", "name": "adam"}, "not both"),
])
def test_a_bad_torch_table_is_one_line(entry, message):
    with pytest.raises(UsageError) as exc:
        mx.expand(dict(tasks=["adding"], lengths=[6], optimizers=[entry], name="t"))
    assert message in str(exc.value) and "\n" not in str(exc.value)


def test_torch_optimizers_stay_on_the_host_and_step_one_model_at_a_time():
    with pytest.raises(UsageError, match="run on the host"):
        optim.create("torch.optim.Adam", backend="cuda")
    with pytest.raises(UsageError, match="no per-model hyper-parameters"):
        optim.create("torch.optim.Adam", lr=np.array([1e-3, 1e-2]))


def test_kernels_times_the_adapter_beside_torchs_step_and_the_native_one(capsys):
    from optbench.cli import main

    assert main(["kernels", "--json", "--optimizers", "adam,lion", "--sizes", "10",
                 "--repeat", "2", "--bandwidth-size", "18"]) == 0
    rows = {(r["optimizer"], r["backend"]): r for r in json.loads(capsys.readouterr().out)["rows"]}
    assert {"cpu", "torch-single", "torch-adapter"} <= {b for o, b in rows if o == "adam"}
    adapter = rows[("adam", "torch-adapter")]
    assert adapter["over_cpu_us"] == pytest.approx(
        adapter["us_per_step"] - rows[("adam", "cpu")]["us_per_step"])
    assert {b for o, b in rows if o == "lion"} == {"cpu"}  # torch.optim has no Lion
