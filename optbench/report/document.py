"""The report: plan the pages, render each one, write the PDF, the PNGs and the tables.

    report = build("results", out="reports/quick.pdf")

Output, for `--out reports/NAME.pdf`:

    reports/NAME.pdf                   every page below, A4 landscape
    reports/NAME/tables/tuned.{csv,md,tex}      per problem: the tuned tier's table
    reports/NAME/tables/defaults.{csv,md,tex}   the same at default hyper-parameters
    reports/NAME/tables/ranking_TIER.{csv,md,tex}
    reports/NAME/tables/missing.csv    only when cells are missing
    reports/NAME/figures/*.png         each figure page of the PDF, caption included

Pages: a title page (matrix, environment, dates, contents, what is missing), a summary
(rankings of both tiers, performance profiles), one section per task (tables, success
heatmap, learning curves, learning-rate sensitivity, gradient flow per problem) and, when a
kernel benchmark is there, its throughput against the measured memory bandwidth. The PDF is
drawn by matplotlib alone (no LaTeX).
"""

from __future__ import annotations

import datetime as _dt
import os
import re
import shutil
import textwrap
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

import numpy as np
from matplotlib.backends.backend_pdf import PdfPages
from matplotlib.figure import Figure

from optbench.errors import UsageError
from optbench.paths import make_writable_directory
from optbench.report import data as D
from optbench.report import figures as F
from optbench.report import tables as T
from optbench.store import FILENAME

if TYPE_CHECKING:
    import pandas as pd

PAGE_SIZE = (11.69, 8.27)  # A4 landscape, inches
PNG_DPI = 100
TABLES_PER_PAGE = 2
TABLE_LINES = 30  # lines of table text a page holds
WINNERS_PER_PAGE = 20  # lines of text of the winners' table on a page of its own
WINNERS_ON_SUMMARY = 10  # up to this many lines, their table goes under the rankings
PANELS_PER_PAGE = 6
CAPTION_CHARS = 155  # caption line width at CAPTION_FONT on an A4 landscape page
CAPTION_FONT = 9.5
TABLE_CHARS = 32  # longest line of a table cell
PAGE_CHARS = 140  # table text across an A4 landscape page at the tables' 9 pt
KERNELS_FILE = "kernels.json"  # read from the results directory when there


@dataclass
class Page:
    section: str  # "title", "summary", a task's name, or "kernels"
    kind: str  # what the page shows: "tables-tuned", "curves", "grad-flow", ...
    title: str
    caption: str
    draw: Callable = field(repr=False)  # draw(subfigure): the page's body
    png: str | None = None  # file stem of the figure's PNG; None for text pages


@dataclass
class Report:
    """What `build` wrote, and what it saw."""

    pdf: str
    pages: list[Page]
    tables: list[str]
    figures: list[str]
    missing: "pd.DataFrame"  # data.missing(): per (problem, entrant), cells planned, missing
    finished: int
    planned: int

    @property
    def complete(self) -> bool:
        return self.finished == self.planned


def default_out(directory: str, matrix: str) -> str:
    return os.path.join(directory, "reports", f"{_slug(matrix)}.pdf")


def check_out(out: str) -> str:
    """UsageError, one line, unless `out` is a .pdf path whose directory can be written."""
    if not out.lower().endswith(".pdf"):
        raise UsageError(f"--out {out!r}: the report is a PDF; give a path ending in .pdf")
    parent = os.path.dirname(os.path.abspath(out))
    make_writable_directory(parent, lambda why: f"--out {out!r}: cannot create {parent!r} ({why})",
                            f"--out {out!r}: {parent!r} is not writable")
    companion = os.path.splitext(os.path.abspath(out))[0]
    if os.path.isdir(companion) and not _is_report_folder(companion):
        # A new report replaces the folder beside its PDF whole: never one that holds
        # anything else (a results store: `--out results.pdf` beside `results/`).
        raise UsageError(f"--out {out!r}: the report's tables and figures go to {companion!r}, "
                         "which exists and is not a report's folder (it would be replaced); "
                         "give another --out")
    if os.path.exists(companion) and not os.path.isdir(companion):
        raise UsageError(f"--out {out!r}: {companion!r} exists and is not a folder; the "
                         "report's tables and figures go there: give another --out")
    return out


# What a report's folder holds (tables/, figures/, and a marker saying a report made it).
_REPORT_ENTRIES = {"tables", "figures"}
_MARKER = ".optbench-report"


def _is_report_folder(path: str) -> bool:
    entries = set(os.listdir(path))
    return _MARKER in entries or entries <= _REPORT_ENTRIES


