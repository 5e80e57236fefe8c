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
