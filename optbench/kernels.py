"""`python -m optbench kernels`: how fast each optimizer steps, against the memory bandwidth
measured in the same process and, when torch imports, torch.optim's fused and foreach steps;
with `--section models` (or `all`), how fast the recurrent models take a training step
against PyTorch (optbench.nn.bench: forward + BPTT + Adam, GFLOP/s beside an SGEMM timed
in the same process).

For every optimizer x backend x size it reports time per step (the median over --repeat
samples, each sample timing enough back-to-back steps to last a few milliseconds), Gparam/s,
GB/s of useful traffic (the optimizer's bytes per parameter: read p, g and each state slot,
write p and each slot; Adam 28) and that as a share of the "update" bandwidth probe
(optbench.bandwidth). Candidates of one optimizer and size are timed interleaved, round by
round, so machine noise hits them alike. The first call of each candidate (Numba compile or
cache load) is timed separately and never mixed into the step time.
"""

from __future__ import annotations

import json
import os
import time

DEFAULT_SIZES = (10, 14, 18, 22, 26)
SIZE_RANGE = (4, 30)  # powers of two
MIN_SAMPLE_S = 2e-3  # one timing sample runs the step at least this long

TORCH_NAMES = {
    "sgd": "SGD", "adagrad": "Adagrad", "rmsprop": "RMSprop", "adam": "Adam", "adamw": "AdamW",
    "nadam": "NAdam", "radam": "RAdam", "adamax": "Adamax",
}


SECTIONS = ("optimizers", "models", "all")


def configure(parser) -> None:
    parser.add_argument("--section", choices=SECTIONS, default="optimizers",
                        help="what to time: optimizer steps, model training steps, or both "
                        "(default %(default)s)")
    parser.add_argument("--model", action="append", metavar="MODEL:H:T:B:I", dest="models",
                        help="a model configuration for the models section (repeatable; "
                        "default: the seed's LSTM at H=128, 32, 512, then GRU and RNN)")
    parser.add_argument("--start-times", action="store_true",
                        help="models section: also time fresh processes that take one "
                        "training step, with an empty Numba cache (compiling), then warm")
    parser.add_argument("--optimizers", default=None,
                        help="comma-separated names (default: all)")
    parser.add_argument("--backends", default=None,
                        help="comma-separated: numpy, cpu, cuda (default: cpu, plus cuda on a GPU)")
    parser.add_argument("--sizes", default=",".join(map(str, DEFAULT_SIZES)),
                        help="comma-separated powers of two, e.g. 10,16,26 (default %(default)s)")
    parser.add_argument("--repeat", type=int, default=10,
                        help="timing samples per candidate; the median is reported (default 10)")
    parser.add_argument("--bandwidth-size", type=int, default=25,
                        help="the bandwidth probe's arrays have 2^N float32 elements (default 25)")
    parser.add_argument("--no-torch", action="store_true",
                        help="leave out torch.optim's fused and foreach columns")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def _parse(args):
    """Check every option before any work starts; return (optimizers, backends, sizes)."""
    from optbench import optim
    from optbench.errors import UsageError

    names = optim.names() if args.optimizers is None else tuple(
        s.strip() for s in args.optimizers.split(",") if s.strip())
    for name in names:
        optim.spec(name)  # UsageError listing the names
    try:
        sizes = tuple(int(s) for s in args.sizes.split(","))
    except ValueError:
        raise UsageError(f"--sizes {args.sizes!r}: give powers of two as integers, e.g. 10,16,26")
    lo, hi = SIZE_RANGE
    if not sizes or any(not lo <= s <= hi for s in sizes):
        raise UsageError(f"--sizes {args.sizes!r}: each must be between {lo} and {hi} (2^N params)")
    if args.repeat < 1:
        raise UsageError(f"--repeat {args.repeat}: must be at least 1")
    if not lo <= args.bandwidth_size <= hi:
        raise UsageError(f"--bandwidth-size {args.bandwidth_size}: must be between {lo} and {hi}")
    if args.backends is None:
        backends = ("cpu", "cuda") if _real_gpu() else ("cpu",)
    else:
        backends = tuple(s.strip() for s in args.backends.split(",") if s.strip())
    for backend in backends:
        if backend not in optim.BACKENDS:
            raise UsageError(f"unknown backend {backend!r}; choose from: {', '.join(optim.BACKENDS)}")
    if "cuda" in backends:
        optim.create(names[0], backend="cuda")  # UsageError when there is neither GPU nor simulator
        if not _real_gpu():
            raise UsageError("backend 'cuda' runs in Numba's CUDA simulator here "
                             "(NUMBA_ENABLE_CUDASIM=1): its timings mean nothing; time cuda on a GPU")
    return names, backends, sizes


