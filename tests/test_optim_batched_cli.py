"""`python -m optbench kernels --section batched` (K models in one step against K separate
steps) and the CUDA plumbing of the kernels report, under the simulator; and the GPU script
tools/gpu_check.py, whose table is built from those reports."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from optbench.cli import main
from optbench.kernels import seed_lstm_params
from optbench.optim import tuning

ROOT = Path(__file__).resolve().parent.parent
SMALL = ["--repeat", "2", "--bandwidth-size", "16", "--no-torch", "--json"]


def test_batched_section_rows_and_figures(capsys):
    assert main(["kernels", "--section", "batched", "--optimizers", "adam,sgd", "--backends",
                 "cpu", "--batch-models", "1,3", "--batch-params", "300", *SMALL]) == 0
    report = json.loads(capsys.readouterr().out)
    bw = report["bandwidth"]["update_GBps"]
    rows = {(r["optimizer"], r["models"]): r for r in report["batched"]}
    assert set(rows) == {(o, k) for o in ("adam", "sgd") for k in (1, 3)}
    for (name, k), r in rows.items():
        assert r["backend"] == "cpu" and r["params"] == 300 and r["samples"] == 2
        assert r["speedup"] == pytest.approx(r["us_separate"] / r["us_batched"])
        assert r["Gparams_per_s"] == pytest.approx(k * 300 / r["us_batched"] / 1e3)
        bytes_per_param = {"adam": 28, "sgd": 12}[name]
        assert r["share_of_bandwidth"] == pytest.approx(
            r["Gparams_per_s"] * bytes_per_param / bw)
        assert r["first_call_s"] > 0 and r["first_call_separate_s"] > 0
    assert "rows" not in report and "models" not in report


def test_the_default_size_is_the_seed_lstm():
    """torch.nn.LSTM's count, 4H(I + H) weights and two 4H biases, plus a linear head
    H -> 1: 67713 for the seed's I = 2, H = 128."""
    i, h = 2, 128
    assert seed_lstm_params() == 4 * h * (i + h) + 2 * 4 * h + h + 1 == 67713


@pytest.fixture
def tiny_cuda_grid(monkeypatch):
    monkeypatch.setattr(tuning, "CUDA_THREADS_PER_BLOCK", 16)
    monkeypatch.setattr(tuning, "CUDA_MAX_BLOCKS", 2)


@pytest.mark.cuda
def test_cuda_rows_under_the_simulator_on_request(capsys, tiny_cuda_grid):
    """--simulator: the whole CUDA path of the report runs (device copy, events clock,
    batched rows); the text says the timings mean nothing."""
    assert main(["kernels", "--section", "all", "--optimizers", "adam", "--backends", "cuda",
                 "--sizes", "6", "--batch-models", "1,2", "--batch-params", "40",
                 "--device-bandwidth-size", "8", "--simulator", "--model", "rnn:4:3:2:1",
                 *SMALL]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["env"]["cuda_simulator"] is True
    copy = report["device_bandwidth"]
    assert copy["device"] == "CUDA simulator" and copy["n"] == 2**8
    (row,) = report["rows"]
    assert row["backend"] == "cuda" and row["params"] == 64
    assert row["share_of_bandwidth"] == pytest.approx(row["GBps"] / copy["copy_GBps"])
    assert [(r["backend"], r["models"]) for r in report["batched"]] == [("cuda", 1), ("cuda", 2)]
    assert main(["kernels", "--section", "batched", "--optimizers", "sgd", "--backends", "cuda",
                 "--batch-models", "2", "--batch-params", "8", "--device-bandwidth-size", "8",
                 "--simulator", "--repeat", "1", "--no-torch"]) == 0
    assert "CUDA SIMULATOR" in capsys.readouterr().out


@pytest.mark.parametrize("args,message", [
    (["--batch-models", "0"], "--batch-models '0': each must be between 1 and 4096"),
    (["--batch-models", "eight"], "give model counts as integers"),
    (["--batch-params", "0"], "--batch-params 0: must be between 1 and"),
    (["--device-bandwidth-size", "31"], "--device-bandwidth-size 31: must be between 4 and 30"),
    (["--backends", "cuda"], "pass --simulator to try the plumbing"),
])
def test_bad_batched_options_are_refused_in_one_line(capsys, monkeypatch, args, message):
    monkeypatch.setenv("NUMBA_ENABLE_CUDASIM", "1")
    assert main(["kernels", "--section", "batched", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


@pytest.mark.slow
@pytest.mark.cuda
def test_the_gpu_script_runs_every_stage_under_the_simulator():
    """tools/gpu_check.py --simulate: tests, sweep, kernels and batched stages all run and
    the table names the simulator (its timings mean nothing)."""
    out = subprocess.run([sys.executable, "tools/gpu_check.py", "--simulate"], cwd=ROOT,
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    table = out.stdout[out.stdout.index("=" * 78):]
    assert "card: CUDA simulator" in table and "timings mean nothing" in table
    assert "passed" in table.split("cuda tests:")[1].splitlines()[0]
    for heading in ("launch sweep, Adam", "kernels at 2^10", "targets, Adam",
                    "batched (K, P) step vs K separate launches"):
        assert heading in table
    assert table.rstrip().splitlines()[-1].startswith("all stages ran")
