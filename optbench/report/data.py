"""Compute the data: the store's rows -> plain pandas DataFrames, one function per table or figure.

Nothing here draws. Every function takes `optbench.load(DIR, matrix)`-shaped frames (or what
another function here returns) and gives back a DataFrame that `optbench.report.tables`
writes and `optbench.report.figures` draws.

Vocabulary:

- problem: one (task, length, model, hidden); `PROBLEM` lists the columns.
- entrant: an optimizer with its non-lr hyper-parameters, named by `matrix.label`
  ("sgd(momentum=0.9)"); the thing being ranked.
- tier "tuned": the lr per (problem, entrant) is `matrix.pick_lr`'s (best median over seeds on
  the validation set); tier "defaults": the entrant's default lr, untuned.

Medians over seeds are the lower median (the smaller middle value for an even count) where
an outcome decides (cost to solve, as in `pick_lr`), and pandas' interpolated median and
quartiles where a metric is summarised (the tables' median and IQR of the test metric).
"""

from __future__ import annotations

import json
import math
import sqlite3
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from optbench.describe import Catalog
from optbench.errors import UsageError
from optbench.matrix import GROUP, label, pick_lr, variant
from optbench.store import Results, Store
from optbench.train import PROFILE_FRACTIONS

PROBLEM = ["task", "length", "model", "hidden"]
FIGURES = ["steps_to_solve", "seconds_to_solve", "diverged_step", "val_loss", "val_metric",
           "test_loss", "test_metric"]
# AlgoPerf's performance-profile score integrates rho_s(tau) over tau in [1, TAU_MAX]
# (Dahl et al. 2023, sec. 4.5: r_max = 4) and divides by TAU_MAX - 1, so it lies in [0, 1].
TAU_MAX = 4.0
# The gradient-flow training points, in training order (see `grad_flow`).
POINTS = ["step 1", *(f"{f:.0%} of budget" for f in PROFILE_FRACTIONS), "end of run"]
# Percentiles of the learning curves' bands (order statistics: with three seeds, the range).
BAND = (0.25, 0.75)


# -- loading -------------------------------------------------------------------------------
@dataclass
class Data:
    """One matrix's finished cells, ready for the tables and figures.

    name, config: the matrix (the newest of that name when the store ran it more than once).
    results: `optbench.load(DIR, matrix=name)`.
    cells: its finished cells with two more columns: `variant` (the non-lr hyper-parameters
           as JSON, what `pick_lr` groups by) and `entrant` (`matrix.label`).
    members: what the matrix asked for, one row per (cell, tier), finished or not, with
           `entrant` too.
    entrants: the entrants in the matrix's order (which fixes their colours).
    catalog: the optimizers and tasks as the store describes them (`optbench.describe`):
           defaults, metric, direction, baseline, threshold, whether or not they import here.
    """

    directory: str
    name: str
    config: dict
    results: Results
    cells: pd.DataFrame
    members: pd.DataFrame
    entrants: list[str]
    catalog: Catalog = field(default_factory=Catalog)
    picked: dict = field(default_factory=dict, repr=False)  # tier -> `at_picked_lr`, memoised

    def task(self, name: str):
        """Task `name` as the store describes it, at the lengths of this matrix."""
        return self.catalog.task(name, self.config["lengths"].get(name, ()))

    def tier(self, tier: str) -> pd.DataFrame:
        keys = self.members.loc[self.members["tier"] == tier, "key"]
        return self.cells[self.cells["key"].isin(keys)].reset_index(drop=True)

    @property
    def tiers(self) -> list[str]:
        """The tiers with finished cells, tuned first."""
        return [t for t in ("tuned", "defaults")
                if t in self.config["tiers"] and not self.tier(t).empty]

    def ordered(self, frame: pd.DataFrame, *extra: str) -> pd.DataFrame:
        """`frame` sorted by problem (tasks in the matrix's order), entrant (the matrix's
        order), then `extra` columns."""
        rank = {"task": {t: i for i, t in enumerate(self.config["tasks"])},
                "entrant": {e: i for i, e in enumerate(self.entrants)}}
        return frame.sort_values(
            PROBLEM + ["entrant", *extra], kind="stable",
            key=lambda c: c.map(rank[c.name]) if c.name in rank else c).reset_index(drop=True)


