"""The lockstep engine on the CPU against `--workers` at equal cores, end to end.

    python tools/lockstep_vs_workers.py                       # the `quick` preset, 2 rounds
    python tools/lockstep_vs_workers.py --config small.toml --rounds 3 --workers 2

Each round runs the same matrix, into a fresh store each time, once per way of running it
(in rotating order, so that a machine's slow spell hits them alike):

- `workers`:          `run --workers N` (N processes, one cell at a time each);
- `lockstep`:         `run --engine lockstep` (one process, Numba's threads);
- `lockstep-workers`: `run --engine lockstep --workers N` (groups on N processes).

It prints each run's wall time (the whole command: start-up, compilation from the cache,
every cell, the store) with the 1-minute load average after it, then per way the median
and the best over the rounds and the speedup of each against `workers` (best against
best: on a shared machine the best is the nearest to a quiet one). The stores of the last
round are compared: every way must store the same results (timings aside).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--preset", default=None, help="a preset (default: quick)")
    what.add_argument("--config", default=None, help="a TOML matrix")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--group-size", type=int, default=None)
    args = parser.parse_args(argv)
    matrix = ["--config", args.config] if args.config else [args.preset or "quick"]
    group = ["--group-size", str(args.group_size)] if args.group_size else []
    ways = {
        "workers": ["--workers", str(args.workers)],
        "lockstep": ["--engine", "lockstep", *group],
        "lockstep-workers": ["--engine", "lockstep", "--workers", str(args.workers), *group],
    }
    times: dict[str, list[float]] = {w: [] for w in ways}
    base = tempfile.mkdtemp(prefix="optbench-lockstep-vs-workers-")
    order = list(ways)
    try:
        for r in range(args.rounds):
            for way in order:
                out = os.path.join(base, way)
                shutil.rmtree(out, ignore_errors=True)
                t = time.perf_counter()
                subprocess.run([sys.executable, "-m", "optbench", "run", *matrix, "--out", out,
                                "--quiet", "--no-report", *ways[way]], cwd=ROOT, check=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                times[way].append(time.perf_counter() - t)
                print(f"round {r + 1} {way:17} {times[way][-1]:7.1f} s  load "
                      f"{os.getloadavg()[0]:.2f}", flush=True)
            order = order[1:] + order[:1]
        from helpers import assert_same_results

        for way in ways:
            if way != "workers":
                assert_same_results(os.path.join(base, "workers"), os.path.join(base, way))
        print("the same results every way (timings aside)")
        best = {w: min(t) for w, t in times.items()}
        for way, t in times.items():
            print(f"{way:17} median {statistics.median(t):7.1f} s, best {best[way]:7.1f} s, "
                  f"speedup over workers (best) {best['workers'] / best[way]:.2f}x")
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