def _parse_models(args) -> tuple:
    """The models section's configurations, checked before any work starts."""
    from optbench.nn import bench

    return tuple(bench.parse_config(c) for c in args.models) if args.models else bench.CONFIGS


def _real_gpu() -> bool:
    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        return False
    try:
        from numba import cuda

        return cuda.is_available()
    except Exception:
        return False


class Candidate:
    """One thing to time: a step function with its arrays, and its byte model."""

    def __init__(self, label: str, step, bytes_per_param: int, sync=None):
        self.label, self.step, self.bytes_per_param, self.sync = label, step, bytes_per_param, sync
        self.inner = 1
        self.samples: list[float] = []
        self.first_call_s = 0.0

    def _run(self, k: int) -> float:
        t0 = time.perf_counter()
        for _ in range(k):
            self.step()
        if self.sync is not None:
            self.sync()
        return time.perf_counter() - t0

    def warm_up(self) -> None:
        self.first_call_s = self._run(1)
        one = min(self._run(1) for _ in range(3))
        self.inner = max(1, int(MIN_SAMPLE_S / max(one, 1e-9)))

    def sample(self) -> None:
        self.samples.append(self._run(self.inner) / self.inner)


def _ours(name: str, backend: str, n: int, rng) -> Candidate:
    import numpy as np

    from optbench import optim

    opt = optim.create(name, backend=backend)
    p = rng.standard_normal(n, dtype=np.float32)
    g = rng.standard_normal(n, dtype=np.float32)
    sync = None
    if backend == "cuda":
        from numba import cuda

        p, g, sync = cuda.to_device(p), cuda.to_device(g), cuda.synchronize
    state = opt.init(p)
    return Candidate(backend, lambda: opt.step(p, g, state), opt.bytes_per_param, sync)


def _torch(torch, name: str, mode: str, device: str, n: int, rng, bytes_per_param: int):
    """torch.optim's `mode` ("fused"/"foreach") step of optimizer `name`, or None if torch
    has no such step."""
    cls = getattr(torch.optim, TORCH_NAMES.get(name, ""), None)
    if cls is None:
        return None
    p = torch.tensor(rng.standard_normal(n, dtype="float32"), device=device)
    p.grad = torch.tensor(rng.standard_normal(n, dtype="float32"), device=device)
    try:
        opt = cls([p], **{mode: True})
    except (RuntimeError, TypeError, ValueError):
        return None  # no such implementation of this optimizer (on this device)
    sync = torch.cuda.synchronize if device == "cuda" else None
    return Candidate(f"torch-{mode}", opt.step, bytes_per_param, sync)


def _import_torch():
    try:
        import torch
    except ImportError:
        return None
    return torch


def run(args) -> int:
    import numba

    from optbench.env import environment

    names, backends, sizes = _parse(args)
    models = _parse_models(args)
    torch = None if args.no_torch else _import_torch()
    if torch is not None:
        torch.set_num_threads(numba.get_num_threads())
    load = os.getloadavg()[0]
    report = {"env": environment()}
    if args.section in ("optimizers", "all"):
        report.update(_optimizers(args, names, backends, sizes, torch))
    if args.section in ("models", "all"):
        from optbench.nn.bench import bench_models, start_times

        report["models"] = bench_models(models, args.repeat, with_torch=torch is not None)
        if args.start_times:
            report["model_start_s"] = start_times()
    report["env"]["load_average_1min"] = load  # other processes' load skews every figure
    if torch is not None:
        report["env"]["torch_threads"] = torch.get_num_threads()
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        print(_text(report))
    return 0


def _optimizers(args, names, backends, sizes, torch) -> dict:
    import numpy as np

    from optbench.bandwidth import measure

    bw = measure(1 << args.bandwidth_size, repeat=args.repeat)
    rng = np.random.default_rng(0)
    rows = [row for name in names for e in sizes
            for row in _measure(name, e, backends, torch, args.repeat, rng, bw["update_GBps"])]
    return {"bandwidth": bw, "rows": rows}