def load(directory: str, matrix: str | None = None) -> Data:
    """The finished cells of `matrix` (default: the matrix run most recently in `directory`).

    UsageError, one line, when there is no store, no such matrix, or no finished cell yet.
    """
    with Store.open(directory, create=False) as store:
        name = matrix if matrix is not None else _latest_matrix(store.path)
        if name is None:
            raise UsageError(f"{store.path} holds no matrix yet: run `python -m optbench run` "
                             "first")
        results = store.frames(matrix=name)  # one line naming the matrices held, if unknown
    if results.cells.empty:
        planned = results.members["key"].nunique()
        raise UsageError(f"matrix {name!r} in {directory}: 0 of {planned} cells finished yet; "
                         "nothing to report (a run stores each cell as it finishes)")
    config = json.loads(results.matrices["config_json"].iloc[-1])  # the newest of that name
    catalog = results.catalog
    cells, members = (_with_entrant(results.cells, catalog),
                      _with_entrant(results.members, catalog))
    # A column that is NULL in every row (no seed diverged yet) comes back as None objects.
    cells[FIGURES] = cells[FIGURES].astype(float)
    order = [label(o["name"], variant(json.dumps(o["hparams"])), catalog.defaults(o["name"]))
             for o in config["optimizers"]]
    entrants = [e for e in order if e in set(cells["entrant"])]
    entrants += sorted(set(cells["entrant"]) - set(entrants))
    return Data(directory, name, config, results, cells, members, entrants, catalog)


def _with_entrant(frame: pd.DataFrame, catalog: Catalog) -> pd.DataFrame:
    out = frame.assign(variant=[variant(h) for h in frame["hparams_json"]])
    out["entrant"] = [label(o, v, catalog.defaults(o))
                      for o, v in zip(out["optimizer"], out["variant"])]
    return out


def _latest_matrix(path: str) -> str | None:
    """The name of the matrix recorded last in the store at `path` (read-only)."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        row = conn.execute("SELECT name FROM matrices ORDER BY id DESC LIMIT 1").fetchone()
    finally:
        conn.close()
    return None if row is None else row[0]


# -- what is there, what is missing ---------------------------------------------------------
def missing(data: Data) -> pd.DataFrame:
    """Per (problem, entrant): cells planned, finished and missing (each cell once, whatever
    its tiers); only the groups with something missing, in the matrix's order."""
    cells = data.members.drop_duplicates("key")
    out = (cells.groupby(PROBLEM + ["entrant"], sort=False)["finished"]
           .agg(planned="size", finished="sum").reset_index())
    out["missing"] = out["planned"] - out["finished"]
    return data.ordered(out[out["missing"] > 0])


def environments(cells: pd.DataFrame) -> pd.DataFrame:
    """The environments the cells ran in (`env_json`), the most common first, with counts."""
    keys = ["cpu", "numba_threads", "numba_threading_layer", "python", "numpy", "numba",
            "optbench", "git_commit"]
    envs = pd.DataFrame([{k: str(env.get(k, "unknown")) for k in keys}
                         for env in map(json.loads, cells["env_json"])])
    counts = envs.value_counts(sort=True).reset_index()
    return counts.rename(columns={"count": "cells"})


# -- tables ---------------------------------------------------------------------------------
def at_picked_lr(data: Data, tier: str) -> pd.DataFrame:
    """The tier's finished cells at the lr `matrix.pick_lr` picks for their group (one row per
    seed), with `lrs`: how many learning rates were compared."""
    if tier not in data.picked:
        cells = data.tier(tier)
        chosen = pick_lr(cells)[GROUP + ["lr", "lrs"]]
        data.picked[tier] = _nulls_as_none(cells).merge(
            _nulls_as_none(chosen), on=GROUP + ["lr"], how="inner")
    return data.picked[tier]


