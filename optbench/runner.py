"""Executors that run cells, and the loop that stores what they return.

`execute(matrix, store, executor)` plans the matrix in the store, skips the cells already
finished there, and hands the rest to an executor, claiming each cell just before it starts
(`optbench.claims`: a second run into the same directory trains other cells, and takes
over the cells of a run that died); every `Result` that comes back is written by this
(the coordinating) process in one transaction, so workers never write.

Executors (each a context manager with a `name` and `run(fn, cells) -> iterator of
Results` in completion order). `cells` is consumed lazily, one cell per free worker, and
may yield None: nothing to start now (the cells left are another run's), ask again soon.

- `Serial(threads=None)`: in this process, with Numba's default thread count or `threads`.
- `Processes(n, threads=None)`: n local worker processes (spawn context), each with
  `threads` or `cores // n` Numba and BLAS threads so the cores are not oversubscribed.
  A worker that dies mid-cell breaks the pool; the unfinished cells are resubmitted to a
  fresh pool. Workers exit when the coordinating process dies (they watch their parent).
- `Dask(address=...)` or `Dask(local_workers=n)`: a Dask distributed cluster; `local_workers`
  starts a LocalCluster of n single-threaded worker processes with `cores // n` Numba/BLAS
  threads each, which exit when the coordinating process dies. Workers of a remote
  cluster need optbench installed, and their thread counts are theirs to set
  (NUMBA_NUM_THREADS); plugins loaded here travel with the cells
  (`optbench.plugins.shipped`). A worker that dies mid-cell costs that
  cell's time only: the scheduler reruns it elsewhere (up to Dask's
  `distributed.scheduler.allowed-failures` times, then `WorkerLost`).

The function that runs one cell is a parameter (`fn`, default `optbench.train.run_cell`) so
that the mechanics can be tested with a cheap deterministic stand-in; it must be picklable
(a module-level function) for the process and Dask executors.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor
from concurrent.futures import wait as wait_futures
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from typing import TYPE_CHECKING, Callable, Iterable, Iterator

from optbench import machine
from optbench.cell import Cell, Result
from optbench.claims import Claims
from optbench.cost import Eta
from optbench.errors import UsageError
from optbench.plugins import shipped

# Imported where used: optbench.train (numpy; tests swap its run_cell), Numba and Dask.

if TYPE_CHECKING:
    from optbench.matrix import Matrix
    from optbench.store import Store

RunCell = Callable[[Cell], Result]
# Consecutive pool breakdowns with no cell finished in between before giving up.
MAX_BREAKDOWNS = 3
# How long to try reaching a Dask scheduler before calling its address bad.
CONNECT_TIMEOUT_S = 10
# How often an idle coordinator looks for cells to start, and a worker for its parent.
POLL_S = 0.5


class WorkerLost(RuntimeError):
    """Workers kept dying while running the same cells."""


def run_cell(cell: Cell) -> Result:
    """The default cell runner: `optbench.train.run_cell`, imported where it runs."""
    from optbench.train import run_cell as train_run_cell

    return train_run_cell(cell)


def cores() -> int:
    return machine.cores()


def worker_env(workers: int, threads: int | None = None) -> dict[str, str]:
    """Thread counts for one of `workers` worker processes sharing this machine's cores
    (`threads` each when given)."""
    n = str(threads if threads is not None else max(1, cores() // workers))
    return {"NUMBA_NUM_THREADS": n, "OMP_NUM_THREADS": n, "OPENBLAS_NUM_THREADS": n,
            "MKL_NUM_THREADS": n}


def watch_parent(parent: int) -> None:
    """Exit this process soon after `parent` (its coordinator) is gone: a killed
    coordinator's workers would otherwise train on for nobody (a pool worker blocks on its
    task queue forever, and each holds its cell's memory). A daemon thread compares the
    parent process id, which changes when the parent dies and this process is adopted."""
    def loop():
        while os.getppid() == parent:
            time.sleep(POLL_S)
        os._exit(70)

    if os.getppid() != parent:
        os._exit(70)
    threading.Thread(target=loop, name="optbench-watch-parent", daemon=True).start()


def _cells(cells: Iterable) -> Iterator:
    """`cells` as an iterator, None (nothing to start now) and all."""
    return iter(cells)


def _check_count(option: str, n) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise UsageError(f"{option} must be a positive integer; got {n!r}")
    return n


# -- executors -----------------------------------------------------------------------------
class _Reentrant:
    """`with` may nest (`run` enters the executor before the store exists, so that a
    scheduler out of reach leaves no store behind, and `execute` enters it again): only
    the outermost `with` starts and stops it."""

    _depth = 0

    def __enter__(self):
        if self._depth == 0:
            self._start()
        self._depth += 1
        return self

    def __exit__(self, *exc) -> None:
        self._depth -= 1
        if self._depth == 0:
            self._stop()

    def _start(self) -> None:
        pass

    def _stop(self) -> None:
        pass


class Serial(_Reentrant):
    name = "serially in this process"
    parallel = 1

    def __init__(self, threads: int | None = None):
        self.threads = None if threads is None else _check_count("--threads", threads)
        self._before = None

    def _start(self) -> None:
        if self.threads is not None:
            import numba

            if self.threads > numba.config.NUMBA_NUM_THREADS:
                raise UsageError(f"--threads {self.threads}: this process can start at most "
                                 f"{numba.config.NUMBA_NUM_THREADS} (NUMBA_NUM_THREADS)")
            self._before = numba.get_num_threads()
            numba.set_num_threads(self.threads)

    def _stop(self) -> None:
        if self._before is not None:
            import numba

            numba.set_num_threads(self._before)

    def run(self, fn: RunCell, cells: Iterable[Cell]) -> Iterator[Result]:
        for cell in cells:
            if cell is None:
                time.sleep(POLL_S)
                continue
            yield fn(cell)


def init_worker(env: dict[str, str], parent: int | None = None) -> None:
    # Runs in a fresh (spawned) worker before anything imports numba, so the thread counts
    # hold. Ctrl-C is the coordinating process's business: it stops the workers itself.
    os.environ.update(env)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if parent is not None:
        watch_parent(parent)


class Processes(_Reentrant):
    """`workers` local processes; see the module docstring."""

    def __init__(self, workers: int, threads: int | None = None):
        self.workers = self.parallel = _check_count("--workers", workers)
        self.threads = None if threads is None else _check_count("--threads", threads)
        self.name = f"on {workers} local worker processes"

    def run(self, fn: RunCell, cells: Iterable[Cell]) -> Iterator[Result]:
        feed = _cells(cells)
        retry: list[Cell] = []  # cells of a broken pool, first in line for the next one
        more = True
        breakdowns = 0
        while more or retry:
            pool = ProcessPoolExecutor(
                self.workers, mp_context=multiprocessing.get_context("spawn"),
                initializer=init_worker,
                initargs=(worker_env(self.workers, self.threads), os.getpid()),
            )
            running: dict = {}
            try:
                broken = False
                while not broken:
                    while len(running) < self.workers:  # one cell per worker, claimed late
                        cell = retry.pop(0) if retry else next(feed, _END) if more else _END
                        if cell is _END:
                            more = False
                        if cell is None or cell is _END:
                            break
                        try:
                            running[pool.submit(fn, cell)] = cell
                        except BrokenProcessPool:
                            retry.insert(0, cell)
                            broken = True
                            break
                    if broken:
                        break
                    if not running:
                        if not more:
                            return
                        time.sleep(POLL_S)
                        continue
                    done, _ = wait_futures(running, timeout=POLL_S, return_when=FIRST_COMPLETED)
                    for future in done:
                        try:
                            result = future.result()
                        except BrokenProcessPool:
                            broken = True
                            continue
                        breakdowns = 0
                        del running[future]
                        yield result
                breakdowns += 1
                lost = []
                for future, cell in running.items():
                    if future.done() and future.exception() is None:
                        yield future.result()  # finished before the pool broke
                    else:
                        lost.append(cell)
                retry = lost + retry
                if breakdowns >= MAX_BREAKDOWNS:
                    raise WorkerLost(
                        f"worker processes died {breakdowns} times in a row; cells not "
                        f"finished: {', '.join(sorted(c.key for c in retry))}")
            finally:
                stop_pool(pool)


_END = object()  # the end of a cell feed


def stop_pool(pool) -> None:
    """Shut the pool down now: cancel queued cells and end the workers' current ones."""
    processes = list((pool._processes or {}).values())  # no public handle before Python 3.14
    pool.shutdown(wait=False, cancel_futures=True)
    for p in processes:
        if p.is_alive():
            p.terminate()
    for p in processes:
        p.join()


