"""What a cell will cost before it runs: its memory (checked against the machine's before
any work) and its work (what the ETA multiplies by a rate learnt from the cells done).

Memory (`cell_bytes`) counts what `optbench.train.run_cell` allocates, from the shapes: the
model's parameters, gradient and packed weights (`model_bytes`), the optimizer's state and
the warm-up's copies, the training work buffers (batch x time steps x the gate and state
widths, `optbench.nn.model._Workspace`), the streaming evaluation's buffers, the fixed
validation and test sets and a training batch with their generators' temporaries, and the
curves kept per evaluation. It errs high (padding to the widest vector layout, every
optimizer's state as Adam's with AMSGrad): tests check it against tracemalloc's peak.

Work (`work`) is in multiply-adds of the step's matrix products plus overheads expressed in
the same unit: per time step of a sequence (the element-wise gate code, the loop), per
training step (batch drawing, clipping, the optimizer step, Python), per evaluation (the
forward pass over the validation set) and per cell (the test set, set-up). The constants
were fitted on recorded runs of `quick` and examples/custom.toml (ratios only: the
seconds per unit are learnt while a run goes, `Eta`).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

from optbench.cell import Cell
from optbench.errors import UsageError

F32 = 4
NR = 32  # the widest panel (AVX-512, float32): padding of the hidden size
ROWS = 4
EVAL_ROWS = 256  # optbench.nn._jit.EVAL_ROWS
CURVE_ROW_BYTES = 700  # one evaluation's dict of Python floats in Result.curves
PROFILES = 5  # gradient-norm profiles kept (step 1, three fractions, the last step)
STATE_SLOTS = 3  # optimizer state vectors per parameter at most (Adam with AMSGrad)
_GATES = {"lstm": (4, 4, True), "gru": (3, 4, False), "rnn": (1, 1, False)}  # G, blocks, c


def _pad(n: int, to: int) -> int:
    return -(-n // to) * to


def _shape(kind: str):
    try:
        return _GATES[kind]
    except KeyError:
        raise UsageError(f"unknown model {kind!r}; allowed: {', '.join(_GATES)}") from None


def model_bytes(kind: str, input_size: int, hidden_size: int, output_size: int,
                itemsize: int = F32) -> int:
    """Bytes of a built model: parameters and gradient, the packed weights of the forward
    and backward products, and the weight-gradient accumulator."""
    gates, blocks, _ = _shape(kind)
    H, I, O = hidden_size, input_size, output_size
    params = gates * H * (I + H + 2) + O * (H + 1)
    hp = _pad(H, NR)
    k = _pad(H + 1 + I, ROWS) + ROWS
    packed = 2 * k * blocks * hp + blocks * hp * hp + (H + 1 + hp) * _pad(O, NR)
    return itemsize * (2 * params + packed)


def params(kind: str, input_size: int, hidden_size: int, output_size: int) -> int:
    gates, _, _ = _shape(kind)
    return gates * hidden_size * (input_size + hidden_size + 2) + output_size * (hidden_size + 1)


def _workspace_bytes(kind: str, batch: int, steps: int, hidden: int, input_size: int,
                     output_size: int, every: bool, train: bool) -> int:
    _, blocks, cell_state = _shape(kind)
    hp = _pad(hidden, NR)
    slots = steps + 1 if train else 2
    z = _pad(_pad(hidden + 1 + input_size, ROWS) + ROWS, 16) + 16
    g = blocks * hp + 16
    c = hp if cell_state else 0
    outs = steps if every else 1
    per_row = slots * (z + g + c) + (outs + 1) * output_size + outs * (_pad(output_size, NR) + 1)
    if train:
        per_row += max(2 * hp, 1024 // F32 + hp) + steps
    return F32 * batch * per_row


def batch_bytes(task, batch: int, steps: int) -> int:
    """A batch of the task and its generator's temporaries (int64 symbols, float64 draws)."""
    return batch * steps * (F32 * task.input_size + 3 * 8) + batch * 8 * task.output_size


