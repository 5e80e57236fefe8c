"""Draw it: renderers that take a DataFrame from `optbench.report.data` and draw into a
matplotlib Figure or SubFigure. No pyplot (no global state, no GUI backend): the pages are
`matplotlib.figure.Figure`s saved to PDF and PNG by `optbench.report.document`.

Every renderer puts its legend outside the axes, so that it never covers data.
"""

from __future__ import annotations

import math
import textwrap

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.colors import to_rgba
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, LogLocator

from optbench.report.data import POINTS, PROBLEM, TAU_MAX, problem_label

FONT = 9  # tick labels and legends; titles one point larger
# Entrant labels ("sgd(momentum=0.9, nesterov=True)") are wrapped at this many characters
# in legends, titles and tick labels: a legend as wide as its longest label took the width
# of the panels beside it.
LABEL_CHARS = 24
MAX_COLUMNS = 3  # panels per row
POINT_COLOURS = "plasma_r"  # gradient-flow training points: early light, late dark


def colours(names: list[str]) -> dict[str, tuple]:
    """A fixed colour per entrant (the matrix's order), the same in every figure."""
    cmap = colormaps["tab10" if len(names) <= 10 else "tab20"]
    return {name: cmap(i % cmap.N) for i, name in enumerate(names)}


def panels(fig, n: int, sharey: bool = False) -> list:
    """n axes in a grid of at most MAX_COLUMNS columns; unused cells removed."""
    cols = min(n, MAX_COLUMNS)
    rows = math.ceil(n / cols)
    axes = fig.subplots(rows, cols, squeeze=False, sharey=sharey).ravel()
    for ax in axes[n:]:
        ax.remove()
    for ax in axes[:n]:
        ax.tick_params(labelsize=FONT)
    return list(axes[:n])


def _info(table: pd.DataFrame, problem: tuple) -> pd.Series:
    """A problem's metric, direction, baseline and threshold, from a `problem_table`."""
    # .loc[[key]] is a frame whatever the number of rows; .loc[key] of a problem with one
    # entrant is that row as a Series, whose first item is a string.
    return table.set_index(PROBLEM).loc[[problem]].iloc[0]


def _reference_lines(ax, r: pd.Series) -> list:
    """The memoryless baseline (dashed) and the solved threshold (dotted) of a problem."""
    handles = [ax.axhline(r["baseline"], color="0.4", ls="--", lw=1, label="memoryless baseline")]
    if r["threshold"] is not None and not pd.isna(r["threshold"]):
        handles.append(ax.axhline(r["threshold"], color="black", ls=":", lw=1.2,
                                  label="solved threshold"))
    return handles


def _metric_axis(ax, info: pd.Series, values: np.ndarray) -> tuple[float, float]:
    """Log scale for a loss, linear for accuracy; limits from the finite values and the
    reference lines. Returns the limits."""
    refs = [info["baseline"]] + ([] if pd.isna(info["threshold"]) else [info["threshold"]])
    v = np.concatenate([np.asarray(values, float), refs])
    v = v[np.isfinite(v)]
    if info["higher_is_better"]:
        lo, hi = min(0.0, v.min()), max(1.0, v.max())
        lims = (lo - 0.02 * (hi - lo), hi + 0.02 * (hi - lo))
    else:
        v = v[v > 0]
        ax.set_yscale("log")
        lims = (v.min() / 1.5, v.max() * 1.5)
    ax.set_ylim(*lims)
    ax.set_ylabel(f"validation {info['metric']}", fontsize=FONT)
    return lims


def wrap(label: str, width: int = LABEL_CHARS) -> str:
    """`label` on lines of at most `width` characters, broken after commas and spaces."""
    return "\n".join(textwrap.wrap(label, width, break_long_words=False)) or label


