"""Tables: `data.problem_table` and `data.ranking` as display frames (strings), and writers
for CSV (every column, full precision), Markdown and LaTeX (the display frames).

The writers are small on purpose: pandas' own `to_markdown` and `to_latex` need tabulate
and jinja2, which optbench does not depend on.
"""

from __future__ import annotations

import math
import os

import pandas as pd

from optbench.report.data import PROBLEM, problem_label

BASELINE_ROW = "memoryless baseline"
INCOMPLETE = "*"  # marks a row based on fewer cells than planned
LEFT = ("optimizer", "problem", "fastest to solve", "best test metric")  # left-aligned columns


def num(x, fmt: str = ".4g") -> str:
    """A number for a table cell: '-' for a missing one (NaN, None), 'inf' for infinity."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return format(x, fmt)


def problem_heading(rows: pd.DataFrame) -> str:
    """'adding T=50, lstm(32): mse (lower is better); memoryless baseline 0.1667;
    solved at mse <= 0.01' for one problem's rows of a `problem_table`."""
    r = rows.iloc[0]
    better, op = ("higher", ">=") if r["higher_is_better"] else ("lower", "<=")
    solved = "" if r["threshold"] is None or pd.isna(r["threshold"]) else \
        f"; solved at {r['metric']} {op} {num(r['threshold'], '.3g')}"
    return (f"{problem_label(r['task'], r['length'], r['model'], r['hidden'])}: "
            f"{r['metric']} ({better} is better); memoryless baseline "
            f"{num(r['baseline'])}{solved}")


def interval(lo, hi, fmt: str = ".4g") -> str:
    """'[a-b]' for a 95 % interval; '' where there is none."""
    if lo is None or hi is None or (isinstance(lo, float) and math.isnan(lo)):
        return ""
    return f"[{num(lo, fmt)}-{num(hi, fmt)}]"


def problem_display(rows: pd.DataFrame) -> pd.DataFrame:
    """One problem's rows of a `problem_table` as strings, with the baseline as the last row:
    each figure with its 95 % interval in brackets; an lr at the grid's edge says so."""
    metric = rows["metric"].iloc[0]
    has = "success_ci_low" in rows
    edges = rows["edge"] if "edge" in rows else [""] * len(rows)
    out = pd.DataFrame({
        "optimizer": [e + (INCOMPLETE if s < sp or n < npl else "") for e, s, sp, n, npl in zip(
            rows["entrant"], rows["seeds"], rows["seeds_planned"], rows["lrs"],
            rows["lrs_planned"])],
        "lr": [f"{num(lr, '.3g')}" + (f" ({n} tried" + (f", {edge} edge" if edge else "") + ")"
                                     if n > 1 else "")
               for lr, n, edge in zip(rows["lr"], rows["lrs"], edges)],
        "solved": [f"{s}/{n}" + (f" {interval(lo, hi, '.0%')}" if has else "") for s, n, lo, hi
                   in zip(rows["solved"], rows["seeds"], rows.get("success_ci_low", rows["solved"]),
                          rows.get("success_ci_high", rows["solved"]))],
        "steps": [num(x, ".0f") + (f" {interval(lo, hi, '.0f')}" if has and x == x else "")
                  for x, lo, hi in zip(rows["steps_median"], rows.get("steps_ci_low", rows["lr"]),
                                       rows.get("steps_ci_high", rows["lr"]))],
        "seconds": [num(x, ".2f") for x in rows["seconds_median"]],
        "diverged": rows["diverged"].astype(str),
        f"test {metric}": [num(x) + (f" {interval(lo, hi)}" if has else "")
                           for x, lo, hi in zip(rows["test_median"],
                                                rows.get("test_ci_low", rows["lr"]),
                                                rows.get("test_ci_high", rows["lr"]))],
    })
    baseline = {c: "" for c in out.columns}
    baseline.update({"optimizer": BASELINE_ROW, f"test {metric}": num(rows["baseline"].iloc[0])})
    return pd.concat([out, pd.DataFrame([baseline])], ignore_index=True)


def ranking_display(ranking: pd.DataFrame) -> pd.DataFrame:
    has = "score_ci_low" in ranking
    return pd.DataFrame({
        "rank": [str(i + 1) for i in range(len(ranking))],
        "optimizer": ranking["entrant"],
        "score": [num(x, ".3f") + (f" {interval(lo, hi, '.2f')}" if has else "")
                  for x, lo, hi in zip(ranking["score"], ranking.get("score_ci_low", ranking["score"]),
                                       ranking.get("score_ci_high", ranking["score"]))],
        "solved": [f"{s}/{n}" for s, n in zip(ranking["solved"], ranking["problems"])],
        "mean rank": [num(x, ".2f") for x in ranking["mean_rank"]],
    })


def untuned_display(rows: pd.DataFrame) -> pd.DataFrame:
    """One problem's rows of `data.untuned_against_tuned` as strings."""
    def solved(prefix):
        return [("-" if pd.isna(s) else f"{int(s)}/{int(n)} {interval(lo, hi, '.0%')}")
                for s, n, lo, hi in zip(rows[f"{prefix}_solved"], rows[f"{prefix}_seeds"],
                                        rows[f"{prefix}_success_ci_low"],
                                        rows[f"{prefix}_success_ci_high"])]

    return pd.DataFrame({
        "optimizer": rows["entrant"],
        "default lr": [num(x, ".3g") for x in rows["default_lr"]],
        "solved": solved("default"),
        "steps": [num(x, ".0f") for x in rows["default_steps_median"]],
        "tuned lr": [num(x, ".3g") for x in rows["tuned_lr"]],
        "solved ": solved("tuned"),
        "steps ": [num(x, ".0f") for x in rows["tuned_steps_median"]],
    })


