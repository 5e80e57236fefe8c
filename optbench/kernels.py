"""`python -m optbench kernels`: how fast each optimizer steps, against the memory bandwidth
measured in the same process and, when torch imports, torch.optim's fused and foreach steps;
with `--section models` (or `all`), how fast the recurrent models take a training step
against PyTorch (optbench.nn.bench: forward + BPTT + Adam, GFLOP/s beside an SGEMM timed
in the same process).

with `--section batched`, K models of P parameters stepped as one (K, P) array against K
separate 1-D steps (P defaults to the seed LSTM's parameter count).

with `--section lockstep` (not part of `all`), training steps of K models of one shape in
lockstep against K separate models and torch (optbench.lockstep.bench; `--model` sets the
shape, default lstm:64:100:32:2, `--lockstep-models` the K values).

For every optimizer x backend x size it reports time per step (the median over --repeat
samples, each sample timing enough back-to-back steps to last a few milliseconds), Gparam/s,
GB/s of useful traffic (the optimizer's bytes per parameter: read p, g and each state slot,
write p and each slot; Adam 28) and that as a share of a bandwidth measured in this process
(optbench.bandwidth): the "update" probe for host rows, a device-to-device copy for CUDA
rows. CUDA samples are timed with CUDA events on the GPU's own clock (launch gaps included:
a step the host cannot feed fast enough shows). Candidates of one optimizer and size are
timed interleaved, round by round, so machine noise hits them alike. The first call of each
candidate (Numba compile or cache load) is timed separately and never mixed into the step
time.
"""

from __future__ import annotations

import json
import os
import time

from optbench import plugins
from optbench.errors import UsageError

# numpy, numba and what needs them (optim, nn, bandwidth, the benches) are imported inside
# the functions: the CLI imports this module for `--help`, which must stay fast.
DEFAULT_SIZES = (10, 14, 18, 22, 26)
SIZE_RANGE = (4, 30)  # powers of two
MIN_SAMPLE_S = 2e-3  # one timing sample runs the step at least this long


SECTIONS = ("optimizers", "models", "batched", "lockstep", "all")
DEFAULT_BATCH_MODELS = (1, 8, 64)