def _nulls_as_none(frame: pd.DataFrame) -> pd.DataFrame:
    """GROUP columns as Python objects with None for every null, so that a column that is
    all None in one frame and all NaN in another (clipping off) joins."""
    out = frame.copy()
    out[GROUP] = out[GROUP].astype(object).where(out[GROUP].notna(), None)
    return out


def lower_median(values) -> float:
    """The middle value, the smaller of the two middle ones for an even count (as `pick_lr`)."""
    v = np.sort(np.asarray(values, dtype=float))
    return float(v[(len(v) - 1) // 2]) if len(v) else math.nan


def problem_table(data: Data, tier: str) -> pd.DataFrame:
    """One row per (problem, entrant) of the tier, at its picked lr, over the seeds there:

    lr, lrs (compared) / lrs_planned; seeds / seeds_planned; solved, success (solved / seeds);
    diverged; test_median, test_q25, test_q75 (the test metric of the seeds that did not
    diverge); steps_median, seconds_median (to solve, over the solved seeds); cost (the lower
    median over all seeds of the steps to solve, unsolved = inf: what the ranking uses);
    metric, higher_is_better, baseline (the task's memoryless predictor), threshold (the
    metric at which the task counts as solved).
    """
    at = at_picked_lr(data, tier)
    plan = data.members[data.members["tier"] == tier]
    planned = plan.groupby(PROBLEM + ["entrant"]).agg(
        lrs_planned=("lr", "nunique"), seeds_planned=("seed", "nunique"))
    rows = []
    for (task_name, length, model, hidden, entrant), g in at.groupby(
            PROBLEM + ["entrant"], sort=False):
        task = data.task(task_name)
        ok = g[g["outcome"] != "diverged"]["test_metric"].astype(float)
        solved = g[g["outcome"] == "solved"]
        steps = np.where(g["outcome"] == "solved", g["steps_to_solve"].astype(float), np.inf)
        rows.append({
            "task": task_name, "length": length, "model": model, "hidden": hidden,
            "entrant": entrant, "lr": g["lr"].iloc[0], "lrs": g["lrs"].iloc[0],
            **planned.loc[(task_name, length, model, hidden, entrant)].to_dict(),
            "seeds": len(g), "solved": len(solved), "success": len(solved) / len(g),
            "diverged": int((g["outcome"] == "diverged").sum()),
            "test_median": ok.median(), "test_q25": ok.quantile(0.25),
            "test_q75": ok.quantile(0.75),
            "steps_median": solved["steps_to_solve"].astype(float).median(),
            "seconds_median": solved["seconds_to_solve"].astype(float).median(),
            "cost": lower_median(steps),
            "metric": task.metric_name, "higher_is_better": task.higher_is_better,
            "baseline": task.baseline(length), "threshold": task.threshold(length),
        })
    return data.ordered(pd.DataFrame(rows))


def threshold(task, length: int) -> float | None:
    """The metric value at which the task's own `solved` rule flips (`Task.threshold`; a
    store's recorded value for a task described there), or None."""
    return task.threshold(length)


# -- ranking --------------------------------------------------------------------------------
def performance_profile(table: pd.DataFrame) -> pd.DataFrame:
    """Dolan & More 2002 over the problems of `table` (one tier's `problem_table`).

    The cost of entrant s on problem p is `cost` (the lower median over seeds of the steps to
    solve; unsolved = inf), an entrant with no finished cell on p costing inf too. The ratio
    r_ps = cost_ps / min_s cost_ps (inf where nobody solved p). Returns one row per
    (problem, entrant): cost, ratio.
    """
    entrants = pd.DataFrame({"entrant": list(dict.fromkeys(table["entrant"]))})
    out = table[PROBLEM].drop_duplicates().merge(entrants, how="cross").merge(
        table[PROBLEM + ["entrant", "cost"]], on=PROBLEM + ["entrant"], how="left")
    out["cost"] = out["cost"].astype(float).fillna(math.inf)
    best = out.groupby(PROBLEM)["cost"].transform("min")
    out["ratio"] = np.where(np.isfinite(best), out["cost"] / best, math.inf)
    return out


def profile_curves(profile: pd.DataFrame) -> pd.DataFrame:
    """rho_s(tau): the share of problems that entrant s solves within tau times the best cost,
    as a step function (rows entrant, tau, rho; rho holds from tau to the next row's tau),
    from tau = 1 to past the largest finite ratio and TAU_MAX."""
    finite = profile["ratio"][np.isfinite(profile["ratio"])]
    end = 1.3 * max(TAU_MAX, finite.max() if len(finite) else 1.0)  # the last step shows
    rows = []
    for entrant, g in profile.groupby("entrant", sort=False):
        r = np.sort(g["ratio"].to_numpy())
        for tau in [1.0, *r[np.isfinite(r)], end]:
            rows.append({"entrant": entrant, "tau": tau,
                         "rho": float(np.count_nonzero(r <= tau)) / len(r)})
    return pd.DataFrame(rows).drop_duplicates(["entrant", "tau"], keep="last")


def ranking(table: pd.DataFrame) -> pd.DataFrame:
    """The entrants of one tier ranked across its problems.

    score: AlgoPerf's performance-profile score, the area under rho_s(tau) for tau in
    [1, TAU_MAX] over TAU_MAX - 1 (1: fastest on every problem; 0: never within TAU_MAX
    times the fastest). It is exact for the step function:
    sum over problems of max(0, TAU_MAX - r_ps) / (|P| (TAU_MAX - 1)).
    mean_rank: the mean over problems of the entrant's rank on that problem (1 = best; ties
    share the mean rank): solved entrants by cost, then the unsolved by median test metric,
    then those with no metric (every seed diverged, or no finished cell).
    Sorted by score, then mean rank.
    """
    profile = performance_profile(table)
    area = np.clip(TAU_MAX - profile["ratio"], 0.0, None) / (TAU_MAX - 1)
    metric = profile.merge(table[PROBLEM + ["entrant", "test_median", "higher_is_better"]],
                           on=PROBLEM + ["entrant"], how="left")
    sign = np.where(metric["higher_is_better"].astype(bool), -1.0, 1.0)
    signed = sign * metric["test_median"].astype(float)
    profile["key"] = [
        (0, c) if math.isfinite(c) else (1, m) if math.isfinite(m) else (2, 0.0)
        for c, m in zip(profile["cost"], signed)
    ]
    profile["rank"] = profile.groupby(PROBLEM)["key"].transform(_average_ranks)
    out = profile.assign(area=area).groupby("entrant", sort=False).agg(
        problems=("cost", "size"), solved=("cost", lambda c: int(np.isfinite(c).sum())),
        score=("area", "mean"), mean_rank=("rank", "mean")).reset_index()
    return out.sort_values(["score", "mean_rank"], ascending=[False, True],
                           kind="stable").reset_index(drop=True)


def winners(table: pd.DataFrame) -> pd.DataFrame:
    """Per problem of one tier's `problem_table`: the fastest entrant(s) to solve (lowest
    `cost`; ties listed together) and that cost, how many entrants solved it, and the entrant
    with the best median test metric and that metric."""
    rows = []
    for problem, g in table.groupby(PROBLEM, sort=False):
        best = g["cost"].min()
        sign = -1.0 if g["higher_is_better"].iloc[0] else 1.0
        metric = (sign * g["test_median"].astype(float)).dropna()
        top = g.loc[metric.idxmin()] if len(metric) else None
        rows.append({
            **dict(zip(PROBLEM, problem)),
            "fastest": ", ".join(g.loc[g["cost"] == best, "entrant"]) if np.isfinite(best)
            else None,
            "cost": best, "solved_by": int(np.isfinite(g["cost"]).sum()), "entrants": len(g),
            "best_test": None if top is None else top["entrant"],
            "test_median": math.nan if top is None else top["test_median"],
            "metric": g["metric"].iloc[0],
        })
    return pd.DataFrame(rows)


def _average_ranks(keys: pd.Series) -> pd.Series:
    """Ranks 1..n of sortable keys; equal keys share the mean of their ranks."""
    positions = {}
    for i, k in enumerate(sorted(keys), start=1):
        positions.setdefault(k, []).append(i)
    return keys.map(lambda k: float(np.mean(positions[k])))


# -- figures' data --------------------------------------------------------------------------
def learning_curves(data: Data, tier: str = "tuned") -> pd.DataFrame:
    """The validation metric over training at the picked lr: per (problem, entrant, step),
    the median and the BAND percentiles over seeds (`lo`, `hi`) and `seeds`.

    The steps are every evaluation step of any seed. A run that stopped early because it
    solved keeps its last value from then on (carried forward); a run that diverged counts
    as the worst value (inf for a loss, -inf for accuracy) from its divergence on, so a
    median that is inf means at least half the seeds had diverged by then. Percentiles are
    order statistics (numpy's "inverted_cdf"), so an inf stays an inf and never becomes NaN.
    """
    at = at_picked_lr(data, tier)
    curves = data.results.curves[["key", "step", "val_metric"]].merge(
        at[PROBLEM + ["entrant", "key", "diverged_step", "lr"]], on="key")
    rows = []
    for (task_name, length, model, hidden, entrant), g in curves.groupby(
            PROBLEM + ["entrant"], sort=False):
        worst = -math.inf if data.task(task_name).higher_is_better else math.inf
        steps = np.unique(g["step"].to_numpy())
        values = []
        for _, run in g.groupby("key"):
            v = run["val_metric"].astype(float).fillna(worst).to_numpy()
            idx = np.searchsorted(run["step"].to_numpy(), steps, side="right") - 1
            series = v[np.clip(idx, 0, None)]
            diverged = run["diverged_step"].iloc[0]
            if not math.isnan(diverged):
                series[steps >= diverged] = worst
            values.append(series)
        v = np.array(values)
        lo, med, hi = np.quantile(v, [BAND[0], 0.5, BAND[1]], axis=0, method="inverted_cdf")
        for i, step in enumerate(steps):
            rows.append({"task": task_name, "length": length, "model": model, "hidden": hidden,
                         "entrant": entrant, "lr": g["lr"].iloc[0], "step": int(step),
                         "median": med[i], "lo": lo[i], "hi": hi[i], "seeds": len(v)})
    return data.ordered(pd.DataFrame(rows), "step")


def lr_sensitivity(data: Data) -> pd.DataFrame:
    """Final validation metric against lr in the tuned tier: per (problem, entrant, lr), the
    median over the seeds that did not diverge (`val_median`, NaN if all did), `seeds`,
    `diverged`, and `picked` (the lr `pick_lr` chose)."""
    cells = data.tier("tuned")
    if cells.empty:
        return pd.DataFrame(columns=PROBLEM + ["entrant", "lr", "val_median", "seeds",
                                               "diverged", "picked"])
    chosen = at_picked_lr(data, "tuned")[PROBLEM + ["entrant", "lr"]].drop_duplicates()
    cells = cells.assign(ok=np.where(cells["outcome"] != "diverged",
                                     cells["val_metric"].astype(float), np.nan))
    out = cells.groupby(PROBLEM + ["entrant", "lr"], sort=False).agg(
        val_median=("ok", "median"), seeds=("seed", "size"),
        diverged=("outcome", lambda o: int((o == "diverged").sum()))).reset_index()
    out = out.merge(chosen.assign(picked=True), on=PROBLEM + ["entrant", "lr"], how="left")
    out["picked"] = out["picked"].astype("boolean").fillna(False).astype(bool)
    return data.ordered(out, "lr")


def success_grid(table: pd.DataFrame, task: str, entrants: list[str]) -> pd.DataFrame:
    """Success rate (solved seeds / seeds at the picked lr) of each entrant (rows, in
    `entrants` order) at each (model, hidden, length) of `task` (columns), with the
    counts ("2/3") in a second frame: returns (rates, counts)."""
    t = table[table["task"] == task].copy()
    t["column"] = [problem_label(None, L, m, h, short=True)
                   for L, m, h in zip(t["length"], t["model"], t["hidden"])]
    t["count"] = [f"{s}/{n}" for s, n in zip(t["solved"], t["seeds"])]
    columns = list(dict.fromkeys(t.sort_values(["model", "hidden", "length"])["column"]))
    rows = [e for e in entrants if e in set(t["entrant"])]
    rates = t.pivot(index="entrant", columns="column", values="success").reindex(
        index=rows, columns=columns)
    counts = t.pivot(index="entrant", columns="column", values="count").reindex(
        index=rows, columns=columns)
    return rates, counts


def grad_flow(data: Data, tier: str = "tuned") -> pd.DataFrame:
    """||dL/dh_t|| against t at several training points, at the picked lr: per (problem,
    entrant, point, t), the median over the seeds that have that point (`norm`), `seeds`
    and the median step (`step`).

    Points: "step 1", each of `train.PROFILE_FRACTIONS` of the step budget that the run
    reached, and "end of run" (the last step run, which differs between seeds that solved
    early). A profile taken at a scheduled point that was also the last step counts for both.
    """
    at = at_picked_lr(data, tier)
    prof = data.results.grad_profiles.merge(
        at[PROBLEM + ["entrant", "key", "steps"]], on="key")
    last = prof.groupby("key")["step"].transform("max")
    parts = []
    for budget in prof["steps"].unique():
        points = {1: POINTS[0], **{max(1, round(f * budget)): name
                                   for f, name in zip(PROFILE_FRACTIONS, POINTS[1:])}}
        mine = prof["steps"] == budget
        named = prof[mine].assign(point=prof.loc[mine, "step"].map(points))
        parts += [named.dropna(subset=["point"]),
                  prof[mine & (prof["step"] == last)].assign(point=POINTS[-1])]
    prof = pd.concat(parts, ignore_index=True)
    out = prof.groupby(PROBLEM + ["entrant", "point", "t"], sort=False).agg(
        norm=("norm", "median"), seeds=("key", "nunique"), step=("step", "median")
    ).reset_index()
    out["order"] = out["point"].map({n: i for i, n in enumerate(POINTS)})
    return data.ordered(out, "order", "t")


def kernel_throughput(path: str) -> tuple[pd.DataFrame, dict, dict]:
    """The optimizer rows, the bandwidth and the environment of `python -m optbench kernels
    --json` output saved at `path`. UsageError, one line, when the file cannot be read or
    has no such rows."""
    try:
        with open(path) as f:
            report = json.load(f)
    except OSError as exc:
        raise UsageError(f"kernel results {path!r}: cannot read ({exc.strerror})") from None
    except json.JSONDecodeError as exc:
        raise UsageError(f"kernel results {path!r}: not JSON ({exc})") from None
    need = {"optimizer", "backend", "params", "GBps", "share_of_bandwidth"}
    rows = report.get("rows") if isinstance(report, dict) else None
    if not rows or not isinstance(report.get("bandwidth"), dict) or \
            "update_GBps" not in report["bandwidth"] or not all(
                isinstance(r, dict) and need <= set(r) for r in rows):
        raise UsageError(f"kernel results {path!r}: expected the JSON of `python -m optbench "
                         "kernels --json` (optimizers section: rows and bandwidth)")
    return pd.DataFrame(rows), report["bandwidth"], report.get("env", {})


# -- labels ---------------------------------------------------------------------------------
def problem_label(task: str | None, length: int, model: str, hidden: int,
                  short: bool = False) -> str:
    """'adding T=50, lstm(32)'; `short` leaves the task out: 'lstm(32) T=50'."""
    if short:
        return f"{model}({hidden}) T={length}"
    return f"{task} T={length}, {model}({hidden})"
