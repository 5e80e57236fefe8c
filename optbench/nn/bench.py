"""Training-step benchmark of the recurrent models, side by side with PyTorch.

    python -m optbench.nn.bench                       # the default configurations
    python -m optbench.nn.bench --config lstm:128:100:32:2 --repeat 30 --json
    python -m optbench.nn.bench --warm-start          # also: a fresh process, warm cache

One step is what the training loop does: `loss_and_grad` (forward, BPTT, weight
gradients) and an Adam step on the flat parameter vector (optbench.optim, backend "cpu").
The PyTorch column is nn.LSTM / nn.GRU / nn.RNN (batch_first) + nn.Linear +
torch.optim.Adam, MSE on the last step, with as many threads as Numba uses. Both run in
this process, in alternating turns of TURN steps (ours, theirs, theirs, ours, ...) so
that a noisy machine hits both alike; the first step of a turn is not timed, because the
other library's worker threads spin for a while after their last task and would be
counted against this one. Figures are medians. Compile time is kept out: each side runs
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
import time

import numpy as np

# (model, H, T, B, I): the seed's configuration first, then the sizes the issue targets.
CONFIGS = (("lstm", 128, 100, 32, 2), ("lstm", 32, 100, 32, 2), ("lstm", 512, 100, 32, 2),
           ("gru", 128, 100, 32, 2), ("rnn", 128, 100, 32, 2))
TURN = 5
FIELDS = ("model", "H", "T", "B", "I", "numba_ms", "torch_ms", "speedup", "gflops",
          "sgemm_gflops", "compile_s", "from_cache", "threads")


def _ours(kind, H, T, B, I, rng):
    from optbench import nn, optim

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
    from optbench.nn._gemm import gemm

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
    import numba

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
        rng = np.random.default_rng(0)
        model, ours = _ours(kind, H, T, B, I, rng)
        first = _timed(ours)
        theirs = _torch(kind, H, T, B, I, rng) if with_torch else None
        if theirs is not None:
            theirs()
        t_ours, t_theirs = [], []
        sides = [(ours, t_ours)] + ([(theirs, t_theirs)] if theirs is not None else [])
        while len(t_ours) < repeat:
            for step, times in sides:
                times.extend(_timed(step) for _ in range(TURN))
                del times[-TURN]  # the turn's first step
            sides.reverse()
        ms = float(np.median(t_ours)) * 1e3
        torch_ms = float(np.median(t_theirs)) * 1e3 if t_theirs else None
        stats = model.spec.forward.stats
        rows.append({
            "model": kind, "H": H, "T": T, "B": B, "I": I,
            "numba_ms": ms, "torch_ms": torch_ms,
            "speedup": torch_ms / ms if torch_ms else None,
            "gflops": model.flops(B, T) / ms / 1e6, "sgemm_gflops": sgemm,
            "compile_s": max(0.0, first - ms / 1e3),
            "from_cache": bool(stats.cache_hits) and not stats.cache_misses,
            "threads": threads,
        })
    return rows


def warm_start(kind: str = "lstm", runs: int = 2) -> list[float]:
    """Seconds for a fresh Python process to import optbench.nn, build a model and run
    one loss_and_grad (seed configuration), `runs` times in a row: the first may compile
    and fill Numba's on-disk cache, the later ones start warm from it."""
    code = ("from optbench import nn; import numpy as np; "
            f"m = nn.build({kind!r}, 2, 128, 1); "
            "m.loss_and_grad(np.zeros((32, 100, 2), np.float32), np.zeros((32, 1), np.float32))")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [root] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])}
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, env=env)
        out.append(time.perf_counter() - t)
    return out


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
    from optbench.errors import UsageError
    from optbench.nn import names

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
    parser.add_argument("--warm-start", action="store_true",
                        help="also time fresh processes that load the kernels from the cache")
    parser.add_argument("--json", action="store_true", help="rows as JSON")


def run(args: argparse.Namespace) -> int:
    from optbench.errors import UsageError

    configs = [parse_config(c) for c in args.config] if args.config else CONFIGS
    if args.repeat < 1:
        raise UsageError(f"--repeat must be >= 1; got {args.repeat}")
    rows = bench_models(configs, args.repeat, with_torch=False if args.no_torch else None)
    warm = warm_start() if args.warm_start else None
    if args.json:
        print(json.dumps({"rows": rows, "warm_start_s": warm}, indent=1))
    else:
        print(format_rows(rows))
        if warm:
            print("fresh process, import + build + one step (s): "
                  + ", ".join(f"{w:.2f}" for w in warm) + " (the first may compile)")
    return 0


def main(argv=None) -> int:
    from optbench.errors import UsageError

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