def configure(parser) -> None:
    parser.add_argument("--section", choices=SECTIONS, default="optimizers",
                        help="what to time: optimizers (steps), models (training steps), "
                        "batched (K optimizer steps at once), lockstep (K models per pass), "
                        "all (every one but lockstep; default %(default)s)")
    parser.add_argument("--model", action="append", metavar="MODEL:H:T:B:I", dest="models",
                        help="a model configuration for the models section (repeatable; "
                        "default: the seed's LSTM at H=128, 32, 512, then GRU and RNN)")
    parser.add_argument("--start-times", action="store_true",
                        help="models section: also time fresh processes that take one "
                        "training step, with an empty Numba cache (compiling), then warm")
    parser.add_argument("--optimizers", default=None,
                        help="comma-separated names (default: all)")
    parser.add_argument("--plugin", metavar="FILE_OR_MODULE", action="append", default=[],
                        help="load a plugin's optimizers first, to time them too (repeatable)")
    parser.add_argument("--backends", default=None,
                        help="comma-separated: numpy, cpu, cuda (default: cpu, plus cuda on a GPU)")
    parser.add_argument("--sizes", default=",".join(map(str, DEFAULT_SIZES)),
                        help="comma-separated powers of two, e.g. 10,16,26 (default %(default)s)")
    parser.add_argument("--repeat", type=int, default=10,
                        help="timing samples per candidate; the median is reported (default 10)")
    parser.add_argument("--bandwidth-size", type=int, default=25,
                        help="the bandwidth probe's arrays have 2^N float32 elements (default 25)")
    parser.add_argument("--device-bandwidth-size", type=int, default=28,
                        help="the CUDA device-to-device copy has 2^N float32 elements "
                        "(default 28)")
    parser.add_argument("--batch-models", default=",".join(map(str, DEFAULT_BATCH_MODELS)),
                        help="batched section: comma-separated model counts K "
                        "(default %(default)s)")
    parser.add_argument("--batch-params", type=int, default=None,
                        help="batched section: parameters per model P (default: the seed "
                        "LSTM's)")
    parser.add_argument("--lockstep-models", default=None, metavar="K,K,...",
                        help="lockstep section: model counts K (default: 1,4,16 on the cpu, "
                        "1,16,64,256 with cuda)")
    parser.add_argument("--simulator", action="store_true",
                        help="accept backend cuda under NUMBA_ENABLE_CUDASIM=1, to try the "
                        "report's plumbing (its timings mean nothing)")
    parser.add_argument("--no-torch", action="store_true",
                        help="leave out torch.optim's fused and foreach columns")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def _parse(args):
    """Check every option before any work starts; return (optimizers, backends, sizes)."""
    from optbench import optim

    plugins.load_all(getattr(args, "plugin", []), what="--plugin")
    kernels = tuple(n for n in optim.names() if not hasattr(optim.spec(n), "kwargs"))
    names = kernels if args.optimizers is None else tuple(
        s.strip() for s in args.optimizers.split(",") if s.strip())
    for name in names:
        optim.spec(name)  # UsageError listing the names
    try:
        sizes = tuple(int(s) for s in args.sizes.split(","))
    except ValueError:
        raise UsageError(f"--sizes {args.sizes!r}: give powers of two as integers, e.g. 10,16,26") from None
    lo, hi = SIZE_RANGE
    if not sizes or any(not lo <= s <= hi for s in sizes):
        raise UsageError(f"--sizes {args.sizes!r}: each must be between {lo} and {hi} (2^N params)")
    if args.repeat < 1:
        raise UsageError(f"--repeat {args.repeat}: must be at least 1")
    for option in ("bandwidth_size", "device_bandwidth_size"):
        if not lo <= getattr(args, option) <= hi:
            raise UsageError(f"--{option.replace('_', '-')} {getattr(args, option)}: must be "
                             f"between {lo} and {hi}")
    if args.backends is None:
        backends = ("cpu", "cuda") if gpu_present() else ("cpu",)
    else:
        backends = tuple(s.strip() for s in args.backends.split(",") if s.strip())
    for backend in backends:
        if backend not in optim.BACKENDS:
            raise UsageError(f"unknown backend {backend!r}; choose from: {', '.join(optim.BACKENDS)}")
    if "cuda" in backends:
        optim.create(names[0], backend="cuda")  # UsageError when there is neither GPU nor simulator
        if not gpu_present() and not args.simulator:
            raise UsageError("backend 'cuda' runs in Numba's CUDA simulator here "
                             "(NUMBA_ENABLE_CUDASIM=1): its timings mean nothing; time cuda on "
                             "a GPU (or pass --simulator to try the plumbing)")
    return names, backends, sizes


def _model_counts(option: str, text: str, example: str) -> tuple[int, ...]:
    """A comma-separated list of model counts, each 1 to 4096; UsageError naming `option`."""
    try:
        ks = tuple(int(s) for s in text.split(","))
    except ValueError:
        raise UsageError(f"{option} {text!r}: give model counts as integers, e.g. {example}"
                         ) from None
    if not ks or min(ks) < 1 or max(ks) > 4096:
        raise UsageError(f"{option} {text!r}: each must be between 1 and 4096")
    return ks


def _parse_batch(args) -> tuple[tuple[int, ...], int]:
    """The batched section's model counts and parameters per model, checked."""
    ks = _model_counts("--batch-models", args.batch_models, "1,8,64")
    size = seed_lstm_params() if args.batch_params is None else args.batch_params
    if not 1 <= size <= 1 << 26:
        raise UsageError(f"--batch-params {size}: must be between 1 and {1 << 26}")
    return ks, size