class Dask(_Reentrant):
    """A Dask distributed cluster: `address` of a running scheduler, or `local_workers`."""

    def __init__(self, address: str | None = None, local_workers: int | None = None,
                 threads: int | None = None):
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
        self.address, self.local_workers, self.threads = address, local_workers, threads
        self.client = self.cluster = None
        self.name = (f"on a Dask scheduler at {address}" if address else
                     f"on a Dask LocalCluster of {local_workers} workers")

    def _start(self) -> None:
        import logging

        from distributed import Client, LocalCluster

        if self.local_workers is not None:
            self.cluster = LocalCluster(
                n_workers=self.local_workers, threads_per_worker=1, processes=True,
                dashboard_address=None, env=worker_env(self.local_workers, self.threads),
                silence_logs=logging.ERROR,
            )
            self.client = Client(self.cluster)
        else:
            # distributed logs each failed attempt on stderr; the refusal below is one line.
            quiet = logging.getLogger("distributed")
            level = quiet.level
            quiet.setLevel(logging.CRITICAL)
            try:
                self.client = Client(self.address, timeout=f"{CONNECT_TIMEOUT_S}s")
            except (OSError, ValueError) as exc:
                why = " ".join(str(exc).split())[:200]
                raise UsageError(f"cannot reach the Dask scheduler at {self.address}: "
                                 f"{why}") from None
            finally:
                quiet.setLevel(level)

    def _stop(self) -> None:
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()

    @property
    def parallel(self) -> int:
        """Cells the cluster runs at once: its worker threads (at least one)."""
        try:
            return max(1, sum(self.client.nthreads().values()))
        except (OSError, TimeoutError, RuntimeError):  # one that does not answer now
            return 1

    def run(self, fn: RunCell, cells: Iterable[Cell]) -> Iterator[Result]:
        from distributed import wait
        from distributed.scheduler import KilledWorker

        feed = _cells(cells)
        running: dict = {}
        more = True
        slots, asked = 1, -math.inf
        parent = os.getpid() if self.cluster is not None else None
        try:
            while more or running:
                if time.monotonic() - asked > 5 * POLL_S:  # workers may come and go
                    slots, asked = self.parallel, time.monotonic()
                while more and len(running) < slots:  # one cell per worker thread
                    cell = next(feed, _END)
                    if cell is _END:
                        more = False
                    if cell is None or cell is _END:
                        break
                    future = self.client.submit(_watched, fn, cell, parent, pure=False,
                                                key=f"optbench-cell-{cell.key}")
                    running[future] = cell
                if not running:
                    if more:
                        time.sleep(POLL_S)
                    continue
                try:
                    wait(list(running), timeout=POLL_S, return_when="FIRST_COMPLETED")
                except TimeoutError:
                    continue
                for future in [f for f in running if f.done()]:
                    del running[future]
                    try:
                        yield future.result()
                    except KilledWorker as exc:
                        raise WorkerLost(
                            f"Dask workers kept dying while running {future.key}") from exc
        finally:
            self.client.cancel(list(running))


