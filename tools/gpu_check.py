"""The optimizer kernels' GPU checks and benchmarks in one go, ending in one compact table; with
--lockstep, the lockstep engine's instead.

    python tools/gpu_check.py              # on a GPU machine, from the repository root: ~3-5 min
    python tools/gpu_check.py --simulate   # anywhere: NUMBA_ENABLE_CUDASIM=1, tiny sizes, a
                                           # subset of the tests: tries the plumbing only
    python tools/gpu_check.py --lockstep   # the lockstep engine on the card: under 10 min
    python tools/gpu_check.py --lockstep --simulate

--lockstep stages (each its own subprocess and time limit, 570 s in all):

L1. lockstep-tests  the lockstep CUDA tests on the card (the kernels against the CPU backend
           within the derived rounding bound, a group trained on "cuda").
L2. lockstep `python -m optbench kernels --section lockstep --backends cuda`: LSTM(64),
           T = 100, B = 32 at K = 1, 16, 64, 128, 256 models: the engine's kernels against
           K models one by one on the same kernels, cuDNN model by model and torch.func vmap
           over stacked models (when torch with CUDA is installed), CUDA events. Target:
           K = 128 at >= 10x cuDNN model by model.
L3. standard `python -m optbench run standard --engine lockstep --device cuda` into
           results/gpu_check_standard/ for what is left of the limit, then Ctrl-C; rerun
           the same command to go on (the store resumes; the elapsed time adds up in
           results/gpu_check_standard/elapsed.json). The table gives the cells done, the
           time so far and, until all are done, an upper bound for the whole run (the cells
           left at their full step budget, at the rate of the cells done). Target: the
           whole `standard` preset (1,890 cells) in under 30 minutes.

Stages, each a subprocess with its own time limit (a hang cannot eat the session):

1. tests   `pytest -m cuda` on the optimizer tests, on the GPU (tests/conftest.py turns the
           simulator on only where /dev/nvidiactl is missing).
2. sweep   Adam at 2^28 parameters for each CUDA launch shape (threads per block x elements
           per thread, optbench.optim.tuning), one (K, P) batched step of K = 64 seed-LSTM
           models per shape too, against the device-to-device copy bandwidth and
           torch.optim.Adam(fused=True) in the same process, CUDA events. This is the data
           for setting tuning.CUDA_THREADS_PER_BLOCK and CUDA_ELEMENTS_PER_THREAD.
3. kernels `python -m optbench kernels --backends cuda --sizes 28`: every optimizer, torch's
           fused and foreach steps beside it, the copy bandwidth in the same process.
4. batched `python -m optbench kernels --section batched --backends cpu,cuda`: K = 1, 8, 64
           models of the seed LSTM's size, one (K, P) step against K separate launches.

The table at the end names the card and checks the targets for Adam at 2^28: at least
1.05x torch's fused step and at least 90% of the copy bandwidth (28 bytes per parameter).

numpy: numba-cuda 0.30 fails to compile under numpy 2.5 (shared/gpu/README.md), and the GPU
machines have no package index. Put wheels for the machine's Python in .whl/ of the checkout
(ignored by git) and carry that folder; every wheel there is installed with pip --target
into a temporary folder that goes first on PYTHONPATH of every stage. For example, for
Python 3.12 and a machine without pytest:

    pip download --only-binary=:all: --python-version 3.12 --platform manylinux_2_28_x86_64 \\
        -d .whl 'numpy==2.4.*' pytest
"""

from __future__ import annotations

import argparse
import functools
import glob
import itertools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CUDA_TESTS = ["tests/test_optim.py", "tests/test_optim_clip.py", "tests/test_optim_batched.py"]

