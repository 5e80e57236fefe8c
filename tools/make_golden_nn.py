"""Write the golden fixtures of optbench.nn from torch autograd.

    python tools/make_golden_nn.py          # -> tests/fixtures/nn_golden.npz, nn_golden.json

For every model (torch.nn.LSTM / GRU / RNN with batch_first=True, plus torch.nn.Linear
as the head) x head ("last", "every") x loss ("mse", "xent"), and with a step mask for
head "every", on random weights and inputs (float64, numpy seed fixed below), it stores:
the inputs, every parameter by torch name, the head's outputs, the loss, every gradient
by name, and grad_norm_per_step = mean over the batch of ||dL/dh_t||. The last comes
from unrolling the same weights through torch.nn.LSTMCell / GRUCell / RNNCell with
retain_grad() on each h_t (nn.LSTM's output only carries the head's direct part);
the unrolled loss and gradients are checked against nn.LSTM's before anything is saved.

Losses as torch reduces them: F.mse_loss (mean); F.cross_entropy (mean), with the
mask given as ignore_index=-100 on the masked steps. With a mask, MSE is the mean over
the kept steps of the per-step mean over outputs (torch has no ignore_index for MSE).

The tests (tests/test_nn_golden.py) read these files without torch.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

OUT = Path(__file__).resolve().parents[1] / "tests" / "fixtures"
SEED = 20240611
MODULES = {"lstm": (torch.nn.LSTM, torch.nn.LSTMCell), "gru": (torch.nn.GRU, torch.nn.GRUCell),
           "rnn": (torch.nn.RNN, torch.nn.RNNCell)}
# (name, B, T, I, H, O): "small" for every combination; "panels" (one case per model)
# crosses a 32-column panel boundary (H = 33) and leaves partial row tiles (B = 9).
SHAPES = [("small", 3, 5, 2, 5, 3), ("panels", 9, 4, 3, 33, 2)]


def cases():
    for shape in SHAPES:
        for kind in MODULES:
            for head in ("last", "every"):
                for loss in ("mse", "xent"):
                    for masked in ((False, True) if head == "every" else (False,)):
                        if shape[0] == "panels" and (head, loss, masked) != ("every", "xent", True):
                            continue
                        yield shape, kind, head, loss, masked


def loss_fn(yhat, y, loss, mask):
    if loss == "mse":
        if mask is None:
            return F.mse_loss(yhat, y)
        per_step = ((yhat - y) ** 2).mean(-1)
        return (per_step * mask).sum() / mask.sum()
    if yhat.dim() == 2:
        return F.cross_entropy(yhat, y)
    target = y if mask is None else torch.where(mask > 0, y, torch.full_like(y, -100))
    return F.cross_entropy(yhat.reshape(-1, yhat.shape[-1]), target.reshape(-1),
                           ignore_index=-100)


def run(shape, kind, head, loss, masked, rng):
    _, B, T, I, H, O = shape
    full, cell_cls = MODULES[kind]
    rnn = full(I, H, batch_first=True).double()
    linear = torch.nn.Linear(H, O).double()
    bound = 1.0 / np.sqrt(H)
    params = {}
    with torch.no_grad():
        for name, p in list(rnn.named_parameters()) + [
                ("head." + n, p) for n, p in linear.named_parameters()]:
            value = rng.uniform(-2 * bound, 2 * bound, size=tuple(p.shape))
            p.copy_(torch.from_numpy(value))
            params[name] = value
    x = rng.standard_normal((B, T, I))
    if loss == "mse":
        y = rng.standard_normal((B, T, O) if head == "every" else (B, O))
    else:
        y = rng.integers(0, O, size=(B, T) if head == "every" else (B,))
    mask = None
    if masked:
        mask = rng.random((B, T)) < 0.6
        mask[0, 0] = True  # never all masked

    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    mt = None if mask is None else torch.from_numpy(mask.astype(np.float64))
    out, _ = rnn(xt)
    yhat = linear(out if head == "every" else out[:, -1])
    value = loss_fn(yhat, yt, loss, mt)
    value.backward()
    grads = {n: p.grad.numpy().copy() for n, p in rnn.named_parameters()}
    grads.update({"head." + n: p.grad.numpy().copy() for n, p in linear.named_parameters()})

    # Unrolled through the cell, to read dL/dh_t (total) at every step.
    cell = cell_cls(I, H).double()
    head2 = torch.nn.Linear(H, O).double()
    with torch.no_grad():
        for n, p in cell.named_parameters():
            p.copy_(torch.from_numpy(params[n + "_l0"]))
        for n, p in head2.named_parameters():
            p.copy_(torch.from_numpy(params["head." + n]))
    h = torch.zeros(B, H, dtype=torch.float64)
    c = torch.zeros(B, H, dtype=torch.float64)
    hs = []
    for t in range(T):
        if kind == "lstm":
            h, c = cell(xt[:, t], (h, c))
        else:
            h = cell(xt[:, t], h)
        h.retain_grad()
        hs.append(h)
    yhat2 = head2(torch.stack(hs, 1)) if head == "every" else head2(hs[-1])
    value2 = loss_fn(yhat2, yt, loss, mt)
    value2.backward()
    assert torch.allclose(value, value2, rtol=1e-12, atol=0), (value, value2)
    for n, p in cell.named_parameters():
        assert np.allclose(p.grad.numpy(), grads[n + "_l0"], rtol=1e-10, atol=1e-14), n
    norms = np.array([hs[t].grad.norm(dim=1).mean().item() for t in range(T)])

    data = {"x": x, "y": y, "yhat": yhat.detach().numpy(), "loss": np.float64(value.item()),
            "grad_norm_per_step": norms}
    if mask is not None:
        data["mask"] = mask
    data.update({"param/" + n: v for n, v in params.items()})
    data.update({"grad/" + n: v for n, v in grads.items()})
    return data


def main() -> int:
    rng = np.random.default_rng(SEED)
    arrays, index = {}, []
    for shape, kind, head, loss, masked in cases():
        case = f"{shape[0]}/{kind}/{head}/{loss}" + ("/masked" if masked else "")
        for key, value in run(shape, kind, head, loss, masked, rng).items():
            arrays[f"{case}/{key}"] = value
        index.append({"case": case, "kind": kind, "head": head, "loss": loss,
                      "masked": masked, "B": shape[1], "T": shape[2], "I": shape[3],
                      "H": shape[4], "O": shape[5]})
    OUT.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(OUT / "nn_golden.npz", **arrays)
    meta = {"made_by": "python tools/make_golden_nn.py", "torch": torch.__version__,
            "numpy": np.__version__, "seed": SEED, "dtype": "float64", "cases": index}
    (OUT / "nn_golden.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(f"wrote {len(index)} cases to {OUT / 'nn_golden.npz'} (torch {torch.__version__})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
