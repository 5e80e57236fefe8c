"""What every task shares: the batch type, the seed streams, the length check and the scores.

A task is a deterministic generator: `sample(rng, batch_size, length)` draws one training
batch from a numpy Generator. Each seed also fixes a validation and a test set, drawn from
streams of their own (`numpy.random.SeedSequence(seed).spawn(3)`: train, val, test), so
no training batch is ever the validation or test data, and a set depends only on
(task, seed, length): not on the batch size, the model or the optimizer.

Scores are computed in float64 from the model's float32 outputs. `score` returns sums and
a count so that a set evaluated in chunks gives the same mean as one evaluated at once.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from optbench import cost, machine
from optbench.errors import UsageError

# Sizes of the fixed evaluation sets of the synthetic tasks (sequences). The validation set
# is scored every `eval_every` steps, the test set once at the end.
VAL_SIZE = 512
TEST_SIZE = 2048
SPLITS = ("val", "test")


class Batch(NamedTuple):
    """x: float32 (B, T, input_size); y: float32 (B, O) for "mse", or int64 class indices
    (B,) with head "last" / (B, T) with head "every" for "xent"; mask: None (every target
    counts) or float32 (B, T) weights of the per-step losses."""

    x: np.ndarray
    y: np.ndarray
    mask: np.ndarray | None = None


def streams(seed: int) -> list[np.random.SeedSequence]:
    """The seed's independent streams: [train, val, test]."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise UsageError(f"seed must be a non-negative integer; got {seed!r}")
    return np.random.SeedSequence(int(seed)).spawn(3)


