"""The lockstep engine on the CPU: every member's Result is the bits of `run_cell` of that
cell on one Numba thread (timings aside), whatever the group, the thread count or the
threading layer; groups form as documented; seconds-to-solve are shares of the group's
time that add up to it."""

import os
import subprocess
import sys
from dataclasses import replace
from time import perf_counter

import numba
import pytest

from optbench.cell import Cell
from optbench.errors import UsageError
from optbench.lockstep import GROUP_FIELDS, group_key, plan, run_group
from optbench.lockstep.engine import batched_optimizer, sub_batch_key
from optbench.train import run_cell

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMINGS = ("train_s", "wall_s")


def same_as_run_cell(result, reference):
    """Everything a Result holds but its timings and environment."""
    fields = ("cell", "outcome", "steps_run", "steps_to_solve", "diverged_step", "val_loss",
              "val_metric", "test_loss", "test_metric", "grad_profiles")
    for name in fields:
        assert getattr(result, name) == getattr(reference, name), name
    def strip(rows):
        return [{k: v for k, v in r.items() if k not in TIMINGS} for r in rows]

    assert strip(result.curves) == strip(reference.curves)
    assert [r["step"] for r in result.curves] == [r["step"] for r in reference.curves]


def one_thread_run_cells(cells):
    before = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        return {c.key: run_cell(c) for c in cells}
    finally:
        numba.set_num_threads(before)


ADDING = Cell(task="adding", length=8, model="lstm", hidden=8, steps=300, eval_every=20,
              batch_size=16)
# Solved at different evaluations, diverged at step 2 (lr 30), out of budget; NAdam's host
# state and SGD's momentum across the row moves when members leave; a cosine lr schedule
# beside constant lrs in one Adam sub-batch.
COSINE = {"kind": "cosine", "warmup": 20, "final": 0.1}
MIXED = [replace(ADDING, optimizer=o, hparams=h, seed=s)
         for o, h in (("adam", {"lr": 3e-2}), ("adam", {"lr": 30.0}), ("nadam", {"lr": 1e-2}),
                      ("sgd", {"lr": 0.1}), ("sgd", {"lr": 0.3, "momentum": 0.9}),
                      ("adam", {"lr": 3e-2, "schedule": COSINE}))
         for s in (0, 1)]
# Every head with a mask and cross-entropy (copy, GRU), cross-entropy on the last step with
# element-wise clipping only (temporal order, tanh RNN), chrono init (GRU).
OTHERS = [
    replace(ADDING, task="copy", model="gru", length=5, steps=60),
    replace(ADDING, task="temporal_order_4", model="rnn", length=10, steps=60, clip_norm=None,
            clip_value=0.5),
    replace(ADDING, model="gru", length=6, steps=60, init="chrono"),
]
OPTIMIZERS = (("adam", {"lr": 1e-2}), ("rmsprop", {"lr": 1e-2, "centered": True}),
              ("adamw", {"lr": 1e-2, "weight_decay": 0.1}))


def test_every_member_is_run_cell_bit_for_bit():
    groups = [MIXED] + [[replace(b, optimizer=o, hparams=h, seed=s) for o, h in OPTIMIZERS
                         for s in (0, 2)] for b in OTHERS]
    for cells in groups:
        results = list(run_group(cells, "cpu"))
        assert sorted(r.cell.key for r in results) == sorted(c.key for c in cells)
        reference = one_thread_run_cells(cells)
        for r in results:
            same_as_run_cell(r, reference[r.cell.key])
        outcomes = {r.outcome for r in results}
        if cells is MIXED:  # the cases this group is for
            assert outcomes == {"solved", "diverged", "budget"}
            steps = [r.steps_run for r in results]
            assert steps == sorted(steps), "Results come back as members finish"


def test_results_do_not_depend_on_the_thread_count():
    cells = MIXED[:4]
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = {r.cell.key: r for r in run_group(cells, "cpu")}
    finally:
        numba.set_num_threads(before)
    for r in run_group(cells, "cpu"):
        same_as_run_cell(r, one[r.cell.key])
        assert r.env["engine"] == "lockstep" and r.env["lockstep_members"] == 4