def _parse_lockstep(args, backends) -> tuple:
    """The lockstep section's (shape, model counts or None for the defaults, devices)."""
    from optbench.lockstep.bench import DEFAULT_CONFIG
    from optbench.nn import bench

    config = bench.parse_config(args.models[0]) if args.models else DEFAULT_CONFIG
    if args.models and len(args.models) > 1 and args.section == "lockstep":
        raise UsageError("the lockstep section times one --model shape at a time")
    ks = None
    if args.lockstep_models is not None:
        ks = _model_counts("--lockstep-models", args.lockstep_models, "1,16,64")
    devices = tuple(b for b in backends if b in ("cpu", "cuda"))
    return config, ks, devices


def seed_lstm_params() -> int:
    """The parameter count of the seed's LSTM (optbench.nn.bench.CONFIGS[0], one output)."""
    from optbench import nn
    from optbench.nn.bench import CONFIGS

    kind, hidden, _, _, inputs = CONFIGS[0]
    return nn.build(kind, inputs, hidden, 1, seed=0).n_params


def _parse_models(args) -> tuple:
    """The models section's configurations, checked before any work starts."""
    from optbench.nn import bench

    return tuple(bench.parse_config(c) for c in args.models) if args.models else bench.CONFIGS


def gpu_present() -> bool:
    """Whether a real CUDA GPU answers (False under the simulator)."""
    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        return False
    try:
        from numba import cuda

        return cuda.is_available()
    except Exception:
        return False


class Candidate:
    """One thing to time: a step function with its arrays, its byte model, and its clock:
    `seconds(step, k)` times k back-to-back calls (host clock by default)."""

    def __init__(self, label: str, step, bytes_per_param: int, seconds=None):
        self.label, self.step, self.bytes_per_param = label, step, bytes_per_param
        self.seconds = seconds or _host_seconds
        self.inner = 1
        self.samples: list[float] = []
        self.first_call_s = 0.0

    def _run(self, k: int) -> float:
        return self.seconds(self.step, k)

    def warm_up(self) -> None:
        t0 = time.perf_counter()
        self._run(1)
        self.first_call_s = time.perf_counter() - t0  # compile or cache load: host time
        one = min(self._run(1) for _ in range(3))
        self.inner = max(1, int(MIN_SAMPLE_S / max(one, 1e-9)))

    def sample(self) -> None:
        self.samples.append(self._run(self.inner) / self.inner)


def _host_seconds(step, k: int) -> float:
    t0 = time.perf_counter()
    for _ in range(k):
        step()
    return time.perf_counter() - t0


def torch_cuda_seconds(torch):
    def seconds(step, k: int) -> float:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(k):
            step()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3

    return seconds


def _device(backend: str):
    """(to the backend's memory, clock) for `backend`."""
    if backend != "cuda":
        return (lambda x: x), None
    from numba import cuda

    from optbench.bandwidth import device_seconds

    return cuda.to_device, device_seconds


def _ours(name: str, backend: str, n: int, rng) -> Candidate:
    import numpy as np

    from optbench import optim

    opt = optim.create(name, backend=backend)
    to, seconds = _device(backend)
    p = to(rng.standard_normal(n, dtype=np.float32))
    g = to(rng.standard_normal(n, dtype=np.float32))
    state = opt.init(p)
    return Candidate(backend, lambda: opt.step(p, g, state), opt.bytes_per_param, seconds)


def _torch(torch, name: str, mode: str, device: str, n: int, rng, bytes_per_param: int):
    """torch.optim's `mode` ("fused"/"foreach") step of optimizer `name`, or None if torch
    has no such step."""
    cls = torch_class(torch, name)
    if cls is None:
        return None
    p = torch.tensor(rng.standard_normal(n, dtype="float32"), device=device)
    p.grad = torch.tensor(rng.standard_normal(n, dtype="float32"), device=device)
    try:
        opt = cls([p], **{mode: True})
    except (RuntimeError, TypeError, ValueError):
        return None  # no such implementation of this optimizer (on this device)
    seconds = torch_cuda_seconds(torch) if device == "cuda" else None
    return Candidate(f"torch-{mode}", opt.step, bytes_per_param, seconds)