def _legend(fig, handles: list, labels: list, title: str | None = None) -> None:
    # Figure-level, outside every axes ("outside" locations need a constrained layout).
    fig.legend(handles, [wrap(x) for x in labels], loc="outside right upper", fontsize=FONT,
               title=title, title_fontsize=FONT, frameon=False)


def _dedupe(handles_labels: list[tuple], order: dict | None = None) -> tuple[list, list]:
    """One legend entry per label, labels in `order`'s order first (e.g. the colour map's)."""
    seen = dict()
    for h, label in handles_labels:
        seen.setdefault(label, h)
    keys = list(order or {})
    labels = sorted(seen, key=lambda k: keys.index(k) if k in keys else len(keys))
    return [seen[k] for k in labels], labels


# -- learning curves -------------------------------------------------------------------------
def learning_curves(fig, curves: pd.DataFrame, table: pd.DataFrame, colour: dict) -> None:
    """One panel per problem: median validation metric against step, band over seeds."""
    groups = list(curves.groupby(PROBLEM, sort=False))
    found = []
    for ax, (problem, g) in zip(panels(fig, len(groups)), groups):
        info = _info(table, problem)
        lo_lim, hi_lim = _metric_axis(ax, info, g[["median", "lo", "hi"]].to_numpy().ravel())
        for entrant, e in g.groupby("entrant", sort=False):
            c = colour[entrant]
            lo = np.clip(e["lo"].to_numpy(float), lo_lim, hi_lim)  # an inf leaves the plot
            hi = np.clip(e["hi"].to_numpy(float), lo_lim, hi_lim)
            med = e["median"].to_numpy(float)
            med = np.where(np.isfinite(med), med, np.nan)
            ax.fill_between(e["step"], lo, hi, color=c, alpha=0.18, lw=0)
            line, = ax.plot(e["step"], med, color=c, lw=1.6)
            found.append((line, entrant))
        found += [(h, h.get_label()) for h in _reference_lines(ax, info)]
        ax.set_title(problem_label(*problem), fontsize=FONT + 1)
        ax.set_xlabel("training step", fontsize=FONT)
        ax.grid(alpha=0.3)
    _legend(fig, *_dedupe(found, colour))


# -- learning-rate sensitivity ---------------------------------------------------------------
def lr_sensitivity(fig, sens: pd.DataFrame, table: pd.DataFrame, colour: dict) -> None:
    """One panel per problem: final validation metric against lr (log), per entrant."""
    groups = list(sens.groupby(PROBLEM, sort=False))
    found = []
    for ax, (problem, g) in zip(panels(fig, len(groups)), groups):
        info = _info(table, problem)
        _metric_axis(ax, info, g["val_median"].to_numpy())
        ax.set_xscale("log")
        top = ax.get_xaxis_transform()  # x in data, y in axes coordinates
        for entrant, e in g.groupby("entrant", sort=False):
            c = colour[entrant]
            line, = ax.plot(e["lr"], e["val_median"], "o-", color=c, ms=4, lw=1.4)
            found.append((line, entrant))
            best = e[e["picked"]]
            ax.plot(best["lr"], best["val_median"], "*", color=c, ms=13, mec="black", mew=0.8)
            gone = e[e["val_median"].isna()]
            if len(gone):
                ax.plot(gone["lr"], np.full(len(gone), 0.97), "x", color=c, ms=8, mew=2,
                        transform=top, clip_on=False)
        found += [(h, h.get_label()) for h in _reference_lines(ax, info)]
        ax.set_title(problem_label(*problem), fontsize=FONT + 1)
        ax.set_xlabel("learning rate", fontsize=FONT)
        ax.grid(alpha=0.3)
    found += [(Line2D([], [], ls="", marker="*", color="0.6", ms=12, mec="black", mew=0.8),
               "picked lr"),
              (Line2D([], [], ls="", marker="x", color="0.3", ms=8, mew=2),
               "every seed diverged")]
    _legend(fig, *_dedupe(found, colour))


