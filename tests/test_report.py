"""`optbench.report` and `python -m optbench report`.

The store is built by hand through the Store API: every Result is made up here with
known figures, and the learning rate that should win the tuning is planted by construction
(the one lr per group whose seeds solve), so that the expected tables are recomputed
independently, with numpy, from the Results written, not from what the report read.
"""

import contextlib
import io
import os
import json
import math
import re
import zlib

import numpy as np
import pandas as pd
import pytest

from optbench.cell import Result
from optbench.cli import main
from optbench.matrix import expand
from optbench.report import build
from optbench.report import data as D
from optbench.report.cli import summary
from optbench.store import Store

import helpers

CONFIG = dict(name="hand", tasks=["adding", "temporal_order_4"], lengths=[10, 20], hidden=[4],
              optimizers=["adam", "sgd"], seeds=3, steps=200, eval_every=50, batch_size=8,
              tuning={"lr_points": 3, "lr_decades": 2.0})
MATRIX = expand(CONFIG)
TASK_SECTION = {"tables-tuned", "tables-defaults", "success", "curves-steps", "curves-time", "lr", "grad-flow"}


def _crc(*parts) -> int:
    return zlib.crc32(repr(parts).encode())


def best_lr(cell) -> float:
    """The lr planted to win (pick_lr's rule) for the cell's (task, length, optimizer)."""
    grid = [o["lr_grid"] for o in MATRIX.config["optimizers"] if o["name"] == cell.optimizer][0]
    return grid[_crc(cell.task, cell.length, cell.optimizer) % len(grid)]


def fake_result(cell) -> Result:
    """A Result with known figures: at the planted lr the seeds solve (seed 2 diverges in half
    the groups); elsewhere they run out of budget short of the threshold."""
    rng = np.random.default_rng(_crc(cell.key))
    higher = cell.task != "adding"
    at_best = cell.lr == best_lr(cell)
    diverge = at_best and cell.seed == 2 and _crc(cell.task, cell.length, cell.optimizer) % 2
    if diverge:
        outcome, steps_run, val = "diverged", 100, math.nan
    elif at_best:
        outcome, steps_run = "solved", 50 * int(rng.integers(1, 4))
        val = 0.995 if higher else 0.005
    else:
        outcome, steps_run = "budget", cell.steps
        val = float(rng.uniform(0.3, 0.8) if higher else rng.uniform(0.05, 0.15))
    test = float(rng.uniform(0.99, 1.0) if at_best and higher else rng.uniform(0.002, 0.009)
                 if at_best else rng.uniform(0.3, 0.8) if higher else rng.uniform(0.05, 0.15))
    start = 0.25 if higher else 0.6
    steps = list(range(0, steps_run + 1, cell.eval_every))
    values = np.linspace(start, 0.5 if math.isnan(val) else val, len(steps))
    curves = [{"step": s, "train_loss": None if s == 0 else float(v), "val_loss": float(v),
               "val_metric": float(v), "grad_norm": None if s == 0 else 1.0, "train_s": s * 1e-3,
               "wall_s": s * 1.1e-3} for s, v in zip(steps, values)]
    length = cell.length
    profiles = [{"step": s, "norms": [float(0.5 ** ((length - 1 - t) / (1 + s / 50)))
                                      for t in range(length)]}
                for s in sorted({1, 50, 100, 150, steps_run}) if s <= steps_run]
    return Result(
        cell=cell, outcome=outcome, steps_run=steps_run,
        steps_to_solve=steps_run if outcome == "solved" else None,
        seconds_to_solve=steps_run * 1e-3 if outcome == "solved" else None,
        diverged_step=steps_run if diverge else None,
        val_loss=val, val_metric=val, test_loss=test, test_metric=test,
        curves=curves, grad_profiles=profiles,
        timings={"compile_s": 0.1, "train_s": steps_run * 1e-3, "eval_s": 0.01, "total_s": 0.2},
        env={"cpu": "test cpu", "numba_threads": 2, "python": "3.x"},
    )


def make_store(directory, keep=lambda cell: True) -> list[Result]:
    results = [fake_result(c) for c in MATRIX.cells if keep(c)]
    with Store.open(str(directory)) as store:
        store.record_matrix(MATRIX)
        for r in results:
            store.put(r)
    return results


