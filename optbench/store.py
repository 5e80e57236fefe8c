"""The results store: one SQLite file per results directory (`DIR/optbench.sqlite`).

Embedded and transactional: each finished cell is written in one transaction, so a run
killed at any moment (Ctrl-C, SIGKILL, power loss) leaves every finished cell whole and
nothing half-written; rerunning skips the finished cells. Only the coordinating process
writes (executors hand `Result`s back to it), so there is never a second writer.

Tables (read them with `optbench.load(DIR)`):

- `meta`: `schema` (this module's `SCHEMA`), `protocol` (`optbench.cell.PROTOCOL`) and the
  optbench version that created the store.
- `cells`: one row per planned cell, keyed by `Cell.key` (a hash of its canonical config):
  the canonical config JSON, the config again as plain columns for pandas, and, once the
  cell has finished, its outcome, figures, timings, environment JSON and `finished_at`.
- `matrices` and `matrix_cells`: every matrix ever run here (name, digest, the normalised
  config) and which cells belong to which of its tiers ("defaults", "tuned"). A cell
  belongs to as many matrices and tiers as ask for it, and is stored (and run) once.
- `curves` (key, step, metric name, value) and `grad_profiles` (key, step, t, norm):
  long format.
- `optimizers` and `tasks` (name, info JSON): what the report needs of each optimizer and
  task a matrix here ran (`optbench.describe`), so the store reports where a plugin it
  used cannot be imported. Added to older stores of the same schema when a matrix is
  recorded; a store without them reports from the live registries.

Mixing: results from another `PROTOCOL` are incomparable, so a store made under one
protocol refuses to take cells of another (use a new directory). A different matrix in
the same directory is fine: its cells are added, the cells it shares with earlier
matrices (same key, hence same config) are reused, and `matrix_cells` keeps each matrix's
membership, so `load(DIR, matrix=NAME)` gives exactly that matrix's cells and shows which
are still missing.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import sqlite3
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING

from optbench import __version__, describe
from optbench.cell import PROTOCOL, Cell, Result
from optbench.describe import Catalog
from optbench.errors import UsageError
from optbench.paths import make_writable_directory

if TYPE_CHECKING:  # pandas is imported by `load` only, so `run --help` stays fast
    import pandas as pd

    from optbench.matrix import Matrix

FILENAME = "optbench.sqlite"
# Bump when a table changes shape; a store with another schema is refused with one line.
SCHEMA = 1

# Cell fields that become plain columns (hparams stays JSON; its lr gets a column of its own;
# a plugin cell's code hash is in config_json only).
_CONFIG = [f.name for f in fields(Cell) if f.name not in ("hparams", "code")]
_FIGURES = [
    "outcome", "steps_run", "steps_to_solve", "seconds_to_solve", "diverged_step",
    "val_loss", "val_metric", "test_loss", "test_metric",
]
_TIMINGS = ["compile_s", "train_s", "eval_s", "total_s"]
_RESULT = _FIGURES + _TIMINGS + ["timings_json", "env_json", "finished_at"]
CELL_COLUMNS = ["key", "config_json", *_CONFIG, "lr", "hparams_json", *_RESULT]

_DDL = f"""
CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE cells (key TEXT PRIMARY KEY, {", ".join(CELL_COLUMNS[1:])});
CREATE TABLE matrices (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL, digest TEXT NOT NULL UNIQUE,
    config_json TEXT NOT NULL, created_at TEXT NOT NULL);
CREATE TABLE matrix_cells (
    matrix_id INTEGER NOT NULL REFERENCES matrices(id), key TEXT NOT NULL REFERENCES cells(key),
    tier TEXT NOT NULL, PRIMARY KEY (matrix_id, key, tier)) WITHOUT ROWID;
CREATE TABLE curves (key TEXT NOT NULL, step INTEGER NOT NULL, name TEXT NOT NULL, value REAL,
    PRIMARY KEY (key, step, name)) WITHOUT ROWID;
CREATE TABLE grad_profiles (key TEXT NOT NULL, step INTEGER NOT NULL, t INTEGER NOT NULL,
    norm REAL, PRIMARY KEY (key, step, t)) WITHOUT ROWID;