def _watched(fn: RunCell, cell: Cell, parent: int | None) -> Result:
    """`fn(cell)` in a Dask worker; a worker of a LocalCluster (`parent`: the coordinating
    process) first starts watching it, once per process."""
    global _WATCHING
    if parent is not None and not _WATCHING:
        watch_parent(parent)
        _WATCHING = True
    return fn(cell)


_WATCHING = False


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
        store.record_matrix(matrix, members)
        with Claims(os.path.dirname(store.path) or ".", store.path) as claims:
            while True:
                finished = store.finished_keys()
                cells = {cell.key: cell for cell, _ in members}
                todo = [cell for key, cell in cells.items() if key not in finished]
                if progress is not None:
                    progress.plan(cells.values(), todo, lambda keys: store.outcomes(keys),
                                  parallel=getattr(executor, "parallel", 1),
                                  more=matrix.adaptive)
                if todo:
                    ran += _run_wave(executor, fn, todo, store, progress, claims)
                    if not store.finished_keys() & {cell.key for cell in todo}:
                        raise WorkerLost(f"a wave of {len(todo)} cells ended with none of "
                                         "them stored")
                grown = matrix.plan(store.figures())
                if set(grown) <= set(members) and not todo:
                    break
                members = tuple(dict.fromkeys((*members, *grown)))
                store.record_matrix(matrix, members)
    return ran


def _run_wave(executor, fn, todo, store, progress, claims) -> int:
    """Run the cells `todo` (as this run claims them) and store each result as it comes."""
    ran = 0
    # Workers load this process's plugins.
    results = executor.run(shipped(fn), _noting(claims, store, progress, todo))
    try:
        for result in results:
            with _sigint_deferred():
                store.put(result)
            ran += 1
            if progress is not None:
                progress.update(result)
    finally:
        results.close()  # stops the workers now, also on Ctrl-C or an error
    if progress is not None:
        _note_others(claims, store, progress)
    return ran


