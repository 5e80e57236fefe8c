"""What a matrix runs, given what it has found so far: grids that widen, confirmation on
fresh seeds, and the search for each optimizer's horizon.

`plan(config, finished)` is a pure function of the matrix's normalised config and the
figures of the cells finished so far (`finished`: cell key -> outcome, val_metric,
steps_to_solve). It returns every (cell, tier) the matrix needs in view of those results:
the cells already run, and the next ones, whose results it cannot know yet. A run calls it,
runs what is unfinished, and calls it again until it asks for nothing new (`waves`). The
plan depends on results only, and results are bit-identical across executors, so a
resumed, a parallel and a serial run ask for the same cells.

For each line, one (task, model, hidden, entrant):

- tier "defaults": the entrant's own lr on the tuning seeds (`seeds`), untuned.
- tier "tuned": the lr grid on the tuning seeds. When the lr that wins
  (`selection.best_lr`) is the grid's smallest or largest, the grid gains the next point
  beyond it, one grid step further, until the winner lies inside, `tuning.extend` points
  were added on that side, or the lr would leave LR_BOUNDS.
- tier "confirm": the winning lr rerun on `confirm_seeds`, seeds never used for tuning, so
  that the tuned tier's success rates and figures are not the best of the seeds that chose
  the lr (selection bias; DeepOBS reruns the same way).

A length counts as solved by the entrant when at least `horizon.solved_fraction` of the
confirmation seeds (without confirmation: of the tuning seeds at the winning lr; without a
tuned tier: of the defaults cells) solved it. Tasks with fixed `lengths` run every length.
A task under `[horizon]` searches instead: from `start`, lengths grow by `factor` (capped
at `max`) while the entrant solves them; after the first length it fails, `bisect` more
lengths are tried between the last one solved and that one (geometric midpoints). Its
horizon is the longest length solved.
"""

from __future__ import annotations

import math
from typing import Mapping

from optbench import selection
from optbench.cell import Cell

# Learning rates outside these are not tried by grid extension: below, no training moves in a
# few thousand steps; above, every optimizer here diverges.
LR_BOUNDS = (1e-7, 10.0)
# Confirmation seeds given as a count n are CONFIRM_SEED_BASE, +1, ...: far from the tuning
# seeds 0, 1, ..., so that adding tuning seeds later never reuses a confirmation seed.
CONFIRM_SEED_BASE = 1000


def plan(config: dict, finished: Mapping[str, Mapping],
         higher_is_better: Mapping[str, bool] | None = None,
         code=None) -> list[tuple[Cell, str]]:
    """Every (cell, tier) the matrix needs given the finished cells; see the module docstring.
    Seeds outermost (tuning seeds, then confirmation seeds), then the config's order.
    `higher_is_better`: task -> direction of its metric, and `code(optimizer, task)`: the
    plugin code hash of its cells (default: both from the live registries; a report on a
    machine without the plugins passes what the store recorded)."""
    out: list[tuple[Cell, str]] = []
    for line in _lines(config, finished, higher_is_better, code):
        out += line.members()
    seed_order = {s: i for i, s in enumerate([*config["seeds"], *config["confirm_seeds"]])}
    out = list(dict.fromkeys(out))  # a cell in two roles stays in both tiers, once each
    return sorted(out, key=lambda m: seed_order[m[0].seed])  # stable: config order within


def status(config: dict, finished: Mapping[str, Mapping],
           higher_is_better: Mapping[str, bool] | None = None, code=None) -> list[dict]:
    """Per line and length visited: whether it is settled and solved, the winning lr, its
    grid and edge: what the report's horizon table and the run summary show (arguments as
    `plan`'s)."""
    rows = []
    for line in _lines(config, finished, higher_is_better, code):
        line.members()
        rows += line.visited
    return rows


def _lines(config, finished, higher_is_better, code):
    if higher_is_better is None:
        from optbench import tasks as registry

        higher_is_better = {t: registry.get(t).higher_is_better for t in config["tasks"]}
    if code is None:
        from optbench.plugins import code_key as code
    for task in config["tasks"]:
        for model in config["models"]:
            for hidden in config["hidden"]:
                for entrant in config["optimizers"]:
                    yield _Line(config, finished, task, model, hidden, entrant,
                                bool(higher_is_better[task]), code(entrant["name"], task))


