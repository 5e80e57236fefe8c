"""Executors that run cells, and the loop that stores what they return.

`execute(matrix, store, executor)` plans the matrix in the store, skips the cells already
finished there, and hands the rest to an executor; every `Result` that comes back is
written by this (the coordinating) process in one transaction, so workers never write.

Executors (each a context manager with a `name` and `run(fn, cells) -> iterator of
Results` in completion order):

- `Serial()`: in this process, with Numba's default thread count.
- `Processes(n)`: n local worker processes (spawn context), each with `cores // n` Numba
  and BLAS threads so the cores are not oversubscribed. A worker that dies mid-cell breaks
  the pool; the unfinished cells are resubmitted to a fresh pool.
- `Dask(address=...)` or `Dask(local_workers=n)`: a Dask distributed cluster; `local_workers`
  starts a LocalCluster of n single-threaded worker processes with `cores // n` Numba/BLAS
  threads each. Workers of a remote cluster need optbench installed, and their thread
  counts are theirs to set (NUMBA_NUM_THREADS); plugins loaded here travel with the cells
  (`optbench.plugins.shipped`). A worker that dies mid-cell costs that
  cell's time only: the scheduler reruns it elsewhere (up to Dask's
  `distributed.scheduler.allowed-failures` times, then `WorkerLost`).

The function that runs one cell is a parameter (`fn`, default `optbench.train.run_cell`) so
that the mechanics can be tested with a cheap deterministic stand-in; it must be picklable
(a module-level function) for the process and Dask executors.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections import Counter
from contextlib import contextmanager
from typing import TYPE_CHECKING, Callable, Iterable, Iterator

from optbench.cell import Cell, Result
from optbench.errors import UsageError

if TYPE_CHECKING:
    from optbench.matrix import Matrix
    from optbench.store import Store

RunCell = Callable[[Cell], Result]
# Consecutive pool breakdowns with no cell finished in between before giving up.
MAX_BREAKDOWNS = 3
# How long to try reaching a Dask scheduler before calling its address bad.
CONNECT_TIMEOUT_S = 10


class WorkerLost(RuntimeError):
    """Workers kept dying while running the same cells."""


def run_cell(cell: Cell) -> Result:
    """The default cell runner: `optbench.train.run_cell`, imported where it runs."""
    from optbench.train import run_cell as train_run_cell

    return train_run_cell(cell)


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def worker_env(workers: int) -> dict[str, str]:
    """Thread counts for one of `workers` worker processes sharing this machine's cores."""
    n = str(max(1, cores() // workers))
    return {"NUMBA_NUM_THREADS": n, "OMP_NUM_THREADS": n, "OPENBLAS_NUM_THREADS": n,
            "MKL_NUM_THREADS": n}


def _check_count(option: str, n) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise UsageError(f"{option} must be a positive integer; got {n!r}")
    return n


# -- executors -----------------------------------------------------------------------------
class Serial:
    name = "serially in this process"

    def __enter__(self) -> "Serial":
        return self

    def __exit__(self, *exc) -> None:
        pass

    def run(self, fn: RunCell, cells: Iterable[Cell]) -> Iterator[Result]:
        for cell in cells:
            yield fn(cell)


def _init_worker(env: dict[str, str]) -> None:
    # Runs in a fresh (spawned) worker before anything imports numba, so the thread counts
    # hold. Ctrl-C is the coordinating process's business: it stops the workers itself.
    os.environ.update(env)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class Processes:
    """`workers` local processes; see the module docstring."""

    def __init__(self, workers: int):
        self.workers = _check_count("--workers", workers)
        self.name = f"on {workers} local worker processes"

    def __enter__(self) -> "Processes":
        return self

    def __exit__(self, *exc) -> None:
        pass

    def run(self, fn: RunCell, cells: Iterable[Cell]) -> Iterator[Result]:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed
        from concurrent.futures.process import BrokenProcessPool

        pending = {cell.key: cell for cell in cells}
        breakdowns = 0
        while pending:
            pool = ProcessPoolExecutor(
                self.workers, mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_worker, initargs=(worker_env(self.workers),),
            )
            try:
                futures = {pool.submit(fn, cell): cell for cell in pending.values()}
                for future in as_completed(futures):
                    try:
                        result = future.result()
                    except BrokenProcessPool:
                        breakdowns += 1
                        if breakdowns >= MAX_BREAKDOWNS:
                            raise WorkerLost(
                                f"worker processes died {breakdowns} times in a row; cells "
                                f"not finished: {', '.join(sorted(pending))}"
                            ) from None
                        break  # resubmit what is pending to a fresh pool
                    breakdowns = 0
                    del pending[futures[future].key]
                    yield result
            finally:
                _stop(pool)


def _stop(pool) -> None:
    """Shut the pool down now: cancel queued cells and end the workers' current ones."""
    processes = list((pool._processes or {}).values())  # no public handle before Python 3.14
    pool.shutdown(wait=False, cancel_futures=True)
    for p in processes:
        if p.is_alive():
            p.terminate()
    for p in processes:
        p.join()


class Dask:
    """A Dask distributed cluster: `address` of a running scheduler, or `local_workers`."""

    def __init__(self, address: str | None = None, local_workers: int | None = None):
        if (address is None) == (local_workers is None):
            raise UsageError("give either a Dask scheduler address or a local worker count")
        if local_workers is not None:
            _check_count("--dask-local", local_workers)
        elif not isinstance(address, str) or "://" not in address:
            raise UsageError(f"--scheduler wants an address like tcp://HOST:8786; got {address!r}")
        try:
            import distributed  # noqa: F401
        except ImportError:
            raise UsageError('Dask is not installed: pip install "optbench[dask]"') from None
        self.address, self.local_workers = address, local_workers
        self.client = self.cluster = None
        self.name = (f"on a Dask scheduler at {address}" if address else
                     f"on a Dask LocalCluster of {local_workers} workers")

    def __enter__(self) -> "Dask":
        import logging

        from distributed import Client, LocalCluster

        if self.local_workers is not None:
            self.cluster = LocalCluster(
                n_workers=self.local_workers, threads_per_worker=1, processes=True,
                dashboard_address=None, env=worker_env(self.local_workers),
                silence_logs=logging.ERROR,
            )
            self.client = Client(self.cluster)
        else:
            try:
                self.client = Client(self.address, timeout=f"{CONNECT_TIMEOUT_S}s")
            except OSError as exc:
                raise UsageError(f"cannot reach the Dask scheduler at {self.address}: {exc}") from None
        return self

    def __exit__(self, *exc) -> None:
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()

    def run(self, fn: RunCell, cells: Iterable[Cell]) -> Iterator[Result]:
        from distributed import as_completed
        from distributed.scheduler import KilledWorker

        futures = [self.client.submit(fn, cell, key=f"optbench-cell-{cell.key}") for cell in cells]
        try:
            for future in as_completed(futures):
                try:
                    yield future.result()
                except KilledWorker as exc:
                    raise WorkerLost(f"Dask workers kept dying while running {future.key}") from exc
        finally:
            self.client.cancel(futures)


# -- the loop ------------------------------------------------------------------------------
def execute(matrix: "Matrix", store: "Store", executor, fn: RunCell = run_cell,
            progress: "Progress | None" = None) -> int:
    """Run the matrix's unfinished cells on `executor`, storing each result as it arrives,
    wave after wave until its plan (`Matrix.plan`: widened grids, confirmations, horizon
    searches) asks for nothing new.

    Returns how many cells ran. Safe to interrupt at any point: every stored cell is whole,
    and a rerun plans the same waves from what is stored.
    """
    ran = 0
    with executor:  # first, so that a scheduler out of reach leaves the store untouched
        members = matrix.plan(store.figures())
        while True:
            store.record_matrix(matrix, members)
            finished = store.finished_keys()
            cells = {cell.key: cell for cell, _ in members}
            todo = [cell for key, cell in cells.items() if key not in finished]
            if progress is not None:
                progress.plan(total=len(cells), done=len(cells) - len(todo))
            if todo:
                ran += _run_wave(executor, fn, todo, store, progress)
                if not store.finished_keys() & {cell.key for cell in todo}:
                    raise WorkerLost(f"a wave of {len(todo)} cells ended with none of them "
                                     "stored")
            grown = matrix.plan(store.figures())
            if set(grown) <= set(members) and todo == []:
                break
            members = tuple(dict.fromkeys((*members, *grown)))
    return ran


def _run_wave(executor, fn, todo, store, progress) -> int:
    from optbench.plugins import shipped

    ran = 0
    results = executor.run(shipped(fn), todo)  # workers load this process's plugins
    try:
        for result in results:
            with _sigint_deferred():
                store.put(result)
            ran += 1
            if progress is not None:
                progress.update(result)
    finally:
        results.close()  # stops the workers now, also on Ctrl-C or an error
    return ran


@contextmanager
def _sigint_deferred():
    """Hold a Ctrl-C that arrives during a store write until the write is done."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught = []
    previous = signal.signal(signal.SIGINT, lambda *a: caught.append(a))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        raise KeyboardInterrupt


# -- progress ------------------------------------------------------------------------------
def describe(cell: Cell) -> str:
    return (f"{cell.task} T={cell.length} {cell.model}({cell.hidden}) {cell.optimizer} "
            f"lr={cell.lr:.3g} seed={cell.seed}")


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class Progress:
    """A bar with ETA and running counts on a terminal; one log line per cell otherwise."""

    WIDTH = 24

    def __init__(self, stream=None, bar: bool | None = None):
        self.stream = stream if stream is not None else sys.stderr
        self.bar = self.stream.isatty() if bar is None else bar

    def start(self, total: int, done: int) -> None:
        self.total, self.done = total, done
        self.ran, self.counts, self.t0, self.compile_s = 0, Counter(), time.perf_counter(), 0.0
        if done:
            self._line(f"{done} of {total} cells already in the store; running the other "
                       f"{total - done}")
        self._draw()

    def plan(self, total: int, done: int) -> None:
        """The cells planned so far (a later wave of an adaptive matrix plans more)."""
        if not hasattr(self, "total"):
            self.start(total, done)
        elif total != self.total:
            self._line(f"results so far ask for {total - self.total} more cells "
                       "(widened lr grids, confirmation seeds, longer lengths)")
            self.total = total
            self._draw()

    def update(self, result: Result) -> None:
        self.done += 1
        self.ran += 1
        self.counts[result.outcome] += 1
        self.compile_s += result.timings.get("compile_s", 0.0)
        if self.bar:
            self._draw()
            return
        how = {"solved": f"solved at step {result.steps_to_solve}",
               "diverged": f"diverged at step {result.diverged_step}",
               "budget": f"unsolved after {result.steps_run} steps"}[result.outcome]
        self._line(f"[{self.done:>{len(str(self.total))}}/{self.total}] "
                   f"{describe(result.cell)}: {how} ({result.timings.get('total_s', 0):.1f} s)"
                   f"  ETA {self.eta()}")

    def eta(self) -> str:
        """Time per finished cell so far, times the cells left; one-off compile time aside."""
        if not self.ran:
            return "?"
        elapsed = max(time.perf_counter() - self.t0 - self.compile_s, 0.0)
        return _duration(elapsed / self.ran * (self.total - self.done))

    def close(self) -> None:
        if self.bar:
            self.stream.write("\n")
            self.stream.flush()

    def _draw(self) -> None:
        if not self.bar:
            return
        filled = self.WIDTH * self.done // max(self.total, 1)
        self.stream.write(
            f"\r[{'#' * filled}{'.' * (self.WIDTH - filled)}] {self.done}/{self.total}"
            f"  solved {self.counts['solved']}  diverged {self.counts['diverged']}"
            f"  ETA {self.eta()} "
        )
        self.stream.flush()

    def _line(self, text: str) -> None:
        self.stream.write(("\r" if self.bar else "") + text + "\n")
        self.stream.flush()
