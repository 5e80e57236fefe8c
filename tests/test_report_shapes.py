"""Reports of every shape, written whole or not at all, and what `run` prints at its end.

Stores are filled by the stand-in cell runner (helpers.run_cell), so every preset's shape
(tasks, models, optimizers, tiers) is reported at small sizes in seconds.
"""

import io
import math
import os
import re
import signal
import subprocess
import sys
import time
import warnings
from collections import Counter

import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg

from optbench import matrix as mx
from optbench import plan, run, runner
from optbench.cell import Result
from optbench.cli import main
from optbench.report import build
from optbench.report import data as D
from optbench.report import document
from optbench.store import Store

import helpers

LONG_LABELS = """
name = "long"
tasks = ["adding", "temporal_order_4"]
lengths = [10, 20]
hidden = [8]
seeds = 2
steps = 200
eval_every = 50
[tuning]
lr_points = 3
[[optimizers]]
name = "sgd"
momentum = 0.9
nesterov = true
weight_decay = 0.0001
[[optimizers]]
name = "adam"
amsgrad = true
betas = [0.8, 0.99]
weight_decay = 0.01
[[optimizers]]
name = "adamw"
betas = [0.85, 0.995]
eps = 1e-7
[[optimizers]]
name = "lion"
betas = [0.95, 0.98]
weight_decay = 0.1
[[optimizers]]
name = "rmsprop"
alpha = 0.9
centered = true
momentum = 0.5
"""


def small(preset: str, seeds: int = 2, models: int = 2) -> mx.Matrix:
    """The preset's shape (tasks, optimizers, tiers, models, searches) with one or two
    lengths per task, one hidden size, at most `seeds` seeds and `models` models (the last
    ones: full's RNN)."""
    cfg = {"name": preset, **mx.PRESETS[preset]}
    lengths = cfg.get("lengths")
    if lengths is not None:
        cfg["lengths"] = ({t: v[:1] for t, v in lengths.items()} if isinstance(lengths, dict)
                          else lengths[:1])
    if cfg.get("horizon"):  # a search over two lengths
        cfg["horizon"] = {t: {"start": h["start"], "max": 2 * h["start"]} if isinstance(h, dict)
                          else h for t, h in cfg["horizon"].items()}
    cfg["hidden"] = cfg.get("hidden", [128])[:1]
    cfg["models"] = cfg.get("models", ["lstm"])[-models:]
    given = cfg.get("seeds", 3)
    cfg["seeds"] = given[:seeds] if isinstance(given, list) else min(given, seeds)
    return mx.expand(cfg)


def fill(directory, m, keep=None):
    """Run the matrix with the stand-in cell runner: every wave, or the first `keep` cells
    of the first wave (an interrupted run)."""
    with Store.open(str(directory)) as store:
        if keep is None:
            runner.execute(m, store, runner.Serial(), helpers.run_cell)
            return
        store.record_matrix(m)
        for cell in m.cells[:keep]:
            store.put(helpers.run_cell(cell))


def pdf_pages(path) -> int:
    with open(path, "rb") as f:
        return len(re.findall(rb"/Type\s*/Page\b", f.read()))


