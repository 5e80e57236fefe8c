"""`python -m optbench kernels --section lockstep`: training steps of K models of one shape
in lockstep against K separate models, in sequences x steps per second.

One step is what the engine does per training step, on fixed batches (drawing them is
the tasks' business and is left out on every side): forward + BPTT + loss for all K
models, per-model global-norm clipping to 1, one Adam step (K learning rates). Sides:

- `lockstep`: the engine's backend (`cpu`: one parallel region, a thread per model;
  `cuda`: its kernels), the (K, P) clipping and Adam steps.
- `separate`: K models one after another on the same backend, as a per-cell run steps
  them (cpu: Model.loss_and_grad on Numba's threads + clip + Adam, each model its own;
  cuda: the engine's kernels for one model, K times).
- `torch`: K torch models (nn.LSTM / GRU / RNN + Linear, torch.optim.Adam) stepped one
  after another, on the CPU; on a GPU, `cudnn`: the same on the device (cuDNN's kernels,
  model by model).
- `vmap`: torch.func over the K models' stacked parameters (model ensembling:
  vmap(grad(loss)) of a functional cell written with torch's batched matrix products,
  and one Adam over the stacked tensors); on the CPU and, on a GPU, the device. (vmap over
  nn.LSTM itself has no batching rule for the fused RNN op and loops over the models.)

Sequences x steps per second = K x B / seconds per step. Compile time (the first call of
each side) is reported apart. Sides are timed interleaved, round by round. CUDA sides are
timed with CUDA events (optbench.bandwidth.device_seconds; host clock under the
simulator, whose figures mean nothing).
"""

from __future__ import annotations

import numpy as np

from optbench import nn, optim
from optbench.bandwidth import device_seconds
from optbench.kernels import Candidate, gpu_present, torch_cuda_seconds
from optbench.lockstep.engine import set_targets
from optbench.optim.drivers import cuda_module

DEFAULT_CONFIG = ("lstm", 64, 100, 32, 2)  # the GPU target's shape
DEFAULT_MODELS = {"cpu": (1, 4, 16), "cuda": (1, 16, 64, 256)}
SIDES = ("lockstep", "separate", "torch", "vmap", "cudnn", "cudnn_vmap")


def _models(kind, H, I, K):
    return [nn.build(kind, I, H, 1, seed=k) for k in range(K)]


def _data(rng, K, B, T, I):
    x = rng.standard_normal((K, B, T, I)).astype(np.float32)
    y = rng.standard_normal((K, B, 1)).astype(np.float32)
    return x, y


def _lockstep(device, kind, H, T, B, I, K, rng):
    """The engine's step for K models; returns (step, synchronize)."""
    models = _models(kind, H, I, K)
    if device == "cpu":
        from optbench.lockstep.cpu import Cpu as Backend
    else:
        from optbench.lockstep.cuda import Cuda as Backend
    be = Backend(models[0], K, B, T, np.float32)
    be.load(np.stack([m.params for m in models]))
    x, y = _data(rng, K, B, T, I)
    slot = be.slots[0]
    slot["x"][:] = x
    for k in range(K):
        set_targets(slot, k, y[k])
    slot["denom"][:] = B
    opt = optim.create("adam", backend=be.optim_backend, lr=np.geomspace(1e-4, 1e-2, K))
    state = opt.init(be.params)

    def step():
        be.launch(0, K)
        be.wait()
        optim.clip_grad_norm(be.grads, 1.0)
        opt.step(be.params, be.grads, state)

    return step


def _separate_cpu(kind, H, T, B, I, K, rng):
    models = _models(kind, H, I, K)
    x, y = _data(rng, K, B, T, I)
    opts = [optim.create("adam", backend="cpu", lr=lr) for lr in np.geomspace(1e-4, 1e-2, K)]
    states = [o.init(m.params) for o, m in zip(opts, models)]

    def step():
        for k, (m, o, s) in enumerate(zip(models, opts, states)):
            grads = m.loss_and_grad(x[k], y[k])[1]
            optim.clip_grad_norm(grads, 1.0)
            o.step(m.params, grads, s)

    return step


