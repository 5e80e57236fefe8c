"""The lockstep engine as an executor of `optbench.runner` (`name`, a context manager,
`run(fn, cells)` -> Results in completion order), so that `runner.execute` stores each
member the moment it finishes (a killed run keeps every finished cell and resumes),
progress counts cells, and the report reads the store as it always does.

    python -m optbench run standard --engine lockstep --device cuda [--group-size 256]
    python -m optbench run quick --engine lockstep --workers 2     # groups on 2 processes

With --workers N (CPU only) whole groups run on N local worker processes (spawned, with
`cores // N` Numba threads each, as runner.Processes gives them), and each member's Result
comes back through a queue the moment it finishes. With one thread per process no step
waits for another thread at the end of its parallel region, which on a machine shared
with other work is what a group of threads loses time to; a worker that dies costs its
group's unfinished members, which run again on a fresh pool.
"""

from __future__ import annotations

import multiprocessing
import os
import queue as queues
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from optbench.cell import Cell, Result
from optbench.errors import UsageError
from optbench.lockstep.engine import DEVICES, batchable, plan, run_group
from optbench.plugins import ensure
from optbench.runner import MAX_BREAKDOWNS, WorkerLost, init_worker, stop_pool, worker_env

ENGINES = ("cells", "lockstep")
POLL_S = 0.5  # how long to wait when the feed has nothing to start (other runs' cells)
# Members per group. The CPU gains little past a few dozen members (the per-step host
# work is already shared), and a smaller group commits its budget-bound members sooner;
# a GPU needs many models to fill it (the `standard` preset's groups have 135 cells).
DEFAULT_GROUP = {"cpu": 32, "cuda": 256}
MAX_GROUP = 4096


class Lockstep:
    """Run the cells in lockstep groups (optbench.lockstep.engine.plan) on `device`."""

    def __init__(self, device: str = "cpu", group_size: int | None = None,
                 workers: int | None = None, threads: int | None = None):
        if device not in DEVICES:
            raise UsageError(f"--device {device!r} unknown; allowed: {', '.join(DEVICES)}")
        if group_size is None:
            group_size = DEFAULT_GROUP[device]
        if isinstance(group_size, bool) or not isinstance(group_size, int) \
                or not 1 <= group_size <= MAX_GROUP:
            raise UsageError(f"--group-size must be an integer from 1 to {MAX_GROUP}; "
                             f"got {group_size!r}")
        if workers is not None:
            if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
                raise UsageError(f"--workers must be a positive integer; got {workers!r}")
            if device == "cuda":
                raise UsageError("--engine lockstep --device cuda runs in one process (it "
                                 "drives the GPU); --workers is for --device cpu")
        if device == "cuda":
            from optbench.optim.drivers import cuda_module

            cuda_module()  # UsageError, one line, when there is neither a GPU nor the simulator
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int)
                                    or threads < 1):
            raise UsageError(f"--threads must be a positive integer; got {threads!r}")
        self.device, self.group_size, self.workers = device, group_size, workers
        self.threads = threads
        # Cells that run at once (for the progress's time estimate): a group per process.
        self.parallel = group_size * (workers or 1)
        where = f"{workers} local worker processes" if workers else f"the {device}"
        self.name = f"in lockstep groups of up to {group_size} cells on {where}"
        self._depth, self._before = 0, None

    def __enter__(self):
        self._depth += 1
        if self._depth == 1 and self.threads is not None and self.workers is None:
            import numba

            if self.threads > numba.config.NUMBA_NUM_THREADS:
                raise UsageError(f"--threads {self.threads}: this process can start at most "
                                 f"{numba.config.NUMBA_NUM_THREADS} (NUMBA_NUM_THREADS)")
            self._before = numba.get_num_threads()
            numba.set_num_threads(self.threads)
        return self

    def __exit__(self, *exc) -> None:
        self._depth -= 1
        if self._depth == 0 and self._before is not None:
            import numba

            numba.set_num_threads(self._before)
            self._before = None

    def run(self, fn, cells: Iterable[Cell | None]) -> Iterator[Result]:
        """The cells in lockstep groups, Results as members finish. `cells` is the runner's
        feed: None means that nothing more can start now (other runs hold the rest), so
        what has come is run, and the feed is asked again. `fn`, the per-cell runner, only
        runs cells whose optimizer has no batched step (torch.optim classes); the rest are
        trained by the engine, with run_cell's loop for each member. Plugins that `fn`
        carries (optbench.plugins.shipped) are loaded in the worker processes too."""
        feed = iter(cells)
        more = True
        while more:
            batch = []
            for cell in feed:
                if cell is None:
                    break
                batch.append(cell)
            else:
                more = False
            if not batch:
                if more:
                    time.sleep(POLL_S)
                continue
            for cell in [c for c in batch if not batchable(c)]:
                yield fn(cell)
            groups = plan([c for c in batch if batchable(c)], self.group_size)
            if self.workers is None:
                for group in groups:
                    yield from run_group(group, self.device)
            else:
                yield from _on_processes(groups, self.workers, self.group_size, self.threads,
                                         getattr(fn, "plugins", ()))