def expected_table(results, tier: str) -> pd.DataFrame:
    """The tier's table recomputed from the Results with numpy, the winning lr as planted."""
    keys = {c.key for c, t in MATRIX.members if t == tier}
    rows = []
    groups = {}
    for r in results:
        if r.key in keys:
            groups.setdefault((r.cell.task, r.cell.length, r.cell.optimizer), []).append(r)
    for (task, length, optimizer), rs in groups.items():
        lr = best_lr(rs[0].cell) if tier == "tuned" else rs[0].cell.lr  # defaults: one lr
        at = [r for r in rs if r.cell.lr == lr]
        ok = np.array([r.test_metric for r in at if r.outcome != "diverged"])
        solved = [r for r in at if r.outcome == "solved"]
        rows.append({
            "task": task, "length": length, "entrant": optimizer, "lr": lr,
            "seeds": len(at), "solved": len(solved),
            "diverged": sum(r.outcome == "diverged" for r in at),
            "test_median": np.median(ok), "test_q25": np.percentile(ok, 25),
            "test_q75": np.percentile(ok, 75),
            "steps_median": np.median([r.steps_to_solve for r in solved]) if solved else np.nan,
            "seconds_median": np.median([r.seconds_to_solve for r in solved]) if solved
            else np.nan,
        })
    return pd.DataFrame(rows).sort_values(["task", "length", "entrant"]).reset_index(drop=True)


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    """A complete hand-built store, a real kernel benchmark beside it, and its report (built
    once for the module)."""
    directory = tmp_path_factory.mktemp("full")
    results = make_store(directory)
    with contextlib.redirect_stdout(io.StringIO()) as out:
        assert main(["kernels", "--json", "--optimizers", "adam,sgd", "--sizes", "10,12",
                     "--repeat", "1", "--bandwidth-size", "16", "--no-torch"]) == 0
    (directory / "kernels.json").write_text(out.getvalue())
    report = build(str(directory), out=str(directory / "out" / "hand.pdf"))
    return directory, results, report


def _pdf_pages(path) -> int:
    with open(path, "rb") as f:
        return len(re.findall(rb"/Type\s*/Page\b", f.read()))


# -- tables --------------------------------------------------------------------------------
@pytest.mark.parametrize("tier", ["tuned", "defaults"])
def test_tables_equal_what_the_store_holds(full, tier):
    directory, results, report = full
    expected = expected_table(results, tier)
    if tier == "tuned":  # the planted figures hold both kinds
        assert expected["diverged"].sum() > 0 and (expected["solved"] > 0).any()
    else:  # and the tiers differ
        assert (expected["lr"] != expected_table(results, "tuned")["lr"]).any()
    written = pd.read_csv(directory / "out" / "hand" / "tables" / f"{tier}.csv")
    computed = D.problem_table(D.load(str(directory)), tier)
    for table in (written, computed):
        table = table.sort_values(["task", "length", "entrant"]).reset_index(drop=True)
        pd.testing.assert_frame_equal(table[expected.columns], expected, check_dtype=False,
                                      rtol=1e-12)
        assert (table["seeds_planned"] == 3).all() and (table["lrs"] == table["lrs_planned"]).all()
        assert np.allclose(table["baseline"], [1 / 6 if t == "adding" else 0.25
                                               for t in table["task"]])


def test_markdown_and_latex_carry_every_problem_and_the_baseline(full):
    directory, _, _ = full
    tables = directory / "out" / "hand" / "tables"
    md, tex = (tables / "tuned.md").read_text(), (tables / "tuned.tex").read_text()
    for task in CONFIG["tasks"]:
        for length in CONFIG["lengths"]:
            assert f"## {task} T={length}, lstm(4)" in md
            assert f"{task.replace('_', chr(92) + '_')} T={length}, lstm(4)" in tex
    assert md.count("| memoryless baseline |") == 4 and tex.count(r"\begin{tabular}") == 4
    assert "*" not in md  # complete: nothing marked as based on fewer cells than planned


def test_ranking_and_profile_by_hand():
    table = pd.DataFrame({
        "task": ["a"] * 3 + ["b"] * 3, "length": 10, "model": "lstm", "hidden": 4,
        "entrant": ["x", "y", "z"] * 2,
        "cost": [100.0, 200.0, math.inf, math.inf, 300.0, 150.0],
        "test_median": [0.1, 0.2, 0.5, 0.4, 0.3, 0.2], "higher_is_better": False,
    })
    profile = D.performance_profile(table).set_index("entrant")
    assert list(profile["ratio"]) == [1.0, 2.0, math.inf, math.inf, 2.0, 1.0]
    ranking = D.ranking(table).set_index("entrant")
    # score: area under rho(tau) on [1, 4] / 3, integrated numerically from the step function
    curves = D.profile_curves(D.performance_profile(table))
    tau = np.linspace(1, D.TAU_MAX, 300001)
    for entrant, c in curves.groupby("entrant"):
        rho = c["rho"].to_numpy()[np.searchsorted(c["tau"].to_numpy(), tau, side="right") - 1]
        assert ranking.loc[entrant, "score"] == pytest.approx(
            np.trapezoid(rho, tau) / (D.TAU_MAX - 1), abs=1e-4)
    assert ranking.loc["x", "score"] == pytest.approx((3 - 0) / 2 / 3)  # (4-1)/(2*3)
    assert ranking.loc["y", "score"] == pytest.approx((2 + 2) / 2 / 3)
    # ranks: a: x 1, y 2, z 3 (unsolved); b: z 1, y 2, x 3 (unsolved)
    assert ranking["mean_rank"].to_dict() == {"x": 2.0, "y": 2.0, "z": 2.0}
    assert list(ranking.index) == ["y", "x", "z"]  # by score: y 0.667, x 0.5, z 0.5
    assert ranking.loc["z", "solved"] == 1 and ranking.loc["y", "solved"] == 2


