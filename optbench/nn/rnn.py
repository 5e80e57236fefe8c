"""Elman RNN with tanh (Elman 1990) exactly as torch.nn.RNN(nonlinearity="tanh"):

    h_t = tanh(W_ih x + b_ih + W_hh h_{t-1} + b_hh)

Backward at step t, with dh = dL/dh_t:  d pre = dh * (1 - h_t^2), and
dL/dh_{t-1} = d pre @ W_hh. Repeated multiplication by W_hh^T diag(1 - h^2) is what
makes its gradients vanish or explode over long lags (Bengio, Simard & Frasconi 1994;
Pascanu, Mikolov & Bengio 2013), the contrast the benchmark measures.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from optbench.nn._act import tanh
from optbench.nn._bptt import CellSpec, dh_step, start_state
from optbench.nn._gemm import mm, row
from optbench.nn._jit import kernel

_ONE = np.float32(1.0)


@kernel
def rnn_forward_rows(x, z, g, c, y, cat_data, cat_pk, head_data, head_pk, rows, hidden, hp,
                     every):
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
            pre, h = row(gt, b)[:hidden], row(zn, b)[:hidden]
            for j in range(hidden):
                h[j] = tanh(pre[j])
        if every or t == steps - 1:
            mm(zn, 0, head_data, head_pk, y[t % y.shape[0]], 0, lo, hi, False)


@kernel(parallel=True)
def rnn_forward(x, z, g, c, y, cat_data, cat_pk, head_data, head_pk, rows, hidden, hp,
                every):
    """`rnn_forward_rows` for each chunk of rows, one per thread."""
    for chunk in prange(rows.size - 1):
        rnn_forward_rows(x, z, g, c, y, cat_data, cat_pk, head_data, head_pk,
                         rows[chunk:chunk + 2], hidden, hp, every)


@kernel
def rnn_backward_rows(z, g, c, dy, bwd_data, bwd_pk, headt_data, headt_pk, dh, dc, norms,
                      rows, hidden, hp, every):
    """As lstm_backward_rows; `c` and `dc` are unused."""
    steps = g.shape[0]
    lo, hi = rows[0], rows[1]
    for t in range(steps - 1, -1, -1):
        last = t == steps - 1
        dh_step(last, every or last, False, dy[t % dy.shape[0]], headt_data, headt_pk,
                g[min(t + 1, steps - 1)], bwd_data, bwd_pk, dh, lo, hi)
        gt, zn = g[t], z[t + 1]
        for b in range(lo, hi):
            d, h, dpre = row(dh, b)[:hidden], row(zn, b)[:hidden], row(gt, b)[:hidden]
            sq = np.float32(0.0)
            for j in range(hidden):
                sq += d[j] * d[j]
            norms[b, t] = np.sqrt(sq)
            for j in range(hidden):
                dpre[j] = d[j] * (_ONE - h[j] * h[j])


@kernel(parallel=True)
def rnn_backward(z, g, c, dy, bwd_data, bwd_pk, headt_data, headt_pk, dh, dc, norms,
                 rows, hidden, hp, every):
    """`rnn_backward_rows` for each chunk of rows, one per thread."""
    for chunk in prange(rows.size - 1):
        rnn_backward_rows(z, g, c, dy, bwd_data, bwd_pk, headt_data, headt_pk, dh, dc, norms,
                          rows[chunk:chunk + 2], hidden, hp, every)


SPEC = CellSpec(
    name="rnn", gates=("h",), ih_blocks=(0,), hh_blocks=(0,),
    forward=rnn_forward, backward=rnn_backward, forward_rows=rnn_forward_rows,
    backward_rows=rnn_backward_rows, reference="Elman 1990",
)
