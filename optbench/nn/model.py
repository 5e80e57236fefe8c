"""A one-layer recurrent model with a dense head, its flat parameter vector, and the
Python side of the passes: input checks, work buffers, and the kernel calls.

One call of `loss_and_grad` runs five compiled functions: pack the weights (serial), the
forward kernel (one batch chunk per thread, all time steps), the loss (serial), the
backward kernel (same chunks), and the weight gradients (one product over all steps,
split by columns between the threads): three parallel regions. Work buffers are kept
per input shape and reused, so a warm call allocates only its small results. A model is
not safe to call from two threads at once.

The work buffers of one input shape (`_Workspace`; B sequences, T steps, S output steps:
T with head "every", else 1; the notation of optbench.nn._bptt). A name ending in b is
the batch-major storage, (B, slot, width), one contiguous stretch per thread; the name
without it is the time-major view the kernels index as [t, b]; one ending in m is the
same storage as a matrix of (sequence, slot) rows for the weight-gradient products.

    zb / z   Z: z_t = [h_{t-1} | 1 | x_t] per slot (column H the constant 1 that
             multiplies the biases); in training T + 1 slots, slot T holding h_T, read
             back by the backward pass; in evaluation two slots used in turn.
    gb / g   G: the gate activations of each step (forward), overwritten by the backward
             pass with dL/d(pre-activation) of each gate block; in training one zero slot
             more than steps, so that G and Z pair row for row; one slot in evaluation.
    cb / c   the LSTM's cell state c_t per slot (empty for RNN and GRU).
    y        the head's outputs y_s = W_head h_s + b_head, (S, B, O padded to the panel).
    dyb / dy dL/dy_s from the loss, slot 0 kept zero (pairs with Z's first slot).
    ones     the all-ones mask used when the caller passes none.
    rows     the batch rows each thread's chunk starts at (whole ROWS-row tiles).
    dstate   (training) per sequence: row 0 dL/dh_t, row 1 dL/dc_t (LSTM) or GRU
             scratch, rewritten at every step; dh, dc are those rows.
    norms    (training) |dL/dh_t| per sequence and step: the gradient-norm profile.
    zm, gm   Z and G as (B * slots, width) matrices: dWcat^T = Z^T G.
    dym, zhead  dL/dy and the [h_s | 1] rows they belong to: dW_head = dY^T [h | 1].
"""

from __future__ import annotations

from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass

import numba
import numpy as np

from optbench import cost, machine
from optbench.errors import UsageError
from optbench.nn import gru, lstm, rnn
from optbench.nn._bptt import CellSpec, pack_weights, weight_grads
from optbench.nn._gemm import panel_table
from optbench.nn._jit import EVAL_ROWS, ROWS, panel_width
from optbench.nn.init import SCHEMES, initialise
from optbench.nn.losses import LOSSES

CELLS: dict[str, CellSpec] = {"lstm": lstm.SPEC, "rnn": rnn.SPEC, "gru": gru.SPEC}
HEADS = ("last", "every")
DTYPES = {"float32": np.float32, "float64": np.float64}
_WORKSPACES = 4  # input shapes whose buffers a model keeps (training, warm-up, evaluation)


def names() -> tuple[str, ...]:
    """The model kinds `build` accepts."""
    return tuple(CELLS)


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise UsageError(f"{name} must be a positive integer; got {value!r}")
    return int(value)


def _choice(name: str, value, allowed) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise UsageError(f"{name} {value!r} unknown; allowed: {', '.join(allowed)}")
    return value


