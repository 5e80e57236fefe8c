"""Every bad input is refused before any work: one line, exit status 2 (UsageError from the
Python API), no traceback, and the results directory exactly as it was.

Each CLI case runs `optbench.cli.main` in this process against a directory that already
holds a store with finished cells; the directory's files (names and bytes) are compared
before and after, and nothing may be added (no report, no run registration, no store in
a directory that had none). A few cases run as real processes, to see what a user sees.
"""

import hashlib
import os
import pathlib
import sqlite3
import subprocess
import sys

import numpy as np
import pytest

from optbench import matrix as mx
from optbench import nn, optim, runner, tasks
from optbench.cli import main
from optbench.errors import UsageError
from optbench.store import FILENAME, Store, load

import helpers

GOOD = """
name = "tiny"
tasks = ["adding"]
lengths = [8]
hidden = [8]
optimizers = ["adam"]
seeds = 1
steps = 40
eval_every = 20
batch_size = 8
"""


def toml(**changes) -> str:
    """GOOD with top-level keys replaced (values as TOML text)."""
    lines = [line for line in GOOD.strip().splitlines()
             if line.split(" = ")[0] not in changes]
    return "\n".join([f"{k} = {v}" for k, v in changes.items()] + lines) + "\n"


def snapshot(directory) -> dict:
    """Every file under `directory` (SQLite's -wal / -shm aside: they come and go with
    readers) and its bytes' hash."""
    out = {}
    for root, dirs, files in os.walk(directory):
        for name in dirs + files:
            path = os.path.join(root, name)
            if name.endswith(("-wal", "-shm")):
                continue
            rel = os.path.relpath(path, directory)
            out[rel] = (hashlib.sha256(pathlib.Path(path).read_bytes()).hexdigest()
                        if os.path.isfile(path) else "dir")
    return out


@pytest.fixture(scope="module")
def filled(tmp_path_factory):
    """A results directory holding the tiny matrix, finished (the stand-in cell runner)."""
    d = tmp_path_factory.mktemp("filled")
    m = mx.expand(_parse(GOOD))
    with Store.open(str(d)) as store:
        store.record_matrix(m)
        for cell in m.cells:
            store.put(helpers.run_cell(cell))
    return d


def _parse(text):
    return helpers.toml(text)


def _damage(path, how):
    path = pathlib.Path(path)
    if how == "garbage":  # pages in the middle overwritten
        data = bytearray(path.read_bytes())
        data[4096:4096 * 3] = os.urandom(4096 * 2)
        path.write_bytes(bytes(data))
    elif how == "text":
        path.write_text("this is not a database\n" * 100)
    elif how in ("schema", "protocol"):
        conn = sqlite3.connect(path)
        conn.execute(f"UPDATE meta SET value = '0' WHERE name = '{how}'")
        conn.commit()
        conn.close()