def _torch_single(torch, name: str, n: int, rng, bytes_per_param: int):
    """torch.optim's single-tensor step (foreach=False, what it runs for one CPU tensor) of
    optimizer `name` on a tensor with its gradient set: what the adapter calls."""
    cls = torch_class(torch, name)
    if cls is None:
        return None
    p = torch.tensor(rng.standard_normal(n, dtype="float32"))
    p.grad = torch.tensor(rng.standard_normal(n, dtype="float32"))
    return Candidate("torch-single", cls([p], foreach=False).step, bytes_per_param)


def _torch_adapter(torch, name: str, n: int, rng, bytes_per_param: int):
    """The same torch class through optbench's adapter (optim.torch_adapter): a numpy
    parameter vector shared with torch, each step's gradient vector wrapped without a copy."""
    import numpy as np

    from optbench import optim

    if torch_class(torch, name) is None:
        return None
    opt = optim.create(optim.spec(name).torch)
    p = rng.standard_normal(n, dtype=np.float32)
    g = rng.standard_normal(n, dtype=np.float32)
    state = opt.init(p)
    return Candidate("torch-adapter", lambda: opt.step(p, g, state), bytes_per_param)


def torch_class(torch, name: str):
    """The torch.optim class optimizer `name` reproduces (its spec's `torch` field), or None."""
    from optbench import optim

    path = optim.spec(name).torch
    if not path.startswith("torch.optim."):
        return None
    return getattr(torch.optim, path.removeprefix("torch.optim."), None)


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
    batch = _parse_batch(args)
    lockstep = _parse_lockstep(args, backends)
    torch = None if args.no_torch else _import_torch()
    if torch is not None:
        torch.set_num_threads(numba.get_num_threads())
    load = os.getloadavg()[0]
    report = {"env": environment()}
    if args.section in ("optimizers", "batched", "all"):
        report.update(_bandwidths(args, backends))
    if args.section in ("optimizers", "all"):
        report["rows"] = _optimizers(args, names, backends, sizes, torch, report)
    if args.section in ("models", "all"):
        from optbench.nn.bench import bench_models, start_times

        report["models"] = bench_models(models, args.repeat, with_torch=torch is not None)
        if args.start_times:
            report["model_start_s"] = start_times()
    if args.section in ("batched", "all"):
        report["batched"] = _batched(args, names, backends, *batch, report)
    if args.section == "lockstep":  # not in "all": it trains up to hundreds of models
        from optbench.lockstep.bench import bench_lockstep

        report["lockstep"] = bench_lockstep(*lockstep, repeat=args.repeat, torch=torch)
    report["env"]["load_average_1min"] = load  # other processes' load skews every figure
    report["env"]["cuda_simulator"] = "cuda" in backends and not gpu_present()
    if torch is not None:
        report["env"]["torch_threads"] = torch.get_num_threads()
    report["env"]["torch_status"] = (
        "left out (--no-torch)" if args.no_torch else
        f"torch {torch.__version__}" if torch is not None else
        'not installed (pip install "optbench[compare]"): no torch columns')
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        print(_text(report))
    return 0


def _bandwidths(args, backends) -> dict:
    """The bandwidths rows are compared with: the host probe always, the device copy when
    cuda is timed."""
    from optbench import bandwidth

    out = {"bandwidth": bandwidth.measure(1 << args.bandwidth_size, repeat=args.repeat)}
    if "cuda" in backends:
        out["device_bandwidth"] = bandwidth.measure_device(1 << args.device_bandwidth_size,
                                                           repeat=args.repeat)
    return out


