"""Executor and store mechanics with a deterministic stand-in for the training loop."""

import io
import os

import pytest

from optbench import runner
from optbench.cell import Cell
from optbench.matrix import Matrix
from optbench.store import Store

from helpers import assert_same_results, run_cell, snapshot


def _matrix(seeds=(0, 1, 2), lrs=(1e-3, 1e-2), name="fake"):
    members = tuple(
        (Cell(task="adding", length=5, hidden=4, hparams={"lr": lr}, seed=s, steps=20,
              eval_every=5), "tuned")
        for s in seeds for lr in lrs
    )
    return Matrix(name, {"tiers": ["tuned"]}, members)


def _execute(directory, executor, fn=run_cell, m=None, progress=None):
    with Store.open(str(directory)) as store:
        return runner.execute(m or _matrix(), store, executor, fn, progress)


def test_rerun_skips_finished_cells(tmp_path):
    calls = []

    def counting(cell):
        calls.append(cell.key)
        return run_cell(cell)

    m = _matrix()
    assert _execute(tmp_path, runner.Serial(), counting, m=_matrix(seeds=(0,), name="part")) == 2
    assert _execute(tmp_path, runner.Serial(), counting, m=m) == 4
    assert _execute(tmp_path, runner.Serial(), counting, m=m) == 0
    assert len(calls) == len(set(calls)) == 6
    assert_same_results(tmp_path, _reference(tmp_path.parent / "ref", m), matrix="fake")


def _reference(directory, m):
    _execute(directory, runner.Serial(), m=m)
    return directory


def test_interrupt_keeps_finished_cells_whole(tmp_path):
    seen = []

    def interrupted_at_third(cell):
        seen.append(cell)
        if len(seen) == 3:
            raise KeyboardInterrupt
        return run_cell(cell)

    m = _matrix()
    with pytest.raises(KeyboardInterrupt):
        _execute(tmp_path, runner.Serial(), interrupted_at_third, m=m)
    cells, curves, profiles, members = snapshot(tmp_path)
    assert len(cells) == 2 and set(curves.key) == set(cells.key) == set(profiles.key)
    assert members.finished.sum() == 2 and len(members) == 6
    _execute(tmp_path, runner.Serial(), m=m)
    assert_same_results(tmp_path, _reference(tmp_path.parent / "ref", m))


def test_processes_give_the_serial_results(tmp_path):
    m = _matrix()
    _execute(tmp_path / "p", runner.Processes(2), m=m)
    assert_same_results(tmp_path / "p", _reference(tmp_path / "s", m))


def test_a_dying_worker_process_costs_only_time(tmp_path, monkeypatch):
    markers = tmp_path / "markers"
    markers.mkdir()
    monkeypatch.setenv("FAKE_DIE_ONCE", str(markers))
    m = _matrix()
    assert _execute(tmp_path / "p", runner.Processes(2), m=m) == len(m.cells)
    assert len(os.listdir(markers)) == 2  # both seed-1 cells killed their worker once
    monkeypatch.delenv("FAKE_DIE_ONCE")
    assert_same_results(tmp_path / "p", _reference(tmp_path / "s", m))


def always_dies(cell):
    os._exit(1)


def test_workers_that_keep_dying_are_reported(tmp_path):
    with pytest.raises(runner.WorkerLost, match="died 3 times in a row"):
        _execute(tmp_path, runner.Processes(1), always_dies, m=_matrix(seeds=(0,)))
    with Store.open(str(tmp_path)) as store:
        assert store.finished_keys() == set()


def test_worker_threads_share_the_cores(monkeypatch):
    monkeypatch.setattr(runner, "cores", lambda: 16)
    assert runner.worker_env(4)["NUMBA_NUM_THREADS"] == "4"
    assert runner.worker_env(3)["OPENBLAS_NUM_THREADS"] == "5"
    assert runner.worker_env(32)["NUMBA_NUM_THREADS"] == "1"


def test_dask_local_cluster_gives_the_serial_results_despite_a_killed_worker(tmp_path, monkeypatch):
    markers = tmp_path / "markers"
    markers.mkdir()
    monkeypatch.setenv("FAKE_DIE_ONCE", str(markers))  # workers are spawned after this
    m = _matrix()
    assert _execute(tmp_path / "d", runner.Dask(local_workers=2), m=m) == len(m.cells)
    assert len(os.listdir(markers)) == 2
    monkeypatch.delenv("FAKE_DIE_ONCE")
    assert_same_results(tmp_path / "d", _reference(tmp_path / "s", m))


@pytest.mark.parametrize("kwargs, message", [
    ({}, "either a Dask scheduler address or a local worker count"),
    ({"address": "tcp://a:1", "local_workers": 2}, "either"),
    ({"local_workers": 0}, "--dask-local must be a positive integer; got 0"),
    ({"address": "localhost"}, "like tcp://HOST:8786"),
])
def test_bad_dask_options(kwargs, message):
    with pytest.raises(runner.UsageError, match=message):
        runner.Dask(**kwargs)


def test_unreachable_scheduler_is_a_usage_error(monkeypatch):
    monkeypatch.setattr(runner, "CONNECT_TIMEOUT_S", 1)
    with pytest.raises(runner.UsageError, match="cannot reach the Dask scheduler at tcp://127.0.0.1:9"):
        with runner.Dask(address="tcp://127.0.0.1:9"):
            pass


@pytest.mark.parametrize("n", [0, -1, "two", True])
def test_bad_worker_counts(n):
    with pytest.raises(runner.UsageError, match="--workers must be a positive integer"):
        runner.Processes(n)


def test_progress_log_lines(tmp_path):
    out = io.StringIO()
    m = _matrix(seeds=(0,))
    _execute(tmp_path, runner.Serial(), m=m, progress=runner.Progress(out, bar=False))
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and "\r" not in out.getvalue()
    assert lines[0].startswith("[1/2] adding T=5 lstm(4) adam lr=0.001 seed=0: ")
    assert lines[1].endswith("ETA 0s")
    out = io.StringIO()
    _execute(tmp_path, runner.Serial(), m=_matrix(seeds=(0, 1)),
             progress=runner.Progress(out, bar=False))
    assert out.getvalue().startswith("2 of 4 cells already in the store; running the other 2\n")


def test_progress_bar_counts(tmp_path):
    out = io.StringIO()
    m = _matrix()
    _execute(tmp_path, runner.Serial(), m=m, progress=runner.Progress(out, bar=True))
    frames = out.getvalue().split("\r")[1:]
    assert len(frames) == len(m.cells) + 1  # the empty bar, then one frame per cell
    assert frames[0].startswith("[........................] 0/6  solved 0  diverged 0  ETA ?")
    outcomes = [run_cell(c).outcome for c in m.cells]
    last = frames[-1]
    assert last.startswith("[########################] 6/6")
    assert f"solved {outcomes.count('solved')}  diverged {outcomes.count('diverged')}" in last
