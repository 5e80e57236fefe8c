"""The lockstep engine's CUDA kernels: LSTM, GRU and tanh-RNN training steps of K models
x B sequences, and their evaluation, in float32.

Imported only after `optbench.optim.drivers.cuda_module()` found a GPU or the simulator;
the kernels name `cuda` as a module global, which is how the simulator swaps in its fake
device API. One set of kernels per shape (`kernels(...)`): the sizes are closure
constants, so that shared and local arrays have fixed sizes and every loop over units,
gate blocks or sequences has a constant trip count (NVVM unrolls it and keeps the
accumulators in registers).

Layout (the CPU kernels' block layout, optbench.nn._bptt): the gate pre-activations of
step t are blocks of H columns, pre[blk * H + u] = sum_r Wcat[r, blk * H + u] z[r], with
z = [h_{t-1} | 1 | x_t] (ZW = H + 1 + I rows) and Wcat packed from the torch-layout
parameters at the start of each step (`pack`). LSTM blocks i, f, o, g; GRU r, z, W_hn h +
b_hn, W_in x + b_in; RNN one block.

A training step, per model (grid y or z: the models; a model never spans blocks that
must talk to each other):

- `pack`: Wcat from the parameters.
- `forward`: one block per (model, SB sequences); thread (u, sg) owns hidden unit u of
  SEQ sequences (SB = SEQ x SG). Per time step, each thread reads its column of Wcat,
  row by row (coalesced across u; the block's whole Wcat is re-read every step, from
  L1 / L2, and each load feeds SEQ x NB fused multiply-adds from registers), against the
  block's z rows in shared memory (double-buffered: one barrier per step). The gate
  math is fused: the thread holding unit u of a sequence holds all of that unit's gates,
  so the cell update needs nothing from other threads. The LSTM cell state lives in
  registers across time. The head's outputs are formed in the same kernel from h_t in
  shared memory. Histories (h, c, activated gates) go to global memory for BPTT.
- `loss_terms` / `reduce_rows`: each (step, sequence)'s loss term and dL/dy; the loss
  sum per model by a fixed tree (deterministic).
- `backward`: the same blocks and threads, backwards in time: dL/dh_t from the head's
  part and dG_{t+1} (shared memory) times W_hh (read in the torch layout: coalesced
  across u), the cell's element-wise backward (overwriting the gate history with
  dL/d(pre-activations)), ||dL/dh_t|| per sequence from a per-step shared buffer.
- `weight_grads`: dWcat^T = sum over (t, b) of z^T dG, 16 x 16 output tiles through
  shared memory, scattered straight into the torch-layout gradient; `head_grads` the
  head's. Every sum runs in a fixed order: the same inputs give the same bits.

Clipping and the optimizer step are optbench.optim's (K, P) CUDA kernels.

Activations: tanh is the same rational approximation as the CPU kernels'
(optbench.nn._act: Eigen's, clamped at +-7.9053, NaN passing through), sigmoid(x) =
(1 + tanh(x / 2)) / 2, so that the two backends differ only by the rounding of sums
taken in other orders. Everything is float32: tools/check_cuda_ptx.py --ir checks that
no float64 reaches the kernels' IR.
"""

from __future__ import annotations

import hashlib
import math
from functools import cache
from pathlib import Path
from types import SimpleNamespace

import numba
from numba import cuda

from optbench.nn._act import TANH_CLAMP, TANH_P, TANH_Q

F32 = numba.float32
ZERO, HALF, ONE = F32(0.0), F32(0.5), F32(1.0)
CLAMP = F32(TANH_CLAMP)
P0, P1, P2, P3, P4, P5, P6 = (F32(v) for v in TANH_P)
Q0, Q1, Q2, Q3 = (F32(v) for v in TANH_Q)
LSTM, GRU, RNN = 0, 1, 2  # the `kind` of optbench.lockstep.cpu.KINDS
TILE = 16  # weight_grads' output tile (TILE x TILE threads)
REDUCE = 256  # reduce_rows' threads (a power of 2: a tree)
# Blocks of the gate pre-activations per kind, and the torch gate whose input / recurrent
# rows feed each block (-1: none); CellSpec.ih_blocks / hh_blocks inverted.
BLOCKS = {LSTM: 4, GRU: 4, RNN: 1}
GATE_I = {LSTM: (0, 1, 3, 2), GRU: (0, 1, -1, 2), RNN: (0,)}
GATE_H = {LSTM: (0, 1, 3, 2), GRU: (0, 1, 2, -1), RNN: (0,)}
GATES = {LSTM: 4, GRU: 3, RNN: 1}
HH_BLOCKS = {LSTM: 4, GRU: 3, RNN: 1}  # blocks 0 .. n-1 carry recurrent rows
# Keys the on-disk cache on this file (kernels.key): cache entries are keyed by the
# closure's contents, and the module-level device functions are not among them.
SOURCE_KEY = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]


