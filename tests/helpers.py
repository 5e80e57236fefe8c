"""Test helpers: a store snapshot for comparisons, a tiny matrix, the CLI as a subprocess,
and `run_cell`, a cheap deterministic stand-in for `optbench.train.run_cell` for the store
and executor mechanics (the end-to-end tests use the real one).

The stand-in's figures are a function of the cell's key only. FAKE_DIE_ONCE=DIR in the
environment (inherited by spawned workers) makes the first attempt at each cell whose seed
is 1 kill its own process (a worker dying mid-cell), leaving a marker in DIR. FAKE_SLEEP=S
makes each cell take S seconds more, and FAKE_LOG=FILE appends each cell's key there when
it starts (so tests can count how often a cell was trained).

`run_cli_stand_in(*args)` is `python -m optbench ARGS` in a subprocess whose cells are run by
the stand-in (in that process: the run must choose to stay in it, as it does for cells as
cheap as TINY_TOML's).
"""

import os
import signal
import subprocess
import sys
import time

import numpy as np

from optbench.cell import Result
from optbench.store import load

# What may differ between two runs of the same cells: how long they took, when and where.
VOLATILE_CURVES = ["train_s", "wall_s"]
VOLATILE = ["seconds_to_solve", "timings_json", "env_json", "finished_at", "compile_s", "train_s", "eval_s", "total_s"]


def assert_sum_within_bound(actual, a, b, c0=None, transpose_a=False):
    """`actual` equals c0 + a @ b (a.T @ b with `transpose_a`) within the worst-case
    rounding error of a sum of K products in `actual`'s precision, summed in any order,
    with or without FMA (Higham, Accuracy and Stability, eq. 3.5):
    |computed - exact| <= gamma_{K+1} (|a| @ |b| + |c0|), gamma_n = n u / (1 - n u).
    An element-wise rtol fails on any machine where an element nearly cancels; this
    bound scales with the magnitudes that were summed instead. The exact sum is taken
    in float64 from the same (already rounded) inputs; for float64 data that reference
    is itself rounded, so the bound is doubled."""
    a64 = np.asarray(a, np.float64)
    a64 = a64.T if transpose_a else a64
    b64 = np.asarray(b, np.float64)
    exact = a64 @ b64
    size = np.abs(a64) @ np.abs(b64)
    if c0 is not None:
        exact = exact + np.asarray(c0, np.float64)
        size = size + np.abs(np.asarray(c0, np.float64))
    dtype = np.asarray(actual).dtype
    u = np.finfo(dtype).eps / 2
    n = a64.shape[1] + 1
    gamma = n * u / (1 - n * u) * (2 if dtype == np.float64 else 1)
    err = np.abs(np.asarray(actual, np.float64) - exact)
    bound = gamma * size + np.finfo(dtype).tiny
    worst = np.unravel_index(np.argmax(err - bound), err.shape)
    assert (err <= bound).all(), (
        f"error {err[worst]:.3g} at {worst} above the rounding bound {bound[worst]:.3g} "
        f"(sum of {n - 1} products, magnitude {size[worst]:.3g})")


def snapshot(directory, matrix=None):
    """The store's results without timings and environment, sorted: equal for equal results."""
    r = load(str(directory), matrix)
    cells = r.cells.drop(columns=VOLATILE).sort_values("key").reset_index(drop=True)
    curves = r.curves.drop(columns=VOLATILE_CURVES, errors="ignore").sort_values(["key", "step"]).reset_index(drop=True)
    members = r.members.sort_values(["key", "tier"]).reset_index(drop=True)
    return cells, curves, r.grad_profiles, members[["matrix", "tier", "key", "finished"]]


def assert_same_results(a, b, matrix=None):
    import pandas as pd

    for x, y in zip(snapshot(a, matrix), snapshot(b, matrix)):
        pd.testing.assert_frame_equal(x, y, check_exact=True)


# A tiny matrix: 2 seeds x 2 optimizers x 3 learning rates = 12 cells (the defaults cell is
# the grid's centre), each a fraction of a second once compiled.
TINY_TOML = """
name = "tiny"
tasks = ["adding"]
lengths = [8]
hidden = [8]
optimizers = ["adam", "sgd"]
seeds = 2
steps = 60
eval_every = 20
batch_size = 16
[tuning]
lr_points = 3
"""
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def toml(text: str) -> dict:
    """TOML text as a dict (tomllib from Python 3.11, tomli before)."""
    try:
        import tomllib
    except ModuleNotFoundError:
        import tomli as tomllib
    return tomllib.loads(text)


def _default_sigint():
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run_cli(*args, env=None):
    """`python -m optbench run ARGS` as a subprocess of this checkout, pipes open, with
    Ctrl-C's signal at its default disposition, as in a terminal's foreground job: a shell
    without job control starts background jobs (`.ci/run &`, say) with SIGINT ignored,
    Python then installs no KeyboardInterrupt handler, and its children inherit that."""
    return subprocess.Popen(
        [sys.executable, "-m", "optbench", "run", *args], cwd=ROOT, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=_default_sigint,
        env=None if env is None else {**os.environ, **env},
    )


STAND_IN = ("import sys; sys.path.insert(0, {tests!r}); import helpers, optbench.train; "
            "optbench.train.run_cell = helpers.run_cell; from optbench.cli import main; "
            "sys.exit(main(sys.argv[1:]))")


def run_cli_stand_in(*args, env=None):
    return subprocess.Popen(
        [sys.executable, "-c", STAND_IN.format(tests=os.path.join(ROOT, "tests")), *args],
        cwd=ROOT, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        preexec_fn=_default_sigint, env={**os.environ, **(env or {})},
    )


def run_cell(cell):
    log = os.environ.get("FAKE_LOG")
    if log:
        with open(log, "a") as f:
            f.write(f"{cell.key} {os.getpid()}\n")
    if os.environ.get("FAKE_SLEEP"):
        time.sleep(float(os.environ["FAKE_SLEEP"]))
    die = os.environ.get("FAKE_DIE_ONCE")
    if die and cell.seed == 1:
        marker = os.path.join(die, cell.key)
        if not os.path.exists(marker):
            open(marker, "w").close()
            os._exit(1)
    rng = np.random.default_rng(int(cell.key[:12], 16))
    val = [float(v) for v in np.sort(rng.random(4))[::-1] * cell.lr * 100]
    outcome = ("solved", "budget", "diverged")[int(rng.integers(3))]
    curves = [
        {"step": (i + 1) * cell.eval_every, "train_loss": v * 1.1, "val_loss": v,
         "val_metric": v, "grad_norm": float(rng.random()), "wall_s": 0.01 * (i + 1)}
        for i, v in enumerate(val)
    ]
    if outcome == "diverged":
        curves[-1]["train_loss"] = float("nan")
    return Result(
        cell=cell, outcome=outcome, steps_run=4 * cell.eval_every,
        steps_to_solve=4 * cell.eval_every if outcome == "solved" else None,
        seconds_to_solve=0.04 if outcome == "solved" else None,
        diverged_step=4 * cell.eval_every if outcome == "diverged" else None,
        val_loss=val[-1], val_metric=float("nan") if outcome == "diverged" else val[-1],
        test_loss=val[-1] * 1.05, test_metric=val[-1] * 1.05,
        curves=curves,
        grad_profiles=[{"step": 0, "norms": [float(x) for x in rng.random(cell.length)]}],
        timings={"compile_s": 0.0, "train_s": 0.01, "eval_s": 0.001, "total_s": 0.011},
        env={"pid": os.getpid()},
    )