def lengths_display(lengths: pd.DataFrame) -> pd.DataFrame:
    """One (task, model, hidden)'s rows of `data.horizon_table`: per optimizer and length
    tried, the lr it was tuned to, the seeds that decided, solved/seeds with the 95 % Wilson
    interval, and whether the length passed."""
    return pd.DataFrame({
        "optimizer": lengths["entrant"],
        "T": [str(int(t)) for t in lengths["length"]],
        "lr": [num(x, ".3g") + (f" ({e} edge)" if isinstance(e, str) and e else "")
               for x, e in zip(lengths["lr"], lengths["edge"])],
        "seeds": lengths["seeds_from"].fillna("-"),
        "solved": ["-" if pd.isna(k) or pd.isna(n)  # nothing of it finished yet
                   else f"{int(k)}/{int(n)} {interval(lo, hi, '.0%')}" for k, n, lo, hi in zip(
                       lengths["solved"], lengths["seeds"], lengths["ci_low"],
                       lengths["ci_high"])],
        "passed": ["?" if pd.isna(p) else "yes" if p else "no" for p in lengths["passed"]],
    })


def horizon_display(summary: pd.DataFrame, lengths: pd.DataFrame) -> pd.DataFrame:
    """One (task, model, hidden)'s horizons: per optimizer its horizon and, per length
    tried, solved/seeds and a mark (+ passed, - failed, ? not settled)."""
    tried = sorted(set(lengths["length"]))
    rows = []
    for r in summary.itertuples(index=False):
        horizon = {"<": f"< {tried[0]}", "?": "?",
                   ">=": f">= {r.horizon:.0f}"}.get(r.bound, f"{r.horizon:.0f}")
        row = {"optimizer": r.entrant, "horizon": horizon}
        mine = lengths[lengths["entrant"] == r.entrant].set_index("length")
        for length in tried:
            if length not in mine.index:
                row[f"T={length}"] = ""
                continue
            x = mine.loc[length]
            mark = "?" if x["passed"] is None or pd.isna(x["passed"]) else \
                "+" if x["passed"] else "-"
            row[f"T={length}"] = ("?" if pd.isna(x["solved"]) else
                                  f"{int(x['solved'])}/{x['seeds']}") + f" {mark}"
        rows.append(row)
    return pd.DataFrame(rows)


def winners_display(winners: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({
        "problem": [problem_label(*r) for r in winners[PROBLEM].itertuples(index=False)],
        "fastest to solve": winners["fastest"].fillna("none solved"),
        "steps": [num(x, ".0f") if math.isfinite(x) else "-" for x in winners["cost"]],
        "solved by": [f"{s} of {n}" for s, n in zip(winners["solved_by"], winners["entrants"])],
        "best test metric": winners["best_test"].fillna("-"),
        "test": [f"{m} {num(x)}" for m, x in zip(winners["metric"], winners["test_median"])],
    })


def problems(table: pd.DataFrame):
    """(heading, display frame) per problem of a `problem_table`, in its order."""
    for _, rows in table.groupby(PROBLEM, sort=False):
        yield problem_heading(rows), problem_display(rows)


# -- writers ---------------------------------------------------------------------------------
def markdown(frame: pd.DataFrame) -> str:
    def row(cells):
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    right = [c not in LEFT for c in frame.columns]
    rule = ["---:" if r else ":---" for r in right]
    return "\n".join([row(frame.columns), row(rule), *(row(r) for r in frame.itertuples(
        index=False))])


_LATEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
          "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\^{}",
          "<": r"\textless{}", ">": r"\textgreater{}"}


def latex_escape(text: str) -> str:
    return "".join(_LATEX.get(ch, ch) for ch in str(text))


def latex(frame: pd.DataFrame, caption: str) -> str:
    """A `table` environment with a plain `tabular` (no packages needed)."""
    align = "".join("l" if c in LEFT else "r" for c in frame.columns)
    lines = [r"\begin{table}[ht]", r"\centering", rf"\caption{{{latex_escape(caption)}}}",
             rf"\begin{{tabular}}{{{align}}}", r"\hline",
             " & ".join(latex_escape(c) for c in frame.columns) + r" \\", r"\hline"]
    lines += [" & ".join(latex_escape(c) for c in r) + r" \\" for r in frame.itertuples(
        index=False)]
    lines += [r"\hline", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines)


def write(directory: str, stem: str, frame: pd.DataFrame, sections: list[tuple[str, pd.DataFrame]],
          title: str) -> list[str]:
    """`stem`.csv (the computed `frame`), `stem`.md and `stem`.tex (the display `sections`:
    (heading, display frame) pairs) in `directory`; returns the paths."""
    os.makedirs(directory, exist_ok=True)
    paths = [os.path.join(directory, f"{stem}.{ext}") for ext in ("csv", "md", "tex")]
    frame.to_csv(paths[0], index=False)
    md = [f"# {title}"] + [f"\n## {h}\n\n{markdown(d)}" for h, d in sections]
    tex = [f"% {title}"] + [latex(d, h) for h, d in sections]
    for path, text in zip(paths[1:], ("\n".join(md), "\n\n".join(tex))):
        with open(path, "w") as f:
            f.write(text + "\n")
    return paths
