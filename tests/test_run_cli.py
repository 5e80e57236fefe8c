"""`python -m optbench run`: its bad-input refusals and its plan."""

import sqlite3

import pytest
from helpers import TINY_TOML, run_cli

from optbench.cli import main
from optbench.matrix import PRESETS, expand
from optbench.store import FILENAME, Store, load


@pytest.mark.parametrize("args, message", [
    (["fast"], "unknown preset 'fast'; allowed: smoke, quick, standard, full, seed"),
    (["smoke", "--config", "x.toml"], "give a PRESET or --config FILE, not both"),
    (["--config", "nowhere.toml"], "cannot read config 'nowhere.toml'"),
    (["smoke", "--workers", "0"], "--workers must be a positive integer; got 0"),
    (["smoke", "--workers", "two"], "--workers must be a positive integer; got 'two'"),
    (["smoke", "--dask-local", "-1"], "--dask-local must be a positive integer; got -1"),
    (["smoke", "--workers", "2", "--dask-local", "2"], "--workers runs local processes; it does not combine"),
    (["smoke", "--scheduler", "localhost:8786"], "--scheduler wants an address like tcp://"),
])
def test_bad_input_is_one_line_and_exit_2(args, message, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["run", *args, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"optbench run: error: {message}") and err.count("\n") == 1
    assert not out.exists()  # refused before any work


def test_bad_toml_names_the_key(tmp_path, capsys):
    config = tmp_path / "c.toml"
    config.write_text(TINY_TOML.replace('["adam", "sgd"]', '["adam", "sgdd"]'))
    assert main(["run", "--config", str(config), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "optimizers[1].name: unknown 'sgdd'; allowed: " in err and "adam" in err
    config.write_text(TINY_TOML.replace("[tuning]", "[tunning]"))
    assert main(["run", "--config", str(config), "--out", str(tmp_path / "o")]) == 2
    assert "tunning: unknown key" in capsys.readouterr().err


def test_unwritable_out_and_incompatible_store(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    assert main(["run", "smoke", "--out", str(tmp_path / "file")]) == 2
    assert "exists and is not a directory" in capsys.readouterr().err
    old = tmp_path / "old"
    Store.open(str(old)).close()
    with sqlite3.connect(old / FILENAME) as conn:
        conn.execute("UPDATE meta SET value = '0' WHERE name = 'schema'")
    conn.close()
    capsys.readouterr()
    assert main(["run", "smoke", "--out", str(old)]) == 2
    assert "was written by an incompatible optbench" in capsys.readouterr().err


def test_bad_input_in_a_real_process_has_no_traceback(tmp_path):
    proc = run_cli("smoke", "--workers", "0", "--out", str(tmp_path / "o"))
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and out == ""
    assert err == "optbench run: error: --workers must be a positive integer; got 0\n"


def test_dry_run_prints_the_plan_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "new" / "results"
    assert main(["run", "smoke", "--out", str(out), "--dry-run"]) == 0
    err = capsys.readouterr().err
    assert err.startswith("matrix smoke: ") and "0 already in" in err
    assert err.count("\n") == 1 and " to run " in err
    assert not (tmp_path / "new").exists()  # no directory, no store
    with Store.open(str(out)) as store:  # a store that holds cells: counted, not changed
        store.record_matrix(expand({"name": "smoke", **PRESETS["smoke"]}))
    before = (out / FILENAME).read_bytes()
    assert main(["run", "smoke", "--out", str(out), "--dry-run"]) == 0
    assert "0 already in" in capsys.readouterr().err
    assert (out / FILENAME).read_bytes() == before
    assert load(str(out)).cells.empty


@pytest.mark.parametrize("busy, warned", [(0.1, False), (1.2, True), (None, False)])
def test_a_busy_machine_gets_a_note_about_numba_threads(busy, warned):
    from optbench import machine

    plan = machine.choose(10, 2, busy, threads=2)  # two threads asked for on two cores
    assert plan.workers == 0 and plan.threads == 2
    assert ("NUMBA_NUM_THREADS=1" in plan.describe()) is warned
    assert "\n" not in plan.describe()


def test_busy_cores_sees_a_process_that_spins():
    import subprocess
    import sys

    from optbench import machine

    spin = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        busy = machine.busy_cores(seconds=0.5)
    finally:
        spin.kill()
        spin.wait()
    assert busy is not None and busy >= 0.7, busy