# -- success heatmap -------------------------------------------------------------------------
def success_heatmap(fig, rates: pd.DataFrame, counts: pd.DataFrame) -> None:
    """Optimizer (rows) x length (columns): success rate, annotated solved/seeds."""
    ax = fig.subplots()
    values = rates.to_numpy(float)
    cmap = colormaps["viridis"]
    image = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, vmin=0, vmax=1, aspect="auto")
    for (i, j), v in np.ndenumerate(values):
        text = counts.iat[i, j] if isinstance(counts.iat[i, j], str) else "not run"
        dark = not math.isnan(v) and sum(to_rgba(cmap(v))[:3]) < 1.5
        ax.text(j, i, text, ha="center", va="center", fontsize=FONT + 1,
                color="white" if dark else "black")
    ax.set_xticks(range(len(rates.columns)), rates.columns, fontsize=FONT)
    ax.set_yticks(range(len(rates.index)), [wrap(x) for x in rates.index], fontsize=FONT)
    ax.set_xlabel("model and sequence length T", fontsize=FONT)
    ax.set_ylabel("optimizer (tuned lr)", fontsize=FONT)
    bar = fig.colorbar(image, ax=ax, shrink=0.8)
    bar.set_label("success rate (solved seeds / seeds)", fontsize=FONT)
    bar.ax.tick_params(labelsize=FONT)


# -- gradient flow ---------------------------------------------------------------------------
def grad_flow(fig, flow: pd.DataFrame, entrants: list[str], lrs: dict[str, float]) -> None:
    """One problem: a panel per entrant, ||dL/dh_t|| against t (log y, shared), one line
    per training point, early light to late dark."""
    cmap = colormaps[POINT_COLOURS]  # by the point's place in POINTS, present or not
    tone = {p: cmap(0.1 + 0.9 * i / (len(POINTS) - 1)) for i, p in enumerate(POINTS)}
    present = [e for e in entrants if e in set(flow["entrant"])]
    positive = flow["norm"][flow["norm"] > 0]
    found = []
    axes = panels(fig, len(present), sharey=True)
    for ax, entrant in zip(axes, present):
        e = flow[flow["entrant"] == entrant]
        for point, p in e.groupby("point", sort=False):
            norm = p["norm"].to_numpy(float)
            line, = ax.plot(p["t"], np.where(norm > 0, norm, np.nan), color=tone[point], lw=1.4)
            found.append((line, point))
        ax.set_yscale("log")
        ax.set_title(wrap(f"{entrant} (lr {lrs[entrant]:.3g})", 2 * LABEL_CHARS),
                     fontsize=FONT + 1)
        ax.set_xlabel("time step t", fontsize=FONT)
        ax.grid(alpha=0.3, which="major")
    if len(positive):
        axes[0].set_ylim(positive.min() / 2, positive.max() * 2)
    for ax in axes[::min(len(axes), MAX_COLUMNS)]:
        ax.set_ylabel("||dL/dh_t||", fontsize=FONT)
    handles, labels = _dedupe(found)
    order = sorted(range(len(labels)), key=lambda i: POINTS.index(labels[i]))
    _legend(fig, [handles[i] for i in order], [labels[i] for i in order], title="training point")


# -- performance profiles --------------------------------------------------------------------
LINE_STYLES = ("-", "--", "-.", ":")


