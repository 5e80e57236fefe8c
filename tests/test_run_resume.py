"""`python -m optbench run` end to end with the real training loop: killed, interrupted and
resumed, on every executor, the store ends equal to an uninterrupted run's."""

import os
import signal
import sqlite3
import time

import pytest

from optbench.store import FILENAME, load

from helpers import TINY_TOML, assert_same_results, run_cli

CELLS = 12  # in TINY_TOML's first wave (its results add grid points and confirmations)
# Longer cells (about 0.25 s each here instead of 15 ms) so that an interrupt sent after a
# given number of stored cells lands mid-run even when the machine is busy; the report is
# left out: it is written after the last cell, and test_report covers it.
RESUME_TOML = TINY_TOML.replace("steps = 60", "steps = 1000")
assert RESUME_TOML != TINY_TOML


def finished(directory):
    """Finished cells in the store, read as `load` would while a run writes."""
    path = os.path.join(directory, FILENAME)
    if not os.path.exists(path):
        return 0
    conn = sqlite3.connect(path, timeout=30)
    try:
        return conn.execute("SELECT COUNT(*) FROM cells WHERE finished_at IS NOT NULL").fetchone()[0]
    except sqlite3.OperationalError:  # the tables are being made
        return 0
    finally:
        conn.close()


def interrupt(directory, args, sig, after):
    """Start `run`, send `sig` once `after` more cells are stored; return (status, stderr)."""
    before = finished(directory)
    proc = run_cli(*args)
    deadline = time.monotonic() + 300
    while finished(directory) < before + after and proc.poll() is None:
        assert time.monotonic() < deadline, "the run made no progress"
        time.sleep(0.02)
    assert proc.poll() is None, f"the run ended before the interrupt:\n{proc.communicate()[1]}"
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    return proc.returncode, err


def finish(*args):
    proc = run_cli(*args)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    return out, err


@pytest.mark.slow
def test_interrupt_and_resume_equals_an_uninterrupted_run_on_every_executor(tmp_path):
    config = tmp_path / "tiny.toml"
    config.write_text(RESUME_TOML)
    a = str(tmp_path / "a")
    args = ["--config", str(config), "--out", a, "--quiet", "--no-report"]

    status, err = interrupt(a, args, signal.SIGKILL, after=2)  # no chance to clean up
    assert status == -signal.SIGKILL
    n = finished(a)
    assert 2 <= n < CELLS
    status, err = interrupt(a, args + ["--workers", "2"], signal.SIGINT, after=2)  # Ctrl-C
    assert status == 130, err
    assert err.splitlines()[-1] == (f"interrupted: {finished(a)} of {CELLS} cells are safely "
                                    f"stored in {a}/{FILENAME}; run the same command again to resume")
    assert n + 2 <= finished(a) < CELLS
    n = finished(a)
    out, err = finish(*args)
    assert f"{n} of {CELLS} cells already in the store; running the other {CELLS - n}" in err
    assert "tier tuned" in out

    b, c = str(tmp_path / "b"), str(tmp_path / "c")
    finish("--config", str(config), "--out", b, "--dask-local", "2", "--quiet", "--no-report")
    finish("--config", str(config), "--out", c, "--no-report")
    assert len(load(a).cells) == len(load(c).cells) > CELLS  # later waves ran too
    assert_same_results(a, b)
    assert_same_results(a, c)