def test_ties_share_a_rank_and_nobody_solving_scores_zero():
    table = pd.DataFrame({"task": "a", "length": 10, "model": "lstm", "hidden": 4,
                          "entrant": ["x", "y", "z"], "cost": [math.inf] * 3,
                          "test_median": [0.1, 0.1, math.nan], "higher_is_better": False})
    ranking = D.ranking(table).set_index("entrant")
    assert (ranking["score"] == 0).all()
    assert ranking["mean_rank"].to_dict() == {"x": 1.5, "y": 1.5, "z": 3.0}


def test_learning_curves_carry_solved_runs_and_count_diverged_as_worst(full):
    directory, results, _ = full
    curves = D.learning_curves(D.load(str(directory)))
    for (task, length, opt), g in curves.groupby(["task", "length", "entrant"]):
        at = [r for r in results if (r.cell.task, r.cell.length, r.cell.optimizer) == (
            task, length, opt) and r.cell.lr == best_lr(r.cell)]
        step = g["step"].max()
        last = sorted(
            (r.val_metric if r.outcome == "solved" else
             (-math.inf if task != "adding" else math.inf)) for r in at)
        assert step == max(r.steps_run for r in at)
        assert g.loc[g["step"] == step, "median"].item() == last[1]  # 3 seeds: the middle one


def test_grad_flow_points(full):
    directory, results, _ = full
    flow = D.grad_flow(D.load(str(directory)))
    # budget 200: scheduled points at steps 1, 50, 100, 150; plus each run's last step
    points = flow.groupby("point")["step"].median().to_dict()
    assert {p: points[p] for p in ("step 1", "25% of budget", "50% of budget",
                                   "75% of budget")} == {"step 1": 1, "25% of budget": 50,
                                                         "50% of budget": 100,
                                                         "75% of budget": 150}
    one = flow[(flow["task"] == "adding") & (flow["length"] == 10) & (flow["entrant"] == "adam")
               & (flow["point"] == "step 1")]
    assert np.allclose(one["norm"], [0.5 ** ((9 - t) / (1 + 1 / 50)) for t in range(10)])


# -- the PDF ---------------------------------------------------------------------------------
def test_pdf_has_the_planned_pages_and_every_section_its_figures(full):
    _, _, report = full
    pages = report.pages
    assert _pdf_pages(report.pdf) == len(pages)
    assert [(p.section, p.kind) for p in pages[:3]] == [
        ("title", "title"), ("summary", "ranking"), ("summary", "profiles")]
    for task in CONFIG["tasks"]:
        section = [p for p in pages if p.section == task]
        assert {p.kind for p in section} == TASK_SECTION
        assert sum(p.kind == "grad-flow" for p in section) == len(CONFIG["lengths"])
        for p in section:
            assert p.caption.strip()  # every page says what it shows and how to read it
    figures = [p for p in pages if p.png]
    assert len(report.figures) == len(figures) and all(
        f.endswith(".png") and open(f, "rb").read(4) == b"\x89PNG" for f in report.figures)
    assert report.complete and report.missing.empty
    # DIR/kernels.json, written by `kernels --json`, is read by default: its page comes last
    assert (pages[-1].section, pages[-1].kind) == ("kernels", "kernels")
    assert report.figures[-1].endswith("kernels.png")


# -- incomplete, empty, missing --------------------------------------------------------------
def test_partial_store_gives_a_partial_report_that_says_what_is_missing(tmp_path):
    # seed 2 has not run yet, adding at T=20 has not started, temporal_order_4 neither
    keep = lambda c: c.seed < 2 and c.task == "adding" and c.length == 10  # noqa: E731
    results = make_store(tmp_path, keep)
    report = build(str(tmp_path))
    planned = len(MATRIX.cells)
    assert report.pdf == str(tmp_path / "reports" / "hand.pdf")  # the default place
    assert not report.complete and _pdf_pages(report.pdf) == len(report.pages)
    assert f"PARTIAL: {planned - len(results)} of {planned} cells missing" in summary(report)
    missing = pd.read_csv(tmp_path / "reports" / "hand" / "tables" / "missing.csv")
    assert missing["missing"].sum() == planned - len(results)
    assert set(zip(missing.loc[missing["finished"] == 0, "task"],
                   missing.loc[missing["finished"] == 0, "length"])) == {
        ("adding", 20), ("temporal_order_4", 10), ("temporal_order_4", 20)}
    md = (tmp_path / "reports" / "hand" / "tables" / "tuned.md").read_text()
    assert md.count("## ") == 1 and "adam* |" in md and "sgd* |" in md
    # the finished task has its whole section; the task with nothing finished has none
    assert {p.kind for p in report.pages if p.section == "adding"} == TASK_SECTION
    assert "temporal_order_4" not in {p.section for p in report.pages}