# (id, setup, argv, message): setup is None (an empty --out under tmp_path), "store" (a
# copy of `filled`), or "store:HOW" (a copy, damaged). {out} and {cfg} in argv are
# replaced by the directory and by a config file holding the case's TOML (`cfg=` cases).
CLI = [
    ("unknown-preset", "store", ["run", "fast", "--out", "{out}"], "unknown preset 'fast'"),
    ("preset-and-config", "store", ["run", "smoke", "--config", "{cfg}", "--out", "{out}"],
     "give a PRESET or --config FILE, not both"),
    ("config-missing", "store", ["run", "--config", "{out}/nowhere.toml", "--out", "{out}"],
     "cannot read config"),
    ("config-directory", "store", ["run", "--config", "{out}", "--out", "{out}"],
     "cannot read config"),
    ("config-not-utf8", "store", ["run", "--config", "{cfg}", "--out", "{out}"],
     "is not UTF-8 text"),
    ("config-not-toml", "store", ["run", "--config", "{cfg}", "--out", "{out}"],
     "is not valid TOML"),
    ("extra-positional", "store", ["run", "smoke", "quick", "--out", "{out}"],
     "unrecognized arguments: quick"),
    ("unknown-option", "store", ["run", "smoke", "--bogus", "--out", "{out}"],
     "unrecognized arguments: --bogus"),
    ("option-without-value", "store", ["run", "smoke", "--out", "{out}", "--workers"],
     "expected one argument"),
    ("workers-0", "store", ["run", "smoke", "--workers", "0", "--out", "{out}"],
     "--workers must be a positive integer; got 0"),
    ("workers-huge", "store", ["run", "smoke", "--workers", "1000000000000", "--out", "{out}"],
     "--workers 1,000,000,000,000: at most"),
    ("workers-word", "store", ["run", "smoke", "--workers", "two", "--out", "{out}"],
     "--workers must be a positive integer; got 'two'"),
    ("threads-0", "store", ["run", "smoke", "--threads", "0", "--out", "{out}"],
     "--threads must be a positive integer"),
    ("threads-huge", "store", ["run", "smoke", "--threads", "1000000", "--out", "{out}"],
     "--threads 1,000,000: at most"),
    ("dask-local-negative", "store", ["run", "smoke", "--dask-local", "-1", "--out", "{out}"],
     "--dask-local must be a positive integer; got -1"),
    ("dask-local-huge", "store", ["run", "smoke", "--dask-local", "1000000000", "--out",
                                  "{out}"], "--dask-local 1,000,000,000: at most"),
    ("scheduler-no-scheme", "store", ["run", "smoke", "--scheduler", "localhost:8786", "--out",
                                      "{out}"], "--scheduler wants an address like tcp://"),
    ("workers-and-dask", "store", ["run", "smoke", "--workers", "2", "--dask-local", "2",
                                   "--out", "{out}"], "does not combine with Dask options"),
    ("scheduler-unreachable", None, ["run", "smoke", "--scheduler", "tcp://127.0.0.1:9",
                                     "--out", "{out}"], "cannot reach the Dask scheduler at"),
    ("threads-and-scheduler", "store", ["run", "smoke", "--threads", "1", "--scheduler",
                                        "tcp://127.0.0.1:9", "--out", "{out}"],
     "--threads sets local processes' threads"),
    ("out-is-a-file", "file", ["run", "smoke", "--out", "{out}/file"],
     "exists and is not a directory"),
    ("out-under-a-file", "file", ["run", "smoke", "--out", "{out}/file/results"],
     "cannot be created"),
    ("store-garbage", "store:garbage", ["run", "--config", "{cfg}", "--out", "{out}"],
     "optbench.sqlite"),
    ("store-not-sqlite", "store:text", ["run", "--config", "{cfg}", "--out", "{out}"],
     "not a readable optbench store"),
    ("store-other-schema", "store:schema", ["run", "--config", "{cfg}", "--out", "{out}"],
     "was written by an incompatible optbench"),
    ("store-other-protocol", "store:protocol", ["run", "--config", "{cfg}", "--out", "{out}"],
     "holds results of protocol 0"),
    ("store-read-only", "store:readonly", ["run", "--config", "{cfg}", "--out", "{out}"],
     "read-only"),
    ("report-no-store", None, ["report", "{out}"], "no results store in"),
    ("report-not-pdf", "store", ["report", "{out}", "--out", "{out}/r.png"],
     "the report is a PDF"),
    ("report-unknown-matrix", "store", ["report", "{out}", "--matrix", "other"],
     "no matrix 'other' in"),
    ("report-store-garbage", "store:garbage", ["report", "{out}"], "optbench.sqlite"),
    ("report-store-not-sqlite", "store:text", ["report", "{out}"],
     "not a readable optbench store"),
    ("unknown-command", "store", ["frobnicate"], "invalid choice: 'frobnicate'"),
]