def performance_profiles(fig, curves: dict[str, pd.DataFrame], scores: dict[str, pd.DataFrame],
                         colour: dict) -> None:
    """A panel per tier: rho_s(tau) against tau (log2 x); one legend beside them gives each
    entrant's score in every tier (one legend per panel, below it, squeezed the panels once
    labels were long). Overlapping steps stay visible: every entrant has its own line
    style, and the first ones are drawn wider, underneath."""
    axes = panels(fig, len(curves), sharey=True)
    names = list(colour)
    score = {tier: scores[tier].set_index("entrant")["score"] for tier in curves}
    found = {}
    for ax, (tier, c) in zip(axes, curves.items()):
        for entrant in [n for n in names if n in set(c["entrant"])]:
            e = c[c["entrant"] == entrant]
            i = names.index(entrant)
            found[entrant], = ax.step(
                e["tau"], e["rho"], where="post", color=colour[entrant],
                ls=LINE_STYLES[i % len(LINE_STYLES)], lw=max(1.2, 3.4 - 0.4 * i), zorder=2 + i)
        ax.axvline(TAU_MAX, color="0.3", ls=":", lw=1)
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_locator(LogLocator(base=2))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
        ax.set_xlim(1, c["tau"].max())
        ax.set_ylim(-0.03, 1.03)
        ax.set_title(f"tier {tier}", fontsize=FONT + 1)
        ax.set_xlabel("tau: within this factor of the fewest steps to solve", fontsize=FONT)
        ax.grid(alpha=0.3)
    labels = [f"{e}: " + " / ".join(f"{score[t][e]:.2f}" if e in score[t] else "-"
                                    for t in curves) for e in found]
    _legend(fig, list(found.values()), labels,
            title=f"optimizer: score ({' / '.join(curves)})")
    axes[0].set_ylabel("share of problems solved within tau", fontsize=FONT)


# -- kernel throughput -----------------------------------------------------------------------
def kernel_throughput(fig, rows: pd.DataFrame, bandwidth: dict) -> None:
    """Left: GB/s of each optimizer's step against its size, beside the measured bandwidth.
    Right: at the largest size, each backend's share of that bandwidth."""
    left, right = fig.subplots(1, 2, width_ratios=[3, 2])
    names = list(dict.fromkeys(rows["optimizer"]))
    colour = colours(names)
    found = []
    ours = rows[rows["backend"] == "cpu"]
    for name, r in ours.groupby("optimizer", sort=False):
        line, = left.plot(r["params"], r["GBps"], "o-", color=colour[name], ms=4, lw=1.4)
        found.append((line, name))
    bw = left.axhline(bandwidth["update_GBps"], color="black", ls="--", lw=1.2)
    found.append((bw, f"measured bandwidth ({bandwidth['update_GBps']:.1f} GB/s, a += s*b)"))
    left.set_xscale("log", base=2)
    left.set_xlabel("parameters", fontsize=FONT)
    left.set_ylabel("GB/s moved by the step (Numba CPU)", fontsize=FONT)
    left.grid(alpha=0.3)
    largest = rows[rows["params"] == rows["params"].max()]
    backends = list(dict.fromkeys(largest["backend"]))
    width = 0.8 / len(backends)
    hatches = ["", "//", "..", "xx", "\\\\"]
    for k, backend in enumerate(backends):
        b = largest[largest["backend"] == backend].set_index("optimizer").reindex(names)
        right.bar(np.arange(len(names)) + (k - (len(backends) - 1) / 2) * width,
                  100 * b["share_of_bandwidth"], width, color=[colour[n] for n in names],
                  hatch=hatches[k % len(hatches)], edgecolor="0.2", lw=0.5)
    right.axhline(100, color="black", ls="--", lw=1.2)
    right.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=FONT)
    right.set_ylabel(f"% of measured bandwidth at {int(largest['params'].iloc[0]):,} params",
                     fontsize=FONT)
    keys = [Patch(facecolor="white", edgecolor="0.2", hatch=hatches[k % len(hatches)])
            for k in range(len(backends))]
    right.legend(keys, backends, fontsize=FONT, title="backend", title_fontsize=FONT, frameon=False,
                 loc="upper left", bbox_to_anchor=(1.0, 1.0))
    for ax in (left, right):
        ax.tick_params(labelsize=FONT)
    left.legend(*_dedupe(found), fontsize=FONT, frameon=False, loc="upper left",
                bbox_to_anchor=(0.0, -0.14), ncols=3)
