"""Learning-rate schedules: the factors by hand, a step's lr on every optimizer equal to an
optimizer made with that lr, the TOML keys and their refusals, cell keys (none changed
for cells without a schedule), the training loop's lr per step, and the report's label."""

import json
import math

import numpy as np
import pytest
from optim_cases import CASE_IDS, CASES, gradients

from optbench import matrix as mx
from optbench import optim, schedules
from optbench.errors import UsageError
from optbench.optim.optimizer import Optimizer
from optbench.train import run_cell


def test_the_factors_by_hand():
    f = schedules.factor
    warm = schedules.normalise({"kind": "warmup", "warmup": 4})
    assert [f(warm, t, 10) for t in (1, 2, 4, 5, 10)] == [0.25, 0.5, 1.0, 1.0, 1.0]
    cos = schedules.normalise({"kind": "cosine", "warmup": 2, "final": 0.1})
    assert [f(cos, t, 12) for t in (1, 2)] == [0.5, 1.0]
    assert f(cos, 12, 12) == pytest.approx(0.1)  # the last step: final x the peak
    assert f(cos, 7, 12) == pytest.approx(0.1 + 0.9 * 0.5)  # half way: the middle
    assert f(cos, 3, 12) == pytest.approx(0.1 + 0.9 * (1 + math.cos(math.pi / 10)) / 2)
    step = schedules.normalise({"kind": "step", "every": 3, "gamma": 0.5})
    assert [f(step, t, 10) for t in range(1, 8)] == [1, 1, 1, 0.5, 0.5, 0.5, 0.25]
    assert f(None, 5, 10) == 1.0
    assert schedules.normalise("constant") is None and schedules.normalise(None) is None
    assert schedules.normalise("cosine") == {"kind": "cosine", "warmup": 0, "final": 0.0}


@pytest.mark.parametrize("value,message", [
    ("linear", "unknown kind 'linear'; allowed: constant, warmup, cosine, step"),
    ({"kind": "step"}, "step needs `every`"),
    ({"kind": "warmup"}, "warmup needs `warmup`"),
    ({"kind": "cosine", "warmup": -1}, "warmup must be an integer >= 0"),
    ({"kind": "cosine", "warmup": 2.5}, "warmup must be an integer >= 0"),
    ({"kind": "cosine", "final": 2}, "0 <= final <= 1"),
    ({"kind": "step", "every": 10, "gamma": 0}, "0 < gamma <= 1"),
    ({"kind": "cosine", "period": 5}, "cosine has no parameter 'period'; allowed: warmup, final"),
    (3, "a schedule is a kind"),
])
def test_bad_schedules_are_one_line(value, message):
    with pytest.raises(UsageError) as exc:
        schedules.normalise(value)
    assert message in str(exc.value) and "\n" not in str(exc.value)