def build(directory: str, out: str | None = None, matrix: str | None = None,
          kernels: str | None = None) -> Report:
    """Write the report of `matrix` (default: the latest) in the store at `directory`.

    `kernels`: a `python -m optbench kernels --json` output file (default:
    DIR/kernels.json when it exists). Every input is checked before anything is drawn.
    """
    data = D.load(directory, matrix)
    if kernels is None and os.path.exists(os.path.join(directory, KERNELS_FILE)):
        kernels = os.path.join(directory, KERNELS_FILE)
    bench = D.kernel_throughput(kernels) if kernels is not None else None
    out = check_out(out or default_out(directory, data.name))  # the last check: it makes dirs

    # Everything is drawn into a staging folder beside the report and moved into place at
    # the end, so that a report killed or failing midway leaves the previous one as it was.
    companion = os.path.splitext(out)[0]
    stage = _stage(out)
    try:
        pdf = os.path.join(stage, os.path.basename(out))
        folder = os.path.join(stage, os.path.basename(companion))
        content = _Content(data, bench, kernels)
        os.makedirs(folder)
        with open(os.path.join(folder, _MARKER), "w") as f:
            f.write(f"made by optbench's report of matrix {data.name}; the next report of "
                    "this path replaces this folder whole\n")
        tables = content.write_tables(os.path.join(folder, "tables"))
        pages = content.plan()
        figures = _render(pages, pdf, os.path.join(folder, "figures"), content)
        _publish(stage, pdf, out, folder, companion)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return Report(out, pages, [companion + p[len(folder):] for p in tables],
                  [companion + p[len(folder):] for p in figures], content.missing,
                  content.finished, content.planned)


def _stage(out: str) -> str:
    """A new staging folder for the report `out`, after tidying those that killed reports
    left (their process is gone): a previous report folder found in one is put back."""
    parent, name = os.path.split(os.path.abspath(out))
    prefix = f".{name}.partial-"
    for entry in os.listdir(parent):
        pid = entry[len(prefix):] if entry.startswith(prefix) else ""
        if pid.isdigit() and not _alive(int(pid)):
            stale = os.path.join(parent, entry)
            previous = os.path.join(stale, _PREVIOUS)
            companion = os.path.splitext(os.path.abspath(out))[0]
            if os.path.isdir(previous) and not os.path.exists(companion):
                os.rename(previous, companion)
            shutil.rmtree(stale, ignore_errors=True)
    stage = os.path.join(parent, f"{prefix}{os.getpid()}")
    shutil.rmtree(stage, ignore_errors=True)
    os.makedirs(stage)
    return stage


_PREVIOUS = "previous"


def _publish(stage: str, pdf: str, out: str, folder: str, companion: str) -> None:
    """Move a staged report into place: its folder of tables and figures by two renames
    (the previous one aside into the staging folder, the new one in), then the PDF by one
    rename over the previous PDF, after its bytes are on disk."""
    with open(pdf, "rb") as f:
        os.fsync(f.fileno())
    if os.path.isdir(companion):
        os.rename(companion, os.path.join(stage, _PREVIOUS))
    os.rename(folder, companion)
    os.replace(pdf, out)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # someone else's process
        return True
    return True