"""
# The descriptions (optbench.describe): created by the first matrix recorded, so stores of
# this schema made before them gain them and older optbench versions still open them.
_DESCRIPTIONS = ("optimizers", "tasks")
_DESCRIPTIONS_DDL = [f"CREATE TABLE IF NOT EXISTS {t} (name TEXT PRIMARY KEY, info_json TEXT "
                     "NOT NULL, recorded_at TEXT NOT NULL)" for t in _DESCRIPTIONS]


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _config_row(cell: Cell) -> dict:
    d = cell.to_dict()
    return {
        "key": cell.key, "config_json": cell.canonical_json(),
        **{name: d[name] for name in _CONFIG},
        "lr": cell.lr, "hparams_json": json.dumps(d["hparams"], sort_keys=True),
    }


def _finite_or_none(x):
    """SQLite has no NaN (it would store NULL anyway); say so explicitly."""
    return None if isinstance(x, float) and math.isnan(x) else x


class Store:
    """An open results store. Use `Store.open(directory)`; close it (or use `with`)."""

    def __init__(self, path: str, conn: sqlite3.Connection):
        self.path = path
        self._conn = conn

    # -- opening -------------------------------------------------------------------------
    @classmethod
    def open(cls, directory: str, *, create: bool = True) -> "Store":
        """Open (or, with `create`, make) the store in `directory`.

        UsageError, one line, when the directory cannot be written, or the store there has
        another schema or another protocol (results of another protocol are incomparable).
        """
        path = os.path.join(directory, FILENAME)
        if create:
            _check_writable(directory)
            if os.path.exists(path) and not os.access(path, os.R_OK | os.W_OK):
                raise UsageError(f"{path} is read-only: this run cannot store its cells there "
                                 "(make it writable, or use another --out directory)")
        elif not os.path.exists(path):
            raise UsageError(f"no results store in {directory!r} (expected {FILENAME})")
        elif not os.access(path, os.R_OK):
            raise UsageError(f"{path} cannot be read (permissions)")
        # isolation_level=None: transactions are explicit (`transaction`); WAL lets readers
        # (`load`, a report) read while a run writes; FULL syncs each commit to disk.
        try:
            conn = sqlite3.connect(path, isolation_level=None, timeout=30)
        except sqlite3.Error as exc:
            raise UsageError(f"{path}: cannot open ({exc})") from None
        try:
            if create or _is_wal(path):
                conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            store = cls(path, conn)
            store._init_or_check(write=create)
        except BaseException as exc:
            conn.close()
            if isinstance(exc, sqlite3.DatabaseError):
                raise UsageError(f"{path}: {_why(exc)}") from None
            raise
        return store

    def _init_or_check(self, write: bool) -> None:
        # A store made by another process between our look and our DDL would fail the DDL:
        # look and make in one write transaction (two runs may start into one directory).
        tables = {r[0] for r in self._conn.execute("SELECT name FROM sqlite_master")}
        if not tables and write:
            with self.transaction():
                if not self._conn.execute("SELECT 1 FROM sqlite_master").fetchone():
                    for stmt in _DDL.split(";"):
                        if stmt.strip():
                            self._conn.execute(stmt)
                    self._conn.executemany(
                        "INSERT INTO meta VALUES (?, ?)",
                        [("schema", str(SCHEMA)), ("protocol", str(PROTOCOL)),
                         ("optbench", __version__), ("created_at", _now())],
                    )
            tables = {r[0] for r in self._conn.execute("SELECT name FROM sqlite_master")}
        if tables:
            bad = self._conn.execute("PRAGMA quick_check(1)").fetchone()[0]
            if bad != "ok":
                bad = " ".join(bad.replace("*", "").split())[:120]
                raise UsageError(f"{self.path} is damaged ({bad}); the cells it held cannot be "
                                 "trusted: move it aside and rerun, or use another --out "
                                 "directory")
        meta = dict(self._conn.execute("SELECT name, value FROM meta")) if "meta" in tables else {}
        columns = [r[1] for r in self._conn.execute("PRAGMA table_info(cells)")]
        if meta.get("schema") != str(SCHEMA) or columns != CELL_COLUMNS:
            raise UsageError(
                f"{self.path} was written by an incompatible optbench (store schema "
                f"{meta.get('schema', '?')}, made by optbench {meta.get('optbench', '?')}; this "
                f"optbench reads schema {SCHEMA}): use another --out directory"
            )
        if write:
            self.check_writable(meta)

    def check_writable(self, meta: dict | None = None) -> None:
        """UsageError, one line, unless a run may add cells here: the store holds results of
        this optbench's protocol, and it and its directory can be written."""
        meta = self.meta if meta is None else meta
        if meta.get("protocol") != str(PROTOCOL):
            raise UsageError(
                f"{self.path} holds results of protocol {meta.get('protocol')}, which are not "
                f"comparable with this optbench's protocol {PROTOCOL}: use another --out directory"
            )
        directory = os.path.dirname(self.path) or "."
        if not os.access(self.path, os.W_OK) or not os.access(directory, os.W_OK | os.X_OK):
            raise UsageError(f"{self.path} is read-only: this run cannot store its cells there "
                             "(make it and its directory writable, or use another --out "
                             "directory)")

    @property
    def meta(self) -> dict:
        return dict(self._conn.execute("SELECT name, value FROM meta"))

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @contextmanager
    def transaction(self):
        """BEGIN IMMEDIATE ... COMMIT; ROLLBACK on any exception, KeyboardInterrupt included."""
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    # -- writing -------------------------------------------------------------------------
    def record_matrix(self, matrix: "Matrix", members=None) -> int:
        """Plan the matrix's cells (rows without results) and record its membership: its first
        wave, or `members` ((cell, tier) pairs a later wave asks for). Idempotent."""
        members = matrix.members if members is None else tuple(members)
        cells = tuple({cell.key: cell for cell, _ in members}.values())
        with self.transaction():
            self._conn.execute(
                "INSERT INTO matrices (name, digest, config_json, created_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT(digest) DO NOTHING",
                (matrix.name, matrix.digest, json.dumps(matrix.config, sort_keys=True), _now()),
            )
            (matrix_id,) = self._conn.execute(
                "SELECT id FROM matrices WHERE digest = ?", (matrix.digest,)
            ).fetchone()
            rows = [_config_row(cell) for cell in cells]
            names = list(rows[0]) if rows else []
            self._conn.executemany(
                f"INSERT INTO cells ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})"
                " ON CONFLICT(key) DO NOTHING",
                [tuple(r.values()) for r in rows],
            )
            self._conn.executemany(
                "INSERT INTO matrix_cells VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                [(matrix_id, cell.key, tier) for cell, tier in members],
            )
            self._record_descriptions(cells)
        return matrix_id

    def _record_descriptions(self, cells) -> None:
        """Describe the cells' optimizers and tasks (inside record_matrix's transaction): a
        later wave's new lengths join the task's description."""
        optimizers, tasks = describe.for_cells(cells)
        for stmt in _DESCRIPTIONS_DDL:
            self._conn.execute(stmt)
        old = self.descriptions()["tasks"]
        rows = {"optimizers": [(o["name"], o) for o in optimizers],
                "tasks": [(t["name"], describe.merge_task(old.get(t["name"]), t)) for t in tasks]}
        for table, items in rows.items():
            self._conn.executemany(
                f"INSERT INTO {table} VALUES (?, ?, ?) ON CONFLICT(name) DO UPDATE SET "
                "info_json = excluded.info_json, recorded_at = excluded.recorded_at",
                [(name, json.dumps(info, sort_keys=True), _now()) for name, info in items])

    def descriptions(self) -> dict[str, dict]:
        """{"optimizers": {name: info}, "tasks": {name: info}} as recorded ({} where not)."""
        tables = {r[0] for r in self._conn.execute("SELECT name FROM sqlite_master")}
        return {t: {name: json.loads(info) for name, info in self._conn.execute(
            f"SELECT name, info_json FROM {t}")} if t in tables else {} for t in _DESCRIPTIONS}

    def put(self, result: Result) -> None:
        """Write one finished cell (config, figures, curves, profiles) in one transaction."""
        row = _config_row(result.cell)
        row.update({name: _finite_or_none(getattr(result, name)) for name in _FIGURES})
        row.update({name: result.timings.get(name) for name in _TIMINGS})
        row.update(
            timings_json=json.dumps(result.timings, sort_keys=True),
            env_json=json.dumps(result.env, sort_keys=True),
            finished_at=_now(),
        )
        names = list(row)
        curves = [
            (result.key, int(point["step"]), name, _finite_or_none(float(value)))
            for point in result.curves for name, value in point.items()
            if name != "step" and value is not None
        ]
        profiles = [
            (result.key, int(p["step"]), t, _finite_or_none(float(norm)))
            for p in result.grad_profiles for t, norm in enumerate(p["norms"])
        ]
        with self.transaction():
            self._conn.execute(
                f"INSERT INTO cells ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})"
                f" ON CONFLICT(key) DO UPDATE SET "
                + ", ".join(f"{n} = excluded.{n}" for n in names[1:]),
                tuple(row.values()),
            )
            self._conn.execute("DELETE FROM curves WHERE key = ?", (result.key,))
            self._conn.execute("DELETE FROM grad_profiles WHERE key = ?", (result.key,))
            self._conn.executemany("INSERT INTO curves VALUES (?, ?, ?, ?)", curves)
            self._conn.executemany("INSERT INTO grad_profiles VALUES (?, ?, ?, ?)", profiles)

    # -- reading -------------------------------------------------------------------------
    def figures(self) -> dict[str, dict]:
        """cell key -> {outcome, val_metric, steps_to_solve} of every finished cell: what the
        planner of later waves reads (`optbench.plan`)."""
        return {k: {"outcome": o, "val_metric": v, "steps_to_solve": s} for k, o, v, s in
                self._conn.execute("SELECT key, outcome, val_metric, steps_to_solve FROM cells"
                                   " WHERE finished_at IS NOT NULL")}

    def outcomes(self, keys) -> Counter:
        """How many of the cells `keys` finished with each outcome."""
        counts: Counter = Counter()
        keys = list(keys)
        for i in range(0, len(keys), 500):  # SQLite's bound on host parameters
            part = keys[i:i + 500]
            counts.update(dict(self._conn.execute(
                f"SELECT outcome, COUNT(*) FROM cells WHERE finished_at IS NOT NULL AND key IN"
                f" ({', '.join('?' * len(part))}) GROUP BY outcome", part)))
        return counts

    def finished_keys(self) -> set[str]:
        return {r[0] for r in self._conn.execute("SELECT key FROM cells WHERE finished_at IS NOT NULL")}

    def frames(self, matrix: str | None = None) -> "Results":
        """The store as DataFrames; with `matrix`, only the cells of the matrices of that name."""
        import pandas as pd

        def q(sql, args=()):
            return pd.read_sql_query(sql, self._conn, params=args)

        matrices = q(
            "SELECT m.id, m.name, m.digest, m.created_at, m.config_json,"
            " COUNT(DISTINCT mc.key) AS cells, COUNT(DISTINCT c.key) AS finished"
            " FROM matrices m LEFT JOIN matrix_cells mc ON mc.matrix_id = m.id"
            " LEFT JOIN cells c ON c.key = mc.key AND c.finished_at IS NOT NULL"
            " GROUP BY m.id ORDER BY m.id"
        )
        where, args = "", ()
        if matrix is not None:
            if matrix not in set(matrices["name"]):
                known = ", ".join(dict.fromkeys(matrices["name"])) or "none"
                raise UsageError(f"no matrix {matrix!r} in {self.path}; it holds: {known}")
            matrices = matrices[matrices["name"] == matrix].reset_index(drop=True)
            where = (" AND key IN (SELECT mc.key FROM matrix_cells mc JOIN matrices m"
                     " ON m.id = mc.matrix_id WHERE m.name = ?)")
            args = (matrix,)
        members = q(
            "SELECT m.id AS matrix_id, m.name AS matrix, mc.tier, c.key,"
            f" {', '.join('c.' + n for n in _CONFIG)}, c.lr, c.hparams_json, c.outcome,"
            " c.finished_at IS NOT NULL AS finished"
            " FROM matrix_cells mc JOIN matrices m ON m.id = mc.matrix_id"
            " JOIN cells c ON c.key = mc.key"
            + (" WHERE m.name = ?" if matrix is not None else "")
            + " ORDER BY m.id, c.key, mc.tier",
            args,
        )
        members["finished"] = members["finished"].astype(bool)
        cells = q(f"SELECT * FROM cells WHERE finished_at IS NOT NULL{where} ORDER BY key", args)
        curves = q(f"SELECT * FROM curves WHERE 1{where} ORDER BY key, step", args)
        curves = (
            curves.pivot(index=["key", "step"], columns="name", values="value")
            .reset_index().rename_axis(columns=None)
        )
        profiles = q(f"SELECT * FROM grad_profiles WHERE 1{where} ORDER BY key, step, t", args)
        described = self.descriptions()
        if described["tasks"]:  # pick_lr reads each row's direction here, not in a registry
            direction = {n: t["higher_is_better"] for n, t in described["tasks"].items()}
            cells["higher_is_better"] = cells["task"].map(direction)
        return Results(cells, curves, profiles, members, matrices, self.meta,
                       described["optimizers"], described["tasks"])


