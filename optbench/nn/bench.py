"""Training-step benchmark of the recurrent models, side by side with PyTorch.

    python -m optbench.nn.bench                       # the default configurations
    python -m optbench.nn.bench --config lstm:128:100:32:2 --repeat 30 --json
    python -m optbench.nn.bench --start-times         # also: fresh processes, cold and warm cache

One step is what the training loop does: `loss_and_grad` (forward, BPTT, weight
gradients) and an Adam step on the flat parameter vector (optbench.optim, backend "cpu").
`numba_ms` runs it on Numba's threads, `serial_ms` on one thread (no parallel region
wakes another thread). The PyTorch column is nn.LSTM / nn.GRU / nn.RNN (batch_first) +
nn.Linear + torch.optim.Adam, MSE on the last step, with as many threads as Numba uses.
All run in this process, in rotating turns of TURN steps so that a noisy machine hits
them alike; the first step of a turn is not timed, because the previous turn's worker
threads spin for a while after their last task and would be counted against this one.
Figures are medians; `load` is the 1-minute load average when the row started (on a
shared machine the figures mean little without it). Compile time is kept out: each side runs
once before timing, and that first call is reported on its own (`compile_s`; loaded from
Numba's on-disk cache when `from_cache`). GFLOP/s counts the matrix products of the step
(`Model.flops`) and sits next to a large SGEMM timed in this process through the same BLAS.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numba
import numpy as np

from optbench import nn, optim
from optbench.env import cpu_name
from optbench.errors import UsageError
from optbench.nn import names
from optbench.nn._gemm import gemm
from optbench.nn._jit import layout

# (model, H, T, B, I): the seed's configuration first, then a small and a large hidden size
# and the other two cells at the seed's size.
CONFIGS = (("lstm", 128, 100, 32, 2), ("lstm", 32, 100, 32, 2), ("lstm", 512, 100, 32, 2),
           ("gru", 128, 100, 32, 2), ("rnn", 128, 100, 32, 2))
TURN = 5
FIELDS = ("model", "H", "T", "B", "I", "numba_ms", "serial_ms", "torch_ms", "speedup",
          "gflops", "sgemm_gflops", "compile_s", "from_cache", "threads", "load")


def _ours(kind, H, T, B, I, rng):
    model = nn.build(kind, I, H, 1, seed=0)
    x = rng.standard_normal((B, T, I)).astype(np.float32)
    y = rng.standard_normal((B, 1)).astype(np.float32)
    adam = optim.create("adam", lr=1e-3, backend="cpu")
    state = adam.init(model.params)

    def step():
        adam.step(model.params, model.loss_and_grad(x, y)[1], state)

    return model, step


def _torch(kind, H, T, B, I, rng):
    import torch

    layer = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}[kind](
        I, H, batch_first=True)
    head = torch.nn.Linear(H, 1)
    params = list(layer.parameters()) + list(head.parameters())
    adam = torch.optim.Adam(params, lr=1e-3)
    x = torch.from_numpy(rng.standard_normal((B, T, I)).astype(np.float32))
    y = torch.from_numpy(rng.standard_normal((B, 1)).astype(np.float32))

    def step():
        for p in params:
            p.grad = None
        out, _ = layer(x)
        torch.nn.functional.mse_loss(head(out[:, -1]), y).backward()
        adam.step()

    return step


def sgemm_gflops(n: int = 2048, repeat: int = 3) -> float:
    """GFLOP/s of an n x n x n float32 product through the BLAS that Numba calls."""
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((2, n, n)).astype(np.float32)
    c = np.empty((n, n), np.float32)
    gemm(False, a, b, 0.0, c)
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        gemm(False, a, b, 0.0, c)
        times.append(time.perf_counter() - t)
    return 2 * n**3 / float(np.median(times)) / 1e9


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def bench_models(configs=CONFIGS, repeat: int = 20, with_torch: bool | None = None) -> list[dict]:
    """One row per (model, H, T, B, I) configuration; see the module docstring.

    with_torch: None = when torch is installed. Timings are medians of `repeat` steps.
    """
    if with_torch is None:
        try:
            import torch  # noqa: F401
        except ImportError:
            with_torch = False
        else:
            with_torch = True
    threads = numba.get_num_threads()
    if with_torch:
        import torch

        torch.set_num_threads(threads)
    sgemm = sgemm_gflops()
    rows = []
    for kind, H, T, B, I in configs:
        load = os.getloadavg()[0]
        rng = np.random.default_rng(0)
        model, ours = _ours(kind, H, T, B, I, rng)
        first = _timed(ours)
        sides = {"numba": ours}
        if threads > 1:
            sides["serial"] = _on_one_thread(ours)
        if with_torch:
            sides["torch"] = _torch(kind, H, T, B, I, rng)
        for name in list(sides)[1:]:
            sides[name]()  # warm up
        times = {name: [] for name in sides}
        order = list(sides)
        while len(times["numba"]) < repeat:
            for name in order:
                times[name].extend(_timed(sides[name]) for _ in range(TURN))
                del times[name][-TURN]  # the turn's first step
            order = order[1:] + order[:1]
        ms = {name: float(np.median(t)) * 1e3 for name, t in times.items()}
        stats = model.spec.forward.stats
        rows.append({
            "model": kind, "H": H, "T": T, "B": B, "I": I,
            "numba_ms": ms["numba"], "serial_ms": ms.get("serial"), "torch_ms": ms.get("torch"),
            "speedup": ms["torch"] / ms["numba"] if "torch" in ms else None,
            "gflops": model.flops(B, T) / ms["numba"] / 1e6, "sgemm_gflops": sgemm,
            "compile_s": max(0.0, first - ms["numba"] / 1e3),
            "from_cache": bool(stats.cache_hits) and not stats.cache_misses,
            "threads": threads, "load": load,
        })
    return rows


def _on_one_thread(step):
    def serial():
        before = numba.get_num_threads()
        numba.set_num_threads(1)
        try:
            step()
        finally:
            numba.set_num_threads(before)

    return serial


_START = """
import numpy as np
from optbench import nn, optim
model = nn.build({kind!r}, 2, 128, 1)
adam = optim.create("adam", backend="cpu")
grads = model.loss_and_grad(np.zeros((32, 100, 2), np.float32), np.zeros((32, 1), np.float32))[1]
adam.step(model.params, grads, adam.init(model.params))
"""


def start_times(kind: str = "lstm", warm_runs: int = 2) -> dict:
    """Seconds for a fresh Python process to import optbench, build a model and take one
    training step (loss_and_grad + Adam) at the seed's configuration: first with an empty
    Numba cache of its own, so that every kernel compiles (`cold_s`), then `warm_runs`
    times loading them from the cache that run left (`warm_s`)."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache, "PYTHONPATH": os.pathsep.join(
            [root] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])}
        times = []
        for _ in range(1 + warm_runs):
            t = time.perf_counter()
            subprocess.run([sys.executable, "-c", _START.format(kind=kind)], check=True, env=env)
            times.append(time.perf_counter() - t)
    return {"cold_s": times[0], "warm_s": times[1:]}