def _separate_cuda(kind, H, T, B, I, K, rng):
    steps = [_lockstep("cuda", kind, H, T, B, I, 1, rng) for _ in range(K)]

    def step():
        for s in steps:
            s()

    return step


def _torch_separate(torch, device, kind, H, T, B, I, K, rng):
    """K torch models stepped one after another (cuDNN's kernels on a GPU)."""
    layers = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}
    x, y = _data(rng, K, B, T, I)
    sides = []
    for k in range(K):
        layer = layers[kind](I, H, batch_first=True).to(device)
        head = torch.nn.Linear(H, 1).to(device)
        params = list(layer.parameters()) + list(head.parameters())
        sides.append((layer, head, params, torch.optim.Adam(params, lr=1e-3),
                      torch.from_numpy(x[k]).to(device), torch.from_numpy(y[k]).to(device)))

    def step():
        for layer, head, params, adam, xk, yk in sides:
            for p in params:
                p.grad = None
            out, _ = layer(xk)
            loss = torch.nn.functional.mse_loss(head(out[:, -1]), yk)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            adam.step()

    return step


def _cell(torch, kind):
    """The cell as torch computes it, written with plain tensor operations (so that vmap
    batches its products over the models)."""
    def lstm(p, x):
        B, T = x.shape[0], x.shape[1]
        H = p["weight_hh_l0"].shape[1]
        xw = x @ p["weight_ih_l0"].T + p["bias_ih_l0"] + p["bias_hh_l0"]
        h = x.new_zeros(B, H)
        c = x.new_zeros(B, H)
        for t in range(T):
            i, f, g, o = (xw[:, t] + h @ p["weight_hh_l0"].T).chunk(4, -1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
        return h

    def gru(p, x):
        B, T = x.shape[0], x.shape[1]
        H = p["weight_hh_l0"].shape[1]
        xw = x @ p["weight_ih_l0"].T + p["bias_ih_l0"]
        h = x.new_zeros(B, H)
        for t in range(T):
            xr, xz, xn = xw[:, t].chunk(3, -1)
            hr, hz, hn = (h @ p["weight_hh_l0"].T + p["bias_hh_l0"]).chunk(3, -1)
            r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
            n = torch.tanh(xn + r * hn)
            h = (1 - z) * n + z * h
        return h

    def rnn(p, x):
        B, T = x.shape[0], x.shape[1]
        H = p["weight_hh_l0"].shape[1]
        xw = x @ p["weight_ih_l0"].T + p["bias_ih_l0"] + p["bias_hh_l0"]
        h = x.new_zeros(B, H)
        for t in range(T):
            h = torch.tanh(xw[:, t] + h @ p["weight_hh_l0"].T)
        return h

    return {"lstm": lstm, "gru": gru, "rnn": rnn}[kind]


def _torch_vmap(torch, device, kind, H, T, B, I, K, rng):
    """torch.func model ensembling over the K models' stacked parameters."""
    from torch.func import grad, vmap

    layers = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}
    modules = [(layers[kind](I, H), torch.nn.Linear(H, 1)) for _ in range(K)]
    names = ["weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"]
    stacked = {n: torch.stack([getattr(m[0], n).detach() for m in modules]).to(device)
               for n in names}
    stacked["head_w"] = torch.stack([m[1].weight.detach() for m in modules]).to(device)
    stacked["head_b"] = torch.stack([m[1].bias.detach() for m in modules]).to(device)
    cell = _cell(torch, kind)
    x, y = (torch.from_numpy(a).to(device) for a in _data(rng, K, B, T, I))

    def loss(p, xk, yk):
        out = cell(p, xk) @ p["head_w"].T + p["head_b"]
        return torch.nn.functional.mse_loss(out, yk)

    grads_of = vmap(grad(loss))
    params = list(stacked.values())
    adam = torch.optim.Adam(params, lr=1e-3, foreach=True)

    def step():
        g = grads_of(stacked, x, y)
        # per-model clipping to norm 1 over all of a model's parameters
        norms = torch.sqrt(sum((v.reshape(K, -1) ** 2).sum(1) for v in g.values()))
        scale = torch.clamp(1.0 / (norms + 1e-6), max=1.0)
        for name, p in stacked.items():
            p.grad = g[name] * scale.reshape((K,) + (1,) * (p.dim() - 1))
        adam.step()

    return step