def built(directory, **kwargs):
    """build(), with any warning an error (no stray warnings in a report)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return build(str(directory), **kwargs)


@pytest.mark.parametrize("preset", [pytest.param(p, marks=pytest.mark.slow)
                                    if p in ("standard", "full") else p for p in mx.PRESETS])
def test_every_presets_report_shape(preset, tmp_path):
    m = small(preset, models=1 if preset == "full" else 2)  # full: 6 tasks x RNN
    fill(tmp_path, m)
    report = built(tmp_path)
    assert report.complete and pdf_pages(report.pdf) == len(report.pages)
    for task in m.config["tasks"]:
        kinds = {p.kind for p in report.pages if p.section == task}
        assert {"success", "curves-steps", "curves-time", "grad-flow"} <= kinds
        assert ("lr" in kinds) == ("tuned" in m.config["tiers"])
    if m.config["horizon"]["tasks"]:  # every length tried, in each of the three formats
        tables = os.path.join(os.path.splitext(report.pdf)[0], "tables")
        rows = len(open(os.path.join(tables, "horizon_lengths.csv")).read().splitlines()) - 1
        md = open(os.path.join(tables, "horizon_lengths.md")).read()
        tex = open(os.path.join(tables, "horizon_lengths.tex")).read()
        assert rows > 0 and md.count("\n| ") - 2 * md.count("\n## ") == rows
        assert tex.count("\\\\") >= rows and "confirm" in md
    text = run.summary(Store.open(str(tmp_path)).frames(matrix=m.name), m)
    assert "NaN" not in text and "nan" not in text


@pytest.mark.parametrize("shape, keep", [("one optimizer", None), ("one seed", None),
                                         ("interrupted", 21)])
def test_reports_of_odd_shapes(shape, keep, tmp_path):
    cfg = {"name": "quick", **mx.PRESETS["quick"]}
    if shape == "one optimizer":
        cfg["optimizers"] = ["adam"]
    if shape == "one seed":
        cfg["seeds"] = 1
    if keep is None:  # one length per task: enough for the shape
        cfg["lengths"] = [25]
    m = mx.expand(cfg)
    fill(tmp_path, m, keep)
    report = built(tmp_path)
    assert pdf_pages(report.pdf) == len(report.pages)
    with Store.open(str(tmp_path)) as store:  # every wave's cells, once each
        stored = len(store.finished_keys())
    assert report.complete == (keep is None) and report.finished == (keep or stored)
    assert keep or stored > len(m.cells)  # the search went past its first wave


def panel_sizes(page) -> list[float]:
    """The smaller of width and height (shares of the page) of each data panel of a report
    page, as drawn."""
    fig = document._page(page, 1, 1)
    FigureCanvasAgg(fig).draw()
    return [min(ax.get_position().width, ax.get_position().height) for ax in fig.get_axes()
            if ax.get_visible() and ax.axison and ax.get_label() != "<colorbar>"]


def test_long_labels_neither_squeeze_the_panels_nor_leave_the_page(tmp_path):
    m = mx.expand(helpers.toml(LONG_LABELS))
    fill(tmp_path, m)
    report = built(tmp_path)
    for kind in ("curves-steps", "lr", "profiles"):  # two panels side by side, and the legend
        page = next(p for p in report.pages if p.kind == kind)
        assert min(panel_sizes(page)) > 0.3, kind  # unwrapped labels left them 0.25 wide
    for page in (p for p in report.pages if p.kind in ("ranking", "tables-tuned")):
        fig = document._page(page, 1, 1)
        canvas = FigureCanvasAgg(fig)
        canvas.draw()
        right = max(t.get_window_extent(canvas.get_renderer()).x1
                    for ax in fig.get_axes() for t in ax.tables)
        assert right <= fig.bbox.width, page.title  # every column on the page


# -- atomic outputs ----------------------------------------------------------------------------
def _files(directory):
    out = {}
    for root, _, names in os.walk(directory):
        for name in names:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, directory)] = f.read()
    return out


@pytest.mark.slow
def test_a_killed_report_leaves_the_previous_one_intact(tmp_path):
    m = small("quick")
    fill(tmp_path, m)
    reports = tmp_path / "reports"
    built(tmp_path)
    before = _files(reports)
    fill(tmp_path, small("quick", seeds=3))  # more cells: a new report
    killed = 0
    for sig, wait in [(signal.SIGKILL, 0.0), (signal.SIGKILL, 1.0), (signal.SIGKILL, 3.0),
                      (signal.SIGINT, 1.0)]:
        proc = subprocess.Popen([sys.executable, "-m", "optbench", "report", str(tmp_path)],
                                cwd=helpers.ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, preexec_fn=helpers._default_sigint)
        deadline = time.monotonic() + 120
        while not any(n.startswith(".quick.pdf.partial-") for n in os.listdir(reports)):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.02)
        time.sleep(wait)
        if proc.poll() is not None:  # it finished first: nothing to test at this delay
            continue
        killed += 1
        proc.send_signal(sig)
        proc.communicate(timeout=60)
        left = {k: v for k, v in _files(reports).items() if ".partial-" not in k}
        assert left == before, (sig, wait)
    assert killed >= 2
    report = built(tmp_path)  # the next report replaces it, and tidies what the kills left
    with Store.open(str(tmp_path)) as store:
        assert report.finished == len(store.finished_keys()) > len(m.cells) * 3 // 2
    assert [n for n in os.listdir(reports) if ".partial-" in n] == []
    assert _files(reports) != before


def test_run_says_in_one_line_that_its_report_failed(tmp_path, monkeypatch, capsys):
    import optbench.train

    def broken(*args, **kwargs):
        raise ValueError("no figure today\nsecond line")

    monkeypatch.setattr(optbench.train, "run_cell", helpers.run_cell)
    monkeypatch.setattr(document, "build", broken)
    config = tmp_path / "tiny.toml"
    config.write_text(helpers.TINY_TOML)
    assert main(["run", "--config", str(config), "--out", str(tmp_path / "o"), "--quiet"]) == 1
    last = capsys.readouterr().err.splitlines()[-1]
    assert last.startswith("the report failed (ValueError: no figure today); every cell is "
                           "stored in")


# -- what run prints -------------------------------------------------------------------------
def test_run_ends_with_the_ranking_and_counts_that_add_up(tmp_path, monkeypatch, capsys):
    import optbench.train

    monkeypatch.setattr(optbench.train, "run_cell", helpers.run_cell)
    config = tmp_path / "tiny.toml"
    config.write_text(helpers.TINY_TOML)
    assert main(["run", "--config", str(config), "--out", str(tmp_path / "o"), "--quiet",
                 "--no-report"]) == 0
    out, err = capsys.readouterr()
    assert "matrix tiny: 12 cells (tiers: defaults 4, tuned 12; 4 cells are in both tiers, " \
           "run once)" in err
    assert "NaN" not in out and "nan" not in out
    tail = out[out.index("ranking, " + D.SEEDS["tuned"]):]
    assert "ranking, " + D.SEEDS["defaults"] in tail and "tier tuned:" not in tail  # the end
    assert re.search(r"\n\s+1\s+(adam|sgd)\s", tail)
    assert main(["run", "quick", "--out", str(tmp_path / "q"), "--dry-run"]) == 0
    said = capsys.readouterr().err
    assert "36 cells (tiers: defaults 12, tuned 36; 12 cells are in both tiers, run once)" in said
    assert f"at most {len(plan.bound(mx.from_preset('quick').config))} in all" in said


def test_a_diverged_only_group_prints_a_dash_not_nan(tmp_path):
    m = mx.expand(helpers.toml(helpers.TINY_TOML))
    with Store.open(str(tmp_path)) as store:
        store.record_matrix(m)
        for cell in m.cells:
            r = helpers.run_cell(cell)
            if cell.optimizer == "sgd":  # every seed of every sgd cell diverges
                r = Result(cell, "diverged", steps_run=3, diverged_step=3, val_loss=math.nan,
                           val_metric=math.nan, test_loss=math.nan, test_metric=math.nan,
                           curves=r.curves, grad_profiles=r.grad_profiles, timings=r.timings)
            store.put(r)
        text = run.summary(store.frames(matrix=m.name), m)
    rows = [line.split() for line in text.splitlines() if " sgd " in line]
    # steps to solve and the test metric are a dash; the diverged count says why
    assert rows and all(r[-3] == r[-1] == "-" and r[-2] == "2" for r in rows), text
    assert "NaN" not in text and "nan" not in text


def test_after_a_resume_the_bar_counts_what_the_summary_counts(tmp_path):
    m = mx.expand(helpers.toml(helpers.TINY_TOML))
    fill(tmp_path, m, keep=5)  # an earlier, interrupted run
    out = io.StringIO()
    with Store.open(str(tmp_path)) as store:
        runner.execute(m, store, runner.Serial(), helpers.run_cell,
                       runner.Progress(out, bar=True))
        frames = store.frames(matrix=m.name)
    last = out.getvalue().split("\r")[-1]
    counts = Counter(frames.cells["outcome"])
    n = len(frames.members["key"].unique())  # the first wave and what its results added
    assert n > len(m.cells) and last.startswith(f"[{'#' * 24}] {n}/{n}")
    assert f"solved {counts['solved']}  diverged {counts['diverged']}" in last
    assert f"{counts['solved']} solved" in run.summary(frames, m)


def test_a_diverging_cell_without_clipping_prints_no_warning():
    from optbench.cell import Cell
    from optbench.train import run_cell

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = run_cell(Cell(task="adding", length=10, hidden=8, optimizer="sgd",
                          hparams={"lr": 1e4}, steps=50, eval_every=25, clip_norm=None))
    assert r.outcome == "diverged"