# -- content ---------------------------------------------------------------------------------
class _Content:
    """The data of one report, computed once, and the pages that show it."""

    def __init__(self, data, bench, kernels_path):
        self.data, self.bench, self.kernels_path = data, bench, kernels_path
        self.tiers = data.tiers
        self.tables = {t: D.problem_table(data, t) for t in self.tiers}
        # The ranking compares the lengths every optimizer was judged on (D.ranked).
        ranked = {t: D.ranked(self.tables[t], data.config) for t in self.tiers}
        self.rankings = {t: D.ranking(ranked[t]) for t in self.tiers}
        self.profiles = {t: D.profile_curves(D.performance_profile(ranked[t]))
                         for t in self.tiers}
        self.bands = {t: D.profile_bands(ranked[t], sorted(set(self.profiles[t]["tau"])))
                      for t in self.tiers}
        # Figures show the tuned lr on the confirmation seeds where there are some, else on
        # the tuning seeds; a matrix of defaults only shows its defaults.
        self.tier = next(t for t in ("confirm", "tuned", "defaults") if t in self.tiers)
        search = bool(data.config["horizon"]["tasks"])
        self.lengths = D.horizon_table(data) if search else None
        self.horizons = D.horizons(self.lengths, data.config) if search else None
        self.curves = D.learning_curves(data, self.tier)
        self.seeds = D.seed_curves(data, self.tier)
        self.flow = D.grad_flow(data, self.tier)
        self.sensitivity = D.lr_sensitivity(data) if "tuned" in self.tiers else None
        self.winners = D.winners(self.tables[self.tier])
        self.missing = D.missing(data)
        self.planned = data.members["key"].nunique()
        self.finished = len(data.cells)
        self.colour = F.colours(data.entrants)

    def write_tables(self, directory: str) -> list[str]:
        paths = []
        for tier in self.tiers:
            paths += T.write(directory, tier, self.tables[tier], list(T.problems(
                self.tables[tier])), f"{self.data.name}: tier {tier} ({_TIER[tier]})")
            paths += T.write(directory, f"ranking_{tier}", self.rankings[tier],
                             [("ranking", T.ranking_display(self.rankings[tier]))],
                             f"{self.data.name}: ranking, tier {tier}")
        if self.horizons is not None and len(self.horizons):
            sections = [(f"{task}, {model}({hidden})", T.horizon_display(
                h, self.lengths.set_index(["task", "model", "hidden"]).loc[[(task, model, hidden)]]
                .reset_index())) for (task, model, hidden), h in self.horizons.groupby(
                    ["task", "model", "hidden"], sort=False)]
            paths += T.write(directory, "horizons", self.horizons, sections,
                             f"{self.data.name}: horizons (the longest length solved)")
            sections = [(f"{task}, {model}({hidden})", T.lengths_display(rows))
                        for (task, model, hidden), rows in self.lengths.groupby(
                            ["task", "model", "hidden"], sort=False)]
            paths += T.write(directory, "horizon_lengths", self.lengths, sections,
                             f"{self.data.name}: every length tried")
        paths += T.write(directory, f"winners_{self.tier}", self.winners,
                         [("per problem", T.winners_display(self.winners))],
                         f"{self.data.name}: fastest and best per problem, tier {self.tier}")
        if not self.missing.empty:
            path = os.path.join(directory, "missing.csv")
            self.missing.to_csv(path, index=False)
            paths.append(path)
        return paths

    # -- pages -------------------------------------------------------------------------------
    def plan(self) -> list[Page]:
        pages = [Page("title", "title", f"optbench report: matrix {self.data.name}", "",
                      self._title_page)]
        if self.horizons is not None and len(self.horizons):
            pages.append(Page("summary", "horizons",
                              "The answer: how long a dependency each optimizer learns",
                              _HORIZON_CAPTION.format(
                                  seeds=D.SEEDS[self.lengths["seeds_from"].iloc[0]],
                                  fraction=self.data.config["horizon"]["solved_fraction"])
                              + self._differences("horizon"),
                              self._horizon_page, "summary-horizons"))
        pages.append(Page("summary", "ranking", "Summary: which optimizer, across all problems",
                          _RANKING_CAPTION.format(tau=D.TAU_MAX) + self._differences("score"),
                          self._ranking_page))
        chunks = self._winner_chunks()
        if self._winners_on_summary():  # they fit under the rankings
            pages[-1].caption += "\n\n" + _WINNERS_CAPTION.format(tier=self.tier)
            chunks = []
        pages += [Page("summary", "winners", _numbered("Summary: which optimizer, for which "
                                                       "problem", i, len(chunks)),
                       _WINNERS_CAPTION.format(tier=self.tier),
                       lambda fig, c=chunk: self._winners_page(fig, c))
                  for i, chunk in enumerate(chunks)]
        pages.append(Page("summary", "profiles", "Performance profiles",
                          _PROFILE_CAPTION.format(n=self._problems(), tau=D.TAU_MAX),
                          self._profile_page, "summary-profiles"))
        if "defaults" in self.tiers and self.tier != "defaults":
            untuned = D.untuned_against_tuned(
                D.ranked(self.tables["defaults"], self.data.config), self.tables[self.tier])
            groups = list(untuned.groupby(D.PROBLEM, sort=False))
            chunks = _chunks(groups, TABLES_PER_PAGE + 1)
            pages += [Page("summary", "untuned", _numbered("Untuned against tuned", i,
                                                           len(chunks)),
                           _UNTUNED_CAPTION.format(tuned=_TIER[self.tier]),
                           lambda fig, c=chunk: self._untuned_page(fig, c))
                      for i, chunk in enumerate(chunks)]
        for task in self._tasks():
            pages += self._task_pages(task)
        if self.bench is not None:
            pages.append(Page("kernels", "kernels", "Optimizer kernels against memory bandwidth",
                              _KERNELS_CAPTION.format(path=self.kernels_path),
                              self._kernel_page, "kernels"))
        self.pages = pages
        return pages

    def _tasks(self) -> list[str]:
        done = set(self.data.cells["task"])
        return [t for t in self.data.config["tasks"] if t in done]

    def _problems(self) -> int:
        """The problems the ranking compares (D.ranked)."""
        ranked = D.ranked(self.tables[self.tier], self.data.config)
        return len(ranked[D.PROBLEM].drop_duplicates())

    def _task_pages(self, task: str) -> list[Page]:
        t = self.data.task(task)  # as the store describes it: the plugin need not import
        doc = t.doc
        pages = []
        for tier in self.tiers:
            table = self.tables[tier][self.tables[tier]["task"] == task]
            chunks = _table_chunks(list(table.groupby(D.PROBLEM, sort=False)))
            for i, chunk in enumerate(chunks):
                caption = _TABLE_CAPTION[tier] + " " + _TABLE_COMMON
                if not pages:  # the section's first page says what the task is
                    caption = f"{task}: {doc}\n\n{caption}"
                pages.append(Page(task, f"tables-{tier}", _numbered(
                    f"{task}: tier {tier} ({_TIER[tier]})", i, len(chunks)), caption,
                    lambda fig, c=chunk: self._tables_page(fig, c)))
        tier = self.tier
        if not (self.tables[tier]["task"] == task).any():  # only the other tier has cells
            return pages
        pages.append(Page(task, "success", f"{task}: how long a dependency each optimizer learns",
                          _SUCCESS_CAPTION.format(tier=_TIER_SHORT[tier]),
                          lambda fig: self._success_page(fig, task), f"{task}-success"))
        problems = list(self.curves[self.curves["task"] == task].groupby(D.PROBLEM, sort=False))
        better = "Higher" if t.higher_is_better else "Lower"
        scale = "linear scale" if t.higher_is_better else "log scale"
        chunks = _chunks(problems, PANELS_PER_PAGE)
        for x, what in (("step", "steps"), ("train_s", "time")):
            for i, chunk in enumerate(chunks):
                keys = [p for p, _ in chunk]
                pages.append(Page(task, f"curves-{what}", _numbered(
                    f"{task}: learning curves against training {what}", i, len(chunks)),
                    _CURVES_CAPTION[x].format(tier=_TIER_SHORT[tier], metric=t.metric_name,
                                              better=better, scale=scale),
                    lambda fig, k=keys, x=x: self._curves_page(fig, k, x),
                    f"{task}-curves{'' if x == 'step' else '-time'}{_suffix(i)}"))
        if self.sensitivity is not None:
            sens = list(self.sensitivity[self.sensitivity["task"] == task].groupby(
                D.PROBLEM, sort=False))
            chunks = _chunks(sens, PANELS_PER_PAGE)
            for i, chunk in enumerate(chunks):
                keys = [p for p, _ in chunk]
                pages.append(Page(task, "lr", _numbered(f"{task}: learning-rate sensitivity", i,
                                                        len(chunks)),
                                  _LR_CAPTION.format(metric=t.metric_name, better=better),
                                  lambda fig, k=keys: self._lr_page(fig, k),
                                  f"{task}-lr{_suffix(i)}"))
        flow = self.flow[self.flow["task"] == task]
        for problem, _ in flow.groupby(D.PROBLEM, sort=False):
            name = D.problem_label(*problem)
            pages.append(Page(task, "grad-flow", f"Gradient flow: {name}",
                              _FLOW_CAPTION[t.head].format(tier=_TIER_SHORT[tier],
                                                           T=t.steps(problem[1])),
                              lambda fig, p=problem: self._flow_page(fig, p),
                              f"{task}-grad-flow-T{problem[1]}-{problem[2]}{problem[3]}"))
        return pages

    # -- page bodies -------------------------------------------------------------------------
    def _title_page(self, fig) -> None:
        d = self.data
        cfg = d.config
        left = ["Question", "  Which optimizer trains a recurrent network across a long time "
                "lag, how fast, and why?", "", "Matrix"]
        left += [f"  {k}: {v}" for k, v in _matrix_lines(cfg)]
        right = ["Results", f"  store: {os.path.join(d.directory, FILENAME)}",
                 f"  protocol {d.results.meta.get('protocol')}, store schema "
                 f"{d.results.meta.get('schema')}, created by optbench "
                 f"{d.results.meta.get('optbench')}",
                 f"  cells finished: {self.finished} of {self.planned}"
                 + (" (complete)" if not len(self.missing) else " (INCOMPLETE: a partial report)"),
                 f"  first and last cell finished: {d.cells['finished_at'].min()} .. "
                 f"{d.cells['finished_at'].max()}",
                 f"  report made: {_dt.datetime.now(_dt.timezone.utc):%Y-%m-%d %H:%M} UTC",
                 "", "Environment of the cells"]
        envs = D.environments(d.cells)
        top = envs.iloc[0]
        right += [f"  {k}: {top[k]}" for k in envs.columns if k != "cells"]
        if len(envs) > 1:
            right.append(f"  (the most common of {len(envs)} environments: {top['cells']} of "
                         f"{self.finished} cells; see env_json in the store)")
        load = self.bench[2].get("load_average_1min") if self.bench else None
        load = f" (1-minute load average before it: {load:.2f})" if isinstance(
            load, (int, float)) else ""
        right += ["", "Kernel benchmark", f"  {self.kernels_path}{load}" if self.kernels_path
                  else "  none: save `python -m optbench kernels --json` as "
                  f"{os.path.join(d.directory, KERNELS_FILE)} to add it"]
        if len(self.missing):
            right += ["", "Missing (per problem: optimizer, cells missing of planned)"]
            right += _missing_lines(self.missing)
        contents = ["Contents"] + [f"  {p:>3}  {t}" for p, t in self._contents()]
        _text_block(fig, 0.0, 1.0, 0.42, left + [""] + contents)
        _text_block(fig, 0.46, 1.0, 0.54, right)

    def _contents(self) -> list[tuple[int, str]]:
        seen, out = set(), []
        for i, p in enumerate(self.pages, start=1):
            name = {"title": "Title", "summary": "Summary: ranking and performance profiles",
                    "kernels": "Optimizer kernels"}.get(p.section, f"Task {p.section}")
            if name not in seen:
                seen.add(name)
                out.append((i, name))
        return out

    def _ranking_page(self, fig) -> None:
        # The tuning seeds' ranking is the confirmation's, optimistically: with both, the
        # summary shows the confirmation (the tables and profiles keep all three).
        shown = [t for t in self.tiers if not (t == "tuned" and "confirm" in self.tiers)]
        blocks = [(f"tier {t} ({_TIER_SHORT[t]})", T.ranking_display(self.rankings[t]))
                  for t in shown]
        # side by side where both fit across the page (intervals and long labels widen them)
        ncols = len(blocks) if len(blocks) * max(
            _chars(frame) for _, frame in blocks) <= PAGE_CHARS else 1
        if not self._winners_on_summary():
            _tables(fig, blocks, ncols=ncols)
            return
        winners = self._winners_shown(list(range(len(self.winners))))
        tall = [_lines(frame) + 2 for _, frame in blocks]
        top, bottom = fig.subfigures(2, 1, height_ratios=[
            max(tall) if ncols > 1 else sum(tall), _lines(winners) + 2])
        _tables(top, blocks, ncols=ncols)
        _tables(bottom, [(f"Per problem (tier {self.tier})", winners)])

    def _winners_on_summary(self) -> bool:
        rows = list(range(len(self.winners)))
        return _lines(self._winners_shown(rows)) <= WINNERS_ON_SUMMARY + 1

    def _winner_chunks(self) -> list[list[int]]:
        """Rows of the winners' table per page: at most WINNERS_PER_PAGE lines of text each
        (labels wrap over several)."""
        shown = self._winners_shown(list(range(len(self.winners))))
        chunks, lines = [[]], 0
        for i, row in enumerate(shown.to_numpy()):
            n = max(F.wrap(str(v), TABLE_CHARS).count("\n") + 1 for v in row)
            if chunks[-1] and lines + n > WINNERS_PER_PAGE:
                chunks.append([])
                lines = 0
            chunks[-1].append(i)
            lines += n
        return chunks if chunks[0] else []

    def _winners_page(self, fig, rows) -> None:
        _tables(fig, [(f"Per problem (tier {self.tier})", self._winners_shown(rows))])

    def _winners_shown(self, rows) -> pd.DataFrame:
        winners = self.winners.iloc[rows]
        shown = T.winners_display(winners)
        # Many entrants tied (every one solving at the first evaluation, say) would fill the
        # page; the PDF names two, the tables beside it all of them.
        table = self.tables[self.tier]
        short = []
        for problem, text in zip(winners[D.PROBLEM].itertuples(index=False),
                                 shown["fastest to solve"]):
            g = table.set_index(D.PROBLEM).loc[[tuple(problem)]]
            tied = list(g.loc[g["cost"] == g["cost"].min(), "entrant"])
            short.append(text if len(tied) <= 1 or not np.isfinite(g["cost"].min()) else
                         f"{tied[0]} and {len(tied) - 1} more (tables/winners_{self.tier})")
        shown["fastest to solve"] = short
        return shown

    def _profile_page(self, fig) -> None:
        F.performance_profiles(fig, self.profiles, self.rankings, self.colour, self.bands)

    def _horizon_page(self, fig) -> None:
        F.horizons(fig, self.lengths, self.horizons, self.colour, self.data.entrants)

    def _differences(self, what: str, limit: int = 10) -> str:
        """The caption's sentence on which differences lie beyond the 95 % intervals."""
        if what == "horizon":
            pairs = D.separated_horizons(self.lengths, self.horizons)
            unit = "horizons"
        else:
            pairs = D.separated_pairs(self.rankings[self.tier])
            unit = f"scores (tier {self.tier})"
        if not pairs:
            return (f"\n\nNo two {unit} differ beyond their 95 % intervals at the seeds run: "
                    "the order above may be seed luck.")
        shown = "; ".join(f"{a} > {b}" for a, b in pairs[:limit])
        more = f"; and {len(pairs) - limit} more pairs" if len(pairs) > limit else ""
        return f"\n\nDifferences beyond the 95 % intervals, {unit}: {shown}{more}."

    def _untuned_page(self, fig, chunk) -> None:
        _tables(fig, [(D.problem_label(*problem), T.untuned_display(rows))
                      for problem, rows in chunk])

    def _tables_page(self, fig, chunk) -> None:
        _tables(fig, [(T.problem_heading(rows), T.problem_display(rows)) for _, rows in chunk])

    def _success_page(self, fig, task: str) -> None:
        rates, counts = D.success_grid(self.tables[self.tier], task, self.data.entrants)
        F.success_heatmap(fig, rates, counts)

    def _curves_page(self, fig, keys, x: str = "step") -> None:
        c = self.curves.set_index(D.PROBLEM).loc[keys].reset_index()
        seeds = self.seeds.set_index(D.PROBLEM).loc[keys].reset_index()
        F.learning_curves(fig, c, self.tables[self.tier], self.colour, seeds, x)

    def _lr_page(self, fig, keys) -> None:
        s = self.sensitivity.set_index(D.PROBLEM).loc[keys].reset_index()
        F.lr_sensitivity(fig, s, self.tables["tuned"], self.colour)

    def _flow_page(self, fig, problem) -> None:
        flow = self.flow.set_index(D.PROBLEM).loc[[problem]].reset_index()
        rows = self.tables[self.tier].set_index(D.PROBLEM).loc[[problem]]
        F.grad_flow(fig, flow, self.data.entrants, dict(zip(rows["entrant"], rows["lr"])))

    def _kernel_page(self, fig) -> None:
        rows, bandwidth, _ = self.bench
        F.kernel_throughput(fig, rows, bandwidth)


