"""Compute the data: the store's rows -> plain pandas DataFrames, one function per table or figure.

Nothing here draws. Every function takes `optbench.load(DIR, matrix)`-shaped frames (or what
another function here returns) and gives back a DataFrame that `optbench.report.tables`
writes and `optbench.report.figures` draws.

Vocabulary:

- problem: one (task, length, model, hidden); `PROBLEM` lists the columns.
- entrant: an optimizer with its non-lr hyper-parameters, named by `selection.label`
  ("sgd(momentum=0.9)"); the thing being ranked.
- tier "tuned": the lr per (problem, entrant) is `selection.pick_lr`'s (best median over seeds on
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

from optbench import stats
from optbench.describe import Catalog
from optbench.errors import UsageError
from optbench.selection import GROUP, label, pick_lr, variant
from optbench.store import Results, Store
from optbench.train import PROFILE_FRACTIONS

PROBLEM = ["task", "length", "model", "hidden"]
TIERS = ("confirm", "tuned", "defaults")
# Which seeds a tier's figures come from: what every table says beside its figures.
SEEDS = {"confirm": "confirmation seeds (not used for tuning)",
         "tuned": "the tuning seeds (the seeds that chose the lr: optimistic)",
         "defaults": "the tuning seeds, at the default lr (untuned)"}
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
           as JSON, what `pick_lr` groups by) and `entrant` (`selection.label`).
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
        """Task `name` as the store describes it, at the lengths this matrix ran (a horizon
        search's lengths are the ones its waves visited)."""
        lengths = sorted(set(self.members.loc[self.members["task"] == name, "length"]))
        return self.catalog.task(name, [int(n) for n in lengths])

    def tier(self, tier: str) -> pd.DataFrame:
        keys = self.members.loc[self.members["tier"] == tier, "key"]
        return self.cells[self.cells["key"].isin(keys)].reset_index(drop=True)

    @property
    def tiers(self) -> list[str]:
        """The tiers with finished cells: the confirmation first (the tuned lr on fresh seeds,
        the figures the report leads with), then the tuning seeds', then the defaults."""
        return [t for t in TIERS if (t == "confirm" or t in self.config["tiers"])
                and not self.tier(t).empty]

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
    return from_results(directory, name, results)


def from_results(directory: str, name: str, results: Results) -> Data:
    """`load`'s Data from frames already read (`Store.frames(matrix=name)`)."""
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
    """The tier's finished cells at the lr `selection.pick_lr` picks for their group (one row
    per seed), with `lrs` (how many learning rates were compared) and `edge` ("low"/"high"
    when the pick is the grid's smallest/largest lr). The confirmation tier's cells are all
    at the lr the tuning seeds picked; they take `lrs` and `edge` from that pick."""
    if tier not in data.picked:
        cells = data.tier(tier)
        tuned = data.tier("tuned") if tier == "confirm" else cells
        chosen = pick_lr(tuned)[GROUP + ["lr", "lrs", "edge"]]
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
    return float(stats.lower_median(values))


def problem_table(data: Data, tier: str) -> pd.DataFrame:
    """One row per (problem, entrant) of the tier, at its picked lr, over the seeds there:

    lr, lrs (compared) / lrs_planned; seeds / seeds_planned; solved, success (solved / seeds);
    diverged; test_median, test_q25, test_q75 (the test metric of the seeds that did not
    diverge); steps_median, seconds_median (to solve, over the solved seeds); cost (the lower
    median over all seeds of the steps to solve, unsolved = inf: what the ranking uses);
    metric, higher_is_better, baseline (the task's memoryless predictor), threshold (the
    metric at which the task counts as solved); edge (the pick lies at the grid's "low" or
    "high" end: the best lr may lie beyond); seeds_from (the tier whose seeds these are,
    `SEEDS`).

    95 % intervals (`optbench.stats`): success_ci_low/high (Wilson), test_ci_low/high,
    steps_ci_low/high and cost_ci_low/high (percentile bootstrap over seeds of the medians);
    steps_by_seed, the steps to solve of each seed (inf unsolved, JSON), is what the
    ranking's intervals resample.
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
        solved_steps = solved["steps_to_solve"].astype(float)
        rows.append({
            "task": task_name, "length": length, "model": model, "hidden": hidden,
            "entrant": entrant, "lr": g["lr"].iloc[0], "lrs": g["lrs"].iloc[0],
            "edge": g["edge"].iloc[0] if tier != "defaults" else "",
            **planned.loc[(task_name, length, model, hidden, entrant)].to_dict(),
            "seeds_from": tier,
            "seeds": len(g), "solved": len(solved), "success": len(solved) / len(g),
            "diverged": int((g["outcome"] == "diverged").sum()),
            "test_median": ok.median(), "test_q25": ok.quantile(0.25),
            "test_q75": ok.quantile(0.75),
            "steps_median": solved_steps.median(),
            "seconds_median": solved["seconds_to_solve"].astype(float).median(),
            "cost": lower_median(steps),
            "metric": task.metric_name, "higher_is_better": task.higher_is_better,
            "baseline": task.baseline(length), "threshold": task.threshold(length),
            **_intervals(len(solved), len(g), ok, solved_steps, steps),
            "steps_by_seed": json.dumps([float(x) for x in steps]),
        })
    return data.ordered(pd.DataFrame(rows))


def _intervals(solved: int, seeds: int, test, solved_steps, steps) -> dict:
    """The 95 % interval columns of one `problem_table` row (see there)."""
    out = {}
    for name, (lo, hi) in (("success", stats.wilson(solved, seeds)),
                           ("test", stats.median_interval(test)),
                           ("steps", stats.median_interval(solved_steps)),
                           ("cost", stats.median_interval(steps))):
        out[f"{name}_ci_low"], out[f"{name}_ci_high"] = lo, hi
    return out


def threshold(task, length: int) -> float | None:
    """The metric value at which the task's own `solved` rule flips (`Task.threshold`; a
    store's recorded value for a task described there), or None."""
    return task.threshold(length)


# -- ranking --------------------------------------------------------------------------------
def ranked(table: pd.DataFrame, config: dict) -> pd.DataFrame:
    """The rows of a `problem_table` that the ranking compares: every fixed length, and the
    lengths a horizon search visits whatever the results (start, start * factor, ...), not
    its bisections, which only the optimizers bracketed there ran (counting the others as
    unsolved there would charge them for lengths they never needed)."""
    from optbench.plan import horizon_lengths

    keep = [L in (horizon_lengths(config, t) or config["lengths"].get(t, [L]))
            for t, L in zip(table["task"], table["length"])]
    return table[keep].reset_index(drop=True)



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
    Sorted by score, then mean rank. score_ci_low/high: its 95 % interval
    (`score_intervals`).
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
    if "steps_by_seed" in table:
        out = out.merge(score_intervals(table), on="entrant", how="left")
    return out.sort_values(["score", "mean_rank"], ascending=[False, True],
                           kind="stable").reset_index(drop=True)


def score_intervals(table: pd.DataFrame, resamples: int = stats.RESAMPLES) -> pd.DataFrame:
    """95 % intervals of each entrant's performance-profile score (`ranking`), by a paired
    percentile bootstrap over seeds (`resampled_ratios`). Columns entrant, score_ci_low,
    score_ci_high."""
    profile, ratios = resampled_ratios(table, resamples)
    area = np.clip(TAU_MAX - ratios, 0.0, None) / (TAU_MAX - 1)
    rows = []
    for entrant, idx in profile.groupby("entrant", sort=False).indices.items():
        lo, hi = stats.percentile_interval(area[:, idx].mean(axis=1))
        rows.append({"entrant": entrant, "score_ci_low": lo, "score_ci_high": hi})
    return pd.DataFrame(rows)


def resampled_ratios(table: pd.DataFrame, resamples: int = stats.RESAMPLES):
    """(`performance_profile(table)`, ratios): the performance ratios r_ps recomputed on
    `resamples` bootstrap resamples of the seeds, one row per resample, one column per row of
    the profile. Each resample draws seed positions with replacement, the same positions for
    every (problem, entrant) with that many seeds (seed k fixes the data stream and the
    initial weights of every entrant alike, so entrants are compared on the same draws:
    a paired bootstrap), and recomputes each cost (the lower median over the drawn seeds of
    the steps to solve, unsolved inf) and each ratio to the best on its problem."""
    profile = performance_profile(table)
    steps = profile.merge(table[PROBLEM + ["entrant", "steps_by_seed"]],
                          on=PROBLEM + ["entrant"], how="left")
    costs = np.empty((resamples, len(steps)))
    for i, by_seed in enumerate(steps["steps_by_seed"]):
        if not isinstance(by_seed, str):  # no finished cell: inf in every resample
            costs[:, i] = math.inf
            continue
        v = np.asarray(json.loads(by_seed), dtype=float)
        costs[:, i] = stats.lower_median(v[stats.resample_indices(len(v), resamples)], axis=1)
    ratios = np.full_like(costs, math.inf)
    for _, idx in steps.groupby(PROBLEM, sort=False).indices.items():
        c = costs[:, idx]
        best = c.min(axis=1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            ratios[:, idx] = np.where(np.isfinite(best), c / best, math.inf)
    return profile, ratios


def profile_bands(table: pd.DataFrame, taus, resamples: int = stats.RESAMPLES) -> pd.DataFrame:
    """Pointwise 95 % bands of each entrant's rho_s(tau) at `taus`, from the bootstrap of
    `resampled_ratios`: rows entrant, tau, lo, hi."""
    profile, ratios = resampled_ratios(table, resamples)
    taus = np.asarray(taus, dtype=float)
    rows = []
    for entrant, idx in profile.groupby("entrant", sort=False).indices.items():
        r = ratios[:, idx]  # (resamples, problems)
        rho = (r[:, :, None] <= taus[None, None, :]).mean(axis=1)  # (resamples, taus)
        lo, hi = np.quantile(rho, [0.025, 0.975], axis=0, method="inverted_cdf")
        rows += [{"entrant": entrant, "tau": t, "lo": a, "hi": b}
                 for t, a, b in zip(taus, lo, hi)]
    return pd.DataFrame(rows, columns=["entrant", "tau", "lo", "hi"])


def separated_pairs(ranking: pd.DataFrame) -> list[tuple[str, str]]:
    """Pairs (better, worse) of ranked entrants whose score intervals do not overlap: the
    differences the report can call real at the seeds run."""
    rows = list(ranking.itertuples(index=False))
    return [(a.entrant, b.entrant) for i, a in enumerate(rows) for b in rows[i + 1:]
            if stats.separated((a.score_ci_low, a.score_ci_high),
                               (b.score_ci_low, b.score_ci_high))]


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


# -- horizons -------------------------------------------------------------------------------
HORIZON_LINE = ["task", "model", "hidden", "entrant"]


def horizon_table(data: Data) -> pd.DataFrame:
    """Every length each (task, model, hidden, entrant) visited, as the run's plan judged it
    (`optbench.plan.status` on the stored results): length, lr (the picked one), lrs (how many
    compared), edge, seeds_from ("confirm", "tuned" or "defaults": whose seeds judged), seeds,
    solved (how many of them), fraction, ci_low/ci_high (Wilson, 95 %), passed (the fraction
    met `horizon.solved_fraction`; None while the length is unsettled) and search (whether the
    task searches its length or runs fixed lengths)."""
    from optbench import plan

    cfg = data.config
    finished = {r.key: {"outcome": r.outcome, "val_metric": r.val_metric,
                        "steps_to_solve": r.steps_to_solve}
                for r in data.cells[["key", "outcome", "val_metric", "steps_to_solve"]]
                .itertuples(index=False)}
    judged = "confirm" if cfg["confirm_seeds"] and "tuned" in cfg["tiers"] else \
        "tuned" if "tuned" in cfg["tiers"] else "defaults"
    direction = {t: data.catalog.task(t).higher_is_better for t in cfg["tasks"]}
    rows = []
    for r in plan.status(cfg, finished, direction, data.catalog.code_key):
        e = r["entrant"]
        n = len(r["seeds"])
        k = None if r["fraction"] is None else int(round(r["fraction"] * n))
        lo, hi = stats.wilson(k, n) if k is not None else (math.nan, math.nan)
        rows.append({
            "task": r["task"], "model": r["model"], "hidden": r["hidden"],
            "entrant": label(e["name"], variant(json.dumps(e["hparams"])),
                             data.catalog.defaults(e["name"])),
            "length": r["length"], "lr": r["lr"], "lrs": len(r["lrs"]), "edge": r["edge"],
            "seeds_from": judged, "seeds": n, "solved": k, "fraction": r["fraction"],
            "ci_low": lo, "ci_high": hi, "passed": r["solved"],
            "search": r["task"] in cfg["horizon"]["tasks"],
        })
    columns = HORIZON_LINE + ["length", "lr", "lrs", "edge", "seeds_from", "seeds", "solved",
                              "fraction", "ci_low", "ci_high", "passed", "search"]
    out = pd.DataFrame(rows, columns=columns)
    rank = {"task": {t: i for i, t in enumerate(cfg["tasks"])},
            "entrant": {e: i for i, e in enumerate(data.entrants)}}
    return out.sort_values(HORIZON_LINE + ["length"], kind="stable",
                           key=lambda c: c.map(rank[c.name]) if c.name in rank else c
                           ).reset_index(drop=True)


def horizons(table: pd.DataFrame, config: dict) -> pd.DataFrame:
    """Per (task, model, hidden, entrant) of a searching task, from `horizon_table`: horizon
    (the longest length passed; NaN if none), bound ("=" the search bracketed it, ">=" it
    passed the search's max, "<" it failed the first length, "?" unsettled), first_failed
    (the shortest length failed above the horizon), tried (lengths visited), settled."""
    rows = []
    for line, g in table[table["search"]].groupby(HORIZON_LINE, sort=False):
        search = config["horizon"]["tasks"][line[0]]
        passed = g.loc[g["passed"] == True, "length"]  # noqa: E712 - None means unsettled
        failed = g.loc[g["passed"] == False, "length"]  # noqa: E712
        settled = bool(g["passed"].notna().all())
        horizon = float(passed.max()) if len(passed) else math.nan
        above = failed[failed > (horizon if len(passed) else 0)]
        bound = ("?" if not settled else "<" if not len(passed) else
                 ">=" if horizon >= search["max"] else "=")
        rows.append({**dict(zip(HORIZON_LINE, line)), "horizon": horizon, "bound": bound,
                     "first_failed": float(above.min()) if len(above) else math.nan,
                     "tried": len(g), "settled": settled})
    return pd.DataFrame(rows, columns=HORIZON_LINE + ["horizon", "bound", "first_failed",
                                                     "tried", "settled"])


def separated_horizons(lengths: pd.DataFrame, summary: pd.DataFrame) -> list[tuple[str, str]]:
    """Pairs (longer, shorter) of horizons told apart beyond the intervals: at some length
    both were judged on, the 95 % interval of the first's solved fraction lies wholly above
    the second's. Entrants named with their (task, model, hidden) where a matrix has more
    than one."""
    several = len(summary[["task", "model", "hidden"]].drop_duplicates()) > 1
    pairs = []
    for line, g in lengths[lengths["search"]].groupby(["task", "model", "hidden"], sort=False):
        order = summary.set_index(["task", "model", "hidden"]).loc[[line]]
        order = order.sort_values("horizon", ascending=False, na_position="last")
        at = {e: x.set_index("length") for e, x in g.groupby("entrant")}
        names = list(order["entrant"])
        for i, a in enumerate(names):
            for b in names[i + 1:]:
                common = at[a].index.intersection(at[b].index)
                if any(at[a].loc[n, "ci_low"] > at[b].loc[n, "ci_high"] for n in common):
                    tag = f" ({line[0]}, {line[1]}({line[2]}))" if several else ""
                    pairs.append((a + tag, b + tag))
    return pairs


def untuned_against_tuned(defaults: pd.DataFrame, tuned: pd.DataFrame) -> pd.DataFrame:
    """Per (problem, entrant) of the defaults tier's `problem_table`: its figures at the
    default lr beside those of the tuned tier's table (`tuned`, e.g. the confirmation's):
    lr, solved, seeds, success_ci_low/high and steps_median, each prefixed default_ or
    tuned_."""
    keep = ["lr", "solved", "seeds", "success_ci_low", "success_ci_high", "steps_median"]
    out = defaults[PROBLEM + ["entrant"] + keep].merge(
        tuned[PROBLEM + ["entrant"] + keep], on=PROBLEM + ["entrant"], how="left",
        suffixes=("_default", "_tuned"))
    return out.rename(columns={f"{k}_{w}": f"{w}_{k}" for k in keep
                               for w in ("default", "tuned")})


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


def seed_curves(data: Data, tier: str = "tuned") -> pd.DataFrame:
    """Every seed's validation metric over training at the picked lr, as stored: one row per
    (problem, entrant, seed, evaluation) with `step`, `train_s` (training seconds so far:
    evaluation and compilation excluded) and `val_metric`; a diverged run's last row is
    its divergence (`diverged` True)."""
    at = at_picked_lr(data, tier)
    cols = ["key", "step", "val_metric"] + (["train_s"] if "train_s" in
                                           data.results.curves else [])
    curves = data.results.curves[cols].merge(
        at[PROBLEM + ["entrant", "key", "seed", "diverged_step", "lr"]], on="key")
    if "train_s" not in curves:
        curves["train_s"] = np.nan
    curves["diverged"] = curves["step"] == curves["diverged_step"]
    out = curves[PROBLEM + ["entrant", "lr", "seed", "step", "train_s", "val_metric",
                            "diverged"]]
    return data.ordered(out, "seed", "step")


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
    counts and their 95 % interval ("2/3\n21%-94%") in a second frame: returns (rates,
    counts)."""
    t = table[table["task"] == task].copy()
    t["column"] = [problem_label(None, L, m, h, short=True)
                   for L, m, h in zip(t["length"], t["model"], t["hidden"])]
    t["count"] = [f"{s}/{n}\n{lo:.0%}-{hi:.0%}" if "success_ci_low" in t else f"{s}/{n}"
                  for s, n, lo, hi in zip(t["solved"], t["seeds"],
                                          t.get("success_ci_low", t["solved"]),
                                          t.get("success_ci_high", t["solved"]))]
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
