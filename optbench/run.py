"""`python -m optbench run`: run a benchmark matrix into a resumable results store.

    python -m optbench run [PRESET | --config FILE] [--out DIR] [--workers N] [--threads N]
                           [--scheduler ADDRESS | --dask-local N] [--quiet] [--dry-run]
                           [--plugin FILE_OR_MODULE ...]
                           [--engine lockstep [--device cpu|cuda] [--group-size N]]

With no arguments it runs the `quick` preset into `results/` (the store is
`results/optbench.sqlite`; read it with `optbench.load("results")`), on as many worker
processes and Numba threads as this machine's cells, cores and their load suggest
(`optbench.machine.choose`; the choice and its reason are printed; --workers and
--threads or NUMBA_NUM_THREADS override it). Rerunning the same command skips the finished
cells, so an interrupted run resumes where it stopped; two runs into one directory share
its cells (`optbench.claims`). Every input is checked before any work starts; bad input is
one line on stderr and exit status 2, and leaves the store as it was.
"""

from __future__ import annotations

import os
import sys
from collections import Counter
from contextlib import ExitStack

from optbench import cost, machine, plugins
from optbench import matrix as mx
from optbench.errors import UsageError
from optbench.matrix import DEFAULT_PRESET, PRESETS

# The CLI imports this module for `--help`: what a run needs beyond checking its options
# (the store, the executors, Numba, the report's pandas) is imported where the run uses it.

DEFAULT_OUT = "results"


def configure(parser) -> None:
    parser.add_argument(
        "preset", nargs="?", metavar="PRESET",
        help=f"one of: {', '.join(PRESETS)} (default: {DEFAULT_PRESET})",
    )
    parser.add_argument("--config", metavar="FILE", help="a TOML matrix (see examples/custom.toml)")
    parser.add_argument("--plugin", metavar="FILE_OR_MODULE", action="append", default=[],
                        help="load the optimizers and tasks of a .py file or a module first "
                        "(repeatable; see README 'Benchmark your own optimizer')")
    parser.add_argument("--out", metavar="DIR", default=DEFAULT_OUT,
                        help=f"results directory (default: {DEFAULT_OUT}/)")
    parser.add_argument("--workers", metavar="N", type=_int, default=None,
                        help="run on N local worker processes (default: chosen for this "
                        "machine, and printed)")
    parser.add_argument("--threads", metavar="N", type=_int, default=None,
                        help="Numba threads per process (default: NUMBA_NUM_THREADS if set, "
                        "else chosen for this machine)")
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
                        help="check the input and print the plan; run and write nothing")
    parser.add_argument("--no-report", action="store_true",
                        help="do not write the report (DIR/reports/MATRIX.pdf) at the end")


def _int(text: str):
    """Leave the range check to `run`, which words it like every other bad input."""
    try:
        return int(text)
    except ValueError:
        return text


def run(args) -> int:
    if args.preset is not None and args.config is not None:
        raise UsageError("give a PRESET or --config FILE, not both")
    from optbench import tasks
    from optbench.optim import registry

    before = set(registry.names()) | set(tasks.names())
    flagged = plugins.load_all(getattr(args, "plugin", []), what="--plugin")
    added = sorted((set(registry.names()) | set(tasks.names())) - before)
    m = mx.from_toml(args.config) if args.config else mx.from_preset(args.preset or mx.DEFAULT_PRESET)
    plugins.verify(m)  # compiles each plugin rule the matrix uses: a bad one stops us here
    used = {c.optimizer for c in m.cells} | set(m.config["tasks"])
    if flagged and added and not used & set(added):
        # a preset names only built-ins: the plugin loads, and nothing of it would run
        print(f"note: --plugin added {', '.join(added)}, which matrix {m.name} does not run; "
              "name them in a TOML file's optimizers or tasks and run it with --config",
              file=sys.stderr)
    if args.workers is not None and (args.scheduler or args.dask_local is not None):
        raise UsageError("--workers runs local processes; it does not combine with Dask options")
    _check_counts(args)
    finished = _finished(args.out)
    todo = [cell for cell in m.cells if cell.key not in finished]
    lockstep = None
    if args.engine is not None or args.device is not None or args.group_size is not None:
        from optbench.lockstep.executor import executor_for

        lockstep = executor_for(args)  # None: --engine cells
    executor, how = (lockstep, lockstep.name) if lockstep else _executor(args, todo)

    with ExitStack() as stack:
        if args.scheduler and not args.dry_run:  # out of reach: refused before anything
            stack.enter_context(executor)
        print(f"matrix {m.name}: {_counts(m)}; {len(m.cells) - len(todo)} already in "
              f"{os.path.join(args.out, 'optbench.sqlite')}, {len(todo)} to run {how}",
              file=sys.stderr)
        if args.dry_run:
            return 0
        status = _execute(args, m, executor)
    if status is not None:
        return status
    ranking = _ranking(args.out, m.name)
    if ranking:
        print(ranking)
    print(f"results in {args.out}/: read them with optbench.load({args.out!r})", file=sys.stderr)
    return 0 if args.no_report else _report(args.out, m.name)