def bench_lockstep(config=DEFAULT_CONFIG, ks=None, devices=("cpu",), repeat: int = 10,
                   torch=None) -> list[dict]:
    """One row per (device, K): seconds per step and sequences x steps per second of each
    side (module docstring). torch: the module, or None to leave its sides out."""
    kind, H, T, B, I = config
    rows = []
    for device in devices:
        real_gpu = False
        if device == "cuda":
            cuda_module()
            real_gpu = gpu_present()
        for K in (ks or DEFAULT_MODELS[device]):
            rng = np.random.default_rng(0)
            clock = device_seconds if device == "cuda" else None
            cands = [Candidate("lockstep", _lockstep(device, kind, H, T, B, I, K, rng), 0, clock)]
            separate = _separate_cpu if device == "cpu" else _separate_cuda
            cands.append(Candidate("separate", separate(kind, H, T, B, I, K, rng), 0, clock))
            if torch is not None and device == "cpu":
                cands.append(Candidate("torch", _torch_separate(torch, "cpu", kind, H, T, B, I,
                                                                K, rng), 0))
                cands.append(Candidate("vmap", _torch_vmap(torch, "cpu", kind, H, T, B, I, K,
                                                           rng), 0))
            if torch is not None and real_gpu and torch.cuda.is_available():
                tclock = torch_cuda_seconds(torch)
                cands.append(Candidate("cudnn", _torch_separate(torch, "cuda", kind, H, T, B, I,
                                                                K, rng), 0, tclock))
                cands.append(Candidate("cudnn_vmap", _torch_vmap(torch, "cuda", kind, H, T, B,
                                                                 I, K, rng), 0, tclock))
            for c in cands:
                c.warm_up()
            for _ in range(repeat):
                for c in cands:
                    c.sample()
            ms = {c.label: float(np.median(c.samples)) * 1e3 for c in cands}
            rows.append({
                "model": kind, "H": H, "T": T, "B": B, "I": I, "K": K, "device": device,
                "simulator": device == "cuda" and not real_gpu,
                "ms": ms,
                "seq_steps_per_s": {name: K * B / (t / 1e3) for name, t in ms.items()},
                "lockstep_speedup": {name: t / ms["lockstep"] for name, t in ms.items()
                                     if name != "lockstep"},
                "first_call_s": {c.label: c.first_call_s for c in cands},
                "samples": repeat,
            })
    return rows


def format_rows(rows: list[dict]) -> list[str]:
    lines = [("lockstep: K models of one shape per training step (forward + BPTT + clip + "
              "Adam, fixed batches) against K separate models; ms per step of all K, "
              "sequences x steps per second, and lockstep's speedup over each side")]
    for r in rows:
        head = (f"{r['model']}({r['H']}) T={r['T']} B={r['B']} I={r['I']} K={r['K']} "
                f"{r['device']}" + (" (SIMULATOR: timings mean nothing)" if r["simulator"]
                                    else ""))
        cells = []
        for name in SIDES:
            if name not in r["ms"]:
                continue
            speed = r["lockstep_speedup"].get(name)
            cells.append(f"{name} {r['ms'][name]:.2f} ms ({r['seq_steps_per_s'][name]:,.0f}/s"
                         + (f", x{speed:.2f}" if speed else "") + ")")
        lines.append(f"  {head}: " + "; ".join(cells))
    return lines
