"""Plugins end to end, each command a fresh process as a user runs it: a TOML naming a plugin
file runs serially, on worker processes, on a Dask LocalCluster and on a Dask scheduler
and worker started here as separate processes (the worker cannot import the plugin: it
gets the file's text); all four give the same results; the store then reports where the
plugin cannot be imported; an edited plugin rule gives new cells and new results, never a
stale compiled kernel."""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import assert_same_results

from optbench.store import load

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples" / "plugins"
DASK = Path(sys.executable).parent / "dask"

TOML = """
name = "mine"
plugins = ["plugins/adabelief.py", "plugins/parity.py"]
tasks = ["adding", "parity"]
lengths = {{ adding = [6], parity = [6] }}
hidden = [4]
optimizers = ["adam", "adabelief"]
seeds = 1
steps = 20
eval_every = 10
batch_size = 8
tiers = ["defaults"]
"""


def optbench(*args, cwd, env=None, timeout=600):
    out = subprocess.run([sys.executable, "-m", "optbench", *args], cwd=cwd, text=True,
                         capture_output=True, timeout=timeout, check=False,
                         env={**os.environ, **(env or {})})
    assert out.returncode == 0, out.stderr[-3000:]
    return out


@pytest.fixture
def project(tmp_path):
    """A user's folder: mine.toml and plugins/ with the two example plugins."""
    (tmp_path / "plugins").mkdir()
    for name in ("adabelief.py", "parity.py"):
        shutil.copy(EXAMPLES / name, tmp_path / "plugins" / name)
    (tmp_path / "mine.toml").write_text(TOML.format())
    return tmp_path


