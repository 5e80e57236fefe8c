"""Claims: several runs into one results directory share its cells instead of repeating them.

Before a run starts a cell it claims it in the store's `claims` table (key -> run), in one
write transaction that also checks the cell is not finished and not claimed by another
live run; a run skips cells that others have claimed, and when nothing is left to claim it
waits for the others' cells to finish (taking over any whose run has died), so that every
`run` ends with the whole matrix stored and a second one only adds workers.

A run is alive while it holds an exclusive lock (flock) on its file in DIR/.optbench-runs/:
the kernel drops the lock when the process ends in any way, SIGKILL included, so a claim of
a dead run is recognised at once and taken over, and a crashed run never blocks a resume.
Worker processes do not inherit the lock (Python opens files close-on-exec), so a worker
outliving its coordinator holds nothing. Where flock is missing (Windows) a run is alive
while its process id exists on this host.

The table is created on first use (`CREATE TABLE IF NOT EXISTS`): stores made before it
exist read and write as before, and readers never look at it.
"""

from __future__ import annotations

import datetime as _dt
import os
import socket
import sqlite3
import time
import uuid
from collections.abc import Iterable, Iterator

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

from optbench.cell import Cell

RUNS_DIR = ".optbench-runs"
POLL_S = 0.5  # how often a run with nothing to claim looks again
_DDL = """CREATE TABLE IF NOT EXISTS claims (
    key TEXT PRIMARY KEY, run TEXT NOT NULL, pid INTEGER, host TEXT, claimed_at TEXT)"""


class Claims:
    """This run's registration in a results directory and its claims on cells there.

        with Claims(directory, store_path) as claims:
            for cell in claims.feed(todo):   # None: nothing to start now, ask again soon
                ...
    """

    def __init__(self, directory: str, store_path: str, poll_s: float = POLL_S):
        self.directory, self.store_path, self.poll_s = directory, store_path, poll_s
        self.run = uuid.uuid4().hex[:16]
        self.runs_dir = os.path.join(directory, RUNS_DIR)
        self._lock = None
        self._alive: dict[str, tuple[bool, float]] = {}
        self.others_finished: list[str] = []  # keys finished by other runs while we fed

    # -- registration ---------------------------------------------------------------------
    def __enter__(self) -> Claims:
        os.makedirs(self.runs_dir, exist_ok=True)
        # Locked before it appears under its name, so that no other run ever sees the file
        # unlocked while this run lives.
        path = self._lock_path(self.run)
        self._lock = open(path + ".new", "w")
        if fcntl is not None:
            fcntl.flock(self._lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        self._lock.write(f"{os.getpid()} {socket.gethostname()}\n")
        self._lock.flush()
        os.replace(path + ".new", path)
        self._conn = sqlite3.connect(self.store_path, isolation_level=None, timeout=60)
        # A claim lost to a power cut costs nothing (its run is gone too): no sync per claim.
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.execute(_DDL)
        return self

    def __exit__(self, *exc) -> None:
        try:
            self._conn.execute("DELETE FROM claims WHERE run = ?", (self.run,))
        except sqlite3.Error:
            pass  # a claim left behind is a dead run's: the next run takes it over
        finally:
            self._conn.close()
            path = self._lock_path(self.run)
            self._lock.close()  # releases the flock
            _remove(path)

    def _lock_path(self, run: str) -> str:
        return os.path.join(self.runs_dir, f"{run}.lock")

    def alive(self, run: str) -> bool:
        """Whether `run` still holds its lock (cached for a poll interval; death is final)."""
        if run == self.run:
            return True
        known = self._alive.get(run)
        if known is not None and (not known[0] or time.monotonic() - known[1] < self.poll_s):
            return known[0]
        alive = _holds_lock(self._lock_path(run))
        self._alive[run] = (alive, time.monotonic())
        return alive

    # -- claiming -------------------------------------------------------------------------
    def feed(self, cells: Iterable[Cell]) -> Iterator[Cell | None]:
        """The cells this run should start, in order, each claimed just before it is
        yielded; `None` when every cell left is another live run's (ask again after a
        while); ends when every cell is claimed by this run or finished."""
        pending = {cell.key: cell for cell in cells}
        while pending:
            finished, claimed = self._look(list(pending))
            for key in finished:
                if key in pending:
                    del pending[key]
                    self.others_finished.append(key)
            free = [key for key in pending
                    if claimed.get(key) in (None, self.run) or not self.alive(claimed[key])]
            took = False
            for key in free:  # `_claim` checks again: the list may be old by then
                if key in pending and self._claim(key):
                    took = True
                    yield pending.pop(key)
            if pending and not took:
                yield None

    def _look(self, keys: list[str]) -> tuple[set[str], dict[str, str]]:
        """Of `keys`: those finished, and the claims on the others (key -> run)."""
        finished, claimed = set(), {}
        for i in range(0, len(keys), 500):  # SQLite's bound on host parameters
            part = keys[i:i + 500]
            marks = ", ".join("?" * len(part))
            finished |= {r[0] for r in self._conn.execute(
                f"SELECT key FROM cells WHERE finished_at IS NOT NULL AND key IN ({marks})",
                part)}
            claimed.update(self._conn.execute(
                f"SELECT key, run FROM claims WHERE key IN ({marks})", part))
        return finished, claimed

    def _claim(self, key: str) -> bool:
        """Claim `key` unless it is finished or a live run's: one write transaction."""
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            done = conn.execute("SELECT finished_at IS NOT NULL FROM cells WHERE key = ?",
                                (key,)).fetchone()
            row = conn.execute("SELECT run FROM claims WHERE key = ?", (key,)).fetchone()
            if (done and done[0]) or (row and row[0] != self.run and self.alive(row[0])):
                conn.execute("ROLLBACK")
                return False
            if row and row[0] != self.run:  # a dead run's: drop all of them
                conn.execute("DELETE FROM claims WHERE run = ?", (row[0],))
                _remove(self._lock_path(row[0]))
            conn.execute("INSERT OR REPLACE INTO claims VALUES (?, ?, ?, ?, ?)",
                         (key, self.run, os.getpid(), socket.gethostname(), _now()))
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return True


def _holds_lock(path: str) -> bool:
    """Whether some process holds the flock on `path` (False when the file is gone)."""
    try:
        f = open(path, "r+")  # noqa: SIM115 - closed by the `with` below, after the except
    except OSError:
        return False
    with f:
        if fcntl is None:  # pragma: no cover - Windows: the pid written in the file
            try:
                pid = int(f.read().split()[0])
                os.kill(pid, 0)
            except (ValueError, IndexError, OSError):
                return False
            return True
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        except OSError:
            return False
        fcntl.flock(f.fileno(), fcntl.LOCK_UN)
        return False


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