# Sizes and shapes of each stage, on a GPU (False) and under --simulate (True). The time
# limits add up to less than the 10 minutes a GPU session's command may run.
PLAN = {
    False: dict(log2=28, device_log2=28, repeat=10, threads=(128, 256, 512),
                per_thread=(1, 2, 4, 8), waves=(1, 4), sweep_models=64,
                batch_models="1,8,64", batch_params=None, optimizers=None,
                batched="adam,sgd,rmsprop", tests_k=None,
                limits=dict(tests=200, sweep=100, kernels=180, batched=100)),
    True: dict(log2=10, device_log2=12, repeat=2, threads=(16,), per_thread=(1, 2),
               waves=(1,), sweep_models=2, batch_models="1,2", batch_params=256,
               optimizers="adam,sgd", batched="adam",
               tests_k="matches_the_host or (equals_the_1d_cuda_kernel and adam)",
               limits=dict(tests=400, sweep=120, kernels=120, batched=120)),
}
# The --lockstep stages: the model shape and K of the benchmark, the matrix of the
# end-to-end run (a preset, or under --simulate a tiny TOML), the tests to run, the limits.
LOCKSTEP_TESTS = ["tests/test_lockstep_cuda.py"]
LOCKSTEP = {
    False: dict(model="lstm:64:100:32:2", models="1,16,64,128,256", repeat=10,
                matrix=["standard"], tests_k=None,
                limits={"lockstep-tests": 120, "lockstep": 150, "standard": 300}),
    True: dict(model="lstm:4:3:2:2", models="1,2", repeat=1, matrix=None,
               tests_k="lstm-last-mse",
               limits={"lockstep-tests": 300, "lockstep": 200, "standard": 300}),
}
STANDARD_OUT = ROOT / "results" / "gpu_check_standard"
SIMULATED_MATRIX = """
name = "gpu-check-tiny"
tasks = ["adding"]
lengths = [3]
hidden = [2]
optimizers = ["adam", "sgd"]
seeds = 1
steps = 2
eval_every = 1
batch_size = 2
tiers = ["defaults"]
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--simulate", action="store_true",
                        help="run under NUMBA_ENABLE_CUDASIM=1 at tiny sizes (plumbing only)")
    parser.add_argument("--lockstep", action="store_true",
                        help="the lockstep engine's stages instead (see the docstring)")
    parser.add_argument("--sweep", action="store_true", help=argparse.SUPPRESS)  # stage 2
    args = parser.parse_args()
    plan = PLAN[args.simulate]
    if args.sweep:
        print(json.dumps(sweep(plan)))
        return 0
    env = environment(args.simulate)
    if args.lockstep:
        return lockstep(env, args.simulate)
    results, failed = {}, []
    t0 = time.perf_counter()

    def stage(name, cmd, parse=None):
        start = time.perf_counter()
        try:
            out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                                 timeout=plan["limits"][name])
        except subprocess.TimeoutExpired as exc:
            failed.append(f"{name}: timed out after {plan['limits'][name]} s")
            print(f"[{name}] TIMEOUT\n{(exc.stdout or '')[-3000:]}", flush=True)
            return
        took = time.perf_counter() - start
        print(f"[{name}] exit {out.returncode} in {took:.0f} s", flush=True)
        if out.returncode:
            failed.append(f"{name}: exit {out.returncode}")
            print(out.stdout[-4000:] + out.stderr[-4000:], flush=True)
            return
        results[name] = parse(out.stdout) if parse else out.stdout

    tests = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "cuda",
             *CUDA_TESTS] + (["-k", plan["tests_k"]] if plan["tests_k"] else [])
    stage("tests", tests, lambda out: out.strip().splitlines()[-1])
    stage("sweep", [sys.executable, __file__, "--sweep"] + (["--simulate"] * args.simulate),
          json.loads)
    kernels = [sys.executable, "-m", "optbench", "kernels", "--json", "--repeat",
               str(plan["repeat"]), "--device-bandwidth-size", str(plan["device_log2"]),
               "--bandwidth-size", "20"] + (["--simulator"] * args.simulate)
    names = ["--optimizers", plan["optimizers"]] if plan["optimizers"] else []
    stage("kernels", kernels + ["--backends", "cuda", "--sizes", str(plan["log2"]), *names],
          json.loads)
    batch = ["--batch-models", plan["batch_models"]] + (
        ["--batch-params", str(plan["batch_params"])] if plan["batch_params"] else [])
    stage("batched", kernels + ["--section", "batched", "--optimizers", plan["batched"],
                                "--backends", "cpu,cuda", "--no-torch", *batch], json.loads)
    print(table(results, failed, args.simulate, time.perf_counter() - t0))
    return 1 if failed else 0


def lockstep(env: dict, simulate: bool) -> int:
    """The --lockstep stages (module docstring) and their table."""
    plan = LOCKSTEP[simulate]
    results, failed = {}, []
    t0 = time.perf_counter()

    def stage(name, cmd, parse=None):
        start = time.perf_counter()
        try:
            out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                                 timeout=plan["limits"][name], check=False)
        except subprocess.TimeoutExpired as exc:
            failed.append(f"{name}: timed out after {plan['limits'][name]} s")
            print(f"[{name}] TIMEOUT\n{(exc.stdout or '')[-3000:]}", flush=True)
            return
        print(f"[{name}] exit {out.returncode} in {time.perf_counter() - start:.0f} s",
              flush=True)
        if out.returncode:
            failed.append(f"{name}: exit {out.returncode}")
            print(out.stdout[-4000:] + out.stderr[-4000:], flush=True)
            return
        results[name] = parse(out.stdout) if parse else out.stdout

    tests = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *LOCKSTEP_TESTS]
    stage("lockstep-tests", tests + (["-k", plan["tests_k"]] if plan["tests_k"] else []),
          lambda out: out.strip().splitlines()[-1])
    stage("lockstep", [sys.executable, "-m", "optbench", "kernels", "--section", "lockstep",
                       "--backends", "cuda", "--model", plan["model"], "--lockstep-models",
                       plan["models"], "--repeat", str(plan["repeat"]), "--json"]
          + (["--simulator", "--no-torch"] if simulate else []), json.loads)
    try:
        results["standard"] = standard(env, plan, simulate)
    except (RuntimeError, OSError, ValueError, subprocess.SubprocessError) as exc:
        failed.append(f"standard: {type(exc).__name__}: {exc}")  # the table still comes out
    print(lockstep_table(results, failed, simulate, time.perf_counter() - t0))
    return 1 if failed else 0


def standard(env: dict, plan: dict, simulate: bool) -> dict:
    """Stage L3: run the matrix on the lockstep engine for at most the stage's limit (then
    Ctrl-C: the store keeps every finished cell), and sum up the store."""
    import signal

    out = STANDARD_OUT.with_name("gpu_check_simulated") if simulate else STANDARD_OUT
    if simulate:  # plumbing only: start afresh each time
        shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    matrix = plan["matrix"]
    if matrix is None:
        config = out / "tiny.toml"
        config.write_text(SIMULATED_MATRIX)
        matrix = ["--config", str(config)]
    cmd = [sys.executable, "-m", "optbench", "run", *matrix, "--engine", "lockstep",
           "--device", "cuda", "--out", str(out), "--quiet", "--no-report"]
    limit = plan["limits"]["standard"]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        _, stderr = proc.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=120)
    seconds = time.perf_counter() - start
    print(f"[standard] exit {proc.returncode} after {seconds:.0f} s", flush=True)
    if proc.returncode not in (0, 130):
        raise RuntimeError(f"run exited {proc.returncode}: {stderr[-2000:]}")
    ledger = out / "elapsed.json"
    past = json.loads(ledger.read_text()) if ledger.exists() else {"seconds": 0.0, "runs": 0}
    past = {"seconds": past["seconds"] + seconds, "runs": past["runs"] + 1}
    ledger.write_text(json.dumps(past))
    return {**past, **summarize(out, matrix), "this_run_s": seconds}


def summarize(directory, matrix) -> dict:
    """Cells done and, for the rest, an upper bound of their time: their full step budgets
    times their sequence lengths, at the seconds per (step x time step) of the cells done
    (each cell's `total_s`: its share of its group's time)."""
    from optbench import matrix as mx
    from optbench import tasks
    from optbench.store import load

    m = mx.from_preset(matrix[0]) if matrix[0] != "--config" else mx.from_toml(matrix[1])
    cells = load(str(directory), m.name).cells
    done = cells[cells["outcome"].notna()]
    todo = [c for c in m.cells if c.key not in set(done["key"])]

    def steps_of(task, length):
        return tasks.get(task).steps(int(length))

    work_done = sum(r.steps_run * steps_of(r.task, r.length) for r in done.itertuples())
    spent = float(done["total_s"].sum())
    left = sum(c.steps * steps_of(c.task, c.length) for c in todo)
    rate = spent / work_done if work_done else None
    return {"cells": len(m.cells), "done": len(done), "cells_s": spent,
            "left_upper_s": None if rate is None else rate * left,
            "outcomes": done["outcome"].value_counts().to_dict()}


def lockstep_table(results: dict, failed: list, simulate: bool, seconds: float) -> str:
    lines = ["", "=" * 78, "lockstep engine" + ("   *** CUDA SIMULATOR: timings mean nothing ***"
                                                if simulate else "")]
    lines.append(f"lockstep cuda tests: {results.get('lockstep-tests', 'not run')}")
    rows = (results.get("lockstep") or {}).get("lockstep") or []
    if rows:
        from optbench.lockstep.bench import format_rows

        lines += ["", *format_rows(rows)]
        target = next((r for r in rows if r["K"] == 128), None)
        if target is not None:
            vs = target["lockstep_speedup"].get("cudnn")
            lines.append("target, K = 128: >= 10x cuDNN model by model: "
                         + ("no torch on the GPU" if vs is None
                            else f"{vs:.1f}x {'PASS' if vs >= 10 else 'FAIL'}"))
    st = results.get("standard")
    if st:
        if st["done"] == st["cells"]:
            state = "all done"
        elif st["left_upper_s"] is None:
            state = "no cell done yet"
        else:
            bound = (st["seconds"] + st["left_upper_s"]) / 60
            state = f"upper bound for the whole run {bound:.0f} min"
        lines += ["", (f"end to end: {st['done']} of {st['cells']} cells in {st['seconds']:.0f} s "
                       f"over {st['runs']} run(s) ({state}); outcomes {st['outcomes']}")]
        if st["done"] == st["cells"] and not simulate:
            lines.append(f"target: the whole matrix in under 30 min: {st['seconds'] / 60:.1f} min "
                         f"{'PASS' if st['seconds'] < 1800 else 'FAIL'}")
        elif st["done"] < st["cells"]:
            lines.append("rerun `python tools/gpu_check.py --lockstep` to go on (the store "
                         "resumes)")
    status = "FAILED: " + "; ".join(failed) if failed else "all stages ran"
    lines += ["", f"{status} ({seconds:.0f} s)"]
    return "\n".join(lines)


def environment(simulate: bool) -> dict:
    """The stages' environment: the simulator on or off, wheels from .whl/ first on the path."""
    env = dict(os.environ)
    env.pop("NUMBA_ENABLE_CUDASIM", None)
    if simulate:
        env["NUMBA_ENABLE_CUDASIM"] = "1"
    wheels = sorted(glob.glob(str(ROOT / ".whl" / "*.whl")))
    paths = [str(ROOT)]
    if wheels:
        target = tempfile.mkdtemp(prefix="optbench-wheels-")
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index",
                        "--target", target, *wheels], check=True)
        paths.insert(0, target)
        print(f"installed {len(wheels)} wheel(s) from .whl/ into {target}", flush=True)
    env["PYTHONPATH"] = os.pathsep.join(paths + [p for p in [env.get("PYTHONPATH")] if p])
    check = subprocess.run([sys.executable, "-c", "import numpy; print(numpy.__version__)"],
                           env=env, capture_output=True, text=True)
    version = check.stdout.strip()
    print(f"python {sys.version.split()[0]}, numpy {version}", flush=True)
    if tuple(int(x) for x in version.split(".")[:2]) >= (2, 5):
        sys.exit(f"numpy {version}: numba-cuda 0.30 needs numpy < 2.5; put a numpy 2.4 wheel "
                 f"for Python {sys.version_info[0]}.{sys.version_info[1]} in .whl/ (see "
                 "this script's docstring) and carry it")
    return env