def _reference_GBps(report: dict, backend: str) -> float:
    """The bandwidth a row of `backend` ("cpu", "torch-fused-cuda", ...) is a share of."""
    if backend.endswith("cuda"):
        return report["device_bandwidth"]["copy_GBps"]
    return report["bandwidth"]["update_GBps"]


def _optimizers(args, names, backends, sizes, torch, report) -> list[dict]:
    import numpy as np

    rng = np.random.default_rng(0)
    return [row for name in names for e in sizes
            for row in _measure(name, e, backends, torch, args.repeat, rng, report)]


def _measure(name, e, backends, torch, repeat, rng, report) -> list[dict]:
    """Time optimizer `name` at 2^e params on each backend (and torch's steps on the same
    devices), interleaved; its arrays are freed on return."""
    n = 1 << e
    cands = [_ours(name, b, n, rng) for b in backends]
    if torch is not None:
        devices = [d for d in ("cpu", "cuda") if d in backends]
        if "cuda" in devices and not torch.cuda.is_available():
            devices.remove("cuda")
        for device in devices:
            for mode in ("fused", "foreach"):
                c = _torch(torch, name, mode, device, n, rng, cands[0].bytes_per_param)
                if c is not None:
                    c.label += "" if device == "cpu" else "-cuda"
                    cands.append(c)
        if "cpu" in backends:  # the adapter's cost: its step against torch's own and ours
            for make in (_torch_single, _torch_adapter):
                c = make(torch, name, n, rng, cands[0].bytes_per_param)
                if c is not None:
                    cands.append(c)
    for c in cands:
        c.warm_up()
    for _ in range(repeat):
        for c in cands:
            c.sample()
    return _rows(name, e, cands, report)


def _rows(name: str, e: int, cands: list[Candidate], report: dict) -> list[dict]:
    import numpy as np

    n = 1 << e
    medians = {c.label: float(np.median(c.samples)) for c in cands}
    rows = []
    for c in cands:
        t = medians[c.label]
        fused = "torch-fused-cuda" if c.label.endswith("cuda") else "torch-fused"
        rows.append({
            "optimizer": name, "backend": c.label, "log2_size": e, "params": n,
            "us_per_step": t * 1e6, "min_us_per_step": min(c.samples) * 1e6,
            "Gparams_per_s": n / t / 1e9, "bytes_per_param": c.bytes_per_param,
            "GBps": n * c.bytes_per_param / t / 1e9,
            "share_of_bandwidth": n * c.bytes_per_param / t / 1e9 / _reference_GBps(report,
                                                                                   c.label),
            "vs_torch_fused": (medians[fused] / t) if fused in medians else None,
            # The torch adapter's time per step beyond the native cpu kernel's.
            "over_cpu_us": (t - medians["cpu"]) * 1e6 if c.label == "torch-adapter"
            and "cpu" in medians else None,
            "first_call_s": c.first_call_s, "samples": len(c.samples), "steps_per_sample": c.inner,
        })
    return rows