def cell_bytes(cell: Cell) -> int:
    """Peak bytes `optbench.train.run_cell(cell)` allocates, an upper estimate (see the module
    docstring). Raises UsageError for an unknown task or model."""
    from optbench import tasks

    task = tasks.get(cell.task)
    steps = task.steps(cell.length)
    every = task.head == "every"
    I, O, H, B = task.input_size, task.output_size, cell.hidden, cell.batch_size
    p = params(cell.model, I, H, O)
    model = model_bytes(cell.model, I, H, O) + F32 * p * (2 * STATE_SLOTS + 1)
    ws = (_workspace_bytes(cell.model, B, steps, H, I, O, every, True)
          + _workspace_bytes(cell.model, min(EVAL_ROWS, max(task.val_size, task.test_size)),
                             steps, H, I, O, every, False) * 2)
    # The validation set stays while the test set is drawn; a chunk's float64 log-softmax
    # and its temporaries while it is scored.
    sets = batch_bytes(task, task.val_size + task.test_size, steps)
    scoring = 4 * 8 * EVAL_ROWS * (steps if every else 1) * O
    curves = CURVE_ROW_BYTES * (cell.steps // cell.eval_every + 3)
    profiles = (PROFILES + 1) * steps * 40
    return int(model + ws + sets + scoring + 2 * batch_bytes(task, B, steps) + curves
               + profiles)


# -- work ---------------------------------------------------------------------------------
# The unit is one multiply-add of a training step's products. Overheads in that unit,
# fitted (non-negative least squares on relative error) to one-thread CPU seconds of every
# cell of `quick` and examples/custom.toml (tests/fixtures/cell_times_*.csv): a training
# step's fixed cost (drawing the batch, five kernel calls, clipping, the optimizer step) is
# about the products of 800 LSTM(32) sequence elements; a head on every step adds its
# outputs' softmax per element; an evaluation's forward pass streams at 1.3x the cost of a
# training product per multiply-add (no backward pass to amortise its loop over).
PER_STEP = 1.1e7
PER_CELL = 2.4e8  # building the model, the warm-up call, the test set, the result
PER_OUTPUT = 2.2e3  # per output and sequence element of a training step, head "every"
EVAL_FACTOR = 1.3


def _macs(kind: str, hidden: int, input_size: int, output_size: int) -> float:
    """Multiply-adds per sequence element of a forward pass."""
    gates, _, _ = _shape(kind)
    return gates * hidden * (hidden + 1 + input_size) + output_size * (hidden + 1)


def work(cell: Cell, steps: int | None = None, evaluations: int | None = None) -> float:
    """The work of `cell` if it runs `steps` training steps (default: its whole budget) with
    `evaluations` validation passes (default: those `steps` imply), in the module's units."""
    from optbench import tasks

    task = tasks.get(cell.task)
    T = task.steps(cell.length)
    steps = cell.steps if steps is None else steps
    if evaluations is None:
        evaluations = steps // cell.eval_every + 1 + (steps % cell.eval_every != 0)
    fwd = _macs(cell.model, cell.hidden, task.input_size, task.output_size)
    per_element = 3 * fwd + (PER_OUTPUT * task.output_size if task.head == "every" else 0)
    train = steps * (cell.batch_size * T * per_element + PER_STEP)
    scored = (evaluations * task.val_size + task.test_size) * T * fwd * EVAL_FACTOR
    return train + scored + PER_CELL


# -- the ETA --------------------------------------------------------------------------------
@dataclass
class Eta:
    """Seconds left for a run, from the work of the cells left and a rate learnt from the
    cells done.

    `done(cell, steps_run, evaluations, seconds)` for each finished cell (seconds: its
    training and evaluation time, compile aside); `left(cells)` the estimate for the cells
    still to run, as (expected, bound): `bound` assumes every cell uses its whole step
    budget; `expected` scales each cell's steps by the share of the budget that finished
    cells of the same optimizer and learning rate used (early stops), then of the same
    optimizer, then of all cells. Rates are per (task, length, model, hidden, batch) where
    that shape has finished cells, the overall rate otherwise. `parallel`: cells running at
    once (worker processes).
    """

    parallel: int = 1
    _work: float = 0.0
    _seconds: float = 0.0
    _shape: dict = field(default_factory=dict)  # shape -> [work, seconds]
    _share: dict = field(default_factory=dict)  # (optimizer, lr) / optimizer -> [used, budget]

    def done(self, cell: Cell, steps_run: int, evaluations: int | None, seconds: float) -> None:
        w = work(cell, steps_run, evaluations)
        self._work += w
        self._seconds += seconds
        s = self._shape.setdefault(_shape_of(cell), [0.0, 0.0])
        s[0] += w
        s[1] += seconds
        used, budget = work(cell, steps_run, evaluations), work(cell)
        for key in _share_keys(cell):
            share = self._share.setdefault(key, [0.0, 0.0])
            share[0] += used
            share[1] += budget

    @property
    def known(self) -> bool:
        return self._work > 0 and self._seconds > 0

    def rate(self, cell: Cell) -> float:
        s = self._shape.get(_shape_of(cell))
        if s is not None and s[0] > 0 and s[1] > 0:
            return s[1] / s[0]
        return self._seconds / self._work

    def share(self, cell: Cell) -> float:
        for key in _share_keys(cell):
            used, budget = self._share.get(key, (0.0, 0.0))
            if budget > 0:
                return used / budget
        return 1.0

    def left(self, cells) -> tuple[float, float]:
        """(expected, upper bound) seconds for `cells`; (nan, nan) before any cell is done."""
        if not self.known:
            return math.nan, math.nan
        expected = bound = 0.0
        for cell in cells:
            full = work(cell) * self.rate(cell)
            bound += full
            expected += full * self.share(cell)
        return expected / self.parallel, bound / self.parallel


def _shape_of(cell: Cell) -> tuple:
    return (cell.task, cell.length, cell.model, cell.hidden, cell.batch_size)


def _share_keys(cell: Cell) -> tuple:
    """From the most to the least alike: the same optimizer and hyper-parameters, the same
    optimizer, any cell."""
    hparams = json.dumps(cell.hparams, sort_keys=True)
    return (_shape_of(cell) + (cell.optimizer, hparams), (cell.optimizer, hparams),
            (cell.optimizer,), ())