def sweep(plan) -> dict:
    """Stage 2, in its own process: Adam's 1-D and batched steps per launch shape."""
    import numpy as np
    from numba import cuda

    from optbench import bandwidth, optim
    from optbench.kernels import seed_lstm_params
    from optbench.optim import tuning

    n, k = 1 << plan["log2"], plan["sweep_models"]
    size = plan["batch_params"] or seed_lstm_params()
    copy = bandwidth.measure_device(1 << plan["device_log2"], plan["repeat"])
    rng = np.random.default_rng(0)
    p, g = (cuda.to_device(rng.standard_normal(n, dtype=np.float32)) for _ in range(2))
    pk, gk = (cuda.to_device(rng.standard_normal((k, size), dtype=np.float32))
              for _ in range(2))

    def timed(step, params):
        step()  # compile or cache load
        t = statistics.median(bandwidth.device_seconds(step, 5) / 5
                              for _ in range(plan["repeat"]))
        return {"Gparams_per_s": params / t / 1e9,
                "share_of_copy": 28 * params / t / 1e9 / copy["copy_GBps"]}

    rows = []
    for threads, per_thread, waves in itertools.product(plan["threads"], plan["per_thread"],
                                                        plan["waves"]):
        tuning.CUDA_THREADS_PER_BLOCK = threads
        tuning.CUDA_ELEMENTS_PER_THREAD, tuning.CUDA_WAVES = per_thread, waves
        opt = optim.create("adam", backend="cuda")
        state = opt.init(p)
        row = {"threads": threads, "per_thread": per_thread, "waves": waves,
               **timed(functools.partial(opt.step, p, g, state), n), "grid": _grid(opt)}
        batched = optim.create("adam", backend="cuda", lr=np.full(k, 1e-3))
        bstate = batched.init(pk)
        row["batched"] = timed(functools.partial(batched.step, pk, gk, bstate), k * size)
        rows.append(row)
    out = {"copy": copy, "rows": rows, "params": n, "models": k, "model_params": size}
    try:
        import torch
    except ImportError:
        return out
    if torch.cuda.is_available():
        tp = torch.tensor(p.copy_to_host(), device="cuda")
        tp.grad = torch.tensor(g.copy_to_host(), device="cuda")
        adam = torch.optim.Adam([tp], fused=True)
        adam.step()
        ts = []
        for _ in range(plan["repeat"]):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(5):
                adam.step()
            end.record()
            end.synchronize()
            ts.append(start.elapsed_time(end) / 5e3)
        t = statistics.median(ts)
        out["torch_fused"] = {"Gparams_per_s": n / t / 1e9,
                              "share_of_copy": 28 * n / t / 1e9 / copy["copy_GBps"]}
    return out


