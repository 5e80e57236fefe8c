"""The lockstep training loop: `optbench.train.run_cell`'s loop for K cells at once.

A group is K cells that agree on everything that fixes the shape and schedule of a
training step (`GROUP_FIELDS`): they differ only in seed, optimizer and hyper-parameters.
Each step draws every member's batch from its own training stream, runs one forward /
BPTT pass for all live members (a backend: `optbench.lockstep.cpu` or `.cuda`), clips
each member's gradient by its own norm ((K, P) `optim.clip_grad_norm`), and takes one
batched optimizer step per sub-batch of members that share an optimizer and its
compiled switches (`optbench.optim.batch`; members are ordered so that each sub-batch
is a contiguous block of rows). Members are evaluated on their own validation sets at
the same steps as `run_cell` evaluates them; a member that is solved, diverges or runs
out of budget is scored on its test set, handed back as a `Result`, and its row leaves
the group (`compact`): it costs nothing afterwards.

Per member, everything `run_cell` records means the same: outcome, steps, curves,
gradient profiles, validation and test figures. On the CPU backend they are the same
bits as `run_cell` of that cell on one Numba thread (tests/test_lockstep.py).

Timings (seconds-to-solve). A group step costs the time of all live members together,
and they are alike in shape, so each live member is charged an equal share of it: the
step's wall time divided by the live members. Evaluations are shared likewise among the
members evaluated, the warm-up (compile) and set-up among all K. A member's `train_s`,
its curves' `train_s` / `wall_s` and its `seconds_to_solve` are sums of such shares:
the machine time the member used, so that the members' times add up to the group's wall
time, and a figure stays comparable with a single cell's (machine time per cell). An
engine that trains K cells in parallel at once shows as a K-fold lower seconds-to-solve
per cell, which is what it buys. The alternative, each member's own measured time,
does not exist on a GPU (all members run in the same kernels), and on the CPU it would
hide the time a member waits for the others.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from time import perf_counter

import numpy as np

from optbench import schedules, train
from optbench.cell import Cell, Result
from optbench.errors import UsageError
from optbench.tasks import Batch
from optbench.train import DIVERGE_FACTOR, EVAL_CHUNK, PROFILE_FRACTIONS, environment

# optim, and the backends (Numba), load inside the functions that step: this module comes
# with the package, which `run --engine lockstep` imports to check its options first.

# train.clip's bound without norm clipping: no norm of float32 gradients reaches it, and
# bound / (norm + 1e-6) stays finite, so the call only measures the norm.
NO_CLIP = 1e300
GROUP_FIELDS = ("task", "length", "model", "hidden", "batch_size", "steps", "eval_every",
                "clip_norm", "clip_value", "init")
DEVICES = ("cpu", "cuda")


def group_key(cell: Cell) -> tuple:
    """What the members of a group share."""
    return tuple(getattr(cell, name) for name in GROUP_FIELDS)


def plan(cells: Iterable[Cell], max_members: int) -> list[list[Cell]]:
    """The cells in groups of at most `max_members` that share `group_key`, in order of
    first appearance (cells keep their order within a group)."""
    groups: dict[tuple, list[Cell]] = {}
    for cell in cells:
        groups.setdefault(group_key(cell), []).append(cell)
    return [members[i:i + max_members] for members in groups.values()
            for i in range(0, len(members), max_members)]


def optimizer_hparams(cell: Cell) -> dict:
    """The cell's optimizer hyper-parameters: its hparams less the lr schedule, which the
    loop applies step by step (as optbench.train does)."""
    return {k: v for k, v in cell.hparams.items() if k != "schedule"}


def batchable(cell: Cell) -> bool:
    """Whether the cell's optimizer has a (K, P) step: not a torch.optim class run through
    optbench.optim.torch_adapter (the executor runs those cell by cell)."""
    from optbench import optim

    return not hasattr(optim.spec(cell.optimizer), "kwargs")


def sub_batch_key(cell: Cell) -> tuple:
    """Members with equal keys share one batched optimizer: same optimizer, same compiled
    switches and state slots (what optbench.optim.batch requires)."""
    from optbench import optim

    h = optim.create(cell.optimizer, backend="numpy", **optimizer_hparams(cell)).hparams
    spec = optim.spec(cell.optimizer)
    return cell.optimizer, spec.option_values(h), tuple(spec.slot_values(h))


def batched_optimizer(cells: list[Cell], backend: str):
    """One optimizer for `cells` (one sub-batch) with each member's hyper-parameters: a
    value all members share is given once, a value that differs as one per member."""
    from optbench import optim

    name = cells[0].optimizer
    validated = [optim.create(name, backend="numpy", **optimizer_hparams(c)).hparams
                 for c in cells]
    given = {}
    for key in sorted(set().union(*(optimizer_hparams(c) for c in cells))):
        values = [v[key] for v in validated]
        given[key] = (values[0] if all(v == values[0] for v in values)
                      else np.array(values, dtype=np.float64))
    return optim.create(name, backend=backend, **given)


def run_group(cells: list[Cell], device: str = "cpu") -> Iterator[Result]:
    """Train `cells` (one group: equal `group_key`) in lockstep on `device`; yield each
    member's Result when it finishes. Bad cells raise UsageError before any work."""
    group = _Group(cells, device)
    try:
        yield from group.run()
    finally:
        group.close()


