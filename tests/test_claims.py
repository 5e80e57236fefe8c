"""Several runs into one results directory: each cell trained once, a dead run's claims
taken over at once, and the store as a single run leaves it (the stand-in cell runner)."""

import os
import signal
import sqlite3
import time
from collections import Counter

import pytest

from optbench import matrix as mx
from optbench import runner
from optbench.claims import RUNS_DIR, Claims
from optbench.store import FILENAME, Store, load

import helpers

CELLS = 12  # in helpers.TINY_TOML


def _reference(directory):
    m = mx.expand(helpers.toml(helpers.TINY_TOML))
    with Store.open(str(directory)) as store:
        runner.execute(m, store, runner.Serial(), helpers.run_cell)
    return directory


def _claims(directory):
    path = os.path.join(directory, FILENAME)
    if not os.path.exists(path):
        return []
    conn = sqlite3.connect(path, timeout=30)
    try:
        return conn.execute("SELECT key, run FROM claims").fetchall()
    except sqlite3.OperationalError:  # not made yet
        return []
    finally:
        conn.close()


def _trained(log):
    return Counter(line.split()[0] for line in log.read_text().splitlines())


@pytest.mark.parametrize("runs", [2, 3])
def test_concurrent_runs_train_each_cell_once_and_agree_with_one_run(tmp_path, runs):
    config = tmp_path / "tiny.toml"
    config.write_text(helpers.TINY_TOML)
    out, log = tmp_path / "out", tmp_path / "trained.log"
    env = {"FAKE_SLEEP": "0.3", "FAKE_LOG": str(log)}
    procs = [helpers.run_cli_stand_in("run", "--config", str(config), "--out", str(out),
                                      "--quiet", "--no-report", env=env) for _ in range(runs)]
    for proc in procs:  # all start at once: the store is made by one of them
        out_text, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        assert f"tiny: {CELLS} of {CELLS} cells finished" in out_text  # every run's summary
    trained = _trained(log)
    assert len(trained) == CELLS and set(trained.values()) == {1}, trained
    assert len(load(str(out)).cells) == CELLS and _claims(out) == []
    assert os.listdir(out / RUNS_DIR) == []
    helpers.assert_same_results(out, _reference(tmp_path / "ref"))


def test_a_killed_runs_claim_is_taken_over_at_once(tmp_path):
    config = tmp_path / "tiny.toml"
    config.write_text(helpers.TINY_TOML)
    out, log = tmp_path / "out", tmp_path / "trained.log"
    args = ["run", "--config", str(config), "--out", str(out), "--quiet", "--no-report"]
    first = helpers.run_cli_stand_in(*args, env={"FAKE_SLEEP": "600", "FAKE_LOG": str(log)})
    deadline = time.monotonic() + 120
    while not _claims(out):  # it has claimed its first cell and is training it
        assert first.poll() is None, first.communicate()[1]
        assert time.monotonic() < deadline, "the first run claimed nothing"
        time.sleep(0.05)
    (claimed, _), = _claims(out)
    first.send_signal(signal.SIGKILL)
    first.communicate(timeout=60)

    second = helpers.run_cli_stand_in(*args, env={"FAKE_LOG": str(log)})
    _, err = second.communicate(timeout=120)
    assert second.returncode == 0, err
    trained = _trained(log)
    assert trained[claimed] == 2 and len(trained) == CELLS  # the killed run's cell, again
    assert _claims(out) == [] and os.listdir(out / RUNS_DIR) == []
    helpers.assert_same_results(out, _reference(tmp_path / "ref"))


def test_a_live_runs_claims_are_left_to_it_and_a_dead_ones_are_taken(tmp_path):
    m = mx.expand(helpers.toml(helpers.TINY_TOML))
    cells = list(m.cells)
    with Store.open(str(tmp_path)) as store:
        store.record_matrix(m)
    path = str(tmp_path / FILENAME)
    a = Claims(str(tmp_path), path, poll_s=0.01).__enter__()
    b = Claims(str(tmp_path), path, poll_s=0.01).__enter__()
    try:
        feed_a = a.feed(cells[:2])
        assert next(feed_a) == cells[0]  # a holds cells[0]
        feed_b = b.feed(cells[:3])
        assert next(feed_b) == cells[1]
        assert next(feed_b) == cells[2]
        assert next(feed_b) is None  # only a's cell is left: nothing to start now
        assert next(feed_b) is None
        a._lock.close()  # a dies without tidying up: its lock is released by the kernel
        time.sleep(0.02)  # b looks again after its poll interval
        assert next(feed_b) == cells[0]
        assert next(feed_b, "end") == "end"
        assert {run for _, run in _claims(tmp_path)} == {b.run}
    finally:
        b.__exit__(None, None, None)
    assert _claims(tmp_path) == []


def test_a_cell_another_run_finishes_is_counted_not_run(tmp_path):
    m = mx.expand(helpers.toml(helpers.TINY_TOML))
    cells = list(m.cells)
    with Store.open(str(tmp_path)) as store:
        store.record_matrix(m)
        path = str(tmp_path / FILENAME)
        with Claims(str(tmp_path), path, poll_s=0.01) as a, \
                Claims(str(tmp_path), path, poll_s=0.01) as b:
            feed_a, feed_b = a.feed(cells[:1]), b.feed(cells[:1])
            assert next(feed_a) == cells[0]
            assert next(feed_b) is None
            store.put(helpers.run_cell(cells[0]))
            assert next(feed_b, "end") == "end" and b.others_finished == [cells[0].key]
