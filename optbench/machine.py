"""What this machine offers a run: its cores, how busy they are, its memory; and the
executor a run picks from them when the user does not say.

Probes never raise: on a system without /proc they return None (and the choice falls back
to what it can know). `choose` is a pure function of what was probed, so that its rules are
tested on made-up machines.

Why the default run uses worker processes with one Numba thread each when it has at least
as many cells as cores: the threads of a Numba parallel region wait for each other at its
end, and a training step is a few such regions per time step, so one thread descheduled by
another process's work costs the whole team a scheduler time slice, many times the
region's own work, while single-threaded processes just share the cores. Independent
cells also scale better than threads within one small model.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from optbench.errors import UsageError

# Bytes a worker process holds before it runs a cell: Python, numpy, Numba and the loaded
# kernels (about 150-250 MB resident here).
WORKER_BYTES = 300 << 20
# Cores kept busy by others, from which a multi-threaded process is warned / given one thread.
BUSY = 0.5
# The most worker processes per core a run accepts (more only queue on the cores and cost
# memory; a typo such as --workers 1000 would start a thousand interpreters).
WORKERS_PER_CORE = 8


def cores() -> int:
    """Cores this process may run on (its affinity mask where the system has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def busy_cores(seconds: float = 0.2) -> float | None:
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


def memory() -> tuple[int | None, int | None]:
    """(total, available) bytes of RAM: /proc/meminfo's MemTotal and MemAvailable on Linux,
    the physical pages elsewhere (available then unknown: None)."""
    try:
        with open("/proc/meminfo") as f:
            info = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in f
                    if line.split()[1:2] and line.split()[1].isdigit()}
        return info.get("MemTotal"), info.get("MemAvailable", info.get("MemTotal"))
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"), None
    except (AttributeError, ValueError, OSError):
        return None, None


def size(n: float) -> str:
    """Bytes for people: '1.5 GiB'."""
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.3g} {unit}"
        n /= 1024
    return f"{n:.3g} EiB"  # pragma: no cover


def check_memory(need: float, what: str, available: bool = False) -> None:
    """UsageError, one line, when `need` bytes exceed this machine's memory (its total, or
    with `available` what is free now). Unknown memory passes: nothing to check against."""
    total, free = memory()
    have = free if available and free is not None else total
    if have is not None and need > have:
        which = "available" if available and free is not None else "in all"
        raise UsageError(f"{what} needs about {size(need)} of memory; this machine has "
                         f"{size(have)} {which}")


# -- the executor a run picks ----------------------------------------------------------------
@dataclass(frozen=True)
class Plan:
    """How a run uses the machine: `workers` processes (0: in this process) of `threads`
    Numba threads each, and why, in words."""

    workers: int
    threads: int
    why: str

    def describe(self) -> str:
        t = f"{self.threads} Numba thread{'s' if self.threads != 1 else ''}"
        where = ("in this process" if self.workers == 0 else
                 f"on {self.workers} worker process{'es' if self.workers != 1 else ''}")
        return f"{where}, {t}{' each' if self.workers > 1 else ''} ({self.why})"


def choose(todo: int, cores: int, busy: float | None, workers: int | None = None,
           threads: int | None = None, quick: bool = False) -> Plan:
    """The executor for `todo` cells on `cores` cores of which `busy` are kept busy by other
    processes (None: unknown). `workers` and `threads` are the user's (None: choose);
    `quick`: the cells are so short that starting worker processes would cost more than
    they save.

    The user's figures stand. Otherwise: with at least as many cells as cores, one worker
    process per core, one thread each; with fewer cells, one worker per cell sharing the
    cores as threads; one cell, one core or quick cells, in this process. Busy cores make
    it one thread per process (the module docstring says why), but not fewer processes: the
    cores' time is shared per process, so fewer would get less of it.
    """
    hot = busy is not None and busy >= BUSY
    facts = f"{todo} cell{'s' if todo != 1 else ''} to run on {cores} core" + (
        "s" if cores != 1 else "") + ("" if busy is None else f", {busy:.1f} busy with other work")
    if workers is not None:
        return Plan(workers, threads or max(1, cores // workers), "--workers"
                    + (" and --threads" if threads is not None else "") + " as given")
    if threads is not None:
        n = min(todo, max(1, cores // threads))
        if n > 1 and not quick:
            return Plan(n, threads, f"{facts}; {threads} thread{'s' if threads > 1 else ''} "
                        "per process as given")
        return Plan(0, threads, f"{facts}; {threads} thread{'s' if threads > 1 else ''} as "
                    "given" + (_BUSY_NOTE if hot and threads > 1 else ""))
    one = "; one thread, as the cores are busy" if hot and cores > 1 else ""
    if quick and todo > 1 and cores > 1:
        return Plan(0, 1 if hot else cores,
                    f"{facts}; cells too short to be worth starting worker processes{one}")
    if todo <= 1 or cores <= 1:
        return Plan(0, 1 if hot else cores, facts + one)
    n = min(todo, cores)
    if n == cores:
        return Plan(n, 1, f"{facts}; independent cells scale better than threads")
    return Plan(n, 1 if hot else cores // n, facts + one.replace("thread,", "thread each,"))


_BUSY_NOTE = ("; note: Numba's threads slow down badly on busy cores: --threads 1 or "
              "NUMBA_NUM_THREADS=1 avoids that")