@pytest.mark.parametrize("setup, args, message", [
    ("none", [], "no results store in"),
    ("planned", [], "matrix 'hand' in {d}: 0 of 72 cells finished yet; nothing to report"),
    ("full", ["--matrix", "other"], "no matrix 'other' in"),
    ("full", ["--out", "{d}/r.png"], "the report is a PDF; give a path ending in .pdf"),
    ("full", ["--kernels", "{d}/nowhere.json"], "kernel results '{d}/nowhere.json': cannot read"),
    ("badkernels", [], "expected the JSON of `python -m optbench kernels --json`"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, setup, args, message):
    d = str(tmp_path)
    if setup == "planned":
        with Store.open(d) as store:
            store.record_matrix(MATRIX)
    elif setup in ("full", "badkernels"):
        make_store(tmp_path, keep=lambda c: c.seed == 0)
    if setup == "badkernels":
        (tmp_path / "kernels.json").write_text(json.dumps({"rows": [{"optimizer": "adam"}]}))
    assert main(["report", d, *[a.format(d=d) for a in args]]) == 2
    err = capsys.readouterr().err
    assert err.startswith("optbench report: error: ") and err.count("\n") == 1
    assert message.format(d=d) in err
    assert not (tmp_path / "reports").exists()  # refused before any work


def test_a_report_never_replaces_a_folder_that_is_not_a_reports(tmp_path, capsys):
    """`--out DIR.pdf` beside the results directory DIR: the report's folder would be DIR,
    which holds the store; refused, and the store is untouched. A report's own folder is
    replaced as before."""
    results = tmp_path / "results"
    make_store(results, keep=lambda c: c.seed == 0)
    before = (results / "optbench.sqlite").read_bytes()
    assert main(["report", str(results), "--out", str(tmp_path / "results.pdf")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is not a report's folder (it would be replaced)" in err
    assert (results / "optbench.sqlite").read_bytes() == before
    assert not (tmp_path / "results.pdf").exists()
    out = str(tmp_path / "mine.pdf")
    assert main(["report", str(results), "--out", out]) == 0
    assert main(["report", str(results), "--out", out]) == 0  # its own folder: replaced
    assert sorted(os.listdir(tmp_path / "mine")) == [".optbench-report", "figures", "tables"]


# -- the hook at the end of `run` ------------------------------------------------------------
def test_run_ends_with_the_report_unless_told_not_to(tmp_path, monkeypatch, capsys):
    import optbench.train

    monkeypatch.setattr(optbench.train, "run_cell", helpers.run_cell)  # fast stand-in
    config = tmp_path / "tiny.toml"
    config.write_text(helpers.TINY_TOML)
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(["run", "--config", str(config), "--out", str(a), "--quiet", "--no-report"]) == 0
    assert not (a / "reports").exists()
    assert main(["run", "--config", str(config), "--out", str(b), "--quiet"]) == 0
    assert (b / "reports" / "tiny.pdf").exists()
    assert f"report: {b}/reports/tiny.pdf" in capsys.readouterr().err


def test_ctrl_c_during_the_report_of_run_says_the_cells_are_stored(tmp_path, monkeypatch,
                                                                    capsys):
    import optbench.report.document
    import optbench.train

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(optbench.train, "run_cell", helpers.run_cell)
    monkeypatch.setattr(optbench.report.document, "build", interrupted)
    config = tmp_path / "tiny.toml"
    config.write_text(helpers.TINY_TOML)
    out = tmp_path / "out"
    assert main(["run", "--config", str(config), "--out", str(out), "--quiet"]) == 130
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"interrupted while writing the report; every cell is stored in {out}/: "
        f"python -m optbench report {out} writes it")


@pytest.mark.slow
def test_real_run_of_the_smoke_preset_and_its_report(tmp_path):
    """End to end with the real training loop: `run smoke`, then its report."""
    assert main(["run", "smoke", "--out", str(tmp_path), "--quiet"]) == 0
    report = build(str(tmp_path), out=str(tmp_path / "smoke.pdf"))
    assert report.complete and _pdf_pages(report.pdf) == len(report.pages)
    kinds = {p.kind for p in report.pages if p.section == "adding"}
    assert kinds == TASK_SECTION | {"tables-confirm"}