def _grid(opt) -> list:
    """The grid the optimizer's step launched with (its cached launch configuration; the
    simulator's kernels keep it as grid_dim)."""
    run = next(iter(opt._launchers.values()))
    return list(getattr(run, "griddim", None) or run.grid_dim)[:2]


def table(results: dict, failed: list, simulate: bool, seconds: float) -> str:
    lines = ["", "=" * 78]
    k = results.get("kernels") or {}
    device = (k.get("device_bandwidth") or results.get("sweep", {}).get("copy") or {})
    lines.append(f"card: {device.get('device', '?')}" + ("   *** CUDA SIMULATOR: timings "
                                                         "mean nothing ***" if simulate else ""))
    if device:
        lines.append(f"device-to-device copy: {device['copy_GBps']:.0f} GB/s (2^"
                     f"{device['n'].bit_length() - 1} float32, read + write)")
    lines.append(f"cuda tests: {results.get('tests', 'not run')}")
    s = results.get("sweep")
    if s:
        torch_g = s.get("torch_fused", {}).get("Gparams_per_s")
        lines += ["", f"launch sweep, Adam at 2^{s['params'].bit_length() - 1} (Gparam/s, "
                  f"% of copy) and batched K={s['models']} x P={s['model_params']}"
                  + (f"; torch fused {torch_g:.1f} Gparam/s" if torch_g else "; no torch cuda"),
                  f"{'threads':>7} {'elems':>5} {'waves':>5} {'grid':>12} {'Gparam/s':>9} "
                  f"{'%copy':>6} {'vs torch':>8} {'batched G/s':>11}"]
        for r in s["rows"]:
            vs = f"{r['Gparams_per_s'] / torch_g:.2f}x" if torch_g else "-"
            lines.append(f"{r['threads']:7d} {r['per_thread']:5d} {r['waves']:5d} "
                         f"{str(r['grid']):>12} "
                         f"{r['Gparams_per_s']:9.1f} {100 * r['share_of_copy']:5.0f}% {vs:>8} "
                         f"{r['batched']['Gparams_per_s']:11.2f}")
    if k.get("rows"):
        lines += ["", f"kernels at 2^{k['rows'][0]['log2_size']} (CUDA events; defaults of "
                  "optbench.optim.tuning)",
                  f"{'optimizer':9} {'backend':17} {'Gparam/s':>9} {'%copy':>6} {'vs fused':>8}"]
        for r in k["rows"]:
            vs = f"{r['vs_torch_fused']:.2f}x" if r["vs_torch_fused"] is not None else "-"
            lines.append(f"{r['optimizer']:9} {r['backend']:17} {r['Gparams_per_s']:9.1f} "
                         f"{100 * r['share_of_bandwidth']:5.0f}% {vs:>8}")
        adam = next((r for r in k["rows"] if r["optimizer"] == "adam" and r["backend"] == "cuda"),
                    None)
        if adam:
            vs = adam["vs_torch_fused"]
            lines.append(
                "targets, Adam: >= 1.05x torch fused: "
                + ("no torch" if vs is None else f"{vs:.2f}x {'PASS' if vs >= 1.05 else 'FAIL'}")
                + f"; >= 90% of copy: {100 * adam['share_of_bandwidth']:.0f}% "
                + ("PASS" if adam["share_of_bandwidth"] >= 0.9 else "FAIL"))
    b = results.get("batched")
    if b:
        lines += ["", "batched (K, P) step vs K separate launches (median us per step of all K)",
                  f"{'optimizer':9} {'backend':7} {'K':>4} {'P':>7} {'batched us':>10} "
                  f"{'separate us':>11} {'speedup':>8}"]
        for r in b["batched"]:
            lines.append(f"{r['optimizer']:9} {r['backend']:7} {r['models']:4d} {r['params']:7d} "
                         f"{r['us_batched']:10.1f} {r['us_separate']:11.1f} {r['speedup']:7.2f}x")
    lines.append("")
    lines.append(f"{'FAILED: ' + '; '.join(failed) if failed else 'all stages ran'} "
                 f"({seconds:.0f} s)")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
