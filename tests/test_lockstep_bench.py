"""`python -m optbench kernels --section lockstep` (without torch: the tests never import
it): its rows on the CPU and, under the simulator, on "cuda", and its refusals."""

import json
from types import SimpleNamespace

import pytest

from optbench.cli import main
from optbench.lockstep.bench import bench_lockstep

TINY = ["--section", "lockstep", "--model", "lstm:4:3:2:2", "--repeat", "2", "--no-torch"]


def test_cpu_rows_time_lockstep_against_separate_models(capsys):
    assert main(["kernels", *TINY, "--lockstep-models", "1,3", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["lockstep"]
    assert [(r["device"], r["K"]) for r in rows] == [("cpu", 1), ("cpu", 3)]
    for r in rows:
        assert set(r["ms"]) == {"lockstep", "separate"} and r["samples"] == 2
        for side, ms in r["ms"].items():
            assert ms > 0 and r["seq_steps_per_s"][side] == pytest.approx(r["K"] * 2 / ms * 1e3)
        assert r["lockstep_speedup"]["separate"] == pytest.approx(
            r["ms"]["separate"] / r["ms"]["lockstep"])
        assert r["first_call_s"]["lockstep"] > 0 and not r["simulator"]


def test_text_names_the_sides(capsys):
    assert main(["kernels", *TINY, "--lockstep-models", "2"]) == 0
    out = capsys.readouterr().out
    assert "lockstep: K models of one shape" in out
    assert "lstm(4) T=3 B=2 I=2 K=2 cpu: lockstep" in out and "separate" in out


@pytest.mark.cuda
def test_cuda_rows_run_under_the_simulator_and_keep_torch_gpu_sides_for_a_gpu():
    # A torch whose CUDA looks available: its cuDNN and vmap sides are for a real GPU only,
    # so under the simulator they are left out (and the stand-in is never called).
    fake_torch = SimpleNamespace(cuda=SimpleNamespace(is_available=lambda: True))
    rows = bench_lockstep(("gru", 2, 2, 2, 1), ks=(1,), devices=("cuda",), repeat=1,
                          torch=fake_torch)
    assert [(r["device"], r["K"], r["simulator"]) for r in rows] == [("cuda", 1, True)]
    assert set(rows[0]["ms"]) == {"lockstep", "separate"}


@pytest.mark.parametrize("args, message", [
    (["--lockstep-models", "0"], "--lockstep-models '0': each must be between 1 and 4096"),
    (["--lockstep-models", "x"], "give model counts as integers"),
    (["--model", "lstm:4:3:2:2"], "the lockstep section times one --model shape at a time"),
])
def test_bad_lockstep_options_are_refused_in_one_line(capsys, args, message):
    assert main(["kernels", *TINY, *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


@pytest.mark.slow
@pytest.mark.cuda
def test_the_gpu_script_runs_its_lockstep_stages_under_the_simulator():
    """tools/gpu_check.py --lockstep --simulate: the lockstep CUDA tests, the kernels
    section on "cuda" and an end-to-end run of a tiny matrix on the engine all run, and
    the table says so (its timings mean nothing)."""
    import os
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "tools/gpu_check.py", "--lockstep", "--simulate"],
                         cwd=root, capture_output=True, text=True, timeout=900, check=False)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    table = out.stdout[out.stdout.index("=" * 78):]
    assert "lockstep engine   *** CUDA SIMULATOR: timings mean nothing ***" in table
    assert "passed" in table.split("lockstep cuda tests:")[1].splitlines()[0]
    assert "K=2 cuda (SIMULATOR: timings mean nothing): lockstep" in table
    assert "end to end: 2 of 2 cells in" in table and "(all done)" in table
    assert table.rstrip().splitlines()[-1].startswith("all stages ran")
