"""What a results store records about its optimizers and tasks, so that it reports anywhere.

When a matrix is recorded (`Store.record_matrix`) the store keeps, beside the cells:

- per optimizer: its defaults (and pinned values), label, origin ("built-in", the plugin
  it came from), a hash of its rule's code outside this package, its torch class, paper
  and the first paragraph of its doc;
- per task: its metric and direction, head and loss, sizes, origin, code hash, the first
  paragraph of its documentation, and per length used: the memoryless baseline (metric and
  loss), the metric at which it counts as solved (`Task.threshold`), and its time steps.

`report`, `pick_lr` and `optbench.load` read these (`Catalog`), so a store made with a
plugin reports where the plugin cannot be imported. A store written before optbench
recorded them falls back to the live registries (`Catalog.task`, `Catalog.defaults`).
"""

from __future__ import annotations

import json
import math
import sys

from optbench.errors import UsageError
from optbench.plugins import combine_code


def _json(value):
    """`value` as JSON would give it back (tuples as lists)."""
    return json.loads(json.dumps(value))


def _first_paragraph(doc: str | None) -> str:
    return " ".join((doc or "").strip().split("\n\n")[0].split())


def optimizer(name: str) -> dict:
    """The description of registered optimizer `name`."""
    from optbench import optim  # Numba: a store opened to read or report does without it

    s = optim.spec(name)
    return {
        "name": name, "label": s.display, "defaults": _json(dict(s.defaults)),
        "fixed": _json(dict(s.fixed)), "origin": optim.origin(name),
        "source": optim.source_key(name), "torch": s.torch, "paper": s.paper,
        "doc": _first_paragraph(s.doc),
    }


def task(name: str, lengths) -> dict:
    """The description of registered task `name`, with the figures of each of `lengths`."""
    from optbench import tasks

    t = tasks.get(name)
    doc = type(t).__doc__ if type(t).__doc__ else None
    module_doc = getattr(sys.modules.get(type(t).__module__), "__doc__", None)
    return {
        "name": name, "metric_name": t.metric_name, "higher_is_better": bool(t.higher_is_better),
        "head": t.head, "loss": t.loss, "input_size": int(t.input_size),
        "output_size": int(t.output_size), "min_length": int(t.min_length),
        "origin": tasks.origin(name), "source": tasks.source_key(name),
        "doc": _first_paragraph(module_doc or doc),
        "lengths": {str(int(n)): {
            "baseline": float(t.baseline(n)), "baseline_loss": float(t.baseline_loss(n)),
            "threshold": t.threshold(n), "steps": int(t.steps(n))} for n in lengths},
    }


def for_cells(cells) -> tuple[list[dict], list[dict]]:
    """(optimizer descriptions, task descriptions) of what `cells` run."""
    lengths: dict[str, set] = {}
    names = []
    for cell in cells:
        lengths.setdefault(cell.task, set()).add(cell.length)
        if cell.optimizer not in names:
            names.append(cell.optimizer)
    return ([optimizer(n) for n in names],
            [task(t, sorted(ls)) for t, ls in lengths.items()])


def merge_task(old: dict | None, new: dict) -> dict:
    """`new`, keeping the lengths `old` described that `new` does not (another matrix's)."""
    if not old:
        return new
    return {**new, "lengths": {**old.get("lengths", {}), **new["lengths"]}}


class TaskInfo:
    """A task as a store describes it: what the report reads of a Task."""

    def __init__(self, info: dict):
        self.info = info
        for key in ("name", "metric_name", "higher_is_better", "head", "loss", "doc",
                    "origin", "min_length"):
            setattr(self, key, info.get(key))

    def _at(self, length: int) -> dict:
        try:
            return self.info["lengths"][str(int(length))]
        except KeyError:
            raise UsageError(f"task {self.name!r}: the store describes lengths "
                             f"{', '.join(self.info['lengths'])}, not {length}") from None

    def baseline(self, length: int) -> float:
        return self._at(length)["baseline"]

    def baseline_loss(self, length: int) -> float:
        return self._at(length)["baseline_loss"]

    def threshold(self, length: int) -> float | None:
        return self._at(length)["threshold"]

    def steps(self, length: int) -> int:
        return self._at(length)["steps"]

    def solved(self, metric: float, length: int) -> bool:
        """The solved rule as recorded: at or past the threshold."""
        limit = self.threshold(length)
        if limit is None or not math.isfinite(metric):
            return False
        return metric >= limit if self.higher_is_better else metric <= limit


class Catalog:
    """The optimizers and tasks a store describes, by name; the live registries for what it
    does not describe (stores from before the descriptions)."""

    def __init__(self, optimizers: dict | None = None, tasks: dict | None = None):
        self.optimizers = dict(optimizers or {})
        self.tasks = dict(tasks or {})

    def task(self, name: str, lengths=()) -> TaskInfo:
        if name not in self.tasks:
            self.tasks[name] = task(name, lengths)  # UsageError if not registered here
        info = self.tasks[name]
        missing = [n for n in lengths if str(int(n)) not in info["lengths"]]
        if missing:
            info = merge_task(info, task(name, missing))
            self.tasks[name] = info
        return TaskInfo(info)

    def code_key(self, optimizer_name: str, task_name: str) -> str | None:
        """The plugin code hash of a cell of (optimizer, task), as `plugins.code_key` gives
        it, from the recorded sources (the live registries for what is not recorded)."""
        if optimizer_name not in self.optimizers:
            self.optimizers[optimizer_name] = optimizer(optimizer_name)
        if task_name not in self.tasks:
            self.tasks[task_name] = task(task_name, ())
        return combine_code(self.optimizers[optimizer_name].get("source"),
                            self.tasks[task_name].get("source"))

    def defaults(self, name: str) -> dict:
        if name not in self.optimizers:
            self.optimizers[name] = optimizer(name)  # UsageError if not registered here
        return dict(self.optimizers[name]["defaults"])
