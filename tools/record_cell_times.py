"""Record what each cell of a matrix cost, in run order: the fixture of the ETA's replay test.

    NUMBA_NUM_THREADS=1 python tools/record_cell_times.py quick > tests/fixtures/cell_times_quick.csv
    NUMBA_NUM_THREADS=1 python tools/record_cell_times.py examples/custom.toml > tests/fixtures/cell_times_custom.csv

Runs every cell of the preset (or TOML file) in this process, in the matrix's run order,
after one short warm-up cell per shape so that compilation stays out of the figures, and
prints one CSV row per cell: its canonical config, outcome, steps run, evaluations, its
wall seconds in training and evaluation, and the process CPU seconds of the whole call.
CPU seconds on one thread are what a cell costs whatever else the machine runs at the time
(a shared machine's wall seconds vary with the other load), which is why the replay test
reads them.
"""

from __future__ import annotations

import csv
import os
import sys
import time
from dataclasses import replace

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from optbench import matrix
from optbench.train import run_cell

COLUMNS = ["config_json", "outcome", "steps_run", "evaluations", "train_s", "eval_s", "cpu_s"]


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    source = argv[0]
    m = matrix.from_toml(source) if source.endswith(".toml") else matrix.from_preset(source)
    warm = set()
    for cell in m.cells:
        shape = (cell.task, cell.length, cell.model, cell.hidden, cell.batch_size,
                 cell.optimizer)
        if shape not in warm:
            warm.add(shape)
            run_cell(replace(cell, steps=2, eval_every=1))
    out = csv.DictWriter(sys.stdout, COLUMNS, lineterminator="\n")
    out.writeheader()
    for i, cell in enumerate(m.cells):
        cpu = time.process_time()
        r = run_cell(cell)
        out.writerow({
            "config_json": cell.canonical_json(), "outcome": r.outcome,
            "steps_run": r.steps_run, "evaluations": len(r.curves),
            "train_s": f"{r.timings['train_s']:.5f}", "eval_s": f"{r.timings['eval_s']:.5f}",
            "cpu_s": f"{time.process_time() - cpu:.5f}",
        })
        sys.stdout.flush()
        print(f"{i + 1}/{len(m.cells)}", file=sys.stderr, end="\r")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
