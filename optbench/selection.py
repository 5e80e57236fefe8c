"""Tuning analysis: which learning rate an entrant gets, and how entrants are named.

The protocol (DeepOBS, Schneider et al. 2019; Crowded Valley, Schmidt et al. 2021): each
learning rate of a group's grid is scored by the median over the tuning seeds of a per-cell
score taken on the validation set, and the lr with the best median wins (on a tie, the
smaller lr). The per-cell score orders, best first:

1. solved cells, by steps to solve (the first evaluation meeting the task's solved rule);
2. unsolved cells, by their final validation metric;
3. diverged cells, and cells without a validation metric.

A plain median of final validation metrics would rank solved runs by noise: the loop stops
a run at its first evaluation past the threshold, so every solved run ends just past it.
Where nothing solves, the rule is DeepOBS's. With an even number of seeds the median is the
lower of the two middle scores.

The same rule serves two callers: `pick_lr` over a frame of stored cells (tables, report,
run summary), and `best_lr` over plain records while a matrix is still being planned
(`optbench.plan` extends grids and starts confirmations from it).
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Iterable, Mapping

if TYPE_CHECKING:
    import pandas as pd

# What, apart from the learning rate and the seed, makes two cells the same experiment.
GROUP = ["task", "length", "model", "hidden", "optimizer", "variant", "steps", "batch_size",
         "eval_every", "clip_norm", "clip_value", "init"]


def cell_score(outcome: str, val_metric, steps_to_solve, higher_is_better: bool) -> tuple:
    """A cell's place in the order above: (0, steps), (1, signed metric) or (2, 0.0)."""
    v = math.nan if val_metric is None else float(val_metric)
    if outcome == "diverged" or math.isnan(v):
        return (2, 0.0)
    if outcome == "solved":
        return (0, float(steps_to_solve))
    return (1, -v if higher_is_better else v)


def median_score(scores: Iterable[tuple]) -> tuple:
    """The lower median of per-seed scores."""
    s = sorted(scores)
    return s[(len(s) - 1) // 2]


def best_lr(records: Iterable[Mapping], higher_is_better: bool) -> float | None:
    """The winning lr among records with keys lr, outcome, val_metric, steps_to_solve (one
    per finished cell of one group); None when there are none."""
    by_lr: dict[float, list[tuple]] = {}
    for r in records:
        by_lr.setdefault(float(r["lr"]), []).append(cell_score(
            r["outcome"], r["val_metric"], r["steps_to_solve"], higher_is_better))
    if not by_lr:
        return None
    return min(by_lr, key=lambda lr: (median_score(by_lr[lr]), lr))


def edge(lr: float, lrs: Iterable[float]) -> str:
    """"low" or "high" when `lr` is the smallest or largest of the lrs compared (the optimum
    may lie beyond the grid), "" when it lies inside or only one lr was compared."""
    lrs = sorted(set(float(x) for x in lrs))
    if len(lrs) < 2:
        return ""
    return "low" if lr == lrs[0] else "high" if lr == lrs[-1] else ""


def pick_lr(cells: "pd.DataFrame",
            higher_is_better: dict[str, bool] | None = None) -> "pd.DataFrame":
    """The tuned learning rate per (task, length, model, hidden, optimizer, other hparams ...).

    `cells` is `optbench.load(DIR).tier("tuned")` or any frame with its columns.
    `higher_is_better` maps task -> bool (default: the frame's `higher_is_better` column,
    which `optbench.load` takes from the store's task descriptions, else the task
    registry's).

    Returns one row per group: the GROUP columns, `lr`, then over the seeds at that lr:
    `seeds`, `solved`, `diverged` (counts), `steps_median` (median steps to solve of the
    solved seeds), `val_median` and `test_median` (median final validation and test metric
    of the seeds that did not diverge), `lrs` (how many lrs were compared) and `edge`
    ("low"/"high" when the pick is the grid's smallest/largest lr, see `edge`).
    """
    import pandas as pd

    if higher_is_better is not None:
        better = cells["task"].map(higher_is_better)
    elif "higher_is_better" in cells and cells["higher_is_better"].notna().all():
        better = cells["higher_is_better"]
    else:
        from optbench import tasks

        better = cells["task"].map(
            {t: tasks.get(t).higher_is_better for t in cells["task"].unique()})
    df = cells.assign(variant=[variant(h) for h in cells["hparams_json"]])
    df["score"] = [
        cell_score(o, v, s, bool(b)) for b, o, v, s in
        zip(better, df["outcome"], df["val_metric"], df["steps_to_solve"])
    ]
    rows = []
    for group, g in df.groupby(GROUP, sort=True, dropna=False):
        per_lr = []
        for lr, at in g.groupby("lr", sort=True):
            ok = at[at["outcome"] != "diverged"]
            per_lr.append((median_score(at["score"]), lr, dict(
                seeds=at["seed"].nunique(), solved=int((at["outcome"] == "solved").sum()),
                diverged=len(at) - len(ok),
                steps_median=at["steps_to_solve"].astype(float).median(),
                val_median=ok["val_metric"].astype(float).median(),
                test_median=ok["test_metric"].astype(float).median(),
            )))
        _, lr, figures = min(per_lr, key=lambda x: x[:2])
        rows.append({**dict(zip(GROUP, group)), "lr": lr, **figures, "lrs": len(per_lr),
                     "edge": edge(lr, [x[1] for x in per_lr])})
    return pd.DataFrame(rows, columns=GROUP + [
        "lr", "seeds", "solved", "diverged", "steps_median", "val_median", "test_median", "lrs",
        "edge"])


def label(optimizer: str, variant: str, defaults: Mapping | None = None) -> str:
    """'sgd(momentum=0.9)': the optimizer and those of its hyper-parameters, lr aside, that
    differ from its defaults (`variant` is `pick_lr`'s column of that name; `defaults`, the
    optimizer's, default to its spec's; a store's description has them too)."""
    from optbench.schedules import describe

    if defaults is None:
        from optbench import optim

        defaults = optim.spec(optimizer).defaults
    defaults = json.loads(json.dumps(dict(defaults)))
    changed = {k: describe(v) if k == "schedule" else v
               for k, v in json.loads(variant).items() if defaults.get(k) != v}
    return optimizer + (f"({', '.join(f'{k}={v}' for k, v in changed.items())})" if changed else "")


def variant(hparams_json: str) -> str:
    """The hyper-parameters other than lr, as canonical JSON: what tells variants apart."""
    hp = json.loads(hparams_json)
    hp.pop("lr", None)
    return json.dumps(hp, sort_keys=True)
