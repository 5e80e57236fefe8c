"""`python -m optbench run --engine lockstep`: the same stored results as a serial run
(timings aside), resumable after SIGKILL and Ctrl-C, and its options checked in one line."""

import signal

import pytest
from helpers import TINY_TOML, assert_same_results
from test_run_resume import CELLS, RESUME_TOML, finish, finished, interrupt

from optbench.cli import main
from optbench.store import FILENAME, load


def test_a_lockstep_run_stores_what_a_serial_run_stores(tmp_path, capsys):
    config = tmp_path / "tiny.toml"
    config.write_text(TINY_TOML)
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    common = ["run", "--config", str(config), "--quiet", "--no-report"]
    assert main([*common, "--out", a]) == 0
    capsys.readouterr()
    assert main([*common, "--out", b, "--engine", "lockstep", "--group-size", "5"]) == 0
    err = capsys.readouterr().err
    assert "to run in lockstep groups of up to 5 cells on the cpu" in err
    env = load(b).cells["env_json"]
    assert err.count("] adding T=8") == len(env) >= CELLS  # progress counts cells, every wave's
    assert_same_results(a, b)
    assert env.str.contains('"engine": "lockstep"').all()
    c = str(tmp_path / "c")  # whole groups on worker processes, one thread each
    assert main([*common, "--out", c, "--engine", "lockstep", "--group-size", "5",
                 "--workers", "2"]) == 0
    assert "groups of up to 5 cells on 2 local worker processes" in capsys.readouterr().err
    assert_same_results(a, c)
    assert load(c).cells["env_json"].str.contains('"lockstep_threads": 1').all()


@pytest.mark.slow
def test_a_lockstep_run_resumes_after_sigkill_and_ctrl_c(tmp_path):
    config = tmp_path / "tiny.toml"
    config.write_text(RESUME_TOML)
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    args = ["--config", str(config), "--out", a, "--quiet", "--no-report", "--engine",
            "lockstep", "--group-size", "4"]
    status, _ = interrupt(a, args, signal.SIGKILL, after=2)
    assert status == -signal.SIGKILL
    n = finished(a)
    assert 2 <= n < CELLS
    status, err = interrupt(a, args + ["--workers", "2"], signal.SIGINT, after=1)
    assert status == 130, err
    assert err.splitlines()[-1].startswith(f"interrupted: {finished(a)} of {CELLS} cells are "
                                           f"safely stored in {a}/{FILENAME}")
    n = finished(a)
    assert n < CELLS
    _, err = finish(*args)
    assert f"{n} of {CELLS} cells already in the store; running the other {CELLS - n}" in err
    finish("--config", str(config), "--out", b, "--quiet", "--no-report")
    assert_same_results(a, b)


@pytest.mark.parametrize("args, message", [
    (["--engine", "fast"], "--engine 'fast' unknown; allowed: cells, lockstep"),
    (["--device", "cuda"], "--device and --group-size are options of --engine lockstep"),
    (["--engine", "lockstep", "--device", "tpu"], "--device 'tpu' unknown; allowed: cpu, cuda"),
    (["--engine", "lockstep", "--group-size", "0"], "--group-size must be an integer from 1"),
    (["--engine", "lockstep", "--device", "cuda", "--workers", "2"],
     "--engine lockstep --device cuda runs in one process"),
    (["--engine", "lockstep", "--dask-local", "2"], "--engine lockstep runs on this machine"),
])
def test_bad_engine_options_are_one_line_and_exit_2(args, message, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["run", "smoke", *args, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"optbench run: error: {message}") and err.count("\n") == 1
    assert not out.exists()