@dataclass
class Results:
    """What `optbench.load(DIR)` returns: pandas DataFrames.

    cells:         one row per finished cell: key, config columns (task, length, model,
                   hidden, optimizer, lr, hparams_json, seed, steps, ...), outcome and
                   figures, timings (compile_s, train_s, eval_s, total_s), env_json.
    curves:        one row per (key, step): train_loss, val_loss, val_metric, grad_norm, wall_s.
    grad_profiles: one row per (key, step, t): norm = ||dL/dh_t||.
    members:       one row per (matrix, cell, tier), finished or not: what each matrix
                   asked for and what is still missing.
    matrices:      one row per matrix run here: id, name, digest, config_json, cells, finished.
    meta:          schema, protocol, the optbench version that created the store.
    optimizers, tasks: name -> the store's description of each optimizer and task it ran
                   (`optbench.describe`; empty for a store written before them). With task
                   descriptions, `cells` has a `higher_is_better` column.
    """

    cells: "pd.DataFrame"
    curves: "pd.DataFrame"
    grad_profiles: "pd.DataFrame"
    members: "pd.DataFrame"
    matrices: "pd.DataFrame"
    meta: dict
    optimizers: dict = field(default_factory=dict)
    tasks: dict = field(default_factory=dict)

    @property
    def catalog(self):
        """The optimizers and tasks as described here (`optbench.describe.Catalog`)."""
        return Catalog(self.optimizers, self.tasks)

    def tier(self, tier: str) -> "pd.DataFrame":
        """The finished cells that belong to `tier` ("defaults" or "tuned") of any matrix here."""
        keys = self.members.loc[self.members["tier"] == tier, "key"]
        return self.cells[self.cells["key"].isin(keys)].reset_index(drop=True)


