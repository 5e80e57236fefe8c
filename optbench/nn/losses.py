"""Losses on the head's outputs, reduced as torch's defaults reduce them (the mean).

Both kernels see S output steps (S = T with head "every", 1 with head "last"), take
per-step weights `mask` (B, S) (all ones without a mask) and the denominator of the
mean, and return the weighted *sum* (so a set scored in row blocks adds up exactly),
writing dY = d(sum / denom)/d outputs:

    mse:  sum_{b,s} m_bs sum_o (yhat_bso - y_bso)^2,  denom = O * sum m
          (torch.nn.MSELoss(reduction="mean") when m = 1)
    xent: sum_{b,s} m_bs (logsumexp(yhat_bs) - yhat_bs[y_bs]),  denom = sum m
          (torch.nn.CrossEntropyLoss: with 0/1 weights, the mean over kept positions,
          which is what ignore_index gives)

yhat is time-major (S, B, O_padded), as the forward kernels write it; y is batch-major
(B, S, O) for mse and int class indices (B, S) for xent, as the caller passes them.
Sums are accumulated in float64.
"""

from __future__ import annotations

import numpy as np

from optbench.nn._jit import kernel


@kernel
def mse(yhat, y, mask, denom, dy):
    steps, batch, outs = dy.shape
    total = 0.0
    scale = 2.0 / denom
    for s in range(steps):
        for b in range(batch):
            m = np.float64(mask[b, s])
            for o in range(outs):
                d = np.float64(yhat[s, b, o]) - y[b, s, o]
                total += m * d * d
                dy[s, b, o] = scale * m * d
    return total


@kernel
def xent(yhat, y, mask, denom, dy):
    steps, batch, outs = dy.shape
    total = 0.0
    for s in range(steps):
        for b in range(batch):
            m = np.float64(mask[b, s])
            top = np.float64(yhat[s, b, 0])
            for o in range(1, outs):
                top = max(top, np.float64(yhat[s, b, o]))
            sum_exp = 0.0
            for o in range(outs):
                sum_exp += np.exp(yhat[s, b, o] - top)
            lse = top + np.log(sum_exp)
            label = y[b, s]
            total += m * (lse - yhat[s, b, label])
            for o in range(outs):
                p = np.exp(yhat[s, b, o] - lse)
                dy[s, b, o] = m * (p - (1.0 if o == label else 0.0)) / denom
    return total


LOSSES = {"mse": mse, "xent": xent}
