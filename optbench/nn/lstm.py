"""LSTM cell (Hochreiter & Schmidhuber 1997; forget gate: Gers, Schmidhuber & Cummins
2000) exactly as torch.nn.LSTM computes it, gates in torch's order i, f, g, o:

    i = sigmoid(W_ii x + b_ii + W_hi h + b_hi)        f = sigmoid(... f rows ...)
    g = tanh(W_ig x + b_ig + W_hg h + b_hg)           o = sigmoid(... o rows ...)
    c_t = f * c_{t-1} + i * g                         h_t = o * tanh(c_t)

Backward through time at step t, with dh = dL/dh_t (total: head + through step t+1)
and dc the part of dL/dc_t that came through c_{t+1}:

    dc += dh * o * (1 - tanh(c_t)^2)
    d pre_i = dc * g * i (1 - i)          d pre_f = dc * c_{t-1} * f (1 - f)
    d pre_g = dc * i * (1 - g^2)          d pre_o = dh * tanh(c_t) * o (1 - o)
    dc_{t-1} = dc * f

Both passes run one batch chunk per thread through all time steps, so threads never
wait on each other; see optbench.nn._bptt for the shared layout (G blocks 0..3 = i, f,
o, g: the three sigmoid gates side by side) and optbench.nn._gemm for the per-step
products.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from optbench.nn._act import tanh
from optbench.nn._bptt import CellSpec, dh_step, start_state
from optbench.nn._gemm import SIGMOID, TANH, mm
from optbench.nn._jit import kernel

_ONE = np.float32(1.0)


@kernel(parallel=True)
def lstm_forward(x, z, g, c, y, cat_data, cat_pk, head_data, head_pk, rows, hidden,
                 hp, every):
    """Forward over x (B, T, I). Slots are taken modulo the buffers' first dimension:
    T+1 / T for training (everything kept for BPTT), 2 / 1 when streaming. Writes
    h_t into z, c_t into c, the activated gates into g, head outputs into y."""
    steps = x.shape[1]
    for chunk in prange(rows.size - 1):
        lo, hi = rows[chunk], rows[chunk + 1]
        start_state(z[0], lo, hi, hidden)
        c[0, lo:hi] = 0
        for t in range(steps):
            zt, zn = z[t % z.shape[0]], z[(t + 1) % z.shape[0]]
            gt = g[t % g.shape[0]]
            c0, c1 = c[t % c.shape[0]], c[(t + 1) % c.shape[0]]
            for b in range(lo, hi):
                for k in range(x.shape[2]):
                    zt[b, hidden + 1 + k] = x[b, t, k]
            # The product applies the gates' sigmoid / tanh in registers (SPEC.activations).
            mm(zt, 0, cat_data, cat_pk, gt, 0, lo, hi, False)
            for b in range(lo, hi):
                # One simple loop per quantity, over 1-D views: LLVM vectorizes a loop
                # only when it can rule out overlap with a few runtime checks.
                i, f = gt[b, :hidden], gt[b, hp:hp + hidden]
                o, gg = gt[b, 2 * hp:2 * hp + hidden], gt[b, 3 * hp:3 * hp + hidden]
                cp, cn, h = c0[b], c1[b], zn[b]
                for j in range(hidden):
                    cn[j] = f[j] * cp[j] + i[j] * gg[j]
                for j in range(hidden):
                    h[j] = o[j] * tanh(cn[j])
            if every or t == steps - 1:
                mm(zn, 0, head_data, head_pk, y[t % y.shape[0]], 0, lo, hi, False)


@kernel(parallel=True)
def lstm_backward(z, g, c, dy, bwd_data, bwd_pk, headt_data, headt_pk, dh, dc, norms,
                  rows, hidden, hp, every):
    """BPTT: overwrites g with dL/d(pre-activations) and norms[b, t] with ||dL/dh_t[b]||."""
    steps = g.shape[0]
    for chunk in prange(rows.size - 1):
        lo, hi = rows[chunk], rows[chunk + 1]
        dc[lo:hi] = 0
        for t in range(steps - 1, -1, -1):
            last = t == steps - 1
            dh_step(last, every or last, False, dy[t % dy.shape[0]], headt_data, headt_pk,
                    g[min(t + 1, steps - 1)], bwd_data, bwd_pk, dh, lo, hi)
            gt, c0, c1 = g[t], c[t], c[t + 1]
            for b in range(lo, hi):
                d, dcr, cp, cn = dh[b, :hidden], dc[b], c0[b], c1[b]
                i, f = gt[b, :hidden], gt[b, hp:hp + hidden]
                o, gg = gt[b, 2 * hp:2 * hp + hidden], gt[b, 3 * hp:3 * hp + hidden]
                sq = np.float32(0.0)
                for j in range(hidden):
                    dj, oj, tc = d[j], o[j], tanh(cn[j])
                    sq += dj * dj
                    dcr[j] += dj * oj * (_ONE - tc * tc)  # through c_{t+1} plus through h_t
                    o[j] = dj * tc * (oj - oj * oj)
                norms[b, t] = np.sqrt(sq)
                for j in range(hidden):
                    ij, gj = i[j], gg[j]
                    i[j] = dcr[j] * gj * (ij - ij * ij)
                    gg[j] = dcr[j] * ij * (_ONE - gj * gj)
                for j in range(hidden):
                    fj = f[j]
                    f[j] = dcr[j] * cp[j] * (fj - fj * fj)
                    dcr[j] *= fj


SPEC = CellSpec(
    name="lstm", gates=("i", "f", "g", "o"), ih_blocks=(0, 1, 3, 2), hh_blocks=(0, 1, 3, 2),
    forward=lstm_forward, backward=lstm_backward, cell_state=True,
    activations=(SIGMOID, SIGMOID, SIGMOID, TANH),
    reference="Hochreiter & Schmidhuber 1997; Gers, Schmidhuber & Cummins 2000",
)