def _batched(args, names, backends, ks, size, report) -> list[dict]:
    """For each optimizer x backend x K: one (K, size) step with per-model learning rates
    against K separate 1-D steps of `size` (K optimizers, K states), interleaved."""
    import numpy as np

    from optbench import optim

    rng = np.random.default_rng(0)
    rows = []
    for name in names:
        for backend in (b for b in backends if b != "numpy"):
            to, seconds = _device(backend)
            for k in ks:
                lr = optim.spec(name).defaults["lr"] * np.geomspace(0.1, 10, k)
                batched = optim.create(name, backend=backend, lr=lr)
                p = to(rng.standard_normal((k, size), dtype=np.float32))
                g = to(rng.standard_normal((k, size), dtype=np.float32))
                state = batched.init(p)
                singles = [optim.create(name, backend=backend, lr=x) for x in lr]
                ps = [to(rng.standard_normal(size, dtype=np.float32)) for _ in range(k)]
                gs = [to(rng.standard_normal(size, dtype=np.float32)) for _ in range(k)]
                states = [o.init(x) for o, x in zip(singles, ps)]

                def separate(singles=singles, ps=ps, gs=gs, states=states):
                    for o, x, y, st in zip(singles, ps, gs, states):
                        o.step(x, y, st)

                def together(o=batched, p=p, g=g, st=state):
                    o.step(p, g, st)

                cands = [Candidate("batched", together, batched.bytes_per_param, seconds),
                         Candidate("separate", separate, batched.bytes_per_param, seconds)]
                for c in cands:
                    c.warm_up()
                for _ in range(args.repeat):
                    for c in cands:
                        c.sample()
                t, t_sep = (float(np.median(c.samples)) for c in cands)
                n = k * size
                rows.append({
                    "optimizer": name, "backend": backend, "models": k, "params": size,
                    "us_batched": t * 1e6, "us_separate": t_sep * 1e6, "speedup": t_sep / t,
                    "Gparams_per_s": n / t / 1e9,
                    "share_of_bandwidth": n * batched.bytes_per_param / t / 1e9
                    / _reference_GBps(report, backend),
                    "first_call_s": cands[0].first_call_s,
                    "first_call_separate_s": cands[1].first_call_s, "samples": args.repeat,
                })
    return rows


def _text(report: dict) -> str:
    env = report["env"]
    lines = [
        f"{env['cpu']}, numba {env['numba']} {env['numba_threading_layer']} x "
        f"{env['numba_threads']} threads" + (f", torch {env['torch']} x {env['torch_threads']} "
                                            "threads" if "torch_threads" in env else "")
        + f"; load average before the run {env['load_average_1min']:.2f}",
        f"model kernels: {env.get('nn_layout', '?')} layout",
    ]
    if "torch_threads" not in env and env.get("torch_status"):
        lines.append(f"torch: {env['torch_status']} ('-' where torch's figure would be)")
    if env.get("cuda_simulator"):
        lines.append("CUDA SIMULATOR (NUMBA_ENABLE_CUDASIM=1): the cuda timings mean nothing")
    if "bandwidth" in report:
        bw = report["bandwidth"]
        lines.append(
            f"memory bandwidth (2^{bw['n'].bit_length() - 1} float32, median of {bw['repeat']}): "
            f"update a+=s*b {bw['update_GBps']:.1f} GB/s, triad a=b+s*c {bw['triad_GBps']:.1f} "
            "GB/s; %bw of host rows is of the update figure")
    if "device_bandwidth" in report:
        d = report["device_bandwidth"]
        lines.append(f"device {d['device']}: device-to-device copy of 2^{d['n'].bit_length() - 1}"
                     f" float32 {d['copy_GBps']:.0f} GB/s (read + write, median of "
                     f"{d['repeat']}, CUDA events); %bw of cuda rows is of this figure")
    if "rows" in report:
        lines += ["", *_text_optimizers(report)]
    if "batched" in report:
        lines += ["", *_text_batched(report["batched"])]
    if "lockstep" in report:
        from optbench.lockstep.bench import format_rows as lockstep_rows

        lines += ["", *lockstep_rows(report["lockstep"])]
    if "models" in report:
        from optbench.nn.bench import format_rows, format_starts

        lines += ["", "training steps (ms, median; serial: on one Numba thread; speedup = torch "
                  "ms / numba ms; GFLOP/s of the step's matrix products beside an SGEMM in this "
                  "process; compile_s: the first call, not in ms; load: 1-min load average at "
                  "the row's start):", format_rows(report["models"])]
        if "model_start_s" in report:
            lines.append(format_starts(report["model_start_s"]))
    return "\n".join(lines)


