"""How long each preset takes on this machine: measure, then extrapolate.

    python tools/estimate_presets.py                 # every preset
    python tools/estimate_presets.py quick standard --probe-steps 200

For every distinct (task, length, model, hidden, batch size) of a preset, one probe cell
(Adam at its defaults) runs `--probe-steps` steps with two evaluations, in this process and
with this process's threads; its training seconds per step and seconds per evaluation are
then multiplied out over the preset's cells. The estimate is an upper bound for a serial
run: it assumes every cell uses its whole step budget and, for a matrix planned in waves,
the most cells any results can ask for (`optbench.plan.bound`), while solved cells stop
early and searches stop at their first failure (the README's presets table says how far a
real run stayed below its bound).
Compile time is left out (the probe warms up first). Run it with NUMBA_NUM_THREADS=1 to
get the per-worker figure of `--workers N` on N cores: divide the bound by N.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import replace

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from optbench import matrix, plan  # noqa: E402
from optbench.cell import Cell  # noqa: E402
from optbench.train import run_cell  # noqa: E402


def probe(shape, steps: int) -> tuple[float, float]:
    """(training seconds per step, seconds per evaluation) of one cell of this shape."""
    task, length, model, hidden, batch = shape
    cell = Cell(task=task, length=length, model=model, hidden=hidden, batch_size=batch,
                steps=steps, eval_every=steps // 2, optimizer="adam", hparams={"lr": 1e-3})
    run_cell(replace(cell, steps=2, eval_every=1))  # compile and warm up
    r = run_cell(cell)
    evals = len(r.curves)
    return r.timings["train_s"] / r.steps_run, r.timings["eval_s"] / evals


def duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("presets", nargs="*", default=list(matrix.PRESETS))
    parser.add_argument("--probe-steps", type=int, default=100)
    args = parser.parse_args(argv)
    cost: dict[tuple, tuple[float, float]] = {}
    print("| preset | cells | probes | serial upper bound |")
    print("|---|---|---|---|")
    for name in args.presets:
        m = matrix.from_preset(name)
        started = time.perf_counter()
        total = 0.0
        cells = plan.bound(m.config) if m.adaptive else m.cells
        for cell in cells:
            shape = (cell.task, cell.length, cell.model, cell.hidden, cell.batch_size)
            if shape not in cost:
                cost[shape] = probe(shape, args.probe_steps)
            per_step, per_eval = cost[shape]
            total += cell.steps * per_step + (cell.steps // cell.eval_every + 1) * per_eval
        shapes = len({(c.task, c.length, c.model, c.hidden, c.batch_size) for c in cells})
        print(f"| {name} | {len(cells)} | {shapes} shapes, {time.perf_counter() - started:.0f} s"
              f" | {duration(total)} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
