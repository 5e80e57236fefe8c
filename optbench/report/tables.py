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


def problem_display(rows: pd.DataFrame) -> pd.DataFrame:
    """One problem's rows of a `problem_table` as strings, with the baseline as the last row."""
    metric = rows["metric"].iloc[0]
    out = pd.DataFrame({
        "optimizer": [e + (INCOMPLETE if s < sp or n < npl else "") for e, s, sp, n, npl in zip(
            rows["entrant"], rows["seeds"], rows["seeds_planned"], rows["lrs"],
            rows["lrs_planned"])],
        "lr": [f"{num(lr, '.3g')}" + (f" ({n} tried)" if npl > 1 else "")
               for lr, n, npl in zip(rows["lr"], rows["lrs"], rows["lrs_planned"])],
        "solved": [f"{s}/{n}" for s, n in zip(rows["solved"], rows["seeds"])],
        "steps": [num(x, ".0f") for x in rows["steps_median"]],
        "seconds": [num(x, ".2f") for x in rows["seconds_median"]],
        "diverged": rows["diverged"].astype(str),
        f"test {metric}": [num(x) for x in rows["test_median"]],
        "IQR": [f"{num(a)} - {num(b)}" if not math.isnan(a) else "-"
                for a, b in zip(rows["test_q25"], rows["test_q75"])],
    })
    baseline = {c: "" for c in out.columns}
    baseline.update({"optimizer": BASELINE_ROW, f"test {metric}": num(rows["baseline"].iloc[0])})
    return pd.concat([out, pd.DataFrame([baseline])], ignore_index=True)


def ranking_display(ranking: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({
        "rank": [str(i + 1) for i in range(len(ranking))],
        "optimizer": ranking["entrant"],
        "score": [num(x, ".3f") for x in ranking["score"]],
        "solved": [f"{s}/{n}" for s, n in zip(ranking["solved"], ranking["problems"])],
        "mean rank": [num(x, ".2f") for x in ranking["mean_rank"]],
    })


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