@pytest.mark.slow
def test_the_workqueue_threading_layer_gives_the_same_bits():
    """Numba's workqueue layer aborts on concurrent parallel launches; the engine never
    makes one (a step's region runs on its helper thread while the caller only samples)."""
    code = ("import json, numba; from optbench.lockstep import run_group; "
            "from tests.test_lockstep import MIXED; "
            "rs = list(run_group(MIXED[:4], 'cpu')); "
            "print(json.dumps([numba.threading_layer()] + [[r.cell.key, r.val_loss, "
            "r.test_loss, r.steps_run] for r in rs]))")
    env = {**os.environ, "NUMBA_THREADING_LAYER": "workqueue", "NUMBA_NUM_THREADS": "2"}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=600, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    import json

    layer, *rows = json.loads(out.stdout.splitlines()[-1])
    assert layer == "workqueue"
    here = {r.cell.key: [r.cell.key, r.val_loss, r.test_loss, r.steps_run]
            for r in run_group(MIXED[:4], "cpu")}
    assert rows == [here[row[0]] for row in rows]


def test_seconds_to_solve_are_shares_that_add_up_to_the_group_time():
    started = perf_counter()
    results = list(run_group(MIXED, "cpu"))
    wall = perf_counter() - started
    total = sum(r.timings["total_s"] for r in results)
    assert 0.5 * wall <= total <= wall  # the shares cover the group's phases, nothing twice
    for r in results:
        t = r.timings
        assert t["total_s"] >= t["compile_s"] + t["train_s"] + t["eval_s"] - 1e-12
        trains = [row["train_s"] for row in r.curves]
        assert trains == sorted(trains) and trains[-1] == pytest.approx(t["train_s"])
        assert all(row["wall_s"] >= row["train_s"] for row in r.curves)
        if r.outcome == "solved":
            assert r.seconds_to_solve == next(row["train_s"] for row in r.curves
                                              if row["step"] == r.steps_to_solve)
    # A member that ran longer was charged more: shares follow the steps each one ran.
    longest = max(results, key=lambda r: r.steps_run)
    shortest = min(results, key=lambda r: r.steps_run)
    assert longest.timings["train_s"] > shortest.timings["train_s"]


def test_plan_groups_cells_that_share_a_step_and_keeps_their_order():
    cells = [replace(ADDING, seed=s, hidden=h, optimizer=o)
             for s in range(3) for h in (8, 16) for o in ("adam", "sgd")]
    groups = plan(cells, max_members=4)
    assert [len(g) for g in groups] == [4, 2, 4, 2]
    for g in groups:
        assert len({group_key(c) for c in g}) == 1
        assert g == sorted(g, key=cells.index)
    assert sorted(c.key for g in groups for c in g) == sorted(c.key for c in cells)
    assert "init" in GROUP_FIELDS and "seed" not in GROUP_FIELDS


def test_sub_batches_follow_the_compiled_switches():
    adam = replace(ADDING, optimizer="adam", hparams={"lr": 1e-3})
    assert sub_batch_key(adam) == sub_batch_key(replace(adam, hparams={"lr": 0.1}))
    assert sub_batch_key(adam) != sub_batch_key(replace(adam, hparams={"lr": 0.1,
                                                                       "amsgrad": True}))
    sgd = replace(ADDING, optimizer="sgd", hparams={"lr": 0.1})
    assert sub_batch_key(sgd) != sub_batch_key(replace(sgd, hparams={"lr": 0.1,
                                                                     "momentum": 0.9}))
    opt = batched_optimizer([adam, replace(adam, hparams={"lr": 0.1, "betas": [0.8, 0.9]})],
                            "cpu")
    assert list(opt.hparams["lr"]) == [1e-3, 0.1]
    assert opt.hparams["betas"].tolist() == [[0.9, 0.999], [0.8, 0.9]]


def test_bad_groups_are_refused_before_any_work():
    with pytest.raises(UsageError, match="must share task, length"):
        list(run_group([ADDING, replace(ADDING, hidden=16)], "cpu"))
    with pytest.raises(UsageError, match="unknown device 'tpu'; allowed: cpu, cuda"):
        list(run_group([ADDING], "tpu"))
    with pytest.raises(UsageError, match="unknown optimizer 'adan'"):
        list(run_group([ADDING, replace(ADDING, optimizer="adan")], "cpu"))