def _measure(name, e, backends, torch, repeat, rng, bw_GBps) -> list[dict]:
    """Time optimizer `name` at 2^e params on each backend (and torch's steps), interleaved;
    its arrays are freed on return."""
    n = 1 << e
    cands = [_ours(name, b, n, rng) for b in backends]
    if torch is not None:
        for device in ("cpu",) + (("cuda",) if "cuda" in backends else ()):
            for mode in ("fused", "foreach"):
                c = _torch(torch, name, mode, device, n, rng, cands[0].bytes_per_param)
                if c is not None:
                    c.label += "" if device == "cpu" else "-cuda"
                    cands.append(c)
    for c in cands:
        c.warm_up()
    for _ in range(repeat):
        for c in cands:
            c.sample()
    return _rows(name, e, cands, bw_GBps)


def _rows(name: str, e: int, cands: list[Candidate], bw_GBps: float) -> list[dict]:
    import numpy as np

    n = 1 << e
    medians = {c.label: float(np.median(c.samples)) for c in cands}
    rows = []
    for c in cands:
        t = medians[c.label]
        rows.append({
            "optimizer": name, "backend": c.label, "log2_size": e, "params": n,
            "us_per_step": t * 1e6, "min_us_per_step": min(c.samples) * 1e6,
            "Gparams_per_s": n / t / 1e9, "bytes_per_param": c.bytes_per_param,
            "GBps": n * c.bytes_per_param / t / 1e9,
            "share_of_bandwidth": n * c.bytes_per_param / t / 1e9 / bw_GBps,
            "vs_torch_fused": (medians["torch-fused"] / t) if "torch-fused" in medians else None,
            "first_call_s": c.first_call_s, "samples": len(c.samples), "steps_per_sample": c.inner,
        })
    return rows


def _text(report: dict) -> str:
    env = report["env"]
    lines = [
        f"{env['cpu']}, numba {env['numba']} {env['numba_threading_layer']} x "
        f"{env['numba_threads']} threads" + (f", torch {env['torch']} x {env['torch_threads']} "
                                            "threads" if "torch_threads" in env else "")
        + f"; load average before the run {env['load_average_1min']:.2f}",
    ]
    if "rows" in report:
        lines += ["", *_text_optimizers(report)]
    if "models" in report:
        from optbench.nn.bench import format_rows, format_starts

        lines += ["", "training steps (ms, median; serial: on one Numba thread; speedup = torch "
                  "ms / numba ms; GFLOP/s of the step's matrix products beside an SGEMM in this "
                  "process; compile_s: the first call, not in ms; load: 1-min load average at "
                  "the row's start):", format_rows(report["models"])]
        if "model_start_s" in report:
            lines.append(format_starts(report["model_start_s"]))
    return "\n".join(lines)


def _text_optimizers(report: dict) -> list[str]:
    bw = report["bandwidth"]
    lines = [
        f"memory bandwidth (2^{bw['n'].bit_length() - 1} float32, median of {bw['repeat']}): "
        f"update a+=s*b {bw['update_GBps']:.1f} GB/s, triad a=b+s*c {bw['triad_GBps']:.1f} GB/s; "
        f"%bw below is of the update figure",
        "",
        f"{'optimizer':9} {'backend':14} {'size':>5} {'us/step':>11} {'Gparam/s':>9} "
        f"{'B/param':>7} {'GB/s':>7} {'%bw':>5} {'vs fused':>8} {'1st call s':>10}",
    ]
    for r in report["rows"]:
        vs = f"{r['vs_torch_fused']:.2f}x" if r["vs_torch_fused"] is not None else "-"
        lines.append(
            f"{r['optimizer']:9} {r['backend']:14} {'2^' + str(r['log2_size']):>5} "
            f"{r['us_per_step']:11.1f} {r['Gparams_per_s']:9.3f} {r['bytes_per_param']:7d} "
            f"{r['GBps']:7.1f} {100 * r['share_of_bandwidth']:4.0f}% {vs:>8} "
            f"{r['first_call_s']:10.3f}"
        )
    lines.append("")
    lines.append("vs fused: torch.optim fused step time / this row's (above 1: faster than torch). "
                 "1st call: compile or cache load, not in us/step.")
    return lines
