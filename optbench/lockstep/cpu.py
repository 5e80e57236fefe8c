"""The lockstep engine's CPU backend: K models of one shape, one parallel region per
training step, each thread running whole models on the model kernels' serial passes.

A training step is one call of `_train`: `prange` over the live models, and for each the
same compiled functions, with the same argument types and the same one-range-of-rows
layout, that `optbench.nn.Model.loss_and_grad` runs on one Numba thread (pack_weights,
the cell's `forward_rows`, the loss, `backward_rows`, the weight-gradient product over
one panel table, `gate_grads`), then, outside the parallel region, `head_grads` (BLAS:
never inside a parallel region) for each model. So every model's loss, gradient and
gradient-norm profile has the bits of a one-thread `loss_and_grad` of that model: no
thread ever touches another thread's model, and no sum depends on the schedule.

Memory: what a step only needs while it runs (Z, G, the cell states, dL/dh, the packed
weights, dWcat^T) is scratch of the thread that runs the model (`numba.get_thread_id`),
so K models cost K times their parameters, gradients, head operands and batches, not
K times the BPTT buffers. Models are handed to threads one at a time
(`parallel_chunksize(1)`): on a shared machine a thread that loses its core then holds
up one model, not its static share. Evaluation (`predict`) runs the streaming forward
pass the same way, one (model, block of sequences) unit at a time.

Everything runs on the calling thread, one parallel region at a time, which is also what
Numba's workqueue threading layer needs (it aborts on concurrent launches). Drawing the
next step's batches on the calling thread while a step runs on a helper thread (the
kernels release the GIL) would put one busy thread more than there are cores on the
kernels' team, and a parallel region waits for its slowest thread.
"""

from __future__ import annotations

import hashlib
from contextlib import contextmanager
from pathlib import Path

import numba
import numpy as np
from numba import njit, prange

from optbench.nn import gru, lstm, rnn
from optbench.nn._bptt import gate_grads, head_grads, pack_weights
from optbench.nn._gemm import mm_tn
from optbench.nn._jit import JIT, KC, STAMP, panel_width
from optbench.nn.losses import mse, xent
from optbench.nn.model import SPREAD, Model, row_stride, aligned_zeros

KINDS = ("lstm", "gru", "rnn")  # the `kind` index the kernels branch on
# Clipping and optimizer steps over fewer elements than this run on one thread: they are
# memory-bound and short, so waking a second thread for them costs more than it saves.
ONE_THREAD_BELOW = 1 << 20
EVAL_CHUNK = 256  # sequences per forward pass, as optbench.train scores a set

# The kernels' on-disk cache goes stale with any change to optbench.nn or to this module.
_STAMP = (STAMP, hashlib.sha256(Path(__file__).read_bytes()).hexdigest())


def _jit(fn=None, *, parallel: bool = False):
    """njit with the model kernels' options (optbench.nn._jit), nogil for the parallel
    entry points, and an on-disk cache stamped with every source of optbench.nn and of
    this package: these functions have the model kernels compiled into them."""
    def wrap(f):
        options = {**JIT, "parallel": True, "nogil": True} if parallel else JIT
        dispatcher = njit(**options)(f)
        index = dispatcher._cache._cache_file
        index._source_stamp = (index._source_stamp, _STAMP)
        return dispatcher

    return wrap if fn is None else wrap(fn)


@_jit
def _views(vector, offs, gh, hidden, inputs, outputs):
    """The torch-layout pieces of one model's flat vector (Model.views' order)."""
    return (vector[offs[0]:offs[1]].reshape((gh, inputs)),
            vector[offs[1]:offs[2]].reshape((gh, hidden)),
            vector[offs[2]:offs[3]], vector[offs[3]:offs[4]],
            vector[offs[4]:offs[5]].reshape((outputs, hidden)), vector[offs[5]:offs[6]])