def build(kind: str, input_size: int, hidden_size: int, output_size: int, head: str = "last",
          seed: int = 0, *, dtype: str = "float32", init: str = "default",
          chrono_tmax: float | None = None) -> "Model":
    """A freshly initialised model (see optbench.nn.init for the schemes).

    kind: "lstm", "rnn" (tanh) or "gru"; head: "last" (one output per sequence, from
    h_T) or "every" (an output at every step); dtype: "float32", or "float64" for
    gradient checks (a numpy dtype works too); init: "default", "keras" or "chrono" (then
    chrono_tmax, the longest lag to carry, e.g. the sequence length, is required).
    """
    _choice("model kind", kind, CELLS)
    try:
        dtype = np.dtype(dtype).name
    except TypeError:
        pass  # refused just below
    sizes = [_positive_int(n, v) for n, v in (("input_size", input_size),
                                              ("hidden_size", hidden_size),
                                              ("output_size", output_size))]
    _choice("head", head, HEADS)
    _choice("dtype", dtype, DTYPES)
    _choice("init", init, SCHEMES)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise UsageError(f"seed must be a non-negative integer; got {seed!r}")
    if init == "chrono":
        if kind == "rnn":
            raise UsageError("init 'chrono' sets gate biases; model 'rnn' has no gates "
                             "(allowed for lstm, gru)")
        if isinstance(chrono_tmax, bool) or not isinstance(
                chrono_tmax, (int, float, np.integer, np.floating)) or not 2 < chrono_tmax < np.inf:
            raise UsageError("init 'chrono' needs chrono_tmax, the longest time lag to carry "
                             f"(e.g. the sequence length), a number > 2; got {chrono_tmax!r}")
    _check_memory(kind, *sizes, DTYPES[dtype])
    model = Model(CELLS[kind], *sizes, head, DTYPES[dtype])
    drawn = {k: np.zeros(v.shape) for k, v in model.views.items()}  # float64, then cast
    initialise(drawn, kind, model.spec.gates, np.random.default_rng(seed), init, chrono_tmax)
    for k, v in drawn.items():
        model.views[k][...] = v
    return model


def _check_memory(kind: str, input_size: int, hidden_size: int, output_size: int,
                  dtype) -> None:
    """UsageError, one line, for a model larger than this machine's memory (numpy would
    raise a MemoryError, or a ValueError for sizes past its address space)."""
    machine.check_memory(cost.model_bytes(kind, input_size, hidden_size, output_size,
                                          np.dtype(dtype).itemsize),
                         f"a {kind} model of hidden_size {hidden_size:,} and input_size "
                         f"{input_size:,}")


@dataclass
class Diag:
    """What BPTT saw besides the gradient.

    grad_norm_per_step: float64 (T,). For each step t, the L2 norm over the hidden units
    of the total derivative dL/dh_t (the head's direct part plus the part through
    h_{t+1}; L the batch-mean loss that loss_and_grad returns), taken per batch element
    and averaged over the batch: mean_b ||dL/dh_t[b, :]||_2.
    """

    grad_norm_per_step: np.ndarray


@contextmanager
def _threads(n: int):
    """Run one call's kernels on n threads when that is fewer than Numba's: a batch of a
    single row tile has nothing to share, and an idle member of the thread team must
    still be scheduled before a parallel region ends, which on a busy machine can take a
    scheduler time slice per region."""
    before = numba.get_num_threads()
    if n >= before:
        yield
        return
    numba.set_num_threads(n)
    try:
        yield
    finally:
        numba.set_num_threads(before)


_ALIGN = 64
SPREAD = 1024  # bytes between the rows of dh / dc (see _Workspace)


def aligned_zeros(shape, dtype) -> np.ndarray:
    """np.zeros whose data starts on a cache line (numpy's allocator gives 16 bytes, and
    then every vector of a row that starts on a line boundary spans two lines)."""
    dtype = np.dtype(dtype)
    n = int(np.prod(shape))
    raw = np.zeros(n * dtype.itemsize + _ALIGN, np.uint8)
    skip = -raw.ctypes.data % _ALIGN
    return raw[skip:skip + n * dtype.itemsize].view(dtype).reshape(shape)


