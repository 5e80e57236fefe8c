"""What the suites run, built in one place: an optimizer step and a model's training step.

The time_ and peakmem_ benchmarks call these in their own process; bench_compile runs this
file as a script in fresh processes:

    python benchmarks/_common.py TARGET      # TARGET: "adam" or a model ("lstm", ...)

which times the first call of TARGET's step (compile, or load from Numba's on-disk cache)
and a warm call, counts the functions Numba compiled, and prints that as JSON. Run as a
script, this directory (not the checkout) is first on sys.path, so the child imports the
optbench whose location its parent passes in PYTHONPATH: the same one as the parent.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time

import numpy as np

COMPILE_SIZE = 1 << 16  # parameters of the optimizer step timed in bench_compile


def seed_cell(model: str = "lstm"):
    """The seed program's cell (matrix preset "seed": adding problem, T = 100, batch 32,
    hidden 128, Adam lr 1e-3 with Keras's epsilon and initialisation, no clipping) with
    `model` as its layer."""
    from optbench import matrix

    m = matrix.from_preset("seed")  # the Keras program: Adam at its default lr, untuned
    keras = next(c for c, tier in m.members if tier == "defaults" and c.optimizer == "adam")
    return dataclasses.replace(keras, model=model)


def train_step(cell):
    """(step, params): `step()` is one training step of `cell` as optbench.train takes it
    (BPTT on one batch of the cell's task, clipping, the optimizer's step), always on the
    same batch, and returns the loss before the update; `params` is the model's flat
    parameter vector, which it updates."""
    from optbench import tasks
    from optbench.train import build, clip

    task = tasks.get(cell.task)
    model, opt, state = build(cell, task)
    x, y, mask = task.sample(np.random.default_rng(cell.seed), cell.batch_size, cell.length)

    def step():
        loss, grads, _ = model.loss_and_grad(x, y, loss=task.loss, mask=mask)
        clip(cell, grads)
        opt.step(model.params, grads, state)
        return loss

    return step, model.params


def optimizer_step(name: str, backend: str, n: int):
    """(step, params): `step()` is one step of optimizer `name` at its defaults over `n`
    parameters with a fixed gradient (standard normal, seed 0), on `backend`; for "cuda"
    it waits for the kernel to finish, and `params` is the device array."""
    from optbench import optim

    rng = np.random.default_rng(0)
    p = rng.standard_normal(n, dtype=np.float32)
    g = rng.standard_normal(n, dtype=np.float32)
    opt = optim.create(name, backend=backend)
    sync = None
    if backend == "cuda":
        from numba import cuda

        p, g, sync = cuda.to_device(p), cuda.to_device(g), cuda.synchronize
    state = opt.init(p)

    def step():
        opt.step(p, g, state)
        if sync is not None:
            sync()

    return step, p


def target_step(target: str):
    """The step bench_compile times: "adam" (the optimizer step alone) or a model name
    (that model's training step at the seed's configuration)."""
    if target == "adam":
        return optimizer_step("adam", "cpu", COMPILE_SIZE)[0]
    return train_step(seed_cell(target))[0]


def first_call(target: str) -> dict:
    """Seconds of the first call of `target`'s step in this process and of the fastest of
    three warm calls after it, and how many functions Numba compiled for that first call
    ("numba:compile" events, nested ones included; a function loaded from the on-disk
    cache is not compiled)."""
    from numba.core import event

    step = target_step(target)
    with event.install_recorder("numba:compile") as recorder:
        t = time.perf_counter()
        step()
        first = time.perf_counter() - t
    warm = []
    for _ in range(3):
        t = time.perf_counter()
        step()
        warm.append(time.perf_counter() - t)
    compiled = sum(ev.is_start for _, ev in recorder.buffer)
    return {"first_s": first, "warm_s": min(warm), "compiled": compiled}


if __name__ == "__main__":
    print(json.dumps(first_call(sys.argv[1])))
