"""`python -m optbench kernels`: the report's shape and figures, and its refusals."""

import json

import pytest

from optbench.cli import main

SMALL = ["--sizes", "10,12", "--repeat", "2", "--bandwidth-size", "18", "--no-torch"]


def test_json_report_has_every_optimizer_backend_and_size(capsys):
    assert main(["kernels", "--json", "--optimizers", "adam,sgd", "--backends", "cpu,numpy",
                 *SMALL]) == 0
    report = json.loads(capsys.readouterr().out)
    bw = report["bandwidth"]
    assert bw["n"] == 2**18 and bw["update_GBps"] > 0 and bw["triad_GBps"] > 0
    rows = {(r["optimizer"], r["backend"], r["log2_size"]): r for r in report["rows"]}
    assert set(rows) == {(o, b, e) for o in ("adam", "sgd") for b in ("cpu", "numpy")
                         for e in (10, 12)}
    for (name, _, e), r in rows.items():
        assert r["params"] == 2**e
        assert r["bytes_per_param"] == {"adam": 28, "sgd": 12}[name]
        assert r["us_per_step"] >= r["min_us_per_step"] > 0
        assert r["Gparams_per_s"] == pytest.approx(r["params"] / r["us_per_step"] / 1e3)
        assert r["GBps"] == pytest.approx(r["Gparams_per_s"] * r["bytes_per_param"])
        assert r["share_of_bandwidth"] == pytest.approx(r["GBps"] / bw["update_GBps"])
        assert r["samples"] == 2 and r["steps_per_sample"] >= 1 and r["first_call_s"] > 0
        assert r["vs_torch_fused"] is None
    assert report["env"]["numba_threads"] >= 1


def test_text_report_names_its_units(capsys):
    assert main(["kernels", "--optimizers", "lion", *SMALL]) == 0
    out = capsys.readouterr().out
    assert "memory bandwidth" in out and "us/step" in out and "Gparam/s" in out
    assert out.count("lion      cpu") == 2


@pytest.mark.parametrize("args,message", [
    (["--optimizers", "adam,adan"], "unknown optimizer 'adan'; choose one of: sgd"),
    (["--backends", "gpu"], "unknown backend 'gpu'"),
    (["--sizes", "3"], "--sizes '3': each must be between 4 and 30"),
    (["--sizes", "ten"], "give powers of two as integers"),
    (["--repeat", "0"], "--repeat 0: must be at least 1"),
    (["--bandwidth-size", "40"], "--bandwidth-size 40: must be between 4 and 30"),
    (["--backends", "cuda"], "timings mean nothing"),  # under the CUDA simulator
])
def test_bad_options_are_refused_in_one_line(capsys, monkeypatch, args, message):
    monkeypatch.setenv("NUMBA_ENABLE_CUDASIM", "1")  # read per call; numba.cuda is imported once
    assert main(["kernels", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
