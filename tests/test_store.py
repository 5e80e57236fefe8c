import json
import math
import sqlite3

import numpy as np
import pytest

import optbench
from optbench.cell import PROTOCOL, Cell
from optbench.errors import UsageError
from optbench.matrix import Matrix
from optbench.store import FILENAME, SCHEMA, Store, load

from helpers import run_cell


def _matrix(name="m", lrs=(1e-3, 1e-2), seeds=(0, 1)):
    members = []
    for seed in seeds:
        for lr in lrs:
            cell = Cell(task="adding", length=6, hidden=4, hparams={"lr": lr, "betas": [0.9, 0.99]},
                        seed=seed, steps=40, eval_every=10)
            members.append((cell, "tuned"))
            if lr == lrs[0]:
                members.append((cell, "defaults"))
    return Matrix(name, {"tiers": ["defaults", "tuned"]}, tuple(members))


def test_load_round_trip(tmp_path):
    m = _matrix()
    results = [run_cell(cell) for cell in m.cells]
    with Store.open(str(tmp_path)) as store:
        store.record_matrix(m)
        for r in results:
            store.put(r)
    loaded = optbench.load(str(tmp_path))
    assert loaded.meta["schema"] == str(SCHEMA) and loaded.meta["protocol"] == str(PROTOCOL)
    cells = loaded.cells.set_index("key")
    assert sorted(cells.index) == sorted(c.key for c in m.cells)
    for r in results:
        row = cells.loc[r.key]
        assert Cell.from_dict({k: v for k, v in json.loads(row.config_json).items()
                               if k != "protocol"}) == r.cell
        assert (row.task, row.length, row.hidden, row.seed, row.lr) == (
            "adding", 6, 4, r.cell.seed, r.cell.lr)
        assert json.loads(row.hparams_json) == {"betas": [0.9, 0.99], "lr": r.cell.lr}
        assert row.outcome == r.outcome and row.steps_run == r.steps_run
        for name in ("val_loss", "test_loss", "test_metric"):
            assert row[name] == getattr(r, name)  # exact: float64 round trip
        assert math.isnan(row.val_metric) == math.isnan(r.val_metric)
        assert row.total_s == r.timings["total_s"]
        assert json.loads(row.env_json) == r.env
        curves = loaded.curves[loaded.curves.key == r.key]
        assert list(curves.step) == [p["step"] for p in r.curves]
        for name in ("train_loss", "val_loss", "val_metric", "grad_norm", "wall_s"):
            np.testing.assert_array_equal(curves[name], [p[name] for p in r.curves])
        prof = loaded.grad_profiles[loaded.grad_profiles.key == r.key]
        np.testing.assert_array_equal(prof.norm, r.grad_profiles[0]["norms"])
        assert list(prof.t) == list(range(r.cell.length))
    # members: every (cell, tier) once, all finished; the shared defaults/tuned cells once in cells
    assert len(loaded.members) == len(m.members) and loaded.members.finished.all()
    assert len(loaded.tier("defaults")) == 2 and len(loaded.tier("tuned")) == 4
    assert loaded.matrices[["name", "cells", "finished"]].values.tolist() == [["m", 4, 4]]


def test_unfinished_cells_are_planned_not_loaded(tmp_path):
    m = _matrix()
    with Store.open(str(tmp_path)) as store:
        store.record_matrix(m)
        store.put(run_cell(m.cells[0]))
        assert store.finished_keys() == {m.cells[0].key}
    loaded = load(str(tmp_path))
    assert list(loaded.cells.key) == [m.cells[0].key]
    done = loaded.members.groupby("key").finished.first()
    assert done.sum() == 1 and len(done) == 4
    assert loaded.matrices.loc[0, "finished"] == 1


def test_a_second_matrix_shares_cells_and_keeps_its_own_membership(tmp_path):
    a, b = _matrix("a", lrs=(1e-3, 1e-2)), _matrix("b", lrs=(1e-2, 1e-1))
    with Store.open(str(tmp_path)) as store:
        for m in (a, b):
            store.record_matrix(m)
            for cell in m.cells:
                if cell.key not in store.finished_keys():
                    store.put(run_cell(cell))
        store.record_matrix(a)  # the same matrix again is the same matrix
    loaded = load(str(tmp_path))
    assert len(loaded.cells) == 6  # lr 1e-2 is shared
    assert loaded.matrices.name.tolist() == ["a", "b"]
    only_b = load(str(tmp_path), matrix="b")
    assert sorted(only_b.cells.key) == sorted(c.key for c in b.cells)
    assert set(only_b.members.matrix) == {"b"}
    assert set(only_b.curves.key) == set(only_b.cells.key)
    with pytest.raises(UsageError, match="no matrix 'c'.*it holds: a, b"):
        load(str(tmp_path), matrix="c")


def test_a_failed_write_leaves_nothing_half_written(tmp_path):
    m = _matrix()
    bad = run_cell(m.cells[0])
    bad.curves.append(dict(bad.curves[0]))  # the same (step, name) twice: the insert fails
    with Store.open(str(tmp_path)) as store:
        store.record_matrix(m)
        with pytest.raises(sqlite3.IntegrityError):
            store.put(bad)
        assert store.finished_keys() == set()
        n = store._conn.execute("SELECT COUNT(*) FROM curves").fetchone()[0]
        assert n == 0
        store.put(run_cell(m.cells[0]))  # and the store still works
        assert store.finished_keys() == {m.cells[0].key}


def test_rewriting_a_cell_replaces_it(tmp_path):
    r = run_cell(_matrix().cells[0])
    with Store.open(str(tmp_path)) as store:
        store.put(r)
        r.curves = r.curves[:2]
        store.put(r)
    loaded = load(str(tmp_path))
    assert len(loaded.cells) == 1 and len(loaded.curves) == 2


def _set_meta(tmp_path, name, value):
    with sqlite3.connect(tmp_path / FILENAME) as conn:
        conn.execute("UPDATE meta SET value = ? WHERE name = ?", (value, name))
    conn.close()


def test_incompatible_schema_is_refused(tmp_path):
    Store.open(str(tmp_path)).close()
    _set_meta(tmp_path, "schema", "999")
    with pytest.raises(UsageError, match="incompatible optbench.*schema 999"):
        Store.open(str(tmp_path))
    with pytest.raises(UsageError, match="incompatible"):
        load(str(tmp_path))


def test_another_protocol_is_refused_for_writing_but_readable(tmp_path):
    Store.open(str(tmp_path)).close()
    _set_meta(tmp_path, "protocol", str(PROTOCOL + 1))
    with pytest.raises(UsageError, match=f"protocol {PROTOCOL + 1}.*not comparable"):
        Store.open(str(tmp_path))
    assert load(str(tmp_path)).meta["protocol"] == str(PROTOCOL + 1)


def test_not_a_store(tmp_path):
    (tmp_path / FILENAME).write_text("hello, I am not SQLite" * 100)
    with pytest.raises(UsageError, match="not a readable optbench store"):
        Store.open(str(tmp_path))
    with pytest.raises(UsageError, match="no results store"):
        load(str(tmp_path / "nowhere"))


def test_unwritable_output_directory(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(UsageError, match="cannot be created"):
        Store.open(str(tmp_path / "file" / "results"))
    with pytest.raises(UsageError, match="exists and is not a directory"):
        Store.open(str(tmp_path / "file"))
    with pytest.raises(UsageError, match="cannot be created"):
        Store.open("/proc/optbench-results")  # refused even to root
