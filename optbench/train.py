"""The training loop: one benchmark cell in, one `Result` out.

    result = run_cell(Cell(task="adding", length=50, model="lstm", hidden=64,
                           optimizer="adam", hparams={"lr": 1e-2}, steps=2000))

Per step: draw a batch from the task's training stream, BPTT through the model
(`model.loss_and_grad`), clip by global norm (Pascanu, Mikolov & Bengio 2013, eq. 6:
g <- g * max_norm / ||g|| when ||g|| > max_norm) and then by value, and take one optimizer
step. Every `eval_every` steps (and at step 0 and at the last step run) the model is scored
on the seed's fixed validation set; the run stops early once the task counts the
validation metric as solved.

Outcomes (never exceptions):
- "solved": at the first evaluation whose metric meets the task's solved rule;
  `steps_to_solve` is that step, `seconds_to_solve` the training time up to it
  (batches, BPTT, clipping and optimizer steps; evaluation and compile time excluded,
  as in AlgoPerf's time-to-target).
- "diverged": a step whose loss or gradient norm is NaN or inf, or whose training loss
  exceeds DIVERGE_FACTOR x max(the task's memoryless baseline loss, the untrained
  model's validation loss), or an evaluation with a non-finite validation loss. The
  update of that step is not applied; `diverged_step` records it. The reference includes
  the untrained loss because an untrained model is legitimately far above the baseline
  (copy memory at T = 1000: log 9 = 2.2 nats against a baseline of 0.02).
- "budget": the step budget ran out unsolved.
The test metric is scored once, on the parameters where the run stopped.

Curves: one row per evaluation (see `Result`); `train_loss` and `grad_norm` (before
clipping) are means over the steps since the previous row. A cell whose hparams hold a
`schedule` (optbench.schedules) steps with lr * that schedule's factor at each step.
Gradient-norm profiles
||dL/dh_t||, t = 0..T-1 (batch mean, from BPTT), are kept at step 1, at 25 %, 50 % and
75 % of the budget, and at the last step run.

Timings: `compile_s` is a warm-up (one small batch through every kernel the run uses,
on copies, so the run itself is untouched); `train_s` and `eval_s` are the loop's time
in training steps and in evaluations; `total_s` is the whole call.

Determinism: the batches come from the seed's streams and the model's initialisation
from the seed, so the same cell and thread count give bit-identical curves and results
(the timings aside).
"""

from __future__ import annotations

import math
from functools import lru_cache
from time import perf_counter

import numpy as np

from optbench import env, schedules, tasks
from optbench.cell import Cell, Result
from optbench.errors import UsageError
from optbench.plugins import code_key
from optbench.tasks import Batch, Task

# nn and optim (Numba) load with a cell's first build, not with this module: the report
# reads this module's constants and must not pay for the compiler.

DIVERGE_FACTOR = 10.0
PROFILE_FRACTIONS = (0.25, 0.5, 0.75)  # plus step 1 and the last step run
EVAL_CHUNK = 256  # sequences per forward pass when scoring an evaluation set


@lru_cache(maxsize=1)
def environment() -> dict:
    """This process's environment, computed once (after the first warm-up, so that
    Numba's threading layer is known)."""
    return env.environment(include_cuda=False)


def run_cell(cell: Cell) -> Result:
    """Train `cell` and return its Result; bad cells raise UsageError before any work."""
    started = perf_counter()
    task, length = check_cell(cell)
    model, opt, state = build(cell, task)
    compile_s = _warm_up(cell, task, length, model, opt)
    run = _Loop(cell, task, length, model, opt, state)
    result = run.train()
    result.timings = {"compile_s": compile_s, "train_s": run.train_s, "eval_s": run.eval_s,
                      "total_s": perf_counter() - started}
    result.env = environment()
    return result