@cuda.jit(device=True, inline=True)
def tanh(x):
    """optbench.nn._act's float32 tanh (see the module docstring)."""
    # Comparisons, not min / max: NaN compares false and passes through, as on the CPU.
    v = CLAMP if x > CLAMP else x  # noqa: FURB136
    v = -CLAMP if v < -CLAMP else v  # noqa: FURB136
    x2 = v * v
    p = P0
    p = p * x2 + P1
    p = p * x2 + P2
    p = p * x2 + P3
    p = p * x2 + P4
    p = p * x2 + P5
    p = p * x2 + P6
    q = Q0
    q = q * x2 + Q1
    q = q * x2 + Q2
    q = q * x2 + Q3
    return v * p / q


@cuda.jit(device=True, inline=True)
def sigmoid(x):
    return HALF + HALF * tanh(HALF * x)


def shape(kind: int, hidden: int, inputs: int, outputs: int) -> SimpleNamespace:
    """Sizes and parameter offsets of a model (torch layout: weight_ih, weight_hh,
    bias_ih, bias_hh, head.weight, head.bias)."""
    gh = GATES[kind] * hidden
    off_whh = gh * inputs
    off_bih = off_whh + gh * hidden
    off_bhh = off_bih + gh
    off_hw = off_bhh + gh
    off_hb = off_hw + outputs * hidden
    return SimpleNamespace(nb=BLOCKS[kind], zw=hidden + 1 + inputs, gh=gh, nbh=HH_BLOCKS[kind],
                           off_whh=off_whh, off_bih=off_bih, off_bhh=off_bhh, off_hw=off_hw,
                           off_hb=off_hb, n_params=off_hb + outputs)