class Task:
    """Base class: a subclass sets the attributes below and implements `_sample`."""

    name: str
    input_size: int
    output_size: int
    head: str  # "last": one target per sequence; "every": a target at every step
    loss: str  # "mse" or "xent" (softmax cross-entropy over output_size classes)
    metric_name: str
    higher_is_better: bool
    min_length: int = 1
    val_size: int = VAL_SIZE
    test_size: int = TEST_SIZE

    # -- lengths ---------------------------------------------------------------------------
    @property
    def allowed_lengths(self) -> str:
        return f"any integer >= {self.min_length}"

    def check_length(self, length) -> int:
        if (
            isinstance(length, bool)
            or not isinstance(length, (int, np.integer))
            or length < self.min_length
        ):
            raise UsageError(
                f"task {self.name!r}: length {length!r} not allowed; allowed: {self.allowed_lengths}"
            )
        return int(length)

    def steps(self, length: int) -> int:
        """Time steps of a sequence of this length (the copy task adds 20)."""
        return self.check_length(length)

    # -- data ------------------------------------------------------------------------------
    def sample(self, rng: np.random.Generator, batch_size: int, length: int) -> Batch:
        """One batch from `rng` (a numpy Generator): the training stream."""
        if not isinstance(rng, np.random.Generator):
            raise UsageError(f"rng must be a numpy Generator (np.random.default_rng(seed)); "
                             f"got {type(rng).__name__} {rng!r:.40}")
        length = self.check_length(length)
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) \
                or batch_size < 1:
            raise UsageError(f"batch_size must be a positive integer; got {batch_size!r}")
        self._check_memory(int(batch_size), length)
        return self._sample(rng, int(batch_size), length)

    def _check_memory(self, batch_size: int, length: int) -> None:
        machine.check_memory(cost.batch_bytes(self, batch_size, self.steps(length)),
                             f"a batch of {batch_size:,} {self.name} sequences of length "
                             f"{length:,}")

    def _sample(self, rng: np.random.Generator, batch_size: int, length: int) -> Batch:
        raise NotImplementedError

    def train_rng(self, seed: int) -> np.random.Generator:
        return np.random.default_rng(streams(seed)[0])

    def eval_set(self, seed: int, length: int, split: str) -> Batch:
        """The fixed validation ("val") or test ("test") set of this seed and length."""
        if split not in SPLITS:
            raise UsageError(f"split {split!r} unknown; allowed: {', '.join(SPLITS)}")
        stream = streams(seed)[1 + SPLITS.index(split)]
        length = self.check_length(length)
        self._check_memory(self.val_size if split == "val" else self.test_size, length)
        return self._held_out(stream, length, split)

    def _held_out(self, stream: np.random.SeedSequence, length: int, split: str) -> Batch:
        size = self.val_size if split == "val" else self.test_size
        return self._sample(np.random.default_rng(stream), size, length)

    # -- scores ----------------------------------------------------------------------------
    def score(self, outputs: np.ndarray, batch: Batch) -> tuple[float, float, float]:
        """(loss sum, metric sum, count) of the model's outputs on `batch`; means are sum/count."""
        if self.loss == "mse":
            total = mse_sum(outputs, batch.y)
            return total, total, float(batch.y.size)
        logp = log_softmax(outputs)
        total = xent_sum(logp, batch.y, batch.mask)
        count = float(batch.y.size if batch.mask is None else batch.mask.sum(dtype=np.float64))
        metric = total if self.metric_name == "cross-entropy" else correct_sum(
            logp, batch.y, batch.mask)
        return total, metric, count

    def evaluate(self, outputs: np.ndarray, batch: Batch) -> tuple[float, float]:
        """(mean loss, mean metric) of the model's outputs on `batch`."""
        loss, metric, count = self.score(outputs, batch)
        return loss / count, metric / count

    # -- reference levels ------------------------------------------------------------------
    def baseline(self, length: int) -> float:
        """The metric of the best memoryless predictor (see each task's docstring)."""
        raise NotImplementedError

    def baseline_loss(self, length: int) -> float:
        """The training loss of that memoryless predictor (the loop's divergence reference)."""
        return self.baseline(length)

    def solved(self, metric: float, length: int) -> bool:
        """True when the metric counts as solved at this length (see each task)."""
        raise NotImplementedError

    def threshold(self, length: int) -> float | None:
        """The metric value at which `solved` flips, found by bisection between the
        memoryless baseline (unsolved) and a perfect score (0 for a loss, 1 for accuracy), so
        that a report never restates a task's rule. None if the rule is not monotone there."""
        lo, hi = self.baseline(length), 1.0 if self.higher_is_better else 0.0
        if self.solved(lo, length) or not self.solved(hi, length):
            return None
        for _ in range(60):
            mid = (lo + hi) / 2
            lo, hi = (lo, mid) if self.solved(mid, length) else (mid, hi)
        return hi

    def __repr__(self) -> str:
        return f"<task {self.name}: {self.loss} loss, {self.metric_name} metric, head {self.head}>"


class ClassificationTask(Task):
    """A task scored by accuracy, solved at `solved_accuracy`."""

    loss = "xent"
    metric_name = "accuracy"
    higher_is_better = True
    solved_accuracy: float

    def solved(self, metric: float, length: int) -> bool:
        self.check_length(length)
        return bool(metric >= self.solved_accuracy)  # NaN compares False


def one_hot(symbols: np.ndarray, n: int) -> np.ndarray:
    """float32 one-hot codes: (...,) int -> (..., n)."""
    return np.eye(n, dtype=np.float32)[symbols]


def log_softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def mse_sum(outputs: np.ndarray, y: np.ndarray) -> float:
    return float(np.square(outputs.astype(np.float64) - y).sum())


def xent_sum(logp: np.ndarray, y: np.ndarray, mask: np.ndarray | None) -> float:
    nll = -np.take_along_axis(logp, y[..., None], axis=-1)[..., 0]
    return float(nll.sum() if mask is None else (nll * mask).sum())


def correct_sum(logp: np.ndarray, y: np.ndarray, mask: np.ndarray | None) -> float:
    hit = (logp.argmax(axis=-1) == y).astype(np.float64)
    return float(hit.sum() if mask is None else (hit * mask).sum())