# (id, TOML text, message): each through `run --config` against the filled store.
TOML = [
    ("unknown-key", toml(colour='"red"'), "colour: unknown key"),
    ("no-tasks", GOOD.replace('tasks = ["adding"]', ""), "tasks: missing (required)"),
    ("empty-tasks", toml(tasks="[]"), "tasks: must be a non-empty list"),
    ("unknown-task", toml(tasks='["adder"]'), "unknown 'adder'; allowed: adding"),
    ("length-huge", toml(lengths="[1000000000]"), "of memory; this machine has"),
    ("length-zero", toml(lengths="[0]"), "length 0 not allowed"),
    ("length-word", toml(lengths='["ten"]'), "length 'ten' not allowed"),
    ("lengths-table-missing", toml(tasks='["adding", "copy"]', lengths="{ adding = [8] }"),
     "lengths: no entry for task 'copy'"),
    ("hidden-huge", toml(hidden="[1000000000]"), "of memory; this machine has"),
    ("hidden-zero", toml(hidden="[0]"), "hidden[0]: must be an integer >= 1"),
    ("batch-huge", toml(batch_size="1000000000"), "of memory; this machine has"),
    ("batch-zero", toml(batch_size="0"), "batch_size: must be an integer >= 1"),
    ("seeds-huge-count", toml(seeds="100000000"), "seeds: must be at most 250,000"),
    ("seeds-negative", toml(seeds="[-1]"), "seeds[0]: must be an integer >= 0"),
    ("seed-beyond-int64", toml(seeds="[18446744073709551616]"), "seeds[0]: must be at most"),
    ("too-many-cells", toml(seeds="200000", lengths="[8, 9]"), "cells; at most 250,000"),
    ("steps-zero", toml(steps="0"), "steps: must be an integer >= 1"),
    ("steps-curves-beyond-memory", toml(steps="1000000000000000", eval_every="1"),
     "of memory; this machine has"),
    ("eval-beyond-budget", toml(eval_every="100"), "eval_every: 100 is more than the step"),
    ("decades-overflow", GOOD + "[tuning]\nlr_decades = 1000.0\n",
     "tuning.lr_decades: must be at most 30"),
    ("decades-400", GOOD + "[tuning]\nlr_decades = 400\n", "tuning.lr_decades: must be at most"),
    ("points-zero", GOOD + "[tuning]\nlr_points = 0\n", "tuning.lr_points: must be an integer"),
    ("points-huge", GOOD + "[tuning]\nlr_points = 1001\n", "tuning.lr_points: must be at most"),
    ("tuning-unknown", GOOD + "[tuning]\nlr_pts = 3\n", "tuning: must be a table with keys"),
    ("unknown-optimizer", toml(optimizers='["adan"]'), "unknown 'adan'; allowed: sgd"),
    ("bad-hyper-parameter", toml(optimizers='[{ name = "adam", momentum = 0.9 }]'),
     "not a hyper-parameter of adam"),
    ("negative-lr", toml(optimizers='[{ name = "adam", lr = -1.0 }]'), "optimizers[0]"),
    ("lr-beyond-float32", toml(optimizers='[{ name = "adam", lr_grid = [1e39] }]'),
     "outside float32's normal range"),
    ("duplicate-optimizer", toml(optimizers='["adam", "adam"]'), "has duplicates"),
    ("name-dot", toml(name='"."'), "name: not a file name"),
    ("name-dotdot", toml(name='".."'), "name: not a file name"),
    ("name-path", toml(name='"a/b"'), "name: holds a path separator"),
    ("name-newline", toml(name='"a\\nb"'), "name: holds a control character"),
    ("name-long", toml(name='"' + "x" * 200 + '"'), "name: longer than 100 characters"),
    ("name-empty", toml(name='""'), "name: must be a non-empty string"),
    ("clip-negative", toml(clip_norm="-1.0"), "clip_norm: must be a positive finite number"),
    ("init-unknown", toml(init='"bogus"'), "init: unknown 'bogus'"),
    ("tier-unknown", toml(tiers='["best"]'), "tiers[0]: unknown 'best'"),
    ("model-unknown", toml(models='["transformer"]'), "models[0]: unknown 'transformer'"),
]

RNG = np.random.default_rng(0)
API = [
    ("build-hidden-huge", lambda: nn.build("lstm", 2, 10**6, 1), "of memory; this machine has"),
    ("build-hidden-zero", lambda: nn.build("lstm", 2, 0, 1), "hidden_size must be a positive"),
    ("build-kind", lambda: nn.build("transformer", 2, 8, 1), "unknown; allowed: lstm"),
    ("sample-int-rng", lambda: tasks.get("adding").sample(42, 32, 10),
     "rng must be a numpy Generator"),
    ("sample-none-rng", lambda: tasks.get("adding").sample(None, 32, 10),
     "rng must be a numpy Generator"),
    ("sample-length-huge", lambda: tasks.get("adding").sample(RNG, 32, length=10**9),
     "of memory; this machine has"),
    ("sample-batch-huge", lambda: tasks.get("copy").sample(RNG, 10**9, 10),
     "of memory; this machine has"),
    ("sample-batch-zero", lambda: tasks.get("adding").sample(RNG, 0, 10),
     "batch_size must be a positive integer"),
    ("eval-set-huge", lambda: tasks.get("adding").eval_set(0, 10**9, "val"),
     "of memory; this machine has"),
    ("task-unknown", lambda: tasks.get("adder"), "unknown task 'adder'"),
    ("optimizer-unknown", lambda: optim.create("adan"), "adan"),
    ("expand-seeds", lambda: mx.expand({**_parse(GOOD), "seeds": 10**8}), "seeds: must be at most"),
    ("processes-zero", lambda: runner.Processes(0), "--workers must be a positive integer"),
]