def check_cell(cell: Cell) -> tuple[Task, int]:
    """(task, length) of `cell`; UsageError, one line, for any field out of range or for
    plugin code that differs from what the cell was planned with."""
    task = tasks.get(cell.task)
    length = task.check_length(cell.length)
    for name in ("steps", "batch_size", "eval_every", "hidden"):
        value = getattr(cell, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UsageError(f"cell.{name} must be a positive integer; got {value!r}")
    for name in ("clip_norm", "clip_value"):
        value = getattr(cell, name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or not 0 < value < math.inf):
            raise UsageError(f"cell.{name} must be None (off) or a positive number; got {value!r}")
    if not isinstance(cell.hparams, dict):
        raise UsageError(f"cell.hparams must be a dict such as {{'lr': 0.001}}; "
                         f"got {cell.hparams!r}")
    task.train_rng(cell.seed)  # validates the seed
    if code_key(cell.optimizer, cell.task) != cell.code:
        raise UsageError(
            f"cell {cell.key} ({cell.optimizer} on {cell.task}) was planned with plugin code "
            f"{cell.code}, but this process has {code_key(cell.optimizer, cell.task)}: load "
            "the same version of the plugin everywhere the matrix runs")
    return task, length


def build(cell: Cell, task: Task):
    """(model, optimizer, state) of a cell, freshly initialised from its seed."""
    from optbench import nn, optim

    if cell.model not in nn.names():
        raise UsageError(f"unknown model {cell.model!r}; allowed: {', '.join(nn.names())}")
    if cell.optimizer not in optim.names():
        raise UsageError(
            f"unknown optimizer {cell.optimizer!r}; allowed: {', '.join(optim.names())}")
    # chrono init (Tallec & Ollivier 2018) spreads the forget-gate time scales up to the
    # longest lag the task can need: its sequence length.
    chrono = {"chrono_tmax": task.steps(cell.length)} if cell.init == "chrono" else {}
    model = nn.build(cell.model, input_size=task.input_size, hidden_size=cell.hidden,
                     output_size=task.output_size, head=task.head, seed=cell.seed,
                     init=cell.init, **chrono)
    hparams = {k: v for k, v in cell.hparams.items() if k != "schedule"}
    opt = optim.create(cell.optimizer, **hparams, backend="cpu")
    return model, opt, opt.init(model.params)


def clipper(cell: Cell):
    """The cell's clipping as a function of the gradients: it clips them in place and
    returns their global norm before clipping. The training loop takes it once per cell."""
    from optbench import optim

    # Without norm clipping the bound is one that no norm of float32 gradients reaches
    # (those stay below 1e44), and small enough that bound / (norm + 1e-6) stays finite:
    # the call then only measures the (deterministic) norm.
    bound, value = cell.clip_norm or 1e300, cell.clip_value

    def clip(grads: np.ndarray) -> float:
        norm = optim.clip_grad_norm(grads, bound)
        if value:
            optim.clip_grad_value(grads, value)
        return float(norm)

    return clip


def clip(cell: Cell, grads: np.ndarray) -> float:
    """Clip in place as the cell says; return the global norm before clipping."""
    return clipper(cell)(grads)


def _warm_up(cell, task, length, model, opt) -> float:
    """Compile (or load from the cache) every kernel the run calls, on copies."""
    t = perf_counter()
    x, y, mask = task.sample(np.random.default_rng(0), cell.batch_size, length)
    _, grads, _ = model.loss_and_grad(x, y, loss=task.loss, mask=mask)
    model.predict(x)
    clip(cell, grads)
    params = model.params.copy()
    opt.step(params, grads, opt.init(params))
    return perf_counter() - t


class _Loop:
    def __init__(self, cell, task, length, model, opt, state):
        self.cell, self.task, self.length = cell, task, length
        self.model, self.opt, self.state = model, opt, state
        self.val = task.eval_set(cell.seed, length, "val")
        self.curves: list[dict] = []
        self.profiles: list[dict] = []
        self.train_s = self.eval_s = 0.0

    def evaluate(self, batch: Batch) -> tuple[float, float]:
        """(loss, metric) over `batch`, scored EVAL_CHUNK sequences at a time."""
        t = perf_counter()
        total = np.zeros(3)
        for i in range(0, len(batch.y), EVAL_CHUNK):
            part = Batch(*(None if a is None else a[i:i + EVAL_CHUNK] for a in batch))
            total += self.task.score(self.model.predict(part.x), part)
        self.eval_s += perf_counter() - t
        return float(total[0] / total[2]), float(total[1] / total[2])

    def record(self, step: int, losses: list[float], norms: list[float]) -> tuple[float, float]:
        val_loss, val_metric = self.evaluate(self.val)
        self.curves.append({
            "step": step,
            "train_loss": float(np.mean(losses)) if losses else None,
            "val_loss": val_loss,
            "val_metric": val_metric,
            "grad_norm": float(np.mean(norms)) if norms else None,
            "train_s": self.train_s,
            "wall_s": self.train_s + self.eval_s,
        })
        return val_loss, val_metric

    def train(self) -> Result:
        cell, task, length, model = self.cell, self.task, self.length, self.model
        val_loss, val_metric = self.record(0, [], [])
        limit = DIVERGE_FACTOR * max(task.baseline_loss(length), val_loss)
        profile_at = {max(1, round(f * cell.steps)) for f in PROFILE_FRACTIONS} | {1}
        rng = task.train_rng(cell.seed)
        outcome, solved_at, diverged_at = "budget", None, None
        if task.solved(val_metric, length):
            outcome, solved_at = "solved", 0
        losses, norms, step, diag = [], [], 0, None
        schedule = cell.hparams.get("schedule")
        clip = clipper(cell)
        t = perf_counter()
        while outcome == "budget" and step < cell.steps:
            step += 1
            x, y, mask = task.sample(rng, cell.batch_size, length)
            loss, grads, diag = model.loss_and_grad(x, y, loss=task.loss, mask=mask)
            norm = clip(grads)
            losses.append(float(loss))
            norms.append(norm)
            if not (math.isfinite(losses[-1]) and math.isfinite(norm)) or losses[-1] > limit:
                outcome, diverged_at = "diverged", step
            elif schedule is None:
                self.opt.step(model.params, grads, self.state)
            else:  # this step's lr, on the host: the kernels take it as a scalar
                lr = cell.lr * schedules.factor(schedule, step, cell.steps)
                self.opt.step(model.params, grads, self.state, lr=lr)
            if step in profile_at:
                self.profiles.append({"step": step, "norms": diag.grad_norm_per_step.tolist()})
            if step % cell.eval_every == 0 or step == cell.steps or outcome == "diverged":
                self.train_s += perf_counter() - t
                val_loss, val_metric = self.record(step, losses, norms)
                losses, norms = [], []
                if outcome == "budget" and not math.isfinite(val_loss):
                    outcome, diverged_at = "diverged", step
                elif outcome == "budget" and task.solved(val_metric, length):
                    outcome, solved_at = "solved", step
                t = perf_counter()
        if diag is not None and (not self.profiles or self.profiles[-1]["step"] != step):
            self.profiles.append({"step": step, "norms": diag.grad_norm_per_step.tolist()})
        test_loss, test_metric = self.evaluate(task.eval_set(cell.seed, length, "test"))
        solved_s = next((r["train_s"] for r in self.curves if r["step"] == solved_at), None)
        return Result(
            cell=cell, outcome=outcome, steps_run=step,
            steps_to_solve=solved_at, seconds_to_solve=solved_s, diverged_step=diverged_at,
            val_loss=val_loss, val_metric=val_metric,
            test_loss=test_loss, test_metric=test_metric,
            curves=self.curves, grad_profiles=self.profiles,
        )
