"""Write tests/fixtures/optim_golden.{npz,json}: torch.optim trajectories, and torch's gradient
clipping, that the numpy reference optimizers are checked against.

    pip install 'optbench[compare]'      # torch
    python tools/make_golden_optim.py

The tests read the fixtures and never import torch. The problem is a noisy quadratic,
f(theta) = 1/2 sum_i h_i (theta_i - c_i)^2, with gradient h * (theta - c) + noise_t in float32;
the noise sequence is stored, so a test recomputes every gradient from its own parameters
(closed loop) exactly as this script does. Each case runs STEPS steps of torch.optim's
single-tensor code path (foreach=False) and keeps the parameters at SNAPSHOTS and the final
state. Lion is not in torch.optim: `Lion` below is the update of the authors'
lion_pytorch.py (lucidrains/lion-pytorch), written out.

CASES is the table the kernel tests run, from the registry: every built-in optimizer with
its spec's `cases` (its defaults and non-default hyper-parameters that switch on each of its
code paths; tests/optim_cases.py reads the same table). Non-default eps is 1e-3
(sqrt(v) is about 1 here), large enough that putting it inside the root, or before the bias
correction instead of after, moves the trajectory far past the test's tolerance.
"""

from __future__ import annotations

import datetime
import json
import platform
from pathlib import Path

import numpy as np
import torch

from optbench import optim

OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures"
COMMAND = "python tools/make_golden_optim.py"
N, STEPS, SEED = 32, 300, 20240601
SNAPSHOTS = (1, 2, 3, 5, 10, 30, 100, 200, 300)
CLIP_NORMS, CLIP_VALUE = (1.0, 1000.0), 0.5

CASES = [(name, dict(h)) for name in optim.builtin_names() for h in optim.spec(name).cases]


class Lion(torch.optim.Optimizer):
    """lion_pytorch.py's update (lucidrains/lion-pytorch), as its authors wrote it."""

    def __init__(self, params, lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0):
        super().__init__(params, dict(lr=lr, betas=betas, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            lr, wd, (beta1, beta2) = group["lr"], group["weight_decay"], group["betas"]
            for p in group["params"]:
                state = self.state[p]
                if not state:
                    state["exp_avg"] = torch.zeros_like(p)
                exp_avg, grad = state["exp_avg"], p.grad
                p.data.mul_(1 - lr * wd)
                update = exp_avg.clone().mul_(beta1).add(grad, alpha=1 - beta1).sign_()
                p.add_(update, alpha=-lr)
                exp_avg.mul_(beta2).add_(grad, alpha=1 - beta2)


def make_optimizer(name, params, hparams):
    """torch.optim's class named by the spec's `torch` field (Lion: the class above)."""
    if name == "lion":
        return Lion(params, **hparams)
    cls = getattr(torch.optim, optim.spec(name).torch.removeprefix("torch.optim."))
    return cls(params, foreach=False, **hparams)


def trajectory(name, hparams, theta0, center, curvature, noise):
    theta = torch.tensor(theta0, requires_grad=True)
    opt = make_optimizer(name, [theta], hparams)
    c, h = torch.tensor(center), torch.tensor(curvature)
    snaps = []
    for t in range(1, STEPS + 1):
        with torch.no_grad():
            theta.grad = h * (theta - c) + torch.tensor(noise[t - 1])
        opt.step()
        if t in SNAPSHOTS:
            snaps.append(theta.detach().numpy().copy())
    state = {k: np.asarray(v, dtype=np.float32) for k, v in opt.state[theta].items()
             if k != "step"}
    return np.stack(snaps), state


def clipping(rng):
    """torch.nn.utils clip_grad_norm_ / clip_grad_value_ on a few float32 vectors."""
    out = {}
    grads = {
        "normal": rng.standard_normal(300).astype(np.float32) * 3,
        "spiky": np.where(rng.random(3000) < 0.01, 1e4, -1e-3).astype(np.float32),
        "small": rng.standard_normal(300).astype(np.float32) * 1e-3,
    }
    for key, g in grads.items():
        out[f"clip/{key}/in"] = g
        for max_norm in CLIP_NORMS:
            t = torch.tensor(g)
            t.grad = torch.tensor(g)
            norm = torch.nn.utils.clip_grad_norm_([t], max_norm)
            out[f"clip/{key}/norm/{max_norm}"] = t.grad.numpy().copy()
            out[f"clip/{key}/norm"] = np.float64(norm.item())
        t = torch.tensor(g)
        t.grad = torch.tensor(g)
        torch.nn.utils.clip_grad_value_([t], CLIP_VALUE)
        out[f"clip/{key}/value"] = t.grad.numpy().copy()
    return out


def main():
    rng = np.random.default_rng(SEED)
    theta0 = rng.standard_normal(N).astype(np.float32)
    center = rng.standard_normal(N).astype(np.float32)
    curvature = np.exp(rng.uniform(np.log(0.1), np.log(10.0), N)).astype(np.float32)
    noise = (0.5 * rng.standard_normal((STEPS, N))).astype(np.float32)
    arrays = dict(theta0=theta0, center=center, curvature=curvature, noise=noise)
    for i, (name, hparams) in enumerate(CASES):
        snaps, state = trajectory(name, hparams, theta0, center, curvature, noise)
        arrays[f"{i}/params"] = snaps
        arrays.update({f"{i}/state/{k}": v for k, v in state.items()})
    arrays.update(clipping(rng))
    OUT.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(OUT / "optim_golden.npz", **arrays)
    meta = {
        "command": COMMAND,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "made": datetime.date.today().isoformat(),
        "problem": "f(theta) = 1/2 sum h (theta - c)^2; grad_t = h * (theta - c) + noise[t-1] "
                   "(float32); theta0, c (center), h (curvature), noise in the npz",
        "steps": STEPS,
        "snapshots": list(SNAPSHOTS),
        "cases": [{"id": i, "optimizer": n, "hparams": h} for i, (n, h) in enumerate(CASES)],
        "clip": {"vectors": ["normal", "spiky", "small"], "max_norms": list(CLIP_NORMS),
                 "clip_value": CLIP_VALUE},
    }
    (OUT / "optim_golden.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(f"wrote {OUT / 'optim_golden.npz'} and .json ({len(CASES)} cases, torch {torch.__version__})")


if __name__ == "__main__":
    main()
