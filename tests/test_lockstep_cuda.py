"""The lockstep engine's CUDA kernels (under NUMBA_ENABLE_CUDASIM=1 without a GPU) against
its CPU backend, member by member: one training step's loss, gradient and gradient-norm
profile, and the evaluation outputs, each within a float32 rounding bound derived in
tests/lockstep_bound.py; and a whole group trained on "cuda" as on "cpu"."""

from dataclasses import replace

import numpy as np
import pytest
from lockstep_bound import assert_within, profile, step

from optbench import nn, tasks
from optbench.cell import Cell
from optbench.lockstep import run_group
from optbench.lockstep.cpu import Cpu
from optbench.lockstep.engine import set_targets

pytestmark = pytest.mark.cuda

# Tiny shapes: the simulator runs each CUDA thread as a Python thread. A few steps only:
# the bound is a worst case that grows with every step (by up to the absolute row sums of
# the weights), and past a handful of steps it would say little.
H, B, K, T, I = 4, 3, 2, 5, 3
CASES = [("lstm", "last", "mse", 2), ("gru", "every", "xent", 3), ("rnn", "last", "xent", 3),
         ("lstm", "every", "mse", 1)]


def backends(kind, head, loss, outputs, seed=0):
    """K models (seeds) of one shape and a batch for each (random; for head "every" with
    0/1 step weights), loaded into a CPU and a CUDA backend."""
    from optbench.lockstep.cuda import Cuda

    models = [nn.build(kind, I, H, outputs, head=head, seed=seed + k) for k in range(K)]
    rng = np.random.default_rng(seed)
    S = T if head == "every" else 1
    xs = rng.standard_normal((K, B, T, I)).astype(np.float32)
    if loss == "mse":
        ys = rng.standard_normal((K, B, S, outputs)).astype(np.float32)
    else:
        ys = rng.integers(0, outputs, (K, B, S))
    masks = (rng.random((K, B, S)) < 0.7).astype(np.float32) if head == "every" else \
        np.ones((K, B, S), np.float32)
    masks[:, 0] = 1  # a weight in every batch
    out = []
    for cls in (Cpu, Cuda):
        be = cls(models[0], K, B, T, ys.dtype)
        be.load(np.stack([m.params for m in models]))
        b = be.slots[0]
        for k in range(K):
            b["x"][k] = xs[k]
            set_targets(b, k, ys[k])
            b["mask"][k] = masks[k]
            b["denom"][k] = float(masks[k].sum(dtype=np.float64)) * (outputs if loss == "mse"
                                                                     else 1)
        out.append(be)
    return models, out


@pytest.mark.parametrize("kind, head, loss, outputs", CASES)
def test_a_training_step_matches_the_cpu_within_the_rounding_bound(kind, head, loss, outputs):
    models, (cpu, gpu) = backends(kind, head, loss, outputs)
    results = []
    for be in (cpu, gpu):
        be.launch(0, K)
        sums = be.wait()
        results.append((sums, be.to_host(be.grads)[:K], be.profiles(range(K))))
    xs = np.random.default_rng(9).standard_normal((K, 5, T, I)).astype(np.float32)
    outputs_ = [be.predict(list(range(K)), xs) for be in (cpu, gpu)]
    b = cpu.slots[0]
    for k, model in enumerate(models):
        y = b["labels"][k] if loss == "xent" else b["y"][k]
        ref = step(model.params, b["x"][k], y, b["mask"][k], b["denom"][k], kind, head, loss, H,
                   outputs)
        refp = profile(*ref["norms"])
        for (sums, grads, prof), who in zip(results, ("cpu", "cuda")):
            assert_within(sums[k], *ref["loss"], f"{who} loss sum, model {k}")
            assert_within(grads[k], *ref["grads"], f"{who} gradient, model {k}")
            assert_within(prof[k], *refp, f"{who} profile, model {k}")
        # Each backend within the bound of the exact step: of each other within twice it.
        assert_within(results[1][1][k], results[0][1][k], ref["grads"][1], "cuda vs cpu",
                      factor=2)
        assert_within(results[1][2][k], results[0][2][k], refp[1], "cuda vs cpu profile",
                      factor=2)
        fwd = step(model.params, xs[k], y[:1].repeat(5, 0), b["mask"][k][:1].repeat(5, 0),
                   1.0, kind, head, loss, H, outputs)["outputs"]
        for out, who in zip(outputs_, ("cpu", "cuda")):
            assert_within(out[k], *fwd, f"{who} outputs, model {k}")
        assert_within(outputs_[1][k], outputs_[0][k], fwd[1], "cuda vs cpu outputs", factor=2)
    # The bound can fail a wrong kernel: for most gradient elements it is under a tenth of
    # the element itself, so an error of the gradient's own size would show.
    grads, bound = ref["grads"]
    assert np.median(bound / (np.abs(grads) + 1e-30)) < 0.1


def test_a_group_trains_on_cuda_as_on_the_cpu(monkeypatch):
    monkeypatch.setattr(tasks.Task, "val_size", 8)
    monkeypatch.setattr(tasks.Task, "test_size", 8)
    base = Cell(task="adding", length=4, model="lstm", hidden=H, steps=3, eval_every=2,
                batch_size=B)
    cells = [replace(base, optimizer=o, hparams=h, seed=s)
             for (o, h), s in zip((("sgd", {"lr": 0.1}), ("adam", {"lr": 1e-2})), (0, 1))]
    gpu = {r.cell.key: r for r in run_group(cells, "cuda")}
    cpu = {r.cell.key: r for r in run_group(cells, "cpu")}
    for c in cells:
        g, r = gpu[c.key], cpu[c.key]
        assert (g.outcome, g.steps_run) == (r.outcome, r.steps_run) == ("budget", 3)
        assert [row["step"] for row in g.curves] == [row["step"] for row in r.curves] == [0, 2, 3]
        assert [p["step"] for p in g.grad_profiles] == [p["step"] for p in r.grad_profiles]
        assert g.env["engine"] == "lockstep" and g.env["lockstep_device"] == "cuda"
        assert np.isfinite([g.test_loss, g.val_loss]).all()