@cache
def kernels(kind: int, hidden: int, inputs: int, outputs: int, every: bool, xent: bool,
            seq: int, groups: int) -> SimpleNamespace:
    """The kernels for one model shape and launch shape: `seq` sequences per thread,
    `groups` groups of them per block (hidden x groups threads)."""
    H, I, O = hidden, inputs, outputs
    s = shape(kind, H, I, O)
    NB, ZW, NBH = s.nb, s.zw, s.nbh
    NBHH = NB * H
    RECW = NBH * H  # dG columns of the recurrent blocks
    TILE1 = TILE + 1  # a padded row: the tiles' column reads hit distinct banks
    SEQ, SB = seq, seq * groups
    OFF_WIH, OFF_WHH, OFF_BIH, OFF_BHH = 0, s.off_whh, s.off_bih, s.off_bhh
    OFF_HW, OFF_HB = s.off_hw, s.off_hb
    G_I, G_H = GATE_I[kind], GATE_H[kind]
    EVERY, XENT, KIND = every, xent, kind
    key = SOURCE_KEY

    @cuda.jit(cache=True)
    def pack(params, wcat, models):
        """wcat[k] = Wcat of model k < models (grid y strides over the models)."""
        key  # noqa: B018 - keeps the source hash in the cache key
        for k in range(cuda.blockIdx.y, models, cuda.gridDim.y):
            e = cuda.grid(1)
            while e < ZW * NBHH:
                r = e // NBHH
                col = e - r * NBHH
                blk = col // H
                u = col - blk * H
                gh, gi = G_H[blk], G_I[blk]
                v = ZERO
                if r < H:
                    if gh >= 0:
                        v = params[k, OFF_WHH + (gh * H + u) * H + r]
                elif r == H:
                    if gh >= 0:
                        v += params[k, OFF_BHH + gh * H + u]
                    if gi >= 0:
                        v += params[k, OFF_BIH + gi * H + u]
                elif gi >= 0:
                    v = params[k, OFF_WIH + (gi * H + u) * I + r - H - 1]
                wcat[k, r, col] = v
                e += cuda.gridsize(1)

    def make_forward(store):
        @cuda.jit(cache=True)
        def forward(x, wcat, params, hs, cs, gates, yout):
            """x (M, N, T, I) -> yout (M, S, N, O); with `store`, the histories hs (M, T+1,
            N, H: h_{t-1} at t), cs (M, T+1, N, H) and the activated gates (M, T, N,
            NB*H). Block (model m, sequences SB*by ..), thread (unit u, group sg)."""
            key  # noqa: B018
            m = cuda.blockIdx.x
            b0 = cuda.blockIdx.y * SB
            tid = cuda.threadIdx.x
            nthreads = cuda.blockDim.x
            sg = tid // H
            u = tid - sg * H
            N, T = x.shape[1], x.shape[2]
            zsh = cuda.shared.array((2, SB, ZW), F32)
            c = cuda.local.array(SEQ, F32)
            acc = cuda.local.array((NB, SEQ), F32)
            for j in range(tid, 2 * SB * ZW, nthreads):
                buf = j // (SB * ZW)
                rest = j - buf * SB * ZW
                row = rest // ZW
                col = rest - row * ZW
                b = b0 + row
                v = ZERO
                if col == H:
                    v = ONE
                elif col > H and buf == 0 and b < N:
                    v = x[m, b, 0, col - H - 1]
                zsh[buf, row, col] = v
            for q in range(SEQ):
                c[q] = ZERO
                b = b0 + sg * SEQ + q
                if store and b < N:
                    hs[m, 0, b, u] = ZERO
                    if KIND == LSTM:
                        cs[m, 0, b, u] = ZERO
            cuda.syncthreads()
            for t in range(T):
                cur = t % 2
                nxt = 1 - cur
                for blk in range(NB):
                    for q in range(SEQ):
                        acc[blk, q] = ZERO
                for r in range(ZW):
                    for blk in range(NB):
                        w = wcat[m, r, blk * H + u]
                        for q in range(SEQ):
                            acc[blk, q] += w * zsh[cur, sg * SEQ + q, r]
                for q in range(SEQ):
                    row = sg * SEQ + q
                    b = b0 + row
                    if KIND == LSTM:
                        i = sigmoid(acc[0, q])
                        f = sigmoid(acc[1, q])
                        o = sigmoid(acc[2, q])
                        g = tanh(acc[3, q])
                        c[q] = f * c[q] + i * g
                        h = o * tanh(c[q])
                        if store and b < N:
                            gates[m, t, b, u] = i
                            gates[m, t, b, H + u] = f
                            gates[m, t, b, 2 * H + u] = o
                            gates[m, t, b, 3 * H + u] = g
                            cs[m, t + 1, b, u] = c[q]
                    elif KIND == GRU:
                        r_ = sigmoid(acc[0, q])
                        z_ = sigmoid(acc[1, q])
                        hn = acc[2, q]
                        n = tanh(acc[3, q] + r_ * hn)
                        h = n + z_ * (zsh[cur, row, u] - n)
                        if store and b < N:
                            gates[m, t, b, u] = r_
                            gates[m, t, b, H + u] = z_
                            gates[m, t, b, 2 * H + u] = hn
                            gates[m, t, b, 3 * H + u] = n
                    else:
                        h = tanh(acc[0, q])
                    zsh[nxt, row, u] = h
                    if store and b < N:
                        hs[m, t + 1, b, u] = h
                if t + 1 < T:
                    for j in range(tid, SB * I, nthreads):
                        row = j // I
                        b = b0 + row
                        if b < N:
                            zsh[nxt, row, H + 1 + j - row * I] = x[m, b, t + 1, j - row * I]
                cuda.syncthreads()
                if EVERY or t == T - 1:
                    for j in range(tid, SB * O, nthreads):
                        row = j // O
                        o_ = j - row * O
                        b = b0 + row
                        if b < N:
                            y = ZERO
                            for v in range(H):
                                y += params[m, OFF_HW + o_ * H + v] * zsh[nxt, row, v]
                            yout[m, t if EVERY else 0, b, o_] = y + params[m, OFF_HB + o_]

        return forward

    @cuda.jit(cache=True)
    def loss_terms(yout, y, labels, mask, scale, dy, terms):
        """terms[k, s * N + b] = the loss term of (step s, sequence b) of model k, and
        dy = its derivative times scale[k] (2 / denominator for MSE, 1 / denominator for
        cross-entropy): as optbench.nn.losses, in float32. Grid y: models."""
        key  # noqa: B018
        k = cuda.blockIdx.y
        S, N = yout.shape[1], yout.shape[2]
        j = cuda.grid(1)
        if j >= S * N:
            return
        s_ = j // N
        b = j - s_ * N
        m = mask[k, b, s_]
        term = ZERO
        if XENT:
            top = yout[k, s_, b, 0]
            for o in range(1, O):
                top = max(top, yout[k, s_, b, o])
            total = ZERO
            for o in range(O):
                total += math.exp(yout[k, s_, b, o] - top)
            lse = top + math.log(total)
            label = labels[k, b, s_]
            term = m * (lse - yout[k, s_, b, label])
            for o in range(O):
                p = math.exp(yout[k, s_, b, o] - lse)
                dy[k, s_, b, o] = m * (p - (ONE if o == label else ZERO)) * scale[k]
        else:
            for o in range(O):
                d = yout[k, s_, b, o] - y[k, b, s_, o]
                term += m * d * d
                dy[k, s_, b, o] = scale[k] * m * d
        terms[k, j] = term

    @cuda.jit(cache=True)
    def reduce_rows(terms, count, out):
        """out[k] = the sum of terms[k, :count], one block of REDUCE threads per row: a
        strided sum per thread, then a fixed tree."""
        key  # noqa: B018
        k = cuda.blockIdx.x
        t = cuda.threadIdx.x
        buf = cuda.shared.array(REDUCE, F32)
        acc = ZERO
        for j in range(t, count, REDUCE):
            acc += terms[k, j]
        buf[t] = acc
        cuda.syncthreads()
        half = REDUCE // 2
        while half > 0:
            if t < half:
                buf[t] += buf[t + half]
            cuda.syncthreads()
            half //= 2
        if t == 0:
            out[k] = buf[0]

    @cuda.jit(cache=True)
    def backward(params, hs, cs, gates, dy, norms):
        """BPTT over the forward's blocks: gates (activated) -> dL/d(pre-activations),
        norms[m, b, t] = ||dL/dh_t[b]||."""
        key  # noqa: B018
        m = cuda.blockIdx.x
        b0 = cuda.blockIdx.y * SB
        tid = cuda.threadIdx.x
        sg = tid // H
        u = tid - sg * H
        N, T = gates.shape[2], gates.shape[1]
        dg = cuda.shared.array((SB, RECW), F32)
        sq = cuda.shared.array((SB, H), F32)
        dc = cuda.local.array(SEQ, F32)
        dh = cuda.local.array(SEQ, F32)
        for q in range(SEQ):
            dc[q] = ZERO  # LSTM: dL/dc_t through c_{t+1}; GRU: dL/dh_t through z_{t+1}
        for t in range(T - 1, -1, -1):
            # dL/dh_t: the head's part, then dG_{t+1} W_hh with each weight loaded once for
            # the thread's SEQ sequences (its rows of dG are shared-memory broadcasts).
            for q in range(SEQ):
                b = b0 + sg * SEQ + q
                v = ZERO
                if b < N:
                    if EVERY or t == T - 1:
                        for o in range(O):
                            v += dy[m, t if EVERY else 0, b, o] * params[m, OFF_HW + o * H + u]
                    if KIND == GRU and t < T - 1:
                        v += dc[q]
                dh[q] = v
            if t < T - 1:
                for blk in range(NBH):
                    gh = G_H[blk]
                    for j in range(H):
                        w = params[m, OFF_WHH + (gh * H + j) * H + u]
                        for q in range(SEQ):
                            dh[q] += dg[sg * SEQ + q, blk * H + j] * w
            for q in range(SEQ):
                sq[sg * SEQ + q, u] = dh[q] * dh[q]
            cuda.syncthreads()
            for q in range(u, SEQ, H):
                row = sg * SEQ + q
                b = b0 + row
                if b < N:
                    total = ZERO
                    for j in range(H):
                        total += sq[row, j]
                    norms[m, b, t] = math.sqrt(total)
            for q in range(SEQ):
                row = sg * SEQ + q
                b = b0 + row
                if b < N:
                    d = dh[q]
                    if KIND == LSTM:
                        i = gates[m, t, b, u]
                        f = gates[m, t, b, H + u]
                        o = gates[m, t, b, 2 * H + u]
                        g = gates[m, t, b, 3 * H + u]
                        tc = tanh(cs[m, t + 1, b, u])
                        dcq = d * o * (ONE - tc * tc) + dc[q]
                        gi = dcq * g * (i - i * i)
                        gf = dcq * cs[m, t, b, u] * (f - f * f)
                        go = d * tc * (o - o * o)
                        gg = dcq * i * (ONE - g * g)
                        dc[q] = dcq * f
                        gates[m, t, b, u] = gi
                        gates[m, t, b, H + u] = gf
                        gates[m, t, b, 2 * H + u] = go
                        gates[m, t, b, 3 * H + u] = gg
                        dg[row, u] = gi
                        dg[row, H + u] = gf
                        dg[row, 2 * H + u] = go
                        dg[row, 3 * H + u] = gg
                    elif KIND == GRU:
                        r_ = gates[m, t, b, u]
                        z_ = gates[m, t, b, H + u]
                        hn = gates[m, t, b, 2 * H + u]
                        n = gates[m, t, b, 3 * H + u]
                        gz = d * (hs[m, t, b, u] - n) * (z_ - z_ * z_)
                        gn = d * (ONE - z_) * (ONE - n * n)
                        gr = gn * hn * (r_ - r_ * r_)
                        ghn = gn * r_
                        dc[q] = d * z_
                        gates[m, t, b, u] = gr
                        gates[m, t, b, H + u] = gz
                        gates[m, t, b, 2 * H + u] = ghn
                        gates[m, t, b, 3 * H + u] = gn
                        dg[row, u] = gr
                        dg[row, H + u] = gz
                        dg[row, 2 * H + u] = ghn
                    else:
                        h = hs[m, t + 1, b, u]
                        gp = d * (ONE - h * h)
                        gates[m, t, b, u] = gp
                        dg[row, u] = gp
            cuda.syncthreads()

    @cuda.jit(cache=True)
    def weight_grads(x, hs, gates, grads):
        """The gates' parameter gradients of model blockIdx.z: dWcat^T[r, col] = sum over
        (t, b) of z_t[b, r] dG_t[b, col] in TILE x TILE tiles, scattered into the
        torch-layout gradient (the bias row into bias_hh and bias_ih alike)."""
        key  # noqa: B018
        m = cuda.blockIdx.z
        T, N = gates.shape[1], gates.shape[2]
        ty, tx = cuda.threadIdx.y, cuda.threadIdx.x
        r0, c0 = cuda.blockIdx.y * TILE, cuda.blockIdx.x * TILE
        zt = cuda.shared.array((TILE, TILE1), F32)
        gt = cuda.shared.array((TILE, TILE1), F32)
        acc = ZERO
        for base in range(0, T * N, TILE):
            j = base + ty
            t = j // N
            b = j - t * N
            rr, cc = r0 + tx, c0 + tx
            zv = ZERO
            gv = ZERO
            if j < T * N:
                if rr < H:
                    zv = hs[m, t, b, rr]
                elif rr == H:
                    zv = ONE
                elif rr < ZW:
                    zv = x[m, b, t, rr - H - 1]
                if cc < NBHH:
                    gv = gates[m, t, b, cc]
            zt[ty, tx] = zv
            gt[ty, tx] = gv
            cuda.syncthreads()
            for q in range(TILE):
                acc += zt[q, ty] * gt[q, tx]
            cuda.syncthreads()
        r, col = r0 + ty, c0 + tx
        if r < ZW and col < NBHH:
            blk = col // H
            u = col - blk * H
            gh, gi = G_H[blk], G_I[blk]
            if r < H:
                if gh >= 0:
                    grads[m, OFF_WHH + (gh * H + u) * H + r] = acc
            elif r == H:
                if gh >= 0:
                    grads[m, OFF_BHH + gh * H + u] = acc
                if gi >= 0:
                    grads[m, OFF_BIH + gi * H + u] = acc
            elif gi >= 0:
                grads[m, OFF_WIH + (gi * H + u) * I + r - H - 1] = acc

    @cuda.jit(cache=True)
    def head_grads(hs, dy, grads):
        """The head's gradient of model blockIdx.y: dW[o, u] = sum over (s, b) of
        dy[s, b, o] h_t[b, u] (t = s with head "every", the last step otherwise), and the
        bias's (u = H, h = 1)."""
        key  # noqa: B018
        m = cuda.blockIdx.y
        e = cuda.grid(1)
        if e >= O * (H + 1):
            return
        o = e // (H + 1)
        u = e - o * (H + 1)
        S, N = dy.shape[1], dy.shape[2]
        T = hs.shape[1] - 1
        acc = ZERO
        for s_ in range(S):
            t = s_ if EVERY else T - 1
            for b in range(N):
                acc += dy[m, s_, b, o] * (hs[m, t + 1, b, u] if u < H else ONE)
        if u < H:
            grads[m, OFF_HW + o * H + u] = acc
        else:
            grads[m, OFF_HB + o] = acc

    return SimpleNamespace(pack=pack, forward=make_forward(True), predict=make_forward(False),
                           loss_terms=loss_terms, reduce_rows=reduce_rows, backward=backward,
                           weight_grads=weight_grads, head_grads=head_grads, seq=SEQ,
                           groups=groups, threads=H * groups, block_seqs=SB, shape=s)