def horizon_lengths(config: dict, task: str) -> list[int] | None:
    """The lengths a horizon task can visit without bisection (start, start * factor, ...,
    max); None for a task with fixed lengths."""
    h = config["horizon"].get("tasks", {}).get(task)
    if h is None:
        return None
    lengths, length = [h["start"]], h["start"]
    while length < h["max"]:
        length = min(int(round(length * config["horizon"]["factor"])), h["max"])
        lengths.append(length)
    return lengths


def bound(config: dict) -> list[Cell]:
    """The most cells the plan can ask for, whatever the results (for estimates of a run's
    time): every line reaches its search's `max` and bisects below it as often as allowed,
    and every grid gains `tuning.extend` points. The bisection lengths stand in for the
    ones a run would visit, which lie below the max and so cost less."""
    from optbench import tasks as registry
    from optbench.plugins import code_key

    cells = []
    for task in config["tasks"]:
        lengths = horizon_lengths(config, task) or config["lengths"][task]
        if task in config["horizon"]["tasks"] and len(lengths) > 1:
            top = lengths[-2:]
            for _ in range(config["horizon"]["bisect"]):
                mid = int(round(math.sqrt(top[0] * top[1])))
                if not top[0] < mid < top[1]:
                    break
                lengths.append(mid)
                top = [mid, top[1]]
        registry.get(task)  # an unknown task fails here, as in `plan`
        for model in config["models"]:
            for hidden in config["hidden"]:
                for entrant in config["optimizers"]:
                    line = _Line(config, {}, task, model, hidden, entrant, False,
                                 code_key(entrant["name"], task))
                    grid = list(entrant["lr_grid"])
                    for _ in range(config["tuning"]["extend"]):
                        more = _beyond(sorted(grid), "high") or _beyond(sorted(grid), "low")
                        if more is not None:
                            grid.append(more)
                    lrs = [(lr, config["seeds"]) for lr in grid]
                    if "defaults" in config["tiers"]:
                        lrs.append((entrant["hparams"]["lr"], config["seeds"]))
                    if "tuned" not in config["tiers"]:
                        lrs = lrs[-1:]
                    elif config["confirm_seeds"]:
                        lrs.append((grid[0], config["confirm_seeds"]))
                    for length in lengths:
                        cells += [line.cell(length, s, lr) for lr, seeds in lrs for s in seeds]
    return list({c.key: c for c in cells}.values())


