"""What the three cells share: the block layout of the gate pre-activations, weight packing,
the step that forms dL/dh_t, and the weight gradients.

Layout (per time slot s, per batch row b; H hidden units, I inputs, Hp = H rounded up to
the panel width NR; rows padded to an odd number of cache lines, see _gemm.mm_tn):

    Z[s, b] = [h_{s-1} (H) | 1 | x_s (I)]         the augmented input of step s
    G[s, b] = [block 0 | block 1 | ... ]          one block of Hp columns per gate product

Every gate pre-activation is one product Z[s] @ Wcat, with the bias in the row that
multiplies the constant 1; the backward pass reuses G[s] for dL/d(pre-activation).
A cell names the block that each of its gates' input rows (`ih_blocks`) and recurrent
rows (`hh_blocks`) feed. LSTM and tanh RNN: gate g -> block g for both. GRU: r and z
have one block each; the candidate n has two, because torch's GRU applies the reset gate
to the recurrent part only: n = tanh(W_in x + b_in + r * (W_hn h + b_hn)). Block 2 holds
W_hn h + b_hn (hidden rows and bias only), block 3 W_in x + b_in (bias and input rows);
the packed panels skip the rows a block does not use (`_gemm` module docstring).

Weight gradients are one product over all time steps, dWcat^T = Z^T G (T*B rows); the
parameter gradients are read back from it with the same block map.

Storage is batch-major, (B, slots, width), and the kernels see time-major views (Z[s] is
a (B, width) slice whose rows lie a whole sequence apart). A batch chunk, and so a
thread, then owns one contiguous stretch of each buffer; time-major storage would
interleave the threads' rows in every slot, so that neighbouring threads write the same
cache lines and each slot's stretch is split. In training G has one zero slot more than steps, so that Z and G, as (B * (T+1), width)
matrices, pair row for row in the weight-gradient product.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from numba import prange

from optbench.nn._gemm import gemm, mm, mm_tn, pack
from optbench.nn._jit import KC, NV, VECTOR_BYTES, kernel


@dataclass(frozen=True)
class CellSpec:
    """How a cell maps onto the shared layout; `forward` / `backward` are its kernels."""

    name: str
    gates: tuple[str, ...]  # torch's gate order: one name per (H x .) row block of weight_ih
    ih_blocks: tuple[int, ...]  # block fed by gate g's input rows and bias_ih
    hh_blocks: tuple[int, ...]  # block fed by gate g's recurrent rows and bias_hh
    forward: Callable
    backward: Callable
    # The same passes over one range of batch rows on the calling thread (`forward` and
    # `backward` run one range per thread): what runs a whole model per thread when many
    # models train at once (optbench.lockstep).
    forward_rows: Callable | None = None
    backward_rows: Callable | None = None
    cell_state: bool = False  # LSTM: keeps c_t
    reference: str = ""
    # The activation (_gemm.STORE for none, SIGMOID, TANH) that the forward product
    # applies to each block in registers (None: none); the cell's kernel does the rest.
    activations: tuple[int, ...] | None = None

    @property
    def n_blocks(self) -> int:
        return max(self.ih_blocks + self.hh_blocks) + 1

    @property
    def n_hh_blocks(self) -> int:
        """Blocks 0 .. n_hh_blocks-1 carry the recurrent rows (the backward product's K)."""
        return max(self.hh_blocks) + 1

    def k_range(self, block: int, hidden: int, inputs: int) -> tuple[int, int]:
        """Rows of Z that block `block` uses: [h | 1 | x], [h | 1] or [1 | x]."""
        lo = 0 if block in self.hh_blocks else hidden
        hi = hidden + 1 + inputs if block in self.ih_blocks else hidden + 1
        return lo, hi


@kernel
def _pack_gates(w_ih, w_hh, b_ih, b_hh, gate_i, gate_h, unit0, k0, k1, data, off):
    """One panel of Wcat (Z @ Wcat = all pre-activations): the NR columns of hidden units
    unit0.. of one block, rows k0..k1 of [h | 1 | x]. The block takes its recurrent rows
    from gate `gate_h` of w_hh and its input rows from gate `gate_i` of w_ih (-1: none,
    and then k0..k1 leaves those rows out); the `1` row holds the biases of both."""
    hidden = w_hh.shape[1]
    nr = NV * VECTOR_BYTES // data.itemsize
    for j in range(nr):
        u = unit0 + j
        if u >= hidden:
            for k in range(k0, k1):
                data[off + (k - k0) * nr + j] = 0
            continue
        bias = np.float32(0.0)  # becomes float64 with float64 weights
        if gate_h >= 0:
            row = w_hh[gate_h * hidden + u]
            for k in range(k0, hidden):
                data[off + (k - k0) * nr + j] = row[k]
            bias += b_hh[gate_h * hidden + u]
        if gate_i >= 0:
            row = w_ih[gate_i * hidden + u]
            for k in range(hidden + 1, k1):
                data[off + (k - k0) * nr + j] = row[k - hidden - 1]
            bias += b_ih[gate_i * hidden + u]
        data[off + (hidden - k0) * nr + j] = bias


@kernel
def _pack_recurrent(w_hh, gate_h, hp, p, data, off):
    """Panel p of the backward operand (dG @ it = the part of dL/dh_{t-1} through step t):
    row k = block * Hp + u holds row gate_h[block] * H + u of w_hh (0 for padding)."""
    hidden = w_hh.shape[1]
    nr = NV * VECTOR_BYTES // data.itemsize
    width = min(nr, hidden - p * nr)
    for k in range(gate_h.size * hp):
        blk, u = k // hp, k % hp
        dst = data[off + k * nr:off + (k + 1) * nr]
        if u < hidden:
            row = w_hh[gate_h[blk] * hidden + u, p * nr:p * nr + width]
            for j in range(width):
                dst[j] = row[j]
        for j in range(width if u < hidden else 0, nr):
            dst[j] = 0


@kernel
def pack_weights(w_ih, w_hh, b_ih, b_hh, head_w, head_b, gate_i, gate_h, n_hh, hp,
                 cat_data, cat_pk, bwd_data, bwd_pk, head_data, head_pk, headt_data, headt_pk):
    """Pack the right operands of one pass from the torch-layout parameters, at the start
    of every call (the optimizer changes the parameters in place between calls):
    Wcat ([h | 1 | x] @ Wcat = all gate pre-activations; `gate_i[block]`, `gate_h[block]`:
    the gate whose input / recurrent rows feed a block, -1 for none), the backward
    operand (blocks 0 .. n_hh-1, the ones with recurrent rows), the head [W^T; b] and
    W_head itself. Serial: packing streams each weight once, too little work to gain from
    a second thread, and a parallel region is one more point where a busy machine can
    keep a thread waiting."""
    nr = NV * VECTOR_BYTES // cat_data.itemsize
    n_cat = cat_pk.shape[0]
    for p in range(n_cat + bwd_pk.shape[0]):
        if p < n_cat:
            blk = p * nr // hp
            _pack_gates(w_ih, w_hh, b_ih, b_hh, gate_i[blk], gate_h[blk], p * nr - blk * hp,
                        cat_pk[p, 1], cat_pk[p, 2], cat_data, cat_pk[p, 0])
        else:
            q = p - n_cat
            _pack_recurrent(w_hh, gate_h[:n_hh], hp, q, bwd_data, bwd_pk[q, 0])
    hidden = w_hh.shape[1]
    for q in range(head_pk.shape[0]):
        width = min(nr, head_w.shape[0] - q * nr)
        for k in range(hidden + 1):
            dst = head_data[head_pk[q, 0] + k * nr:head_pk[q, 0] + (k + 1) * nr]
            dst[width:] = 0
            for j in range(width):
                dst[j] = head_w[q * nr + j, k] if k < hidden else head_b[q * nr + j]
    pack(head_w, headt_data, headt_pk)


@kernel
def start_state(z, lo, hi, hidden):
    """h_{-1} = 0 for rows lo..hi (slot 0 is reused when streaming)."""
    z[lo:hi, :hidden] = 0


@kernel
def dh_step(last, direct, carried, dy_t, headt_data, headt_pk, g_next, bwd_data, bwd_pk,
            dh, lo, hi):
    """dh[lo:hi] = dL/dh_t: the head's direct part dY_t @ W_head (`direct`: at every step
    with head "every", at the last step with head "last") plus the part through step t+1,
    dG_{t+1} @ bwd (unless t is the `last` step). `carried`: dh already holds a part
    through h_{t+1} left by the cell's element-wise backward (GRU: dh_{t+1} * z_{t+1});
    it is kept, except at the last step, where nothing came before."""
    if direct:
        mm(dy_t, 0, headt_data, headt_pk, dh, 0, lo, hi, carried and not last)
    if not last:
        mm(g_next, 0, bwd_data, bwd_pk, dh, 0, lo, hi, direct or carried)


@kernel
def gate_grads(norms, hidden, hp, ih_blocks, hh_blocks, dwt, profile, gw_ih, gw_hh, gb_ih,
               gb_hh):
    """The gates' parameter gradients read back from dWcat^T through the block map, and
    `profile[t]` = the batch mean of norms[:, t] (grad_norm_per_step)."""
    batch, steps = norms.shape
    for gate in range(ih_blocks.size):
        rows = slice(gate * hidden, (gate + 1) * hidden)
        ci = ih_blocks[gate] * hp
        ch = hh_blocks[gate] * hp
        gw_ih[rows] = dwt[hidden + 1:hidden + 1 + gw_ih.shape[1], ci:ci + hidden].T
        gw_hh[rows] = dwt[:hidden, ch:ch + hidden].T
        gb_ih[rows] = dwt[hidden, ci:ci + hidden]
        gb_hh[rows] = dwt[hidden, ch:ch + hidden]
    profile[:] = 0
    for b in range(batch):
        for t in range(steps):
            profile[t] += norms[b, t]
    profile /= batch


@kernel
def head_grads(dym, zhead, hidden, dwhead, ghead_w, ghead_b):
    """The head's gradient dym^T zhead (BLAS; small): dY and the [h_t | 1] rows of the
    steps that have an output, row for row. Call it outside parallel regions (`gemm`)."""
    gemm(True, dym, zhead, 0.0, dwhead)
    ghead_w[:] = dwhead[:, :hidden]
    ghead_b[:] = dwhead[:, hidden]


@kernel(parallel=True)
def weight_grads(gm, zm, dym, zhead, norms, hidden, hp, ih_blocks, hh_blocks, panels, dwt,
                 dwhead, profile, gw_ih, gw_hh, gb_ih, gb_hh, ghead_w, ghead_b):
    """All parameter gradients from G = dL/d(pre-activations) and the inputs Z.

    gm, zm: G and Z as matrices of all (batch row, slot) pairs, row for row (G's slots
    past the last step are zero). dWcat^T[rows of Z, blocks] = sum over the pairs of
    Z^T G: thread i computes the column panels `panels[i]` (rows: panel, first and last
    row of Z that its block uses; padded with empty rows). Threads own disjoint columns,
    so there is no reduction. Then `head_grads` and `gate_grads`.
    """
    for i in prange(panels.shape[0]):
        mm_tn(zm, gm, dwt, panels[i], KC)
    head_grads(dym, zhead, hidden, dwhead, ghead_w, ghead_b)
    gate_grads(norms, hidden, hp, ih_blocks, hh_blocks, dwt, profile, gw_ih, gw_hh, gb_ih,
               gb_hh)