def load(directory: str, matrix: str | None = None) -> Results:
    """Read the results store in `directory` (default layout: `results/optbench.sqlite`)."""
    with Store.open(directory, create=False) as store:
        return store.frames(matrix)


def _is_wal(path: str) -> bool:
    """Whether the file's header says WAL (bytes 18-19 are 2): a reader of such a store
    needs the WAL mode set, and setting it on any other file would write to it."""
    try:
        with open(path, "rb") as f:
            head = f.read(20)
    except OSError:
        return False
    return len(head) == 20 and head[18:20] == b"\x02\x02"


def _why(exc: sqlite3.Error) -> str:
    """An SQLite error in words a user can act on."""
    text = str(exc)
    if "readonly" in text or "read-only" in text:
        return ("read-only (the store or its directory cannot be written): make it writable, "
                "or use another --out directory")
    if "locked" in text or "busy" in text:
        return f"busy: another process holds it locked for long ({text})"
    return (f"not a readable optbench store ({text}): move it aside and rerun, or use another "
            "--out directory")


def check_directory(directory: str) -> None:
    """UsageError, one line, unless `directory` is a writable directory or could be made
    as one; makes nothing (`run --dry-run`, and bad input refused before any work)."""
    if os.path.exists(directory):
        if not os.path.isdir(directory):
            raise UsageError(f"output directory {directory!r} exists and is not a directory")
        if not os.access(directory, os.W_OK | os.X_OK):
            raise UsageError(f"output directory {directory!r} is not writable")
        return
    parent = os.path.dirname(os.path.abspath(directory))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise UsageError(f"output directory {directory!r} cannot be created: {parent!r} is "
                         "not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"output directory {directory!r} cannot be created: {parent!r} is "
                         "not writable")


def _check_writable(directory: str) -> None:
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise UsageError(f"output directory {directory!r} exists and is not a directory")
    make_writable_directory(
        directory, lambda why: f"output directory {directory!r} cannot be created: {why}",
        f"output directory {directory!r} is not writable")