@_jit
def _forward_rows(kind, x, z, g, c, y, cat, cat_pk, head, head_pk, rows, hidden, hp, every):
    if kind == 0:
        lstm.lstm_forward_rows(x, z, g, c, y, cat, cat_pk, head, head_pk, rows, hidden, hp,
                               every)
    elif kind == 1:
        gru.gru_forward_rows(x, z, g, c, y, cat, cat_pk, head, head_pk, rows, hidden, hp, every)
    else:
        rnn.rnn_forward_rows(x, z, g, c, y, cat, cat_pk, head, head_pk, rows, hidden, hp, every)


@_jit
def _backward_rows(kind, z, g, c, dy, bwd, bwd_pk, headt, headt_pk, dh, dc, norms, rows,
                   hidden, hp, every):
    if kind == 0:
        lstm.lstm_backward_rows(z, g, c, dy, bwd, bwd_pk, headt, headt_pk, dh, dc, norms, rows,
                                hidden, hp, every)
    elif kind == 1:
        gru.gru_backward_rows(z, g, c, dy, bwd, bwd_pk, headt, headt_pk, dh, dc, norms, rows,
                              hidden, hp, every)
    else:
        rnn.rnn_backward_rows(z, g, c, dy, bwd, bwd_pk, headt, headt_pk, dh, dc, norms, rows,
                              hidden, hp, every)


@_jit
def _member(kind, every, dims, offs, gate_i, gate_h, ih, hh, panels, rows, x, is_xent, y, labels,
            mask, denom, params, grads, cat, cat_pk, bwd, bwd_pk, head, head_pk, headt, headt_pk,
            zb, gb, cb, dstate, norms, yb, dwt, dyb, zh, profile):
    """One model's forward, loss, BPTT and gate gradients (a thread's share of `_train`):
    its batch (x; MSE targets y or class indices `labels`, as `is_xent` says; mask,
    denom), parameters, gradients, dY, head rows and profile; the thread's packed
    weights and BPTT buffers. Returns the loss sum. Both kinds of target are arguments,
    so that one compiled kernel serves every task (it takes most of a minute to build)."""
    hidden, hp, inputs, outputs, gh, n_hh = dims[0], dims[1], dims[2], dims[3], dims[4], dims[5]
    steps = x.shape[1]
    w_ih, w_hh, b_ih, b_hh, head_w, head_b = _views(params, offs, gh, hidden, inputs, outputs)
    pack_weights(w_ih, w_hh, b_ih, b_hh, head_w, head_b, gate_i, gate_h, n_hh, hp,
                 cat, cat_pk, bwd, bwd_pk, head, head_pk, headt, headt_pk)
    z = zb.transpose(1, 0, 2)
    g = gb[:, :steps].transpose(1, 0, 2)
    c = cb.transpose(1, 0, 2)
    dy = dyb[:, 1:].transpose(1, 0, 2)
    _forward_rows(kind, x, z, g, c, yb, cat, cat_pk, head, head_pk, rows[0:2], hidden, hp,
                  every)
    if is_xent:
        loss = xent(yb, labels, mask, denom, dy)
    else:
        loss = mse(yb, y, mask, denom, dy)
    _backward_rows(kind, z, g, c, dy, bwd, bwd_pk, headt, headt_pk, dstate[:, 0], dstate[:, 1], norms,
                   rows[0:2], hidden, hp, every)
    zm = zb.reshape((-1, zb.shape[2]))
    mm_tn(zm, gb.reshape((-1, gb.shape[2])), dwt, panels[0], KC)
    gw_ih, gw_hh, gb_ih, gb_hh, _, _ = _views(grads, offs, gh, hidden, inputs, outputs)
    gate_grads(norms, hidden, hp, ih, hh, dwt, profile, gw_ih, gw_hh, gb_ih, gb_hh)
    if every:
        zh[:] = zm[:, :hidden + 1]
    else:
        zh[:] = zb[:, steps, :hidden + 1]
    return loss