def _execute(args, m, executor) -> int | None:
    """Run the cells and print the summary; the exit status if the run stopped early."""
    from optbench import runner
    from optbench.store import Store

    # The executor first: a cluster that cannot start is refused before the store is made.
    with executor, Store.open(args.out) as store:
        progress = runner.Progress(bar=False if args.quiet else None)
        try:
            runner.execute(m, store, executor, progress=progress)
        except (KeyboardInterrupt, runner.WorkerLost) as exc:
            progress.close()
            done = len(store.finished_keys() & {c.key for c in m.cells})
            why = "interrupted" if isinstance(exc, KeyboardInterrupt) else str(exc)
            print(f"{why}: {done} of {len(m.cells)} cells are safely stored in "
                  f"{store.path}; run the same command again to resume", file=sys.stderr)
            return 130 if isinstance(exc, KeyboardInterrupt) else 1
        progress.close()
        print(summary(store.frames(matrix=m.name), m))
    return None


def _counts(m) -> str:
    """'216 cells (tiers: defaults 72, tuned 216; the 72 defaults cells are also tuned-grid
    cells, run once)': the tiers' counts, and why they add up to more than the cells."""
    tiers = Counter(t for _, t in m.members)
    text = ", ".join(f"{t} {n}" for t, n in tiers.items())
    shared = sum(tiers.values()) - len(m.cells)
    if shared:
        text += f"; {shared} cells are in both tiers, run once"
    later = ""
    if m.adaptive:
        from optbench import plan

        later = (f"; later waves add cells as results ask (wider lr grids, confirmation "
                 f"seeds, longer lengths), at most {len(plan.bound(m.config))} in all")
    return f"{len(m.cells)} cells (tiers: {text}){later}"


def _check_counts(args) -> None:
    """--workers, --threads and --dask-local: positive, and no more than this machine can
    run side by side (a typo of a few zeros would start that many interpreters)."""
    most = machine.WORKERS_PER_CORE * machine.cores()
    for option, value in (("--workers", args.workers), ("--threads", args.threads),
                          ("--dask-local", args.dask_local)):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UsageError(f"{option} must be a positive integer; got {value!r}")
        if value > most:
            raise UsageError(f"{option} {value:,}: at most {most} on this machine "
                             f"({machine.WORKERS_PER_CORE} per core)")
    env = os.environ.get("NUMBA_NUM_THREADS")
    if env is not None and (not env.strip().isdigit() or int(env) < 1):
        raise UsageError(f"NUMBA_NUM_THREADS={env!r} must be a positive integer")


def _finished(directory: str) -> set[str]:
    """Keys of the cells finished in the store at `directory`, read without writing (a store
    that this run could not write to, or of another protocol, is refused here)."""
    from optbench.store import FILENAME, Store

    path = os.path.join(directory, FILENAME)
    if os.path.isdir(directory) and os.path.exists(path):
        with Store.open(directory, create=False) as store:
            store.check_writable()
            return store.finished_keys()
    from optbench.store import check_directory

    check_directory(directory)
    return set()


def _executor(args, todo):
    """(executor, the words that say how it runs): the user's choice, or this machine's."""
    from optbench import runner

    if args.scheduler or args.dask_local is not None:
        if args.threads is not None and args.scheduler:
            raise UsageError("--threads sets local processes' threads; a Dask cluster's "
                             "workers set their own (NUMBA_NUM_THREADS)")
        executor = runner.Dask(address=args.scheduler, local_workers=args.dask_local,
                               threads=args.threads)
        if args.dask_local is not None:
            _check_memory(todo, args.dask_local)
        return executor, executor.name
    env = os.environ.get("NUMBA_NUM_THREADS")
    threads = args.threads if args.threads is not None else int(env) if env else None
    quick = sum(cost.work(c) for c in todo) < QUICK_WORK
    busy = machine.busy_cores() if todo and args.workers is None else None
    plan = machine.choose(len(todo), machine.cores(), busy, workers=args.workers,
                          threads=threads, quick=quick)
    if plan.workers and args.workers is None:  # as many as the memory holds
        fit = _fits(todo, plan.workers)
        plan = machine.Plan(fit, plan.threads, plan.why + (
            f"; {fit} workers as memory allows" if fit < plan.workers else ""))
    _check_memory(todo, plan.workers)
    if not plan.workers:
        import numba

        if plan.threads > numba.config.NUMBA_NUM_THREADS:
            raise UsageError(f"--threads {plan.threads}: this process can start at most "
                             f"{numba.config.NUMBA_NUM_THREADS} Numba threads "
                             "(NUMBA_NUM_THREADS); --workers runs more processes")
    if plan.workers:
        return runner.Processes(plan.workers, plan.threads), plan.describe()
    return runner.Serial(plan.threads), plan.describe()


# Below this much work (optbench.cost units; a few seconds of cells on one core) worker
# processes cost more to start than they save.
QUICK_WORK = 5e11


def _need(todo, workers: int) -> tuple[int, int]:
    """(bytes of the largest cell to run, bytes `workers` processes of such cells need)."""
    largest = max((cost.cell_bytes(c) for c in _shapes(todo)), default=0)
    return largest, (largest + machine.WORKER_BYTES) * workers if workers else largest