def disturbed(rows: list[dict], bandwidth: dict) -> list[dict]:
    """Host rows that moved more than the measured bandwidth although a step moves at least
    as many bytes as the probe: both then stream from the same memory, and a step cannot
    beat the probe, so the probe under-measured (another process's load while it ran, or a
    probe small enough to stay in the caches) and those shares overstate."""
    from optbench.bandwidth import BYTES_PER_ELEMENT

    probe = BYTES_PER_ELEMENT * bandwidth["n"]
    return [r for r in rows if not r["backend"].endswith("cuda")
            and r["params"] * r["bytes_per_param"] >= probe and r["share_of_bandwidth"] > 1.0]


def _text_optimizers(report: dict) -> list[str]:
    lines = [
        f"{'optimizer':9} {'backend':14} {'size':>5} {'us/step':>11} {'Gparam/s':>9} "
        f"{'B/param':>7} {'GB/s':>7} {'%bw':>5} {'vs fused':>8} {'1st call s':>10}",
    ]
    bad = {id(r) for r in disturbed(report["rows"], report["bandwidth"])}
    for r in report["rows"]:
        vs = f"{r['vs_torch_fused']:.2f}x" if r["vs_torch_fused"] is not None else "-"
        lines.append(
            f"{r['optimizer']:9} {r['backend']:14} {'2^' + str(r['log2_size']):>5} "
            f"{r['us_per_step']:11.1f} {r['Gparams_per_s']:9.3f} {r['bytes_per_param']:7d} "
            f"{r['GBps']:7.1f} {100 * r['share_of_bandwidth']:4.0f}%{'!' if id(r) in bad else ' '}"
            f"{vs:>8} {r['first_call_s']:10.3f}"
        )
    lines.append("")
    if bad:
        worst = max(100 * r["share_of_bandwidth"] for r in report["rows"] if id(r) in bad)
        lines.append(f"! {len(bad)} rows moving at least the probe's bytes beat the measured "
                     f"bandwidth (up to {worst:.0f} %): the probe under-measured, disturbed by "
                     f"other processes (load average "
                     f"{report['env'].get('load_average_1min', 0):.2f}) or small enough to stay "
                     "in the caches (--bandwidth-size); their %bw overstate")
    lines.append("vs fused: torch.optim fused step time / this row's (above 1: faster than torch). "
                 "1st call: compile or cache load, not in us/step.")
    adapter = [r for r in report["rows"] if r.get("over_cpu_us") is not None]
    if adapter:
        lines.append("torch-single: torch.optim's one-tensor step (foreach=False); torch-adapter: "
                     "the same through optbench.optim.torch_adapter (numpy vectors shared "
                     "with torch). Its time per step beyond the native cpu kernel's:")
        lines += [f"  {r['optimizer']:9} 2^{r['log2_size']:<3} +{r['over_cpu_us']:.1f} us "
                  f"({r['us_per_step'] / (r['us_per_step'] - r['over_cpu_us']):.2f}x the cpu "
                  "step)" for r in adapter]
    return lines


def _text_batched(rows: list[dict]) -> list[str]:
    lines = [
        "batched: K models of P params as one (K, P) step vs K separate 1-D steps (median us "
        "per step of all K; speedup = separate / batched; Gparam/s and %bw of the batched step)",
        f"{'optimizer':9} {'backend':7} {'K':>5} {'P':>8} {'batched us':>11} "
        f"{'separate us':>12} {'speedup':>8} {'Gparam/s':>9} {'%bw':>5} {'1st call s':>10}",
    ]
    for r in rows:
        lines.append(
            f"{r['optimizer']:9} {r['backend']:7} {r['models']:5d} {r['params']:8d} "
            f"{r['us_batched']:11.1f} {r['us_separate']:12.1f} {r['speedup']:7.2f}x "
            f"{r['Gparams_per_s']:9.3f} {100 * r['share_of_bandwidth']:4.0f}% "
            f"{r['first_call_s']:10.3f}"
        )
    return lines
