"""`python -m optbench run`: run a benchmark matrix into a resumable results store.

    python -m optbench run [PRESET | --config FILE] [--out DIR] [--workers N]
                           [--scheduler ADDRESS | --dask-local N] [--quiet] [--dry-run]
                           [--engine lockstep [--device cpu|cuda] [--group-size N]]

With no arguments it runs the `quick` preset serially into `results/` (the store is
`results/optbench.sqlite`; read it with `optbench.load("results")`). Rerunning the same
command skips the finished cells, so an interrupted run resumes where it stopped. Every
input is checked before any work starts; bad input is one line on stderr and exit status 2.
"""

from __future__ import annotations

import os
import sys
import time
from collections import Counter

DEFAULT_OUT = "results"


def configure(parser) -> None:
    from optbench.matrix import DEFAULT_PRESET, PRESETS

    parser.add_argument(
        "preset", nargs="?", metavar="PRESET",
        help=f"one of: {', '.join(PRESETS)} (default: {DEFAULT_PRESET})",
    )
    parser.add_argument("--config", metavar="FILE", help="a TOML matrix (see examples/custom.toml)")
    parser.add_argument("--out", metavar="DIR", default=DEFAULT_OUT,
                        help=f"results directory (default: {DEFAULT_OUT}/)")
    parser.add_argument("--workers", metavar="N", type=_int, default=None,
                        help="run on N local worker processes (default: serial, in this process)")
    dask = parser.add_mutually_exclusive_group()
    dask.add_argument("--scheduler", metavar="ADDRESS",
                      help="run on the Dask cluster whose scheduler is at ADDRESS (tcp://...)")
    dask.add_argument("--dask-local", metavar="N", type=_int,
                      help="start a Dask LocalCluster of N worker processes and run on it")
    parser.add_argument("--engine", metavar="ENGINE", default=None,
                        help="cells (default: one cell at a time per worker) or lockstep "
                        "(many cells of one shape per pass; optbench.lockstep)")
    parser.add_argument("--device", metavar="DEVICE", default=None,
                        help="--engine lockstep: cpu (default) or cuda")
    parser.add_argument("--group-size", metavar="N", type=_int, default=None,
                        help="--engine lockstep: cells per group at most (default: 32 on "
                        "the cpu, 256 on cuda)")
    parser.add_argument("--quiet", action="store_true",
                        help="one log line per finished cell instead of the progress bar")
    parser.add_argument("--dry-run", action="store_true",
                        help="check the input and print the plan; run nothing")
    parser.add_argument("--no-report", action="store_true",
                        help="do not write the report (DIR/reports/MATRIX.pdf) at the end")


def _int(text: str):
    """Leave the range check to `run`, which words it like every other bad input."""
    try:
        return int(text)
    except ValueError:
        return text


def run(args) -> int:
    from optbench import matrix as mx
    from optbench import runner
    from optbench.errors import UsageError
    from optbench.store import Store

    if args.preset is not None and args.config is not None:
        raise UsageError("give a PRESET or --config FILE, not both")
    m = mx.from_toml(args.config) if args.config else mx.from_preset(args.preset or mx.DEFAULT_PRESET)
    if args.workers is not None and (args.scheduler or args.dask_local is not None):
        raise UsageError("--workers runs local processes; it does not combine with Dask options")
    if args.scheduler or args.dask_local is not None:
        executor = runner.Dask(address=args.scheduler, local_workers=args.dask_local)
    elif args.workers is not None:
        executor = runner.Processes(args.workers)
    else:
        executor = runner.Serial()
    if args.engine is not None or args.device is not None or args.group_size is not None:
        from optbench.lockstep.executor import executor_for

        executor = executor_for(args) or executor

    with Store.open(args.out) as store:
        finished = store.finished_keys()
        todo = sum(cell.key not in finished for cell in m.cells)
        tiers = ", ".join(f"{t} {n}" for t, n in Counter(t for _, t in m.members).items())
        print(f"matrix {m.name}: {len(m.cells)} cells ({tiers}); {len(m.cells) - todo} already "
              f"in {store.path}, {todo} to run {executor.name}", file=sys.stderr)
        if args.dry_run:
            return 0
        if isinstance(executor, runner.Serial) and todo:
            _warn_if_busy()
        progress = runner.Progress(bar=False if args.quiet else None)
        try:
            runner.execute(m, store, executor, progress=progress)
        except (KeyboardInterrupt, runner.WorkerLost) as exc:
            progress.close()
            done = len(store.finished_keys() & {c.key for c in m.cells})
            why = "interrupted" if isinstance(exc, KeyboardInterrupt) else str(exc)
            print(f"{why}: {done} of {len(m.cells)} cells are safely stored in {store.path}; "
                  "run the same command again to resume", file=sys.stderr)
            return 130 if isinstance(exc, KeyboardInterrupt) else 1
        progress.close()
        print(summary(store.frames(matrix=m.name), m))
    print(f"results in {args.out}/: read them with optbench.load({args.out!r})", file=sys.stderr)
    return 0 if args.no_report else _report(args.out, m.name)