def _setup(kind, tmp_path, filled):
    out = tmp_path / "out"
    if kind is None:
        return out
    out.mkdir()
    if kind == "file":
        (out / "file").write_text("x")
        return out
    (out / FILENAME).write_bytes((filled / FILENAME).read_bytes())
    how = kind.partition(":")[2]
    if how == "readonly":
        os.chmod(out / FILENAME, 0o444)
        os.chmod(out, 0o555)
    elif how:
        _damage(out / FILENAME, how)
    return out


def _cli(args, setup, text, tmp_path, filled, capsys, monkeypatch):
    out = _setup(setup, tmp_path, filled)
    cfg = tmp_path / "config.toml"
    cfg.write_bytes(text.encode() if isinstance(text, str) else text)
    argv = [a.format(out=out, cfg=cfg) for a in args]
    monkeypatch.setattr(runner, "CONNECT_TIMEOUT_S", 1)
    if setup == "store:readonly" and os.geteuid() == 0:  # root writes anything: act as a user
        real = os.access
        monkeypatch.setattr(os, "access", lambda p, mode: (
            real(p, mode) if not str(p).startswith(str(out)) else not mode & os.W_OK))
    before = snapshot(tmp_path)
    with pytest.raises(SystemExit) as stop:  # argparse exits; main returns otherwise
        raise SystemExit(main(argv))
    err = capsys.readouterr().err
    if setup == "store:readonly":
        os.chmod(out, 0o755)
    return stop.value.code, err, before, snapshot(tmp_path)


@pytest.mark.parametrize("case", CLI, ids=[c[0] for c in CLI])
def test_cli_refuses_in_one_line_and_touches_nothing(case, tmp_path, filled, capsys,
                                                     monkeypatch):
    name, setup, args, message = case
    text = {"config-not-utf8": b'name = "caf\xe9"\n', "config-not-toml": "tasks = [\n"}.get(
        name, GOOD)
    code, err, before, after = _cli(args, setup, text, tmp_path, filled, capsys, monkeypatch)
    assert code == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert message in err, err
    assert after == before


@pytest.mark.parametrize("case", TOML, ids=[c[0] for c in TOML])
def test_toml_refusals_name_the_key_and_touch_nothing(case, tmp_path, filled, capsys,
                                                      monkeypatch):
    _, text, message = case
    code, err, before, after = _cli(["run", "--config", "{cfg}", "--out", "{out}"], "store",
                                    text, tmp_path, filled, capsys, monkeypatch)
    assert code == 2, err
    assert err.startswith("optbench run: error: config ") and err.count("\n") == 1, err
    assert message in err, err
    assert after == before


@pytest.mark.parametrize("case", API, ids=[c[0] for c in API])
def test_the_api_raises_one_line_usage_errors(case):
    _, call, message = case
    with pytest.raises(UsageError) as info:
        call()
    assert message in str(info.value) and "\n" not in str(info.value), str(info.value)


def test_the_store_API_refuses_damaged_stores_in_one_line(tmp_path, filled):
    out = _setup("store:garbage", tmp_path, filled)
    for call in (lambda: load(str(out)), lambda: Store.open(str(out)),
                 lambda: Store.open(str(out), create=False)):
        with pytest.raises(UsageError) as info:
            call()
        assert "\n" not in str(info.value) and "optbench.sqlite" in str(info.value)


def test_enough_cases():
    assert len(CLI) + len(TOML) + len(API) >= 60


@pytest.mark.parametrize("args, setup, message", [
    (["run", "smoke", "--workers", "1000000000000"], "store", "--workers 1,000,000,000,000"),
    (["run", "--config", "{cfg}"], "store:garbage", "optbench.sqlite"),
    (["run", "--config", "{cfg}"], "utf8", "is not UTF-8 text"),
    (["run", "smoke", "--frob"], "store", "unrecognized arguments: --frob"),
])
def test_a_real_process_prints_one_line(args, setup, message, tmp_path, filled):
    out = _setup("store" if setup == "utf8" else setup, tmp_path, filled)
    cfg = tmp_path / "c.toml"
    cfg.write_bytes(b'name = "caf\xe9"\n' if setup == "utf8" else GOOD.encode())
    before = snapshot(tmp_path)
    argv = [a.format(cfg=cfg) for a in args] + ["--out", str(out)]
    proc = subprocess.run([sys.executable, "-m", "optbench", *argv], cwd=helpers.ROOT,
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and message in proc.stderr, proc.stderr
    assert snapshot(tmp_path) == before