def _shapes(todo):
    seen = {}
    for cell in todo:
        key = (cell.task, cell.length, cell.model, cell.hidden, cell.batch_size)
        if key not in seen or cell.steps // cell.eval_every > \
                seen[key].steps // seen[key].eval_every:
            seen[key] = cell
    return seen.values()


def _fits(todo, workers: int) -> int:
    _, available = machine.memory()
    if available is None:
        return workers
    largest, _ = _need(todo, 1)
    return max(1, min(workers, int(available // (largest + machine.WORKER_BYTES))))


def _check_memory(todo, workers: int) -> None:
    largest, need = _need(todo, workers)
    what = (f"{workers} worker processes running cells of up to {machine.size(largest)} "
            "each (fewer --workers, or a smaller matrix)" if workers
            else f"a cell of {machine.size(largest)}")
    machine.check_memory(need, what, available=True)


def _ranking(directory: str, matrix: str) -> str:
    """The answer, as on the report's summary pages: each optimizer's horizon where the
    matrix searches lengths, and the ranking over all problems with its 95 % intervals."""
    from optbench.report import data as D
    from optbench.report import tables as T

    try:
        data = D.load(directory, matrix)
    except UsageError:  # no cell of this matrix finished
        return ""
    lines = []
    if data.config["horizon"]["tasks"]:
        lengths = D.horizon_table(data)
        for (task, model, hidden), h in D.horizons(lengths, data.config).groupby(
                ["task", "model", "hidden"], sort=False):
            mine = lengths[(lengths["task"] == task) & (lengths["model"] == model)
                           & (lengths["hidden"] == hidden)]
            lines += ["", f"horizon: the longest {task} length T each optimizer learns with "
                      f"{model}({hidden}) (solved/seeds at each T; + passed, - failed):",
                      T.horizon_display(h, mine).to_string(index=False)]
    tiers = [t for t in data.tiers if not (t == "tuned" and "confirm" in data.tiers)]
    for tier in tiers:
        table = D.ranked(D.problem_table(data, tier), data.config)
        shown = T.ranking_display(D.ranking(table))
        lines += ["", f"ranking, {D.SEEDS[tier]} (performance-profile score over all "
                  "problems, 95 % interval; 1 = fastest to solve every problem):",
                  shown.to_string(index=False)]
    return "\n".join(lines)


def _report(directory: str, matrix: str) -> int:
    """The hook to `optbench.report`: this matrix's report, written beside its store. A
    report that fails says so in one line (the cells are stored; OPTBENCH_DEBUG=1 shows the
    traceback) and makes the run's exit status 1."""
    from optbench.report.cli import summary as report_summary
    from optbench.report.document import build

    try:
        print(report_summary(build(directory, matrix=matrix)), file=sys.stderr)
    except KeyboardInterrupt:
        print(f"interrupted while writing the report; every cell is stored in {directory}/: "
              f"python -m optbench report {directory} writes it", file=sys.stderr)
        return 130
    except Exception as exc:
        if os.environ.get("OPTBENCH_DEBUG"):
            raise
        what = str(exc).splitlines()[0] if str(exc) else ""
        print(f"the report failed ({type(exc).__name__}: {what}); every cell is stored in "
              f"{directory}/, and the previous report, if any, is as it was "
              "(OPTBENCH_DEBUG=1 shows the traceback)", file=sys.stderr)
        return 1
    return 0


def summary(results, m) -> str:
    """Per tier (the confirmation seeds', the tuning seeds', the defaults'), one row per
    (task, length, model, optimizer), as the report's tables have them: the lr (and whether
    it lies at the grid's edge), seeds solved with the 95 % interval of the rate, seeds
    diverged, the median steps to solve and the median test metric."""
    from optbench.report import data as D
    from optbench.report import tables as T

    keys = set(results.members["key"])
    cells = results.cells[results.cells["key"].isin(keys)]
    counts = cells["outcome"].value_counts()
    lines = [f"{m.name}: {len(cells)} of {len(keys)} cells finished: "
             + ", ".join(f"{counts.get(o, 0)} {o}" for o in ("solved", "budget", "diverged"))]
    if cells.empty:
        return lines[0]
    data = D.from_results("", m.name, results)
    for tier in data.tiers:
        table = D.problem_table(data, tier)
        shown = []
        for problem, rows in table.groupby(D.PROBLEM, sort=False):
            display = T.problem_display(rows).iloc[:-1]  # the baseline row aside
            display = display.rename(columns={display.columns[-1]: "test"})  # "test mse"
            display.insert(0, "problem", f"{D.problem_label(*problem)} "
                           f"({rows['metric'].iloc[0]})")
            shown.append(display.drop(columns=["seconds"]))
        import pandas as pd

        lines += ["", f"tier {tier}: {D.SEEDS[tier]} (medians over seeds, diverged seeds "
                  "aside; [95 % intervals]):",
                  pd.concat(shown, ignore_index=True).to_string(index=False)]
    return "\n".join(lines)
