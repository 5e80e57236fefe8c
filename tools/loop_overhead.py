"""How much the training loop adds to the work it must do, per step.

    python tools/loop_overhead.py [--repeats 5]

For each configuration, times in turns (interleaved, repeated):
  bare:  sample a batch, loss_and_grad, clip_grad_norm, optimizer step: the work itself;
  loop:  run_cell's training time per step (its evaluations excluded: `train_s`).
and prints the fastest of the repeats of each (on a shared machine the least disturbed
run is the best estimate of the work), the loop's overhead (loop / bare - 1), and the
batch sampling's share of the bare step. Compile time is kept out: every kernel is
warmed up first.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from dataclasses import replace
from time import perf_counter

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from optbench import optim, tasks  # noqa: E402
from optbench.cell import Cell  # noqa: E402
from optbench.train import _build, environment, run_cell  # noqa: E402

STEPS = 300
CONFIGS = [
    Cell(task="adding", length=50, hidden=32, hparams={"lr": 1e-2}),
    Cell(task="adding", length=100, hidden=128, hparams={"lr": 1e-3}),
    Cell(task="copy", length=10, hidden=64, hparams={"lr": 1e-2}),
]


def bare(cell: Cell) -> tuple[float, float]:
    """(seconds per step, seconds per step spent sampling) for the loop's work alone."""
    task = tasks.get(cell.task)
    model, opt, state = _build(cell, task)
    rng = task.train_rng(cell.seed)
    sampling = 0.0
    start = perf_counter()
    for _ in range(STEPS):
        t = perf_counter()
        x, y, mask = task.sample(rng, cell.batch_size, cell.length)
        sampling += perf_counter() - t
        _, grads, _ = model.loss_and_grad(x, y, loss=task.loss, mask=mask)
        optim.clip_grad_norm(grads, cell.clip_norm)
        opt.step(model.params, grads, state)
    return (perf_counter() - start) / STEPS, sampling / STEPS


def looped(cell: Cell) -> float:
    result = run_cell(cell)
    if result.steps_run != cell.steps:  # solved or diverged early: not the same work
        raise SystemExit(f"{cell.task}: stopped at step {result.steps_run}; shorten STEPS")
    return result.timings["train_s"] / cell.steps


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    print("| config | bare ms/step | loop ms/step | overhead | sampling share |")
    print("|---|---|---|---|---|")
    for cell in CONFIGS:
        cell = replace(cell, steps=STEPS, eval_every=STEPS)  # evaluate at 0 and the end only
        looped(replace(cell, steps=2))  # warm up every kernel
        b, s, lp = [], [], []
        for _ in range(args.repeats):
            step_s, sample_s = bare(cell)
            b.append(step_s)
            s.append(sample_s / step_s)
            lp.append(looped(cell))
        mb, ml = min(b), min(lp)
        print(f"| {cell.task} T={cell.length} H={cell.hidden} | {1e3 * mb:.3f} | "
              f"{1e3 * ml:.3f} | {100 * (ml / mb - 1):+.1f} % | "
              f"{100 * statistics.median(s):.1f} % |")
    env = environment()
    print(f"\n{env['cpu']}, {env['numba_threads']} Numba threads; {STEPS} steps, "
          f"{args.repeats} interleaved repeats, fastest of each.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