def row_stride(width: int, dtype) -> int:
    """Elements per buffer row: `width` rounded up to an odd number of 64-byte lines, so
    that successive rows fall into different L1 sets (see _gemm.mm_tn)."""
    per_line = 64 // np.dtype(dtype).itemsize
    lines = -(-width // per_line)
    return (lines + 1 - lines % 2) * per_line


class _Workspace:
    """Buffers for one (batch, steps, training?) shape; see optbench.nn._bptt for Z and G."""

    def __init__(self, model: "Model", batch: int, steps: int, train: bool):
        m, dt = model, model.dtype
        nr = panel_width(np.dtype(dt).itemsize)
        outs = steps if m.head == "every" else 1
        # One chunk of rows per thread, whole ROWS-row units except at the end of the batch.
        tiles = -(-batch // ROWS)
        chunks = min(numba.get_num_threads(), tiles)
        self.rows = np.array([min(batch, ROWS * round(i * tiles / chunks))
                              for i in range(chunks + 1)], np.int64)
        # Batch-major storage (optbench.nn._bptt): the kernels see time-major views.
        H, O, slots = m.hidden_size, m.output_size, steps + 1 if train else 2
        self.zb = aligned_zeros((batch, slots, row_stride(m.z_cols, dt)), dt)
        self.zb[:, :, H] = 1  # the constant input that multiplies the biases
        # Training: one more G slot than steps, left zero, so that G and Z pair row for row.
        self.gb = aligned_zeros((batch, slots if train else 1, row_stride(m.g_width, dt)), dt)
        self.cb = aligned_zeros((batch, slots, m.h_width) if m.spec.cell_state else (0, 0, 0), dt)
        self.dyb = np.zeros((batch, outs + 1, O), dt)  # slot 0 stays zero (pairs with Z's)
        self.z, self.c = self.zb.transpose(1, 0, 2), self.cb.transpose(1, 0, 2)
        self.g = self.gb[:, :steps if train else 1].transpose(1, 0, 2)
        self.dy = self.dyb[:, 1:].transpose(1, 0, 2)
        self.y = aligned_zeros((outs, batch, -(-O // nr) * nr), dt)
        self.ones = np.ones((batch, outs), dt)
        if train:
            # dL/dh_t and (LSTM) dL/dc_t, or (GRU) scratch: written at every step, each row
            # by its thread. Rows SPREAD bytes apart or more, so that the threads' rows are
            # far from each other: side by side, small rows (128 bytes at H=32) of two
            # threads share cache lines and prefetched pages, and each write moves them.
            per_row = max(2, -(-SPREAD // (m.h_width * dt.itemsize)))
            self.dstate = aligned_zeros((batch, per_row, m.h_width), dt)
            self.dh, self.dc = self.dstate[:, 0], self.dstate[:, 1]
            self.norms = np.zeros((batch, steps), dt)
            # The weight-gradient products' operands: all (row, slot) pairs of Z and G, and
            # dY with the [h_t | 1] rows of the steps that have an output.
            self.zm = self.zb.reshape(-1, self.zb.shape[2])
            self.gm = self.gb.reshape(-1, self.gb.shape[2])
            if m.head == "every":
                self.dym, self.zhead = self.dyb.reshape(-1, O), self.zm[:, :H + 1]
            else:
                self.dym, self.zhead = self.dyb[:, 1], self.zb[:, steps, :H + 1]


class Model:
    """One recurrent layer (`spec`) and a dense head; build one with `build`.

    params: the flat parameter vector (float32 by default); update it in place.
    views:  torch name -> view into params, torch's shapes and gate order:
            weight_ih_l0 (G*H, I), weight_hh_l0 (G*H, H), bias_ih_l0 (G*H,),
            bias_hh_l0 (G*H,), head.weight (O, H), head.bias (O,); G = 4 (lstm: i, f,
            g, o), 3 (gru: r, z, n), 1 (rnn).
    """

    def __init__(self, spec: CellSpec, input_size: int, hidden_size: int, output_size: int,
                 head: str, dtype):
        self.spec, self.head, self.dtype = spec, head, np.dtype(dtype)
        self.kind = spec.name
        self.input_size, self.hidden_size, self.output_size = input_size, hidden_size, output_size
        H, I, O, G = hidden_size, input_size, output_size, len(spec.gates)
        shapes = {"weight_ih_l0": (G * H, I), "weight_hh_l0": (G * H, H),
                  "bias_ih_l0": (G * H,), "bias_hh_l0": (G * H,),
                  "head.weight": (O, H), "head.bias": (O,)}
        self._shapes = shapes
        self._params = np.zeros(sum(int(np.prod(s)) for s in shapes.values()), dtype)
        self._grads = np.zeros_like(self._params)
        self.views = self.unflatten(self._params)
        self._grad_views = self.unflatten(self._grads)

        nr = panel_width(self.dtype.itemsize)
        hp = -(-H // nr) * nr
        nb, nbh = spec.n_blocks, spec.n_hh_blocks
        self.h_width, self.g_width = hp, nb * hp
        k_ranges = [spec.k_range(blk, H, I) for blk in range(nb)]
        self._ih = np.array(spec.ih_blocks, np.int64)
        self._hh = np.array(spec.hh_blocks, np.int64)
        # The gate whose input / recurrent rows feed each block (-1: none).
        self._gate_i = np.array([spec.ih_blocks.index(b) if b in spec.ih_blocks else -1
                                 for b in range(nb)], np.int64)
        self._gate_h = np.array([spec.hh_blocks.index(b) if b in spec.hh_blocks else -1
                                 for b in range(nb)], np.int64)
        blocks = [p * nr // hp for p in range(self.g_width // nr)]  # each panel's block
        acts = None if spec.activations is None else [spec.activations[b] for b in blocks]
        tables = {
            "cat": panel_table([k_ranges[b] for b in blocks], nr, acts),
            "bwd": panel_table([(0, nbh * hp)] * (hp // nr), nr),
            "head": panel_table([(0, H + 1)] * -(-O // nr), nr),
            "headt": panel_table([(0, O)] * (hp // nr), nr),
        }
        self._packed = {k: (aligned_zeros(size, dtype), pk) for k, (pk, size) in tables.items()}
        # The weight-gradient product runs each block's rows of Z in whole ROWS-row tiles
        # (`_grad_panels`): the rows past a block's k range are Z's zero padding or rows of
        # another block, and what they sum into dWcat^T is never read back. Whole tiles keep
        # a block's last rows out of 1-row tiles, which are latency-bound (LSTM's H+1+I =
        # 35 rows at H=32 would end in three of them).
        self._grad_rows = [(k0, k0 + -(-(k1 - k0) // ROWS) * ROWS) for k0, k1 in k_ranges]
        self.z_cols = max(k1 for _, k1 in self._grad_rows)  # Z columns the product reads
        self._dwt = aligned_zeros((self.z_cols, self.g_width), dtype)  # dWcat^T
        self._dwhead = np.zeros((O, H + 1), dtype)
        self._workspaces: OrderedDict = OrderedDict()
        self._panels: dict[int, np.ndarray] = {}

    # -- public ------------------------------------------------------------------------
    @property
    def params(self) -> np.ndarray:
        return self._params

    @property
    def n_params(self) -> int:
        return self._params.size

    def unflatten(self, vector: np.ndarray) -> dict[str, np.ndarray]:
        """torch name -> view into `vector`, any flat array in the layout of params
        (the gradient, an optimizer's state)."""
        if not isinstance(vector, np.ndarray) or vector.shape != (self.n_params,):
            raise UsageError(f"expected a flat array of {self.n_params} elements; got "
                             f"{getattr(vector, 'shape', type(vector).__name__)}")
        views, off = {}, 0
        for name, shape in self._shapes.items():
            n = int(np.prod(shape))
            views[name] = vector[off:off + n].reshape(shape)
            off += n
        return views

    def __repr__(self) -> str:
        return (f"Model({self.kind!r}, input_size={self.input_size}, "
                f"hidden_size={self.hidden_size}, output_size={self.output_size}, "
                f"head={self.head!r}, dtype={self.dtype.name}, n_params={self.n_params})")

    def loss_and_grad(self, x, y, loss: str = "mse", mask=None):
        """(loss, grads, diag) for one batch.

        x: (B, T, I) floating (cast to the model's dtype; pass that dtype to avoid a copy).
        y: loss "mse": floating, (B, O) with head "last", (B, T, O) with head "every";
           loss "xent": integer class indices in [0, O), (B,) / (B, T); the outputs are
           logits of a softmax.
        mask: head "every" only, (B, T) bool or non-negative float weights of the steps'
           losses; the loss is their weighted mean (torch's ignore_index for 0/1).
        loss: the mean, as torch's MSELoss / CrossEntropyLoss reduce it.
        grads: dL/dparams in the layout of params. It is the model's gradient buffer,
           overwritten by the next call (copy it to keep it); clipping it in place is fine.
        diag: Diag, with grad_norm_per_step.
        """
        x = self._check_x(x)
        batch, steps = x.shape[:2]
        y, mask, denom = self._check_targets(y, loss, mask, batch, steps)
        ws = self._workspace(batch, steps, train=True)
        every = self.head == "every"
        cat, head, bwd, headt = (self._packed[k] for k in ("cat", "head", "bwd", "headt"))
        profile = np.empty(steps)
        with _threads(ws.rows.size - 1):
            self._pack()
            self.spec.forward(x, ws.z, ws.g, ws.c, ws.y, *cat, *head, ws.rows,
                              self.hidden_size, self.h_width, every)
            value = LOSSES[loss](ws.y, y, ws.ones if mask is None else mask, denom, ws.dy)
            self.spec.backward(ws.z, ws.g, ws.c, ws.dy, *bwd, *headt, ws.dh, ws.dc, ws.norms,
                               ws.rows, self.hidden_size, self.h_width, every)
            weight_grads(ws.gm, ws.zm, ws.dym, ws.zhead, ws.norms, self.hidden_size, self.h_width,
                         self._ih, self._hh, self._grad_panels(), self._dwt, self._dwhead,
                         profile, *self._grad_views.values())
        return value / denom, self._grads, Diag(profile)

    def predict(self, x) -> np.ndarray:
        """The head's outputs: (B, O) with head "last", (B, T, O) with head "every"
        (logits for a model trained with "xent"). No backward pass, and no per-step
        storage: it streams through time, EVAL_ROWS sequences at a time."""
        x = self._check_x(x)
        batch, steps = x.shape[:2]
        out = np.empty((batch, steps, self.output_size) if self.head == "every"
                       else (batch, self.output_size), self.dtype)
        for lo, ws in self._stream(x):
            part = ws.y[:, :, :self.output_size].transpose(1, 0, 2)
            out[lo:lo + part.shape[0]] = part if self.head == "every" else part[:, 0]
        return out

    def loss(self, x, y, loss: str = "mse", mask=None) -> float:
        """The loss that loss_and_grad would return, by the streaming forward pass only."""
        x = self._check_x(x)
        batch, steps = x.shape[:2]
        y, mask, denom = self._check_targets(y, loss, mask, batch, steps)
        total = 0.0
        for lo, ws in self._stream(x):
            rows = slice(lo, lo + ws.y.shape[1])
            total += LOSSES[loss](ws.y, y[rows], ws.ones if mask is None else mask[rows],
                                  denom, ws.dy)
        return total / denom

    def flops(self, batch_size: int, steps: int) -> int:
        """Floating-point operations of the matrix products of one loss_and_grad call
        (2 per multiply-add; no padding, no element-wise work), the count behind GFLOP/s:

        gate pre-activations, forward:   2 B T H sum_blocks k_b
        dL/dh_{t-1} through step t:       2 B (T-1) H^2 n_hh_blocks
        weight gradients dWcat = G^T Z:   2 B T H sum_blocks k_b
        head forward, dY @ W_head, dW_head: 2 B S O (H+1), 2 B S O H, 2 B S O (H+1)

        k_b = rows of [h | 1 | x] block b uses (H+1+I for LSTM / RNN blocks and GRU r, z;
        H+1 and 1+I for GRU's two candidate blocks); S = T with head "every", else 1.
        LSTM, B=32, T=100, H=128, I=2, O=1: 1.27e9.
        """
        B, T = _positive_int("batch_size", batch_size), _positive_int("steps", steps)
        H, I, O = self.hidden_size, self.input_size, self.output_size
        k = sum(k1 - k0 for k0, k1 in (self.spec.k_range(b, H, I)
                                        for b in range(self.spec.n_blocks)))
        S = T if self.head == "every" else 1
        return (4 * B * T * H * k + 2 * B * (T - 1) * H * H * self.spec.n_hh_blocks
                + 2 * B * S * O * (3 * H + 2))

    # -- internals ---------------------------------------------------------------------
    def _pack(self) -> None:
        v = self.views
        pack_weights(v["weight_ih_l0"], v["weight_hh_l0"], v["bias_ih_l0"], v["bias_hh_l0"],
                     v["head.weight"], v["head.bias"], self._gate_i, self._gate_h,
                     self.spec.n_hh_blocks, self.h_width,
                     *self._packed["cat"], *self._packed["bwd"], *self._packed["head"],
                     *self._packed["headt"])

    def _grad_panels(self) -> np.ndarray:
        """weight_grads' split of the column panels of dWcat^T over the threads: rows
        (panel, first row, end row of Z its block uses, rounded up to whole ROWS-row
        tiles), as even as the panels allow."""
        threads = numba.get_num_threads()
        if threads not in self._panels:
            nr = panel_width(self.dtype.itemsize)
            rows = [(p, *self._grad_rows[p * nr // self.h_width])
                    for p in range(self.g_width // nr)]
            per = -(-len(rows) // threads)
            panels = np.zeros((threads, per, 3), np.int64)  # padding: no rows
            for i, row in enumerate(rows):
                panels[i // per, i % per] = row
            self._panels[threads] = panels
        return self._panels[threads]

    def _workspace(self, batch: int, steps: int, train: bool) -> _Workspace:
        key = (batch, steps, train, numba.get_num_threads())
        ws = self._workspaces.pop(key, None) or _Workspace(self, batch, steps, train)
        self._workspaces[key] = ws
        while len(self._workspaces) > _WORKSPACES:
            self._workspaces.popitem(last=False)
        return ws

    def _stream(self, x):
        """(first row, workspace) per block of rows after the forward pass over the block."""
        cat, head = self._packed["cat"], self._packed["head"]
        for lo in range(0, x.shape[0], EVAL_ROWS):
            part = x[lo:lo + EVAL_ROWS]
            ws = self._workspace(part.shape[0], part.shape[1], train=False)
            with _threads(ws.rows.size - 1):
                if lo == 0:
                    self._pack()
                self.spec.forward(part, ws.z, ws.g, ws.c, ws.y, *cat, *head, ws.rows,
                                  self.hidden_size, self.h_width, self.head == "every")
            yield lo, ws

    def _check_x(self, x) -> np.ndarray:
        x = np.asarray(x)
        if x.dtype.kind != "f":
            raise UsageError(f"x must be a floating array (float32 for this model); "
                             f"got dtype {x.dtype}")
        if x.ndim != 3 or x.shape[2] != self.input_size or 0 in x.shape:
            raise UsageError(f"x must have shape (batch, steps, {self.input_size}) with "
                             f"batch, steps >= 1; got {x.shape}")
        return np.ascontiguousarray(x, dtype=self.dtype)

    def _check_targets(self, y, loss, mask, batch, steps):
        """(y, mask, denominator of the mean) in the shapes the loss kernels read."""
        _choice("loss", loss, LOSSES)
        every = self.head == "every"
        S = steps if every else 1
        y = np.asarray(y)
        if loss == "mse":
            shape = (batch, steps, self.output_size) if every else (batch, self.output_size)
            if y.dtype.kind != "f":
                raise UsageError(f"y for loss 'mse' must be floating; got dtype {y.dtype}")
        else:
            shape = (batch, steps) if every else (batch,)
            if y.dtype.kind not in "iu":
                raise UsageError(f"y for loss 'xent' must hold integer class indices; "
                                 f"got dtype {y.dtype}")
        if y.shape != shape:
            raise UsageError(f"y for loss {loss!r} with head {self.head!r} must have shape "
                             f"{shape}; got {y.shape}")
        if loss == "xent":
            if y.min() < 0 or y.max() >= self.output_size:
                raise UsageError(f"y holds class indices outside [0, {self.output_size}): "
                                 f"min {y.min()}, max {y.max()}")
            y = np.ascontiguousarray(y.reshape(batch, S))
        else:
            y = np.ascontiguousarray(y.reshape(batch, S, self.output_size))
        count = self.output_size if loss == "mse" else 1
        if mask is None:
            return y, None, float(batch * S * count)
        if not every:
            raise UsageError("mask is only for head 'every' (it weights the steps' losses); "
                             "this model has head 'last'")
        mask = np.asarray(mask)
        if mask.dtype.kind not in "bf" or mask.shape != (batch, steps):
            raise UsageError(f"mask must be bool or floating with shape {(batch, steps)}; "
                             f"got dtype {mask.dtype}, shape {mask.shape}")
        mask = np.ascontiguousarray(mask, dtype=self.dtype)
        total = float(mask.sum(dtype=np.float64))
        if not np.isfinite(total) or mask.min() < 0 or total <= 0:
            raise UsageError("mask weights must be finite, >= 0 and not all 0")
        return y, mask, total * count