@_jit
def _head(every, dims, offs, grads, dyb, zh, dwhead):
    """One model's head gradient (BLAS), after the parallel region."""
    hidden, inputs, outputs, gh = dims[0], dims[2], dims[3], dims[4]
    _, _, _, _, ghead_w, ghead_b = _views(grads, offs, gh, hidden, inputs, outputs)
    if every:
        head_grads(dyb.reshape((-1, outputs)), zh, hidden, dwhead, ghead_w, ghead_b)
    else:
        head_grads(dyb[:, 1], zh, hidden, dwhead, ghead_w, ghead_b)


@_jit(parallel=True)
def _train(kind, n, every, dims, offs, gate_i, gate_h, ih, hh, panels, rows,
           x, is_xent, y, labels, mask, denom, params, grads,
           cat, cat_pk, bwd, bwd_pk, head, head_pk, headt, headt_pk,
           zb, gb, cb, dstate, norms, yb, dwt, dyb, zh, dwhead, profile, losses):
    """One training step's forward, loss, BPTT and gradients for models 0 .. n-1.

    Per model k: x[k], y[k] or labels[k], mask[k], denom[k] (its batch, as loss_and_grad
    checks them; y float32 (B, S, O) for MSE, labels int64 (B, S) for cross-entropy),
    params[k] -> grads[k], profile[k] (grad_norm_per_step), losses[k] (the loss *sum*;
    the mean is losses[k] / denom[k]). Per thread: the packed weights (cat, bwd, head,
    headt), Z (zb), G (gb), c (cb), dL/dh and dL/dc (dstate), norms, outputs (yb), dWcat^T.
    Per model, kept for the head's product after the parallel region: dY (dyb) and the
    head's [h_t | 1] rows (zh). dims = (hidden, Hp, inputs, outputs, gate rows, n_hh, ...).
    The bodies are separate functions, so that no parfor pass rewrites the model code.
    """
    for k in prange(n):
        w = numba.get_thread_id()
        losses[k] = _member(kind, every, dims, offs, gate_i, gate_h, ih, hh, panels, rows,
                            x[k], is_xent, y[k], labels[k], mask[k], denom[k], params[k], grads[k], cat[w], cat_pk,
                            bwd[w], bwd_pk, head[w], head_pk, headt[w], headt_pk, zb[w],
                            gb[w], cb[w], dstate[w], norms[w], yb[w], dwt[w], dyb[k], zh[k],
                            profile[k])
    for k in range(n):
        _head(every, dims, offs, grads[k], dyb[k], zh[k], dwhead)


@_jit
def _pack(dims, offs, gate_i, gate_h, params, cat, cat_pk, bwd, bwd_pk, head, head_pk, headt,
          headt_pk):
    hidden, hp, inputs, outputs, gh, n_hh = dims[0], dims[1], dims[2], dims[3], dims[4], dims[5]
    w_ih, w_hh, b_ih, b_hh, head_w, head_b = _views(params, offs, gh, hidden, inputs, outputs)
    pack_weights(w_ih, w_hh, b_ih, b_hh, head_w, head_b, gate_i, gate_h, n_hh, hp,
                 cat, cat_pk, bwd, bwd_pk, head, head_pk, headt, headt_pk)


@_jit
def _stream(kind, every, dims, x, cat, cat_pk, head, head_pk, zf, gf, cf, yf, out):
    """Model.predict's pass over the sequences x (rows, T, I) into out (rows, S, O), in
    flat work buffers shaped as Model.predict shapes them for that many rows (`zf` holds
    the constant 1 at column `hidden` of every row)."""
    hidden, hp, outputs = dims[0], dims[1], dims[3]
    wz, wg, op = dims[6], dims[7], dims[8]
    rows, steps = x.shape[0], x.shape[1]
    outs = steps if every else 1
    z = zf[:rows * 2 * wz].reshape((rows, 2, wz)).transpose(1, 0, 2)
    g = gf[:rows * wg].reshape((rows, 1, wg)).transpose(1, 0, 2)
    c = cf[:rows * 2 * hp if kind == 0 else 0].reshape(
        (rows, 2, hp) if kind == 0 else (0, 0, 0)).transpose(1, 0, 2)
    y = yf[:outs * rows * op].reshape((outs, rows, op))
    bounds = np.empty(2, np.int64)
    bounds[0], bounds[1] = 0, rows
    _forward_rows(kind, x, z, g, c, y, cat, cat_pk, head, head_pk, bounds[0:2], hidden, hp,
                  every)
    for s in range(outs):
        for b in range(rows):
            for o in range(outputs):
                out[b, s, o] = y[s, b, o]