@pytest.mark.parametrize("name,hparams", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("backend", ["numpy", "cpu"])
def test_a_steps_lr_equals_an_optimizer_made_with_that_lr(name, hparams, backend):
    """Every scalar that depends on lr (AdamW's decay 1 - lr wd, SGD's lr, Adam's step size)
    is recomputed on the host for the step's lr: bit for bit the optimizer made with it."""
    rates = [1e-3, 3e-2, 0.0, 7e-3]
    rng = np.random.default_rng(0)
    grads = [gradients(rng, 300) for _ in rates]
    p0 = rng.standard_normal(300).astype(np.float32)
    sched = optim.create(name, backend=backend, **hparams)
    p = p0.copy()
    state = sched.init(p)
    fixed = [optim.create(name, backend=backend, **{**hparams, "lr": lr}) for lr in rates]
    q = p0.copy()
    other = fixed[0].init(q)  # one state, stepped by the optimizer of each step's lr
    for k, (lr, g) in enumerate(zip(rates, grads)):
        sched.step(p, g, state, lr=lr)
        fixed[k].step(q, g, other)
        np.testing.assert_array_equal(p, q, err_msg=f"step {k + 1}, lr {lr}")
        for a, b in zip(state.slots, other.slots):
            np.testing.assert_array_equal(a, b)


def test_the_batched_step_takes_one_lr_per_model():
    opt = optim.create("adamw", backend="cpu")
    p = np.ones((3, 40), np.float32)
    state = opt.init(p)
    opt.step(p, np.full((3, 40), 0.5, np.float32), state, lr=np.array([1e-3, 0.0, 1e-2]))
    assert p[1, 0] == 1.0 and p[0, 0] < 1.0 and p[2, 0] < p[0, 0]


def _config(**changes):
    return {**dict(name="s", tasks=["adding"], lengths=[6], hidden=[4], optimizers=["adam"],
                   seeds=1, steps=30, eval_every=10, tiers=["defaults"]), **changes}


def test_schedules_in_the_config_are_cell_settings_in_the_key():
    plain = mx.expand(_config()).cells[0]
    assert "schedule" not in plain.hparams
    assert mx.expand(_config(schedule="constant")).cells[0].key == plain.key
    top = mx.expand(_config(schedule={"kind": "cosine", "warmup": 5})).cells[0]
    assert top.hparams["schedule"] == {"kind": "cosine", "warmup": 5, "final": 0.0}
    assert top.key != plain.key
    table = mx.expand(_config(schedule="cosine", optimizers=[
        {"name": "adam"}, {"name": "adam", "schedule": {"kind": "step", "every": 10}},
        {"name": "sgd", "schedule": "constant"}])).cells
    assert [c.hparams.get("schedule", {}).get("kind") for c in table] == ["cosine", "step", None]
    assert table[2].key == mx.expand(_config(optimizers=["sgd"])).cells[0].key
    variants = [mx.variant(json.dumps(c.to_dict()["hparams"])) for c in table[:2]]
    assert [mx.label("adam", v) for v in variants] == [
        "adam(schedule=cosine)", "adam(schedule=step(every=10))"]


@pytest.mark.parametrize("changes,message", [
    ({"schedule": "fast"}, "test: schedule: unknown kind 'fast'"),
    ({"optimizers": [{"name": "adam", "schedule": {"kind": "step"}}]},
     "test: optimizers[0].schedule: step needs `every`"),
    ({"schedule": {"kind": "cosine", "warmup": 30}},
     "test: schedule: warmup 30 leaves no step of the cosine decay within the budget of 30"),
])
def test_bad_schedules_in_a_config_name_the_key(changes, message):
    with pytest.raises(UsageError) as exc:
        mx.expand(_config(**changes), source="test")
    assert message in str(exc.value) and "\n" not in str(exc.value)


def test_the_loop_steps_with_the_scheduled_lr_and_no_schedule_keeps_the_results(monkeypatch):
    seen = []
    step = Optimizer.step

    def recording(self, params, grads, state, lr=None):
        seen.append(lr)
        return step(self, params, grads, state, lr=lr)

    monkeypatch.setattr(Optimizer, "step", recording)
    base = mx.expand(_config(steps=10, eval_every=5)).cells[0]
    cell = mx.expand(_config(steps=10, eval_every=5,
                             schedule={"kind": "step", "every": 4, "gamma": 0.5})).cells[0]
    plain = run_cell(base)
    assert seen[1:] == [None] * 10  # after the warm-up's step: the optimizer's own lr
    seen.clear()
    scheduled = run_cell(cell)
    assert seen[1:] == [1e-3] * 4 + [5e-4] * 4 + [2.5e-4] * 2
    assert scheduled.curves[0]["val_loss"] == plain.curves[0]["val_loss"]  # the same start
    assert scheduled.val_loss != plain.val_loss
    # gamma = 1: the scheduled lr equals the lr at every step, so the bits equal the plain run
    same = mx.expand(_config(steps=10, eval_every=5,
                             schedule={"kind": "step", "every": 4, "gamma": 1.0})).cells[0]
    again = run_cell(same)
    assert [r["val_loss"] for r in again.curves] == [r["val_loss"] for r in plain.curves]