def format_rows(rows: list[dict]) -> str:
    def cell(v):
        if v is None:
            return "-"
        return f"{v:.2f}" if isinstance(v, float) else str(v)

    widths = [max(len(f), *(len(cell(r[f])) for r in rows)) for f in FIELDS]
    lines = ["  ".join(f.rjust(w) for f, w in zip(FIELDS, widths))]
    lines += ["  ".join(cell(r[f]).rjust(w) for f, w in zip(FIELDS, widths)) for r in rows]
    return "\n".join(lines)


def parse_config(text: str) -> tuple:
    """"lstm:128:100:32:2" -> ("lstm", 128, 100, 32, 2): model:H:T:B:I."""
    parts = text.split(":")
    if len(parts) != 5 or parts[0] not in names() or not all(p.isdigit() and int(p) > 0
                                                             for p in parts[1:]):
        raise UsageError(f"model configuration {text!r}: expected MODEL:H:T:B:I with MODEL "
                         f"one of {', '.join(names())} and positive integers, "
                         "e.g. lstm:128:100:32:2")
    return (parts[0], *map(int, parts[1:]))


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", action="append", metavar="MODEL:H:T:B:I",
                        help="a configuration to time (repeatable); default: "
                        + ", ".join(":".join(map(str, c)) for c in CONFIGS))
    parser.add_argument("--repeat", type=int, default=20, help="timed steps per side")
    parser.add_argument("--no-torch", action="store_true", help="leave PyTorch out")
    parser.add_argument("--start-times", action="store_true",
                        help="also time fresh processes that take one step: with an empty "
                        "Numba cache (compiling), then warm from it")
    parser.add_argument("--json", action="store_true", help="rows as JSON")


def run(args: argparse.Namespace) -> int:
    configs = [parse_config(c) for c in args.config] if args.config else CONFIGS
    if args.repeat < 1:
        raise UsageError(f"--repeat must be >= 1; got {args.repeat}")
    rows = bench_models(configs, args.repeat, with_torch=False if args.no_torch else None)
    starts = start_times() if args.start_times else None
    if args.json:
        print(json.dumps({"cpu": cpu_name(), "nn_layout": layout(), "rows": rows,
                          "start_s": starts}, indent=1))
    else:
        print(f"{cpu_name()}; model kernels: {layout()} layout")
        print(format_rows(rows))
        if starts:
            print(format_starts(starts))
    return 0


def format_starts(starts: dict) -> str:
    return ("fresh process, import + build + one training step (s): "
            f"empty cache (compiles) {starts['cold_s']:.1f}, warm cache "
            + ", ".join(f"{w:.2f}" for w in starts["warm_s"]))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m optbench.nn.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    configure(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except UsageError as exc:
        print(f"optbench.nn.bench: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
