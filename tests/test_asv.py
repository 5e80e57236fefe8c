"""The asv suites (benchmarks/): they pass `asv check`, measure the right checkout, and
their helpers compute what the benchmarks claim."""

import dataclasses
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from benchmarks import _common, bench_compile, bench_convergence
from benchmarks.bench_optim import OptimizerStep
from optbench import optim
from optbench.cell import Cell, Result
from optbench.env import cuda_status
from optbench.tasks.adding import SOLVED_MSE

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_asv_check_passes():
    out = subprocess.run(
        [sys.executable, "-m", "asv", "check", "-E", f"existing:{sys.executable}"],
        cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0 and "No problems found" in out.stdout, out.stdout + out.stderr


@pytest.mark.parametrize("env_type", [None, "virtualenv"])
def test_existing_environment_measures_this_checkout(tmp_path, env_type):
    # Import the suite as asv does (the package alone, its parent not on sys.path), from
    # elsewhere: with an existing environment (no ASV_ENV_TYPE) this checkout's optbench
    # must come first; in an environment asv built, the installed commit's.
    code = (
        "import importlib.util, json, sys\n"
        f"init = {os.path.join(ROOT, 'benchmarks', '__init__.py')!r}\n"
        "spec = importlib.util.spec_from_file_location('benchmarks', init)\n"
        "spec.loader.exec_module(importlib.util.module_from_spec(spec))\n"
        "print(json.dumps(sys.path))\n"
        "if sys.argv[1] == 'existing':\n"
        "    import optbench; print(optbench.__file__)\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "ASV_ENV_TYPE")}
    if env_type:
        env["ASV_ENV_TYPE"] = env_type
    out = subprocess.run([sys.executable, "-c", code, env_type or "existing"], cwd=tmp_path,
                         env=env, capture_output=True, text=True, check=True).stdout
    lines = out.splitlines()
    path = json.loads(lines[0])
    if env_type:
        assert ROOT not in path
    else:
        assert path[0] == ROOT
        assert lines[1] == os.path.join(ROOT, "optbench", "__init__.py")


@pytest.mark.parametrize("backend", ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
def test_optimizer_step_is_one_step_at_the_defaults(backend):
    n = 300  # two CUDA blocks
    step, p = _common.optimizer_step("adam", backend, n)
    step()
    rng = np.random.default_rng(0)
    ref_p = rng.standard_normal(n, dtype=np.float32)
    ref_g = rng.standard_normal(n, dtype=np.float32)
    ref = optim.create("adam", backend="numpy")
    ref.step(ref_p, ref_g, ref.init(ref_p))
    got = p.copy_to_host() if backend == "cuda" else p
    np.testing.assert_allclose(got, ref_p, rtol=1e-6, atol=1e-7)


@pytest.mark.cuda
def test_cuda_step_benchmark_runs_only_on_a_gpu():
    bench = OptimizerStep()
    if cuda_status().startswith("gpu"):
        bench.setup("adam", "cuda", 1 << 10)
    else:
        with pytest.raises(NotImplementedError, match="GPU only"):
            bench.setup("adam", "cuda", 1 << 10)


def test_train_step_fits_its_batch():
    # The seed's cell, shrunk: if the step did not descend the gradient of the batch
    # it is given, the loss on that batch would not fall.
    cell = dataclasses.replace(_common.seed_cell("lstm"), length=10, hidden=8,
                               hparams={"lr": 1e-2})
    step, params = _common.train_step(cell)
    before = params.copy()
    losses = [float(step()) for _ in range(60)]
    assert not np.array_equal(params, before)
    assert losses[-1] < 0.5 * losses[0], losses


def test_seed_cell_is_the_seed_configuration():
    cell = _common.seed_cell("gru")
    assert (cell.task, cell.length, cell.batch_size, cell.hidden, cell.model) == (
        "adding", 100, 32, 128, "gru")
    assert (cell.optimizer, cell.lr) == ("adam", 1e-3)


def test_compile_probe_is_cold_then_warm():
    # A fresh cache directory compiles; a second process with it loads everything.
    runs = bench_compile.first_calls("adam")
    assert runs["cold"]["compiled"] > 0 and runs["cold"]["compile_s"] > 0
    assert runs["warm"]["compiled"] == 0


def _result(outcome, steps_to_solve=None, val_loss=0.05):
    return Result(cell=Cell(), outcome=outcome, steps_run=400, steps_to_solve=steps_to_solve,
                  val_loss=val_loss)


def test_convergence_figures_are_lower_is_better():
    bc = bench_convergence
    assert bc.steps_to_solve(_result("solved", 375, 0.004)) == 375
    assert bc.steps_to_solve(_result("budget")) == math.inf
    # Solving early counts as the threshold, never as a loss above an unsolved run's.
    assert bc.budget_loss(_result("solved", 100, 0.002)) == SOLVED_MSE
    assert bc.budget_loss(_result("budget", val_loss=0.05)) == 0.05
    assert bc.budget_loss(_result("diverged", val_loss=float("nan"))) == math.inf
    assert bc.median_or_fail([300.0, math.inf, 400.0], "x") == 400.0
    with pytest.raises(RuntimeError, match="most seeds"):
        bc.median_or_fail([300.0, math.inf, math.inf], "x")