@pytest.fixture
def dask_cluster(tmp_path):
    """`dask scheduler` and one `dask worker`, separate processes, the worker in a folder of
    its own (it cannot import the user's plugin files)."""
    folder = tmp_path / "worker"
    folder.mkdir()
    env = {**os.environ, "NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    env.pop("PYTHONPATH", None)
    scheduler_file = tmp_path / "scheduler.json"
    procs = [subprocess.Popen([str(DASK), "scheduler", "--host", "127.0.0.1", "--port", "0",
                               "--no-dashboard", "--scheduler-file", str(scheduler_file)],
                              cwd=folder, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)]
    try:
        for _ in range(600):
            if scheduler_file.exists() and scheduler_file.read_text().strip():
                break
            time.sleep(0.1)
        address = json.loads(scheduler_file.read_text())["address"]
        procs.append(subprocess.Popen(
            [str(DASK), "worker", address, "--nworkers", "1", "--nthreads", "1",
             "--no-dashboard", "--local-directory", str(folder)], cwd=folder, env=env,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        yield address
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()


@pytest.mark.slow
def test_a_plugin_runs_the_same_everywhere_and_reports_without_the_plugin(project,
                                                                           dask_cluster):
    optbench("run", "--config", "mine.toml", "--out", "serial", "--no-report", cwd=project)
    optbench("run", "--config", "mine.toml", "--out", "workers", "--workers", "2",
             "--no-report", cwd=project)
    optbench("run", "--config", "mine.toml", "--out", "local", "--dask-local", "2",
             "--no-report", cwd=project)
    optbench("run", "--config", "mine.toml", "--out", "remote", "--scheduler", dask_cluster,
             "--no-report", cwd=project)
    serial = load(str(project / "serial"))
    assert set(serial.cells["optimizer"]) == {"adam", "adabelief"}
    assert set(serial.cells["task"]) == {"adding", "parity"} and len(serial.cells) == 4
    for other in ("workers", "local", "remote"):
        assert_same_results(project / "serial", project / other)

    # Elsewhere, where neither plugin imports: the report, load and pick_lr.
    elsewhere = project / "elsewhere"
    elsewhere.mkdir()
    store = str(project / "serial")
    out = optbench("report", store, "--out", str(elsewhere / "mine.pdf"), cwd=elsewhere)
    assert (elsewhere / "mine.pdf").stat().st_size > 10_000, out.stderr
    table = (elsewhere / "mine" / "tables" / "defaults.md").read_text()
    assert "adabelief" in table and "parity" in table
    script = ("import optbench, json; from optbench import optim, tasks; "
              "from optbench.matrix import pick_lr; "
              f"r = optbench.load({store!r}); "
              "assert 'adabelief' not in optim.names() and 'parity' not in tasks.names(); "
              "p = pick_lr(r.tier('defaults')); "
              "print(json.dumps([sorted(r.optimizers), sorted(r.tasks), len(p), "
              "r.tasks['parity']['lengths']['6']['baseline'], "
              "r.optimizers['adabelief']['origin']]))")
    out = subprocess.run([sys.executable, "-c", script], cwd=elsewhere, text=True,
                         capture_output=True, timeout=300, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout) == [["adabelief", "adam"], ["adding", "parity"], 4, 0.5,
                                      "plugin plugins/adabelief.py"]


HELPER_PLUGIN = '''
import numpy as np
from numba.core.extending import register_jitable
from optbench import optim

f32 = np.float32


@register_jitable
def square(e):
    return e * e


def reference(p, g, state, h):
    v = state["v"]
    v *= f32(0.5)
    v += square(g)
    p -= h["lr"] * g / (np.sqrt(v) + f32(1e-3))


def rule(param, grad, v, lr, half, eps):
    v = half * v + square(grad)
    return param - lr * grad / (np.sqrt(v) + eps), v


optim.register(optim.Spec(
    name="rms_helper", defaults=dict(lr=1e-2), slots={"v": 0.0}, rule=rule,
    reference=reference,
    constants=lambda h: {"lr": f32(h["lr"]), "half": f32(0.5), "eps": f32(1e-3)}))
'''

EDITED = HELPER_PLUGIN.replace("return e * e", "return f32(2) * e * e")

STEP = """
import json, sys, numpy as np
from optbench import optim, plugins
plugins.load(sys.argv[1])
out = []
for backend in ("numpy", "cpu"):
    opt = optim.create("rms_helper", backend=backend)
    p = np.linspace(-1, 1, 64, dtype=np.float32)
    state = opt.init(p)
    for k in range(5):
        opt.step(p, np.full(64, 0.5 + k, np.float32), state)
    out.append(p.tolist())
print(json.dumps(out))
"""


@pytest.mark.slow
def test_an_edited_plugin_helper_recompiles_and_makes_new_cells(tmp_path):
    """The issue's case: a rule outside the package calls a module-level helper; the helper
    changes from e*e to 2*e*e (a float32 2). The cached CPU kernel must not be reused (its cache key hashes
    the plugin's source), so the kernel still equals the numpy reference after the edit."""
    plugin = tmp_path / "helper.py"
    script = tmp_path / "step.py"
    script.write_text(STEP)
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "cache")}
    runs = []
    for text in (HELPER_PLUGIN, EDITED):
        plugin.write_text(text)
        out = subprocess.run([sys.executable, str(script), str(plugin)], cwd=tmp_path,
                             text=True, capture_output=True, env=env, timeout=300, check=False)
        assert out.returncode == 0, out.stderr[-3000:]
        numpy_run, cpu_run = json.loads(out.stdout)
        assert cpu_run == numpy_run  # bit for bit: the kernel is the edited rule's
        runs.append(cpu_run)
    assert any(os.scandir(tmp_path / "cache"))  # the kernel was cached, and not reused
    assert not np.array_equal(runs[0], runs[1])

    # The cells: rerunning a matrix after the edit runs them again, with the new results.
    (tmp_path / "m.toml").write_text(
        'plugins = ["helper.py"]\ntasks = ["adding"]\nlengths = [6]\nhidden = [4]\n'
        'optimizers = ["rms_helper"]\nseeds = 1\nsteps = 20\neval_every = 10\n'
        'batch_size = 8\ntiers = ["defaults"]\n')
    stores = []
    for text in (HELPER_PLUGIN, EDITED):
        plugin.write_text(text)
        out = optbench("run", "--config", "m.toml", "--out", "out", "--no-report", "--quiet",
                       cwd=tmp_path)
        stores.append(load(str(tmp_path / "out"), "m").cells.set_index("key"))
    assert "0 already in" in out.stderr and "1 to run" in out.stderr
    assert len(stores[1]) == 2 and set(stores[0].index) < set(stores[1].index)
    old, new = stores[1].loc[list(stores[0].index)], stores[1].drop(stores[0].index)
    assert old["val_metric"].iloc[0] != new["val_metric"].iloc[0]