def _noting(claims, store, progress, todo):
    """The claimed cells, telling `progress` about the cells other runs finish meanwhile."""
    for cell in claims.feed(todo):
        if progress is not None:
            _note_others(claims, store, progress)
        yield cell


def _note_others(claims, store, progress) -> None:
    if claims.others_finished:
        keys, claims.others_finished = claims.others_finished, []
        progress.others(store.outcomes(keys), keys)


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
    """A bar with ETA and running counts on a terminal; one log line per cell otherwise.

    Counts cover the whole matrix (cells found finished in the store included), so that the
    bar ends where the run's summary starts. The ETA is `optbench.cost.Eta`'s: each cell
    left costed from its shape, at the rates of the cells finished so far (compile time
    aside); the figure in brackets is its upper bound, every cell using its whole step
    budget (cells stop early once solved).
    """

    WIDTH = 24

    def __init__(self, stream=None, bar: bool | None = None):
        self.stream = stream if stream is not None else sys.stderr
        self.bar = self.stream.isatty() if bar is None else bar
        self.more = False  # later waves may add cells (`plan`)

    def start(self, total: int, done: int, todo: Iterable[Cell] = (),
              counts: Counter | None = None, parallel: int = 1) -> None:
        self.total, self.done = total, done
        self.ran, self.counts = 0, Counter(counts or {})
        self.left = {cell.key: cell for cell in todo}
        self.estimate = Eta(parallel=max(1, parallel))
        if done:
            self._line(f"{done} of {total} cells already in the store; running the other "
                       f"{total - done}")
        self._draw()

    def plan(self, cells, todo, outcomes, parallel: int = 1, more: bool = False) -> None:
        """The cells planned so far and those of them still to run; a later wave of an
        adaptive matrix plans more (`outcomes(keys)`: the stored outcomes of those keys).
        `more`: later waves may add cells, so the ETA covers the cells planned so far only
        and says so."""
        self.more = more
        cells, todo = list(cells), list(todo)
        if not hasattr(self, "total"):
            left = {cell.key for cell in todo}
            finished = [c.key for c in cells if c.key not in left]
            self.start(len(cells), len(finished), todo, outcomes(finished), parallel)
            return
        new = [cell for cell in todo if cell.key not in self.left]
        if len(cells) != self.total or new:
            self._line(f"results so far ask for {len(cells) - self.total} more cells "
                       "(widened lr grids, confirmation seeds, longer lengths)")
            self.total = len(cells)
            self.left.update({cell.key: cell for cell in new})
            self._draw()

    def update(self, result: Result) -> None:
        self.done += 1
        self.ran += 1
        self.counts[result.outcome] += 1
        self.left.pop(result.key, None)
        t = result.timings
        seconds = t.get("total_s", 0.0) - t.get("compile_s", 0.0)
        if seconds > 0:
            self.estimate.done(result.cell, result.steps_run, len(result.curves) or None,
                               seconds)
        if self.bar:
            self._draw()
            return
        how = {"solved": f"solved at step {result.steps_to_solve}",
               "diverged": f"diverged at step {result.diverged_step}",
               "budget": f"unsolved after {result.steps_run} steps"}[result.outcome]
        self._line(f"[{self.done:>{len(str(self.total))}}/{self.total}] "
                   f"{describe(result.cell)}: {how} ({result.timings.get('total_s', 0):.1f} s)"
                   f"  ETA {self.eta()}")

    def others(self, outcomes: Counter, keys: Iterable[str]) -> None:
        """Cells another run into the same store finished."""
        keys = [k for k in keys if k in self.left]
        for key in keys:
            del self.left[key]
        self.done += len(keys)
        self.counts.update(outcomes)
        if keys:
            self._line(f"{len(keys)} more cells finished by another run into this store") \
                if not self.bar else self._draw()

    def eta(self) -> str:
        """The time left (see the class docstring): 'ETA 3m10s (at most 5m02s)'."""
        if not self.left:
            return "0s" if self.ran else "?"
        expected, bound = self.estimate.left(self.left.values())
        if math.isnan(expected):  # nothing learnt yet
            return "?"
        text = _duration(expected)
        text = text if _duration(bound) == text else f"{text} (at most {_duration(bound)})"
        # an adaptive matrix's next wave depends on results not in yet: no figure covers it
        return f"{text} for this wave" if self.more else text

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