class _Line:
    """The cells of one (task, model, hidden, entrant), walked in order until a result is
    missing; `visited` records each length's state."""

    def __init__(self, config, finished, task, model, hidden, entrant, higher_is_better,
                 code=None):
        self.config, self.finished = config, finished
        self.task, self.model, self.hidden, self.entrant = task, model, hidden, entrant
        self.higher = higher_is_better
        # A plugin's optimizer or task changes results through its source only: its hash is
        # part of the cell (optbench.plugins.code_key); None for built-ins.
        self.code = code
        self.cells: list[tuple[Cell, str]] = []
        self.visited: list[dict] = []

    def members(self) -> list[tuple[Cell, str]]:
        search = self.config["horizon"].get("tasks", {}).get(self.task)
        if search is None:
            for length in self.config["lengths"][self.task]:
                self.at(length)
            return self.cells
        h = self.config["horizon"]
        length, solved_max, failed_min, bisections = search["start"], None, None, 0
        while True:
            solved = self.at(length)
            if solved is None:
                break
            if solved:
                solved_max = length
            else:
                failed_min = length
            if failed_min is None:
                if length >= search["max"]:
                    break
                length = min(int(round(length * h["factor"])), search["max"])
            else:
                if solved_max is None or bisections >= h["bisect"]:
                    break
                mid = int(round(math.sqrt(solved_max * failed_min)))
                if not solved_max < mid < failed_min:
                    break
                length, bisections = mid, bisections + 1
        return self.cells

    # -- one length -------------------------------------------------------------------------
    def cell(self, length: int, seed: int, lr: float) -> Cell:
        c = self.config
        return Cell(
            task=self.task, length=length, model=self.model, hidden=self.hidden, seed=seed,
            steps=c["steps"][self.task], batch_size=c["batch_size"], eval_every=c["eval_every"],
            clip_norm=c["clip_norm"], clip_value=c["clip_value"], init=c["init"],
            optimizer=self.entrant["name"], hparams={**self.entrant["hparams"], "lr": lr},
            code=self.code,
        )

    def add(self, length: int, seeds, lr: float, tier: str) -> list[Mapping | None]:
        """Plan the cells at this lr on these seeds; their finished figures (None if not yet)."""
        cells = [self.cell(length, s, lr) for s in seeds]
        self.cells += [(cell, tier) for cell in cells]
        return [self.finished.get(cell.key) for cell in cells]

    def at(self, length: int) -> bool | None:
        """Plan what this length needs; True/False once it is settled (solved or not by the
        rule in the module docstring), None while results are missing."""
        c = self.config
        state = {"task": self.task, "model": self.model, "hidden": self.hidden,
                 "entrant": self.entrant, "length": length, "lr": None, "lrs": [], "edge": "",
                 "seeds": [], "solved": None, "fraction": None}
        self.visited.append(state)
        default_lr = self.entrant["hparams"]["lr"]
        judged = None
        if "defaults" in c["tiers"]:
            judged = self.add(length, c["seeds"], default_lr, "defaults")
            state.update(lr=default_lr, lrs=[default_lr], seeds=list(c["seeds"]))
        if "tuned" in c["tiers"]:
            best = self.tune(length, state)
            if best is None:
                return None
            if c["confirm_seeds"]:
                judged = self.add(length, c["confirm_seeds"], best, "confirm")
                state["seeds"] = list(c["confirm_seeds"])
            else:
                judged = [r for r in self.tuning_records(length, [best])]
                state["seeds"] = list(c["seeds"])
        if judged is None or any(r is None for r in judged):
            return None
        solved = sum(r["outcome"] == "solved" for r in judged)
        state["fraction"] = solved / len(judged)
        state["solved"] = state["fraction"] >= c["horizon"]["solved_fraction"]
        return state["solved"]

    def tuning_records(self, length: int, lrs) -> list[Mapping | None]:
        return [self.finished.get(self.cell(length, s, lr).key)
                for lr in lrs for s in self.config["seeds"]]

    def tune(self, length: int, state: dict) -> float | None:
        """Plan the grid (widened as the results ask); the winning lr, or None while results
        are missing."""
        grid = list(self.entrant["lr_grid"])
        added = {"low": 0, "high": 0}
        while True:
            records = []
            for lr in grid:
                records += self.add(length, self.config["seeds"], lr, "tuned")
            if any(r is None for r in records):
                return None
            best = selection.best_lr(
                [{**r, "lr": lr} for r, lr in zip(
                    records, [lr for lr in grid for _ in self.config["seeds"]])], self.higher)
            side = selection.edge(best, grid)
            beyond = _beyond(sorted(grid), side) if side else None
            if beyond is None or added[side] >= self.config["tuning"]["extend"]:
                state.update(lr=best, lrs=sorted(grid), edge=side)
                return best
            added[side] += 1
            grid.append(beyond)


def _beyond(grid: list[float], side: str) -> float | None:
    """The next lr past the sorted grid's `side` end, one step of the grid's spacing at that
    end further (3 significant digits, as `matrix.lr_grid`); None outside LR_BOUNDS or for a
    one-point grid."""
    if len(grid) < 2:
        return None
    if side == "low":
        lr = grid[0] * grid[0] / grid[1]
    else:
        lr = grid[-1] * grid[-1] / grid[-2]
    lr = float(f"{lr:.3g}")
    return lr if LR_BOUNDS[0] <= lr <= LR_BOUNDS[1] and lr not in grid else None