_RESULTS = None  # a worker's queue to the coordinating process


def _init_worker(env: dict, parent: int, results, plugins: tuple) -> None:
    global _RESULTS
    init_worker(env, parent)
    _RESULTS = results
    if plugins:
        ensure(plugins)


def _run_in_worker(group: list[Cell]) -> int:
    """Train one group on the CPU, sending each Result home the moment it finishes."""
    n = 0
    for result in run_group(group, "cpu"):
        _RESULTS.put(result)
        n += 1
    return n


def _on_processes(groups: list[list[Cell]], workers: int, group_size: int,
                  threads: int | None = None, plugins: tuple = ()) -> Iterator[Result]:
    """Groups on `workers` spawned processes; Results as they arrive. A pool that breaks
    (a worker died) is replaced and the members not yet back run again, up to
    runner.MAX_BREAKDOWNS times in a row without progress."""
    ctx = multiprocessing.get_context("spawn")
    pending = {c.key: c for g in groups for c in g}
    breakdowns = 0
    while pending:
        results = ctx.Queue()
        pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                                   initargs=(worker_env(workers, threads), os.getpid(), results,
                                             tuple(plugins)))
        try:
            todo = plan(pending.values(), group_size) if breakdowns else groups
            futures = [pool.submit(_run_in_worker, g) for g in todo]
            broken = False
            while pending and not broken:
                try:
                    result = results.get(timeout=0.2)
                except queues.Empty:
                    for f in futures:
                        if f.done() and isinstance(f.exception(), BrokenProcessPool):
                            broken = True
                        elif f.done() and f.exception() is not None:
                            # as is: `from` would replace the worker's traceback, which
                            # concurrent.futures chains to the exception as its cause
                            raise f.exception()  # noqa: B904
                    continue
                if result.key in pending:
                    del pending[result.key]
                    breakdowns = 0
                    yield result
            if broken:
                while True:  # what arrived before the pool broke
                    try:
                        result = results.get(timeout=0.5)
                    except queues.Empty:
                        break
                    if result.key in pending:
                        del pending[result.key]
                        yield result
                breakdowns += 1
                if breakdowns >= MAX_BREAKDOWNS and pending:
                    raise WorkerLost(f"worker processes died {breakdowns} times in a row; "
                                     f"cells not finished: {', '.join(sorted(pending))}")
        finally:
            stop_pool(pool)
            results.close()


def executor_for(args) -> Lockstep | None:
    """The executor that `run`'s --engine / --device / --group-size ask for (None: the
    per-cell executors), checked against the other executor options."""
    engine = args.engine or "cells"
    if engine not in ENGINES:
        raise UsageError(f"--engine {engine!r} unknown; allowed: {', '.join(ENGINES)}")
    if engine == "cells":
        if args.device is not None or args.group_size is not None:
            raise UsageError("--device and --group-size are options of --engine lockstep")
        return None
    if args.scheduler or args.dask_local is not None:
        raise UsageError("--engine lockstep runs on this machine (its threads, local worker "
                         "processes or its GPU); it does not combine with Dask options")
    return Lockstep(args.device or "cpu", args.group_size, args.workers,
                    getattr(args, "threads", None))