# -- rendering -------------------------------------------------------------------------------
def _render(pages: list[Page], out: str, figures_dir: str, content: _Content) -> list[str]:
    os.makedirs(figures_dir, exist_ok=True)
    pngs = []
    meta = {"Title": f"optbench report: matrix {content.data.name}",
            "Subject": "Which optimizer trains a recurrent network across a long time lag",
            "Creator": f"optbench {content.data.results.meta.get('optbench', '')}"}
    with PdfPages(out, metadata=meta) as pdf:
        for number, page in enumerate(pages, start=1):
            fig = _page(page, number, len(pages))
            pdf.savefig(fig)
            if page.png is not None:
                path = os.path.join(figures_dir, f"{_slug(page.png)}.png")
                fig.savefig(path, dpi=PNG_DPI)
                pngs.append(path)
    return pngs


def _page(page: Page, number: int, total: int):
    """An A4 landscape Figure: title bar, the page's body, its caption."""
    lines = [line for para in page.caption.split("\n\n")
             for line in (textwrap.wrap(para, CAPTION_CHARS) + [""])][:-1]
    caption_h = 0.17 * len(lines) + 0.2 if lines else 0.05
    head_h = 0.5
    fig = Figure(figsize=PAGE_SIZE, layout="constrained")
    head, body, foot = fig.subfigures(
        3, 1, height_ratios=[head_h, PAGE_SIZE[1] - head_h - caption_h, caption_h])
    head.text(0.01, 0.45, page.title, fontsize=14, weight="bold", va="center")
    head.text(0.99, 0.45, f"page {number} of {total}", fontsize=9, ha="right", va="center",
              color="0.35")
    page.draw(body)
    foot.text(0.01, 1.0, "\n".join(lines), fontsize=CAPTION_FONT, va="top", linespacing=1.35)
    return fig


