"""Convergence quality, tracked so that a change that trains worse shows as a regression,
not only one that trains slower. Every figure is lower-is-better and is the median over
SEEDS of whole cells run by the training loop (optbench.train.run_cell).

- steps for an LSTM with Adam to solve the adding problem at T = 50 (validation MSE
  <= 0.01, checked every 25 steps);
- the validation MSE of each optimizer at its torch.optim defaults after a fixed budget
  of 400 steps of an LSTM(32) on the adding problem at T = 25.

The cells run on one Numba thread: their results do not depend on the thread count
(the kernels sum in a fixed order), one thread keeps the figures identical from machine
to machine, and these small sizes train fastest without waking workers (on a loaded
machine a parallel region waits for its slowest thread). Each benchmark runs in seconds.
"""

import math
import statistics

import numba

from optbench import optim
from optbench.cell import Cell
from optbench.tasks.adding import SOLVED_MSE

SEEDS = (0, 1, 2)


def median_or_fail(values: list[float], what: str) -> float:
    """The median of `values`, where math.inf marks a run without a figure; a median that
    is itself inf raises, which asv shows as a failed benchmark ("!" in asv compare: a
    regression)."""
    m = statistics.median(values)
    if math.isinf(m):
        raise RuntimeError(f"{what}: most seeds gave no figure: {values}")
    return float(m)


def _run(cells: list[Cell]):
    from optbench.train import run_cell

    numba.set_num_threads(1)
    return [run_cell(cell) for cell in cells]


def steps_to_solve(result) -> float:
    """The step at which the run was solved; inf if it was not."""
    return float(result.steps_to_solve) if result.outcome == "solved" else math.inf


def budget_loss(result) -> float:
    """The validation MSE when the budget ran out. A run that met the solved threshold
    stopped there (the training loop's rule) and counts as the threshold itself, so that
    solving sooner never reads as a regression; a diverged run gives inf."""
    if result.outcome == "diverged":
        return math.inf
    if result.outcome == "solved":
        return SOLVED_MSE
    return float(result.val_loss)


class AdamSolvesAdding:
    unit = "steps"
    rounds = 1
    timeout = 300

    def track_steps_to_solve(self):
        cells = [Cell(task="adding", length=50, model="lstm", hidden=32, optimizer="adam",
                      hparams={"lr": 1e-2}, seed=seed, steps=2000, eval_every=25)
                 for seed in SEEDS]
        return median_or_fail([steps_to_solve(r) for r in _run(cells)],
                              "LSTM + Adam on adding T=50, steps to solve")


class ValLossAfterBudget:
    params = [list(optim.builtin_names())]
    param_names = ["optimizer"]
    unit = "MSE"
    rounds = 1
    timeout = 300

    def track_val_loss(self, name):
        lr = optim.spec(name).defaults["lr"]
        cells = [Cell(task="adding", length=25, model="lstm", hidden=32, optimizer=name,
                      hparams={"lr": lr}, seed=seed, steps=400, eval_every=100)
                 for seed in SEEDS]
        return median_or_fail([budget_loss(r) for r in _run(cells)],
                              f"{name} on adding T=25, validation MSE after 400 steps")
