"""The lockstep engine as an executor of `optbench.runner` (`name`, a context manager,
`run(fn, cells)` -> Results in completion order), so that `runner.execute` stores each
member the moment it finishes (a killed run keeps every finished cell and resumes),
progress counts cells, and the report reads the store as it always does.

    python -m optbench run standard --engine lockstep --device cuda [--group-size 256]
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from optbench.cell import Cell, Result
from optbench.errors import UsageError
from optbench.lockstep.engine import DEVICES, plan, run_group

ENGINES = ("cells", "lockstep")
# Members per group. The CPU gains little past a few dozen members (the per-step host
# work is already shared), and a smaller group commits its budget-bound members sooner;
# a GPU needs many models to fill it (the `standard` preset's groups have 135 cells).
DEFAULT_GROUP = {"cpu": 32, "cuda": 256}
MAX_GROUP = 4096


class Lockstep:
    """Run the cells in lockstep groups (optbench.lockstep.engine.plan) on `device`."""

    def __init__(self, device: str = "cpu", group_size: int | None = None):
        if device not in DEVICES:
            raise UsageError(f"--device {device!r} unknown; allowed: {', '.join(DEVICES)}")
        if group_size is None:
            group_size = DEFAULT_GROUP[device]
        if isinstance(group_size, bool) or not isinstance(group_size, int) \
                or not 1 <= group_size <= MAX_GROUP:
            raise UsageError(f"--group-size must be an integer from 1 to {MAX_GROUP}; "
                             f"got {group_size!r}")
        if device == "cuda":
            from optbench.optim.drivers import cuda_module

            cuda_module()  # UsageError, one line, when there is neither a GPU nor the simulator
        self.device, self.group_size = device, group_size
        self.name = f"in lockstep groups of up to {group_size} cells on the {device}"

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass

    def run(self, fn, cells: Iterable[Cell]) -> Iterator[Result]:
        """`fn` (the per-cell runner of the other executors) is not called: the engine
        trains the cells itself, with run_cell's loop for each member."""
        for group in plan(cells, self.group_size):
            yield from run_group(group, self.device)


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
    if args.workers is not None or args.scheduler or args.dask_local is not None:
        raise UsageError("--engine lockstep runs in this process (its threads or its GPU); "
                         "it does not combine with --workers or Dask options")
    return Lockstep(args.device or "cpu", args.group_size)