def _tables(fig, blocks: list[tuple[str, "pd.DataFrame"]], ncols: int = 1) -> None:
    """Display frames drawn as matplotlib tables, each under its heading. Text longer than
    TABLE_CHARS (entrant labels, ties of several) is wrapped and its row made taller: the
    columns are as wide as their longest text, and a long label pushed the columns after
    it off the page."""
    axes = fig.subplots(-(-len(blocks) // ncols), ncols, squeeze=False).ravel()
    for ax, (heading, frame) in zip(axes, blocks):
        ax.axis("off")
        ax.set_title(heading, loc="left", fontsize=10.5, weight="bold")
        text = [[F.wrap(str(v), TABLE_CHARS) for v in row] for row in frame.to_numpy()]
        table = ax.table(cellText=text, colLabels=list(frame.columns),
                         loc="upper left", cellLoc="right", colLoc="right")
        table.auto_set_font_size(False)
        table.set_fontsize(9)
        table.auto_set_column_width(list(range(len(frame.columns))))
        table.scale(1, 1.25)
        for row, cells in enumerate(text, start=1):
            lines = max(v.count("\n") + 1 for v in cells)
            if lines > 1:
                for col in range(len(frame.columns)):
                    cell = table[row, col]
                    cell.set_height(cell.get_height() * lines)
        for (row, col), cell in table.get_celld().items():
            cell.set_edgecolor("0.8")
            if row == 0:
                cell.set_text_props(weight="bold")
            if frame.columns[col] in T.LEFT:
                cell.set_text_props(ha="left")
                cell._loc = "left"
    for ax in axes[len(blocks):]:
        ax.remove()


def _table_chunks(groups: list) -> list[list]:
    """Problems' tables per page: TABLES_PER_PAGE at most, and no more than TABLE_LINES of
    text (wrapped labels make rows taller)."""
    chunks, lines = [[]], 0
    for group in groups:
        n = _lines(T.problem_display(group[1])) + 2  # and its heading
        if chunks[-1] and (len(chunks[-1]) == TABLES_PER_PAGE or lines + n > TABLE_LINES):
            chunks.append([])
            lines = 0
        chunks[-1].append(group)
        lines += n
    return chunks if chunks[0] else []


def _chars(frame: pd.DataFrame) -> int:
    """Width of a table as `_tables` draws it, in characters: each column as wide as its
    widest line of text (labels wrapped), and a margin on each side."""
    return sum(max([len(col)] + [max(len(line) for line in F.wrap(str(v), TABLE_CHARS)
                                     .split("\n")) for v in frame[col]]) + 2
               for col in frame.columns)


def _lines(frame: pd.DataFrame) -> int:
    """Text lines of a table as `_tables` draws it: the header and each row's tallest cell."""
    return 1 + sum(max(F.wrap(str(v), TABLE_CHARS).count("\n") + 1 for v in row)
                   for row in frame.to_numpy())


def _text_block(fig, x: float, y: float, width: float, lines: list[str]) -> None:
    """Lines of text from (x, y) down; headings (unindented lines) in bold; long lines wrapped."""
    chars = int(width * 150)
    wrapped = []
    for line in lines:
        indent = len(line) - len(line.lstrip())
        parts = textwrap.wrap(line, chars, subsequent_indent=" " * (indent + 2)) or [""]
        wrapped += [(p, indent == 0 and bool(line.strip())) for p in parts]
    step = min(0.032, 1.0 / max(len(wrapped), 1))
    for i, (text, bold) in enumerate(wrapped):
        fig.text(x, y - i * step, text, fontsize=9 if not bold else 10.5,
                 weight="bold" if bold else "normal", va="top", family="DejaVu Sans")


# -- text ------------------------------------------------------------------------------------
def _matrix_lines(cfg: dict) -> list[tuple[str, str]]:
    lengths = cfg["lengths"]
    search = cfg["horizon"]["tasks"]
    opts = ", ".join(f"{o['name']} (lr {', '.join(f'{x:.3g}' for x in o['lr_grid'])}; "
                     f"default {o['hparams']['lr']:.3g})" for o in cfg["optimizers"])
    h = cfg["horizon"]
    return [
        ("tasks and lengths T", "; ".join(
            f"{t}: searched from {search[t]['start']} to at most {search[t]['max']} (x"
            f"{h['factor']:g}, {h['bisect']} bisection)" if t in search else
            f"{t}: {', '.join(map(str, lengths[t]))}" for t in cfg["tasks"])),
        ("models", ", ".join(f"{m}({h})" for m in cfg["models"] for h in cfg["hidden"])),
        ("optimizers (lr grid)", opts),
        ("seeds", ", ".join(map(str, cfg["seeds"])) + " (tuning)" + (
            f"; {', '.join(map(str, cfg['confirm_seeds']))} (confirmation: the tuned lr rerun"
            " on seeds that did not choose it)" if cfg["confirm_seeds"] else "")),
        ("step budget", "; ".join(f"{t}: {s}" for t, s in cfg["steps"].items())),
        ("batch size, evaluation every", f"{cfg['batch_size']}, {cfg['eval_every']} steps"),
        ("clipping", f"global norm {cfg['clip_norm'] or 'off'}, value "
                     f"{cfg['clip_value'] or 'off'}"),
        ("init", cfg["init"]),
        ("tiers", ", ".join(f"{t} ({_TIER[t]})" for t in cfg["tiers"])),
        ("tuning rule", "per (task, length, model, optimizer) the lr with the best median "
                        "over the tuning seeds on the validation set: solved seeds by steps to "
                        "solve, then final validation metric (DeepOBS, Schneider et al. 2019); "
                        f"a grid widens by up to {cfg['tuning']['extend']} points a side while "
                        "its best lr lies at that edge"),
    ]


def _missing_lines(missing, limit: int = 14) -> list[str]:
    lines = []
    for problem, g in missing.groupby(D.PROBLEM, sort=False):
        parts = ", ".join(f"{e} {m} of {p}" for e, m, p in zip(g["entrant"], g["missing"],
                                                              g["planned"]))
        lines.append(f"  {D.problem_label(*problem)}: {parts}")
    if len(lines) > limit:
        lines = lines[:limit] + [f"  ... and {len(lines) - limit} more problems "
                                 "(tables/missing.csv)"]
    return lines


def _first_paragraph(doc: str | None) -> str:
    return " ".join((doc or "").strip().split("\n\n")[0].split())


def _numbered(title: str, i: int, n: int) -> str:
    return title if n <= 1 else f"{title} ({i + 1}/{n})"


def _suffix(i: int) -> str:
    return "" if i == 0 else f"-{i + 1}"


def _chunks(items: list, size: int) -> list[list]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "report"


_TIER = {"confirm": "tuned lr, rerun on fresh seeds",
         "tuned": "lr tuned on the validation set, on the seeds that chose it",
         "defaults": "default hyper-parameters"}
_TIER_SHORT = {"confirm": "the tuned learning rate on the confirmation seeds",
               "tuned": "the tuned learning rate", "defaults": "the default learning rate"}

_TABLE_CAPTION = {
    "confirm": "One row per optimizer at the learning rate the tuning rule picked on the "
               "tuning seeds' validation sets, rerun on confirmation seeds that took no part "
               "in choosing it: these figures are free of the selection's optimism.",
    "tuned": "One row per optimizer at the learning rate the tuning rule picked on the "
             "validation set (of the lrs tried), over the tuning seeds, the ones that chose "
             "it (optimistic where there are confirmation seeds: compare that tier).",
    "defaults": "One row per optimizer at its default hyper-parameters (torch.optim's), "
                "untuned: what a user who does not tune gets.",
}
_TABLE_COMMON = (
    "lr: the picked learning rate, how many were tried, and whether it lies at the low or "
    "high edge of the (widened) grid, where the best lr may lie beyond. "
    "solved: seeds that met the task's solved rule on the validation set within the step "
    "budget, with the 95 % Wilson interval of the success rate. steps, seconds: median steps "
    "(with its 95 % bootstrap interval over seeds) and training seconds to solve, over the "
    "solved seeds (seconds exclude evaluation and compilation and vary with the machine's "
    "load). diverged: seeds stopped for a NaN, an inf or an exploding loss. test: median "
    "over the seeds that did not diverge, on the held-out test set, with its 95 % bootstrap "
    "interval. The last row is the memoryless baseline, the best a model without memory "
    "can score. * marks a row based on fewer cells than planned (the run is incomplete)."
)
_HORIZON_CAPTION = (
    "For each optimizer (rows) the longest sequence length T it learns within the step "
    "budget (bar): lengths grow from the search's start while it passes, and after its first "
    "failure one length between the last pass and the failure is tried. A length passes when "
    "at least {fraction:.0%} of the {seeds} solved it at the learning rate tuned for that "
    "length (a filled dot; an x: failed); beside each dot, solved/seeds and the 95 % Wilson "
    "interval of that fraction. An arrow: the optimizer passed the longest length searched, "
    "so its horizon may lie beyond. Per-length tables: tables/horizons and "
    "tables/horizon_lengths."
)
_UNTUNED_CAPTION = (
    "Each optimizer untuned (its default hyper-parameters, on the tuning seeds) beside "
    "itself with the {tuned}: solved seeds with the 95 % interval of the rate, and median "
    "steps to solve. The first optimizer of the matrix is the set-up under test where a "
    "preset names one (the seed preset: the Keras program's Adam); the best tuned row says "
    "how much a tuned optimizer changes the answer."
)
_RANKING_CAPTION = (
    "Ranking over all problems (task x length x model) of each tier. score: the area under "
    "the optimizer's performance profile (page Performance profiles) for tau from 1 to "
    "{tau:g}, divided by {tau:g} - 1, as AlgoPerf scores submissions (Dahl et al. 2023): 1 "
    "means the fastest to solve every problem, 0 never within {tau:g} times the fastest. The "
    "cost on a problem is "
    "the median over seeds of the steps to solve (unsolved seeds count as never; a problem "
    "counts as solved when at least half the seeds solve it). solved: problems solved. mean "
    "rank: the mean over problems of the rank by that cost, unsolved optimizers ranked after "
    "by their median test metric (1 = best). Sorted by score, then mean rank. The tuned tier "
    "ranks optimizers at their best; the defaults tier ranks them as shipped."
)
_WINNERS_CAPTION = (
    "Which optimizer, for which problem (tier {tier}): the fastest to solve it (the lowest "
    "median over seeds of the steps to solve, unsolved seeds counting as never; ties are "
    "listed together), those steps, how many optimizers solved it at all, and the optimizer "
    "with the best median test metric. The task sections that follow show why: the success "
    "heatmaps say up to which length each optimizer learns, the gradient-flow pages how "
    "much error signal reaches the start of the sequence."
)
_PROFILE_CAPTION = (
    "Performance profiles (Dolan & More 2002) over the {n} problems: for each optimizer, the "
    "share of problems it solves within a factor tau of the fewest steps any optimizer "
    "needed on that problem. At tau = 1 the curve says how often the optimizer was the "
    "fastest; at the right end, how often it solved at all. Higher and further left is "
    "better. The legend gives each optimizer's score: the area under its curve up to the "
    "dotted line (tau = {tau:g}) over {tau:g} - 1."
)
_SUCCESS_CAPTION = (
    "Success rate at {tier}: the share of seeds that solved the task within the step budget, "
    "per optimizer (rows) and model and sequence length T (columns); the text in each cell "
    "is solved seeds / seeds and the 95 % Wilson interval of the rate. Read along a row: where the colour fades is the dependency "
    "length at which that optimizer stops learning the task within the budget."
)
_CURVES_CAPTION = {
    "step": (
        "Validation {metric} against training steps at {tier} of each optimizer (in the "
        "legend): a thin line per seed, the thick line the median over seeds. A run stops at "
        "its first evaluation that meets the solved rule (the median keeps that value "
        "afterwards); a run that diverged ends in a cross on the top edge and counts as the "
        "worst value from then on, so a median that ends early means at least half the "
        "seeds diverged. Dashed: the memoryless baseline; dotted: the solved threshold. "
        "{better} is better ({scale})."),
    "train_s": (
        "The same runs against training seconds (evaluation and compilation excluded): what "
        "a step costs each optimizer, and how soon in time each seed reaches the threshold. "
        "Seconds depend on the machine and its load (the title page names the machine). "
        "{better} is better ({scale})."),
}
_LR_CAPTION = (
    "Final validation {metric} against the learning rate (log scale), per optimizer: the "
    "median over the seeds that did not diverge. The star marks the lr the tuning rule "
    "picked; an x on the top edge, an lr at which every seed diverged. A wide flat valley "
    "means the optimizer forgives a poorly chosen lr; a narrow one means it needs tuning. "
    "Solved runs stop at the solved threshold (dotted), so values near that line are ties "
    "broken by speed, which this figure does not show. {better} is better."
)
_FLOW_BODY = (
    "||dL/dh_t||, the norm of the loss gradient with respect to the hidden state at time "
    "step t (batch mean, from BPTT, before clipping), against t, at several points of "
    "training (colour: early light, late dark); median over seeds at {tier} (runs stop once "
    "solved, so a late point is the median of the seeds still running), log scale, the same "
    "in every panel. "
)
_FLOW_CAPTION = {
    "last": _FLOW_BODY + (
        "The loss is read at the last step only (t = {T} - 1), so the gradient enters at the "
        "right and flows back to the left: a curve that falls steeply towards t = 0 is a "
        "vanishing gradient (the early inputs cannot be learned); one that rises is an "
        "exploding gradient. A flat curve carries the error signal across the whole lag."),
    "every": _FLOW_BODY + (
        "The loss is read at every step, so each ||dL/dh_t|| sums the signal of the steps "
        "after t: the level at small t shows how much of the late targets' error reaches "
        "the start of the sequence ({T} steps), where the symbols to recall are."),
}
_KERNELS_CAPTION = (
    "From {path} (`python -m optbench kernels --json`). Left: the memory traffic of one "
    "optimizer step (bytes it must read and write per parameter, times parameters, per "
    "second) on the Numba CPU backend against the number of parameters; the dashed line is "
    "the memory bandwidth measured in the same process (a += s*b). Sizes that fit in the "
    "caches can exceed it; far beyond the caches a step cannot, so a point above the line "
    "there means the probe under-measured the machine (or its load changed between the two "
    "measurements: see the load average on the title page). Right: at the largest size, each "
    "backend's share of that bandwidth (torch-fused and torch-foreach: torch.optim's "
    "implementations timed in the same process); the dashed line is 100 %."
)
