"""What a cell will cost: its memory against tracemalloc's peak, and the ETA replayed on
recorded runs (tests/fixtures/cell_times_*.csv, made by tools/record_cell_times.py: every
cell of `quick` and examples/custom.toml in run order, with its one-thread CPU seconds)."""

import csv
import json
import math
import os
import tracemalloc
from dataclasses import replace

import pytest

from optbench import cost, runner
from optbench.cell import Cell, Result
from optbench.train import run_cell

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")


def recorded(name):
    """[(cell, steps_run, evaluations, seconds)] of a recorded run, in run order."""
    with open(os.path.join(FIXTURES, f"cell_times_{name}.csv")) as f:
        rows = list(csv.DictReader(f))
    out = []
    for r in rows:
        config = json.loads(r["config_json"])
        config.pop("protocol")
        out.append((Cell.from_dict(config), int(r["steps_run"]), int(r["evaluations"]),
                    float(r["cpu_s"])))
    return out


@pytest.mark.parametrize("name, cells", [("quick", 216), ("custom", 288)])
def test_the_eta_is_within_a_factor_1_5_from_a_tenth_of_the_cells_on(name, cells):
    """After 10, 20, ..., 90 % of the cells (run order), the expected time left is within a
    factor 1.5 of what the rest took, and the bound is not below the expectation. Seconds
    per cell are CPU seconds on one thread: a shared machine's wall seconds varied 3-4x
    within one recording, which says nothing about the estimate."""
    run = recorded(name)
    assert len(run) == cells
    for tenth in range(1, 10):
        k = len(run) * tenth // 10
        eta = cost.Eta()
        for cell, steps, evaluations, seconds in run[:k]:
            eta.done(cell, steps, evaluations, seconds)
        expected, bound = eta.left([cell for cell, *_ in run[k:]])
        actual = sum(seconds for *_, seconds in run[k:])
        assert 1 / 1.5 <= expected / actual <= 1.5, (tenth, expected, actual)
        assert bound >= expected


def test_a_count_of_cells_would_have_been_far_off():
    """The old ETA (seconds per finished cell times the cells left) on the custom example:
    its first tenth is the cheap adding cells, and the copy cells cost 2-4x more."""
    run = recorded("custom")
    k = len(run) // 10
    per_cell = sum(s for *_, s in run[:k]) / k
    actual = sum(s for *_, s in run[k:])
    assert per_cell * (len(run) - k) / actual < 1 / 1.5


def test_eta_uses_parallel_workers_and_knows_nothing_before_a_cell():
    cell = Cell(task="adding", length=10, hidden=8, steps=100, eval_every=50)
    eta = cost.Eta(parallel=2)
    assert all(math.isnan(x) for x in eta.left([cell]))
    eta.done(cell, 100, 3, 2.0)
    expected, bound = eta.left([cell, cell])
    assert expected == pytest.approx(2.0) and bound == pytest.approx(2.0)
    eta.done(replace(cell, seed=1), 50, 2, 1.0)  # stopped at half its budget: solved
    expected, bound = eta.left([replace(cell, seed=2)])
    assert expected < bound


def test_the_progress_line_says_the_eta_is_an_upper_bound_when_cells_stop_early():
    import io

    cells = [Cell(task="adding", length=10, hidden=8, steps=100, eval_every=50, seed=s)
             for s in range(3)]
    progress = runner.Progress(io.StringIO(), bar=False)
    progress.start(total=3, done=0, todo=cells)
    assert progress.eta() == "?"

    def solved_at_half(cell):  # 30 s of training and evaluation, 1 s compiling
        return Result(cell, "solved", steps_run=50, steps_to_solve=50,
                      curves=[{"step": 0}, {"step": 50}],
                      timings={"total_s": 31.0, "compile_s": 1.0})

    progress.update(solved_at_half(cells[0]))
    # Two cells like it: 60 s if they stop where it did, at most twice that.
    expected, bound = progress.estimate.left(cells[1:])
    assert expected == pytest.approx(60.0) and bound == pytest.approx(
        60.0 * cost.work(cells[1]) / cost.work(cells[1], 50, 2))
    assert progress.eta() == f"1m00s (at most {runner._duration(bound)})"
    progress.more = True  # a matrix whose later waves may add cells: the ETA says what it covers
    assert progress.eta() == f"1m00s (at most {runner._duration(bound)}) for this wave"
    progress.update(solved_at_half(cells[1]))
    progress.update(solved_at_half(cells[2]))
    assert progress.eta() == "0s"


CELLS = [
    Cell(task="adding", length=200, hidden=16, batch_size=64, steps=4, eval_every=2),
    Cell(task="copy", length=60, hidden=8, model="gru", batch_size=32, steps=4, eval_every=2),
    Cell(task="temporal_order_4", length=300, hidden=32, model="rnn", batch_size=16, steps=4,
         eval_every=2),
    Cell(task="adding", length=10, hidden=200, batch_size=8, steps=4, eval_every=2),
    Cell(task="adding", length=10, hidden=8, batch_size=8, steps=100, eval_every=1,
         optimizer="sgd", hparams={"lr": 1e-9}),  # never solves: 100 curve rows
]


@pytest.mark.slow
@pytest.mark.parametrize("cell", CELLS, ids=lambda c: f"{c.task}-{c.model}{c.hidden}-T{c.length}")
def test_cell_memory_estimate_bounds_what_a_cell_allocates(cell):
    """cost.cell_bytes is an upper estimate of what run_cell allocates (tracemalloc sees
    numpy's buffers), and not a wild one: within 2.5x of the peak."""
    run_cell(replace(cell, steps=2, eval_every=1))  # compile outside the measurement
    tracemalloc.start()
    try:
        run_cell(cell)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    estimate = cost.cell_bytes(cell)
    assert peak <= estimate <= 2.5 * peak, (peak, estimate)


def test_model_memory_grows_with_the_square_of_the_hidden_size():
    small, large = (cost.model_bytes("lstm", 2, h, 1) for h in (128, 1024))
    assert 60 < large / small < 68
    assert cost.params("lstm", 2, 128, 1) == 4 * 128 * (2 + 128 + 2) + 129