class _Member:
    """One cell's progress: what `optbench.train._Loop` keeps for it."""

    def __init__(self, cell: Cell, task, length: int):
        self.cell = cell
        self.rng = task.train_rng(cell.seed)
        self.val = task.eval_set(cell.seed, length, "val")
        self.curves: list[dict] = []
        self.profiles: list[dict] = []
        self.losses: list[float] = []
        self.norms: list[float] = []
        self.outcome, self.solved_at, self.diverged_at = "budget", None, None
        self.val_loss = self.val_metric = None
        self.limit = math.inf
        self.train_s = self.eval_s = self.compile_s = self.setup_s = 0.0


class _Sub:
    """Members that share one batched optimizer (contiguous rows), its optimizer, its
    state (or, until their rows have moved, the old state and the rows it keeps)."""

    def __init__(self, members: list[_Member], opt, state=None):
        self.members, self.opt, self.state = members, opt, state


class _Group:
    def __init__(self, cells: list[Cell], device: str):
        started = perf_counter()
        if device not in DEVICES:
            raise UsageError(f"unknown device {device!r}; allowed: {', '.join(DEVICES)}")
        if not cells:
            raise UsageError("a lockstep group needs at least one cell")
        keys = {group_key(c) for c in cells}
        if len(keys) != 1:
            raise UsageError("the cells of a lockstep group must share "
                             f"{', '.join(GROUP_FIELDS)}; got {len(keys)} different ones")
        self.task, self.length = train.check_cell(cells[0])
        built = {}
        for cell in cells:
            train.check_cell(cell)
            if not batchable(cell):
                raise UsageError(f"optimizer {cell.optimizer!r} has no batched (K, P) step "
                                 "(a torch.optim class); run its cells with --engine cells")
            # run_cell's own build: UsageError for an unknown model or optimizer, and the
            # member's initial parameters (the same draws as run_cell's).
            built[cell.key] = train.build(cell, self.task)[0]
        # Sub-batches: members of one optimizer kind are contiguous rows.
        subs: dict[tuple, list[Cell]] = {}
        for cell in cells:
            subs.setdefault(sub_batch_key(cell), []).append(cell)
        ordered = [c for group in subs.values() for c in group]
        c0 = ordered[0]
        self.device, self.K = device, len(ordered)
        self.steps, self.batch, self.every = c0.steps, c0.batch_size, self.task.head == "every"
        self.T = self.task.steps(self.length)
        self.members = [_Member(c, self.task, self.length) for c in ordered]
        models = [built[c.key] for c in ordered]
        self.warm = self.task.sample(np.random.default_rng(0), self.batch, self.length)
        self.backend = _backend(device, models[0], self.K, self.batch, self.T,
                                self.warm.y.dtype)
        self.backend.load(np.stack([m.params for m in models]))
        self.val_x = np.stack([m.val.x for m in self.members])
        lo = 0
        self.subs = []
        for group in subs.values():
            members = self.members[lo:lo + len(group)]
            self.subs.append(_Sub(members, self._optimizer(members)))
            lo += len(group)
        self.env: dict = {}
        self._share("setup_s", perf_counter() - started, self.members)

    # -- helpers ---------------------------------------------------------------------------
    def _optimizer(self, members: list[_Member]):
        return batched_optimizer([m.cell for m in members], self.backend.optim_backend)

    def _lrs(self, sub: _Sub, step: int) -> dict:
        """{"lr": each member's lr at `step`} when a member of `sub` has a schedule (as
        optbench.train computes it: the cell's lr times the schedule's factor), else {}."""
        scheduled = [m.cell.hparams.get("schedule") for m in sub.members]
        if not any(scheduled):
            return {}
        return {"lr": np.array([m.cell.lr * schedules.factor(s, step, self.steps) if s
                                else m.cell.lr for m, s in zip(sub.members, scheduled)])}

    @staticmethod
    def _share(field: str, seconds: float, members) -> None:
        members = list(members)
        for m in members:
            setattr(m, field, getattr(m, field) + seconds / len(members))

    def _rows(self) -> list[tuple[int, int]]:
        """Each sub-batch's rows [lo, hi) among the live members."""
        out, lo = [], 0
        for sub in self.subs:
            out.append((lo, lo + len(sub.members)))
            lo += len(sub.members)
        return out

    def _sample(self, slot: int) -> None:
        """Draw the next batch of every live member into batch set `slot`."""
        b = self.backend.slots[slot]
        count = self.task.output_size if self.task.loss == "mse" else 1
        S = self.T if self.every else 1
        for i, m in enumerate(self.members):
            x, y, mask = self.task.sample(m.rng, self.batch, self.length)
            b["x"][i] = x
            set_targets(b, i, y)
            if mask is None:
                b["denom"][i] = float(self.batch * S * count)
            else:
                b["mask"][i] = mask
                b["denom"][i] = float(b["mask"][i].sum(dtype=np.float64)) * count

    def _evaluate(self, rows: list[int], sets: list[Batch], xs=None) -> list[tuple]:
        """(loss, metric) of the members in `rows` on their `sets`, as _Loop.evaluate."""
        xs = np.stack([s.x for s in sets]) if xs is None else xs
        out = self.backend.predict(rows, xs)
        scores = []
        for m, batch in enumerate(sets):
            outputs = out[m] if self.every else out[m][:, 0]
            total = np.zeros(3)
            for i in range(0, len(batch.y), EVAL_CHUNK):
                part = Batch(*(None if a is None else a[i:i + EVAL_CHUNK] for a in batch))
                total += self.task.score(outputs[i:i + EVAL_CHUNK], part)
            scores.append((float(total[0] / total[2]), float(total[1] / total[2])))
        return scores

    def _record(self, m: _Member, step: int, val: tuple[float, float]) -> None:
        m.val_loss, m.val_metric = val
        m.curves.append({
            "step": step,
            "train_loss": float(np.mean(m.losses)) if m.losses else None,
            "val_loss": m.val_loss,
            "val_metric": m.val_metric,
            "grad_norm": float(np.mean(m.norms)) if m.norms else None,
            "train_s": m.train_s,
            "wall_s": m.train_s + m.eval_s,
        })
        m.losses, m.norms = [], []

    def _warm_up(self) -> None:
        """Compile (or load from the cache) every kernel the run calls, on copies and
        scratch: the parameters are untouched."""
        from optbench import optim

        t = perf_counter()
        b = self.backend.slots[0]
        x, y, mask = self.warm
        b["x"][0] = x
        set_targets(b, 0, y)
        if mask is not None:
            b["mask"][0] = mask
        b["denom"][0] = 1.0
        self.backend.launch(0, 1)
        self.backend.wait()
        self.backend.predict([0], x[None])
        c0 = self.members[0].cell
        grads = self.backend.copy(self.backend.grads[:1])
        optim.clip_grad_norm(grads, c0.clip_norm or NO_CLIP)
        if c0.clip_value:
            optim.clip_grad_value(grads, c0.clip_value)
        for sub, (lo, hi) in zip(self.subs, self._rows()):
            params = self.backend.copy(self.backend.params[lo:hi])
            sub.opt.step(params, self.backend.copy(self.backend.grads[lo:hi]),
                         sub.opt.init(params))
        self.backend.sync()
        self._share("compile_s", perf_counter() - t, self.members)

    # -- the loop --------------------------------------------------------------------------
    def run(self) -> Iterator[Result]:
        from optbench import optim

        self._warm_up()
        self.env = {**environment(), **self.backend.environment(),
                    "engine": "lockstep", "lockstep_members": self.K}
        for sub, (lo, hi) in zip(self.subs, self._rows()):
            sub.state = sub.opt.init(self.backend.params[lo:hi])
        t = perf_counter()
        scores = self._evaluate(list(range(self.K)), [m.val for m in self.members], self.val_x)
        self._share("eval_s", perf_counter() - t, self.members)
        baseline = self.task.baseline_loss(self.length)
        for m, val in zip(self.members, scores):
            self._record(m, 0, val)
            m.limit = DIVERGE_FACTOR * max(baseline, m.val_loss)
            if self.task.solved(m.val_metric, self.length):
                m.outcome, m.solved_at = "solved", 0
        yield from self._finish(0, [m.outcome != "budget" for m in self.members], None)
        profile_at = {max(1, round(f * self.steps)) for f in PROFILE_FRACTIONS} | {1}
        clip_norm = self.members[0].cell.clip_norm if self.members else None
        clip_value = self.members[0].cell.clip_value if self.members else None
        step = 0
        while self.members:
            step += 1
            t = perf_counter()
            slot = step % 2
            n = len(self.members)
            if step == 1:
                self._sample(slot)
            self.backend.launch(slot, n)
            if step < self.steps:
                self._sample(1 - slot)  # the next step's (on CUDA while this one runs)
            sums = self.backend.wait()
            grads = self.backend.grads[:n]
            elements = n * grads.shape[1]
            with self.backend.update_threads(elements):
                norms = optim.clip_grad_norm(grads, clip_norm or NO_CLIP)
                if clip_value:
                    optim.clip_grad_value(grads, clip_value)
            denom = self.backend.slots[slot]["denom"]
            diverged = []
            for i, m in enumerate(self.members):
                loss, norm = float(sums[i] / denom[i]), float(norms[i])
                m.losses.append(loss)
                m.norms.append(norm)
                if not (math.isfinite(loss) and math.isfinite(norm)) or loss > m.limit:
                    m.outcome, m.diverged_at = "diverged", step
                    diverged.append(i)
            kept = [(i, self.backend.row(i)) for i in diverged]  # no update for these
            with self.backend.update_threads(elements):
                for sub, (lo, hi) in zip(self.subs, self._rows()):
                    sub.opt.step(self.backend.params[lo:hi], grads[lo:hi], sub.state,
                                 **self._lrs(sub, step))
            for i, values in kept:
                self.backend.set_row(i, values)
            profile = None
            if step in profile_at or step == self.steps or diverged:
                profile = self.backend.profiles(list(range(n)))
            if step in profile_at:
                for i, m in enumerate(self.members):
                    m.profiles.append({"step": step, "norms": profile[i].tolist()})
            full = step % self.steps_per_eval == 0 or step == self.steps
            evaluated = list(range(n)) if full else diverged
            self.backend.sync()
            self._share("train_s", perf_counter() - t, self.members)
            if evaluated:
                t = perf_counter()
                xs = self.val_x[:n] if full else self.val_x[evaluated]
                scores = self._evaluate(evaluated, [self.members[i].val for i in evaluated], xs)
                self._share("eval_s", perf_counter() - t, [self.members[i] for i in evaluated])
                for i, val in zip(evaluated, scores):
                    m = self.members[i]
                    self._record(m, step, val)
                    if m.outcome == "budget" and not math.isfinite(m.val_loss):
                        m.outcome, m.diverged_at = "diverged", step
                    elif m.outcome == "budget" and self.task.solved(m.val_metric, self.length):
                        m.outcome, m.solved_at = "solved", step
            done = [m.outcome != "budget" or step == self.steps for m in self.members]
            if any(done) and profile is None:
                profile = self.backend.profiles(list(range(n)))
            yield from self._finish(step, done, profile)

    @property
    def steps_per_eval(self) -> int:
        return self.members[0].cell.eval_every if self.members else 1

    def _finish(self, step: int, done: list[bool], profile) -> Iterator[Result]:
        """Score the finished members on their test sets, hand back their Results, and
        drop their rows."""
        rows = [i for i, d in enumerate(done) if d]
        if not rows:
            return
        finished = [self.members[i] for i in rows]
        for i, m in zip(rows, finished):
            if step > 0 and (not m.profiles or m.profiles[-1]["step"] != step):
                m.profiles.append({"step": step, "norms": profile[i].tolist()})
        t = perf_counter()
        tests = [self.task.eval_set(m.cell.seed, self.length, "test") for m in finished]
        scores = self._evaluate(rows, tests)
        self._share("eval_s", perf_counter() - t, finished)
        results = []
        for m, (test_loss, test_metric) in zip(finished, scores):
            solved_s = next((r["train_s"] for r in m.curves if r["step"] == m.solved_at), None)
            results.append(Result(
                cell=m.cell, outcome=m.outcome, steps_run=step,
                steps_to_solve=m.solved_at, seconds_to_solve=solved_s,
                diverged_step=m.diverged_at, val_loss=m.val_loss, val_metric=m.val_metric,
                test_loss=test_loss, test_metric=test_metric,
                curves=m.curves, grad_profiles=m.profiles,
                timings={"compile_s": m.compile_s, "train_s": m.train_s, "eval_s": m.eval_s,
                         "total_s": m.setup_s + m.compile_s + m.train_s + m.eval_s},
                env=self.env,
            ))
        self._compact([i for i, d in enumerate(done) if not d])
        yield from results

    def _compact(self, keep: list[int]) -> None:
        """Keep the members in rows `keep` (in order): parameters, optimizer states,
        validation inputs and the batch set drawn ahead move up to rows 0 .. len(keep)-1."""
        if len(keep) == len(self.members):
            return
        if not keep:
            self.members, self.subs = [], []
            return
        self.backend.compact(keep)
        self.val_x[:len(keep)] = self.val_x[keep]
        for b in self.backend.slots:
            for name in ("x", "y", "labels", "mask", "denom"):
                b[name][:len(keep)] = b[name][keep]
        kept = {id(self.members[i]) for i in keep}
        self.members = [self.members[i] for i in keep]
        subs = []
        for sub in self.subs:
            local = [j for j, m in enumerate(sub.members) if id(m) in kept]
            if len(local) == len(sub.members):
                subs.append(sub)
            elif local:
                members = [sub.members[j] for j in local]
                subs.append(_Sub(members, self._optimizer(members), (sub.state, local)))
        self.subs = subs
        for sub, (lo, hi) in zip(self.subs, self._rows()):
            if isinstance(sub.state, tuple):
                sub.state = self._move_state(sub.opt, *sub.state, self.backend.params[lo:hi])

    def _move_state(self, opt, old, local: list[int], params):
        """A fresh state for `params` (the rows kept) holding rows `local` of state `old`."""
        state = opt.init(params)
        for new, prev in zip(state.slots, old.slots):
            self.backend.put(new, self.backend.to_host(prev)[local])
        state.step = old.step
        for row, j in zip(state.rows, local):
            row.step = old.step
            row.host = dict(old.rows[j].host)
        return state

    def close(self) -> None:
        self.backend.close()


def set_targets(b: dict, i: int, y: np.ndarray) -> None:
    """Row i of the batch set's targets: class indices or MSE targets, (B, S[, O])."""
    if b["labels"].shape[1]:
        b["labels"][i] = y.reshape(b["labels"].shape[1:])
    else:
        b["y"][i] = y.reshape(b["y"].shape[1:])


def _backend(device: str, template, members: int, batch: int, steps: int, y_dtype):
    if device == "cpu":
        from optbench.lockstep.cpu import Cpu

        return Cpu(template, members, batch, steps, y_dtype)
    from optbench.lockstep.cuda import Cuda

    return Cuda(template, members, batch, steps, y_dtype)
