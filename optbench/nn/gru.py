"""GRU cell (Cho et al. 2014) exactly as torch.nn.GRU computes it, gates in torch's
order r, z, n; the reset gate multiplies the recurrent part of n only:

    r = sigmoid(W_ir x + b_ir + W_hr h + b_hr)        z = sigmoid(... z rows ...)
    n = tanh(W_in x + b_in + r * (W_hn h + b_hn))
    h_t = (1 - z) * n + z * h_{t-1}

G blocks (optbench.nn._bptt): 0 = r, 1 = z, 2 = hn = W_hn h + b_hn, 3 = W_in x + b_in.
Backward at step t, with dh = dL/dh_t:

    d pre_n = dh * (1 - z) * (1 - n^2)      (block 3; also the gradient of W_in, b_in)
    d hn    = d pre_n * r                   (block 2: gradient of W_hn, b_hn)
    d pre_r = d pre_n * hn * r (1 - r)      d pre_z = dh * (h_{t-1} - n) * z (1 - z)
    dL/dh_{t-1} = dh * z + [d pre_r, d pre_z, d hn] @ [W_hr; W_hz; W_hn]

The first term is left in dh by the element-wise step (`carried` in dh_step).
"""

from __future__ import annotations

import numpy as np
from numba import prange

from optbench.nn._act import sigmoid, tanh
from optbench.nn._bptt import CellSpec, dh_step, start_state
from optbench.nn._gemm import mm, row
from optbench.nn._jit import kernel

_ONE = np.float32(1.0)


@kernel
def gru_forward_rows(x, z, g, c, y, cat_data, cat_pk, head_data, head_pk, rows, hidden,
                     hp, every):
    """As lstm_forward_rows; `c` is unused (no cell state) and may be empty."""
    steps = x.shape[1]
    lo, hi = rows[0], rows[1]
    start_state(z[0], lo, hi, hidden)
    for t in range(steps):
        zt, zn = z[t % z.shape[0]], z[(t + 1) % z.shape[0]]
        gt = g[t % g.shape[0]]
        for b in range(lo, hi):
            for k in range(x.shape[2]):
                zt[b, hidden + 1 + k] = x[b, t, k]
        mm(zt, 0, cat_data, cat_pk, gt, 0, lo, hi, False)
        for b in range(lo, hi):
            # Simple loops over contiguous 1-D views (`row`), so that LLVM vectorizes each.
            gb = row(gt, b)
            rz, hn, n = gb[:2 * hp], gb[2 * hp:2 * hp + hidden], gb[3 * hp:3 * hp + hidden]
            for j in range(2 * hp):  # blocks r and z (and their padding)
                rz[j] = sigmoid(rz[j])
            r, u, hprev, h = rz[:hidden], rz[hp:hp + hidden], row(zt, b)[:hidden], row(zn, b)
            for j in range(hidden):
                n[j] = tanh(n[j] + r[j] * hn[j])
            for j in range(hidden):
                h[j] = n[j] + u[j] * (hprev[j] - n[j])
        if every or t == steps - 1:
            mm(zn, 0, head_data, head_pk, y[t % y.shape[0]], 0, lo, hi, False)


@kernel(parallel=True)
def gru_forward(x, z, g, c, y, cat_data, cat_pk, head_data, head_pk, rows, hidden,
                hp, every):
    """`gru_forward_rows` for each chunk of rows, one per thread."""
    for chunk in prange(rows.size - 1):
        gru_forward_rows(x, z, g, c, y, cat_data, cat_pk, head_data, head_pk,
                         rows[chunk:chunk + 2], hidden, hp, every)


@kernel
def gru_backward_rows(z, g, c, dy, bwd_data, bwd_pk, headt_data, headt_pk, dh, scratch,
                      norms, rows, hidden, hp, every):
    """As lstm_backward_rows; `c` is unused, `scratch` (B, H) holds d pre_z for a moment."""
    steps = g.shape[0]
    lo, hi = rows[0], rows[1]
    for t in range(steps - 1, -1, -1):
        last = t == steps - 1
        dh_step(last, every or last, True, dy[t % dy.shape[0]], headt_data, headt_pk,
                g[min(t + 1, steps - 1)], bwd_data, bwd_pk, dh, lo, hi)
        gt, zt = g[t], z[t]
        for b in range(lo, hi):
            d, dz, gb = row(dh, b)[:hidden], row(scratch, b), row(gt, b)
            hprev = row(zt, b)[:hidden]
            r, u = gb[:hidden], gb[hp:hp + hidden]
            hn, n = gb[2 * hp:2 * hp + hidden], gb[3 * hp:3 * hp + hidden]
            sq = np.float32(0.0)
            for j in range(hidden):
                sq += d[j] * d[j]
                dz[j] = d[j] * (hprev[j] - n[j]) * (u[j] - u[j] * u[j])
            norms[b, t] = np.sqrt(sq)
            for j in range(hidden):
                n[j] = d[j] * (_ONE - u[j]) * (_ONE - n[j] * n[j])
            for j in range(hidden):
                d[j] *= u[j]  # the part of dL/dh_{t-1} through (z * h_{t-1})
                u[j] = dz[j]
            for j in range(hidden):
                rj = r[j]
                r[j] = n[j] * hn[j] * (rj - rj * rj)
                hn[j] = n[j] * rj


@kernel(parallel=True)
def gru_backward(z, g, c, dy, bwd_data, bwd_pk, headt_data, headt_pk, dh, scratch,
                 norms, rows, hidden, hp, every):
    """`gru_backward_rows` for each chunk of rows, one per thread."""
    for chunk in prange(rows.size - 1):
        gru_backward_rows(z, g, c, dy, bwd_data, bwd_pk, headt_data, headt_pk, dh, scratch,
                          norms, rows[chunk:chunk + 2], hidden, hp, every)


SPEC = CellSpec(
    name="gru", gates=("r", "z", "n"), ih_blocks=(0, 1, 3), hh_blocks=(0, 1, 2),
    forward=gru_forward, backward=gru_backward, forward_rows=gru_forward_rows,
    backward_rows=gru_backward_rows, reference="Cho et al. 2014",
)