@_jit(parallel=True)
def _predict(kind, every, dims, offs, gate_i, gate_h, members, units, xs, params,
             cat, cat_pk, bwd, bwd_pk, head, head_pk, headt, headt_pk,
             zf, gf, cf, yf, out):
    """The head's outputs of model members[m] on its sequences xs[m] (M, N, T, I): out[m]
    (N, S, O), by the streaming forward pass over each unit (m, lo, hi) of `units`. Per
    model: the packed weights (bwd, headt packed too, unused); per thread: `_stream`'s
    flat buffers."""
    for m in prange(members.size):
        _pack(dims, offs, gate_i, gate_h, params[members[m]], cat[m], cat_pk, bwd[m], bwd_pk,
              head[m], head_pk, headt[m], headt_pk)
    for u in prange(units.shape[0]):
        w = numba.get_thread_id()
        m, lo, hi = units[u, 0], units[u, 1], units[u, 2]
        _stream(kind, every, dims, xs[m, lo:hi], cat[m], cat_pk, head[m], head_pk, zf[w],
                gf[w], cf[w], yf[w], out[m, lo:hi])


class Cpu:
    """K models of `template`'s shape (its kind, sizes, head; float32) and their buffers
    for batches of `batch` sequences of `steps` steps. Row k of `params` / `grads` is
    model k's flat vector (Model.params' layout); the engine keeps live models in rows
    0 .. n-1 (`compact`). See the module docstring."""

    device = "cpu"
    optim_backend = "cpu"  # the optbench.optim backend that steps `params`

    def __init__(self, template: Model, members: int, batch: int, steps: int, y_dtype):
        m = template
        if m.dtype != np.float32:
            raise ValueError("the lockstep engine trains float32 models")
        self.template, self.members, self.batch, self.steps = m, members, batch, steps
        self.threads = numba.get_num_threads()  # the caller's: recorded with each result
        self.kind = KINDS.index(m.kind)
        self.every = m.head == "every"
        H, I, O = m.hidden_size, m.input_size, m.output_size
        nr = panel_width(4)
        outs = steps if self.every else 1
        self.outs = outs
        pool = numba.config.NUMBA_NUM_THREADS  # thread ids are below it
        gh = len(m.spec.gates) * H
        self.wz, self.wg = row_stride(m.z_cols, np.float32), row_stride(m.g_width, np.float32)
        self.op = -(-O // nr) * nr
        self.dims = np.array([H, m.h_width, I, O, gh, m.spec.n_hh_blocks, self.wz, self.wg,
                              self.op], np.int64)
        sizes = [int(np.prod(s)) for s in m._shapes.values()]
        self.offs = np.concatenate(([0], np.cumsum(sizes))).astype(np.int64)
        self.n_params = m.n_params
        self.gate_i, self.gate_h, self.ih, self.hh = m._gate_i, m._gate_h, m._ih, m._hh
        self.pk = {name: pk for name, (_, pk) in m._packed.items()}
        self.pk_sizes = {name: _lines(data.size) for name, (data, _) in m._packed.items()}
        # The weight-gradient product's panel table on one thread (Model._grad_panels).
        rows = [(p, *m._grad_rows[p * nr // m.h_width]) for p in range(m.g_width // nr)]
        self.panels = np.array([rows], np.int64)
        self.rows = np.array([0, batch], np.int64)
        f32 = np.float32
        self.params = np.zeros((members, m.n_params), f32)
        self.grads = np.zeros((members, m.n_params), f32)
        # Per thread (training): packed weights and the BPTT buffers of loss_and_grad.
        self.packed = {name: aligned_zeros((pool, size), f32) for name, size in self.pk_sizes.items()}
        self.zb = aligned_zeros((pool, batch, steps + 1, self.wz), f32)
        self.zb[:, :, :, H] = 1
        self.gb = aligned_zeros((pool, batch, steps + 1, self.wg), f32)
        self.cb = aligned_zeros((pool, batch, steps + 1, m.h_width) if m.spec.cell_state
                         else (pool, 0, 0, 0), f32)
        per_row = max(2, -(-SPREAD // (m.h_width * 4)))
        self.dstate = aligned_zeros((pool, batch, per_row, m.h_width), f32)
        self.norms = np.zeros((pool, batch, steps), f32)
        self.yb = aligned_zeros((pool, outs, batch, self.op), f32)
        self.dwt = aligned_zeros((pool, m.z_cols, m.g_width), f32)
        # Per model: dY, the head's rows of Z, the gradient-norm profile and the loss.
        self.dyb = np.zeros((members, batch, outs + 1, O), f32)
        self.zh = np.zeros((members, batch * (steps + 1) if self.every else batch, H + 1), f32)
        self.dwhead = np.zeros((O, H + 1), f32)
        self.profile = np.zeros((members, steps))
        self.losses = np.zeros(members)
        # The batches: two sets, so that the next step's can be drawn during a step.
        self.slots = batch_sets(members, batch, steps, I, O, self.every, y_dtype)
        self.is_xent = self.slots[0]["labels"].shape[1] > 0
        # Evaluation: per-thread flat buffers of EVAL_CHUNK rows, grown on demand.
        self._eval = None
        self._sums = None

    # -- training ------------------------------------------------------------------------
    def launch(self, slot: int, n: int) -> None:
        """The training step of models 0 .. n-1 on batch set `slot` (on the CPU it runs
        here and now; `wait` gives the loss sums)."""
        self._sums = self._step(slot, n)

    def wait(self) -> np.ndarray:
        """The loss sums (float64, n) of the last step; grads and profile hold its
        gradients and gradient-norm profiles."""
        return self._sums

    def _step(self, slot: int, n: int) -> np.ndarray:
        b = self.slots[slot]
        with numba.parallel_chunksize(1):
            _train(self.kind, n, self.every, self.dims, self.offs, self.gate_i, self.gate_h,
                   self.ih, self.hh, self.panels, self.rows, b["x"], self.is_xent, b["y"],
                   b["labels"], b["mask"], b["denom"], self.params, self.grads,
                   self.packed["cat"], self.pk["cat"], self.packed["bwd"], self.pk["bwd"],
                   self.packed["head"], self.pk["head"], self.packed["headt"], self.pk["headt"],
                   self.zb, self.gb, self.cb, self.dstate, self.norms, self.yb, self.dwt, self.dyb,
                   self.zh, self.dwhead, self.profile, self.losses)
        return self.losses[:n].copy()

    @contextmanager
    def update_threads(self, elements: int):
        """Numba threads for the clipping and optimizer steps over `elements` values: one
        below ONE_THREAD_BELOW. Their results do not depend on the thread count."""
        if elements >= ONE_THREAD_BELOW or self.threads == 1:
            yield
            return
        numba.set_num_threads(1)
        try:
            yield
        finally:
            numba.set_num_threads(self.threads)

    def profiles(self, rows) -> np.ndarray:
        """grad_norm_per_step (float64, len(rows) x T) of the last step, for those rows."""
        return self.profile[np.asarray(rows, np.int64)]

    # -- evaluation ----------------------------------------------------------------------
    def predict(self, rows, xs: np.ndarray) -> np.ndarray:
        """Outputs (M, N, S, O) of the models in `rows` (M of them) on xs (M, N, T, I)
        float32: what each one's Model.predict gives (S = T with head "every", else 1)."""
        rows = np.asarray(rows, np.int64)
        M, N, T = xs.shape[:3]
        units = np.array([(m, lo, min(lo + EVAL_CHUNK, N)) for m in range(M)
                          for lo in range(0, N, EVAL_CHUNK)], np.int64)
        outs = T if self.every else 1
        ws = self._eval_buffers(T, M)
        out = np.empty((M, N, outs, self.template.output_size), np.float32)
        with numba.parallel_chunksize(1):
            _predict(self.kind, self.every, self.dims, self.offs, self.gate_i, self.gate_h,
                     rows, units, np.ascontiguousarray(xs, np.float32), self.params,
                     ws["cat"], self.pk["cat"], ws["bwd"], self.pk["bwd"], ws["head"],
                     self.pk["head"], ws["headt"], self.pk["headt"], ws["z"], ws["g"],
                     ws["c"], ws["y"], out)
        return out

    def _eval_buffers(self, steps: int, members: int) -> dict:
        e = self._eval
        if e is None or e["steps"] != steps or e["cat"].shape[0] < members:
            m, f32 = self.template, np.float32
            pool, rows = numba.config.NUMBA_NUM_THREADS, EVAL_CHUNK
            outs = steps if self.every else 1
            e = {name: aligned_zeros((max(members, 1), size), f32)
                 for name, size in self.pk_sizes.items()}
            e["steps"] = steps
            e["z"] = aligned_zeros((pool, rows * 2 * self.wz), f32)
            e["z"].reshape(pool, rows * 2, self.wz)[:, :, m.hidden_size] = 1
            e["g"] = aligned_zeros((pool, rows * self.wg), f32)
            e["c"] = aligned_zeros((pool, rows * 2 * m.h_width if m.spec.cell_state else 0), f32)
            e["y"] = aligned_zeros((pool, outs * rows * self.op), f32)
            self._eval = e
        return e

    # -- memory --------------------------------------------------------------------------
    def load(self, params: np.ndarray) -> None:
        """Set every model's parameters from a (K, P) host array."""
        self.params[:] = params

    @staticmethod
    def copy(a: np.ndarray) -> np.ndarray:
        return a.copy()

    @staticmethod
    def to_host(a: np.ndarray) -> np.ndarray:
        return a

    @staticmethod
    def put(dst: np.ndarray, values: np.ndarray) -> None:
        dst[:] = values

    def sync(self) -> None:
        """Nothing runs behind the caller's back outside launch / wait."""

    def environment(self) -> dict:
        return {"lockstep_device": "cpu", "lockstep_threads": self.threads}

    # -- membership ----------------------------------------------------------------------
    def compact(self, keep) -> None:
        """Rows `keep` (in that order) become rows 0 .. len(keep)-1 of params (the batch
        sets are the engine's to move)."""
        keep = np.asarray(keep, np.int64)
        self.params[:keep.size] = self.params[keep]

    def row(self, i: int) -> np.ndarray:
        return self.params[i].copy()

    def set_row(self, i: int, values: np.ndarray) -> None:
        self.params[i] = values

    def close(self) -> None:
        pass


def batch_sets(members: int, batch: int, steps: int, inputs: int, outputs: int, every: bool,
               y_dtype) -> list[dict]:
    """Two sets of K batches (so that the next step's can be drawn during a step): x,
    MSE targets `y` float32 (K, B, S, O) or class indices `labels` int64 (K, B, S) (the
    other one empty), step weights `mask` (K, B, S), and each batch's loss denominator.
    Every MSE task here draws float32 targets, so float32 holds them exactly."""
    S = steps if every else 1
    xent = np.dtype(y_dtype).kind in "iu"
    f32 = np.float32
    return [{"x": np.zeros((members, batch, steps, inputs), f32),
             "y": np.zeros((members, 0 if xent else batch, S, outputs), f32),
             "labels": np.zeros((members, batch if xent else 0, S), np.int64),
             "mask": np.ones((members, batch, S), f32),
             "denom": np.zeros(members)} for _ in range(2)]


def _lines(n: int) -> int:
    """n rounded up to whole 64-byte lines of float32, so every row of a stacked buffer
    starts on a cache line as Model's own buffers do."""
    return -(-n // 16) * 16