def _warn_if_busy() -> None:
    """Say so when other processes keep the cores busy: the threads of a Numba parallel
    region wait for each other at its end, and a descheduled one costs a time slice, so a
    shared core made a training step 10-200x slower here (one thread per process does not
    suffer that; --workers gives each worker one)."""
    import numba

    threads = numba.get_num_threads()
    busy = _busy_cores() if threads > 1 else None
    if busy is not None and busy >= 0.5:
        print(f"note: other processes are using {busy:.1f} of {os.cpu_count()} cores; Numba's "
              f"{threads} threads slow down badly on busy cores: NUMBA_NUM_THREADS=1 or "
              "--workers avoids that", file=sys.stderr)


def _busy_cores(seconds: float = 0.2) -> float | None:
    """Cores kept busy by anything while this process sleeps, from /proc/stat (Linux; None
    elsewhere). The load average would lag by a minute: it still counts a job just ended."""
    def sample():
        with open("/proc/stat") as f:
            ticks = [int(v) for v in f.readline().split()[1:9]]
        return ticks[3] + ticks[4], sum(ticks)  # idle + iowait, all

    try:
        idle0, total0 = sample()
        time.sleep(seconds)
        idle1, total1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    if total1 <= total0:
        return None
    return (1 - (idle1 - idle0) / (total1 - total0)) * (os.cpu_count() or 1)


def _report(directory: str, matrix: str) -> int:
    """The hook to `optbench.report`: this matrix's report, written beside its store."""
    from optbench.report.cli import summary as report_summary
    from optbench.report.document import build

    try:
        print(report_summary(build(directory, matrix=matrix)), file=sys.stderr)
    except KeyboardInterrupt:
        print(f"interrupted while writing the report; every cell is stored in {directory}/: "
              f"python -m optbench report {directory} writes it", file=sys.stderr)
        return 130
    return 0


def summary(results, m) -> str:
    """Per tier, one row per (task, length, model, optimizer): the lr (tuned tier: the one
    `matrix.pick_lr` picks), how many seeds solved and diverged, the median steps to solve,
    and the median final validation and test metric."""
    from optbench import tasks
    from optbench.matrix import label, pick_lr

    keys = {cell.key for cell in m.cells}
    cells = results.cells[results.cells["key"].isin(keys)]
    counts = cells["outcome"].value_counts()
    lines = [f"{m.name}: {len(cells)} of {len(keys)} cells finished: "
             + ", ".join(f"{counts.get(o, 0)} {o}" for o in ("solved", "budget", "diverged"))]
    for tier in m.config["tiers"]:
        tier_keys = {cell.key for cell, t in m.members if t == tier}
        picked = pick_lr(cells[cells["key"].isin(tier_keys)])
        if picked.empty:
            continue
        table = picked.assign(
            metric=[tasks.get(t).metric_name for t in picked["task"]],
            model=[f"{k}({h})" for k, h in zip(picked["model"], picked["hidden"])],
            optimizer=[label(o, v) for o, v in zip(picked["optimizer"], picked["variant"])],
            solved=[f"{s}/{n}" for s, n in zip(picked["solved"], picked["seeds"])],
            steps=picked["steps_median"].map(lambda x: "-" if x != x else f"{x:.0f}"),
        )[["task", "length", "model", "optimizer", "lr", "solved", "diverged", "steps",
           "metric", "val_median", "test_median"]]
        what = ("the lr picked from the grid on the validation set" if tier == "tuned"
                else "default hyper-parameters")
        lines += ["", f"tier {tier} ({what}; medians over seeds, diverged seeds aside):",
                  table.to_string(index=False, float_format=lambda x: f"{x:.4g}")]
    return "\n".join(lines)
