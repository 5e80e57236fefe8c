"""A benchmark cell (one training run) and its result: the contract between the
training loop (`optbench.train.run_cell`), the matrix, the executors and the store.

A cell is plain, JSON-able data. Its key is a hash of its canonical JSON, so the same
configuration always lands on the same row of the store (what makes resume work). A cell
that runs a plugin's optimizer or task also carries `code`, a hash of that plugin code
(`optbench.plugins.code_key`), so editing the plugin gives new cells instead of reusing
results of the old code; built-in cells have no `code` and their canonical JSON leaves it
out, so their keys stay what they were.
`PROTOCOL` is part of every key: bump it when a change to the training loop, a task
generator or a model makes old results incomparable, and old rows stop matching.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any

PROTOCOL = 1

OUTCOMES = ("solved", "budget", "diverged")


@dataclass(frozen=True)
class Cell:
    task: str = "adding"
    length: int = 50
    model: str = "lstm"
    hidden: int = 128
    optimizer: str = "adam"
    # Optimizer hyper-parameters as torch.optim names them, lr included, e.g.
    # {"lr": 1e-3, "betas": [0.9, 0.999]}. Sequences are lists so the JSON is canonical.
    hparams: dict = field(default_factory=lambda: {"lr": 1e-3})
    seed: int = 0
    steps: int = 2000  # step budget
    batch_size: int = 32
    clip_norm: float | None = 1.0  # global-norm clipping (Pascanu et al. 2013); None = off
    clip_value: float | None = None  # element-wise clipping; None = off
    eval_every: int = 100
    init: str = "default"  # model init scheme: "default" or "chrono"
    code: str | None = None  # hash of the plugin code the cell runs; None: built-ins only

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["hparams"] = _canonical(d["hparams"])
        if d["code"] is None:
            del d["code"]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Cell":
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown cell fields {sorted(unknown)}; allowed: {sorted(names)}")
        return cls(**d)

    def canonical_json(self) -> str:
        return json.dumps(
            {"protocol": PROTOCOL, **self.to_dict()}, sort_keys=True, separators=(",", ":")
        )

    @property
    def key(self) -> str:
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()[:20]

    @property
    def lr(self) -> float:
        return float(self.hparams["lr"])

    def __hash__(self) -> int:
        return hash(self.key)


def _canonical(obj):
    """Sorted keys; tuples become lists; numpy scalars become Python numbers."""
    if isinstance(obj, dict):
        return {str(k): _canonical(v) for k, v in sorted(obj.items())}
    if isinstance(obj, (list, tuple)):
        return [_canonical(v) for v in obj]
    if hasattr(obj, "item") and not isinstance(obj, (str, bytes)):
        return obj.item()  # numpy scalar -> Python number
    return obj


@dataclass
class Result:
    """What one cell produced. All fields are JSON-able; the store keeps them as they are.

    outcome: "solved" (reached the task's solved rule on the validation set),
             "diverged" (NaN/inf or loss far above the baseline; `diverged_step` says when),
             "budget" (ran out of steps unsolved).
    curves: one row per evaluation: {"step", "train_loss", "val_loss", "val_metric",
            "grad_norm", "train_s", "wall_s"}; `train_loss` and `grad_norm` (before
            clipping) are means since the last row (None in the step-0 row); `train_s` is
            the training time so far, `wall_s` that plus the evaluations (compile excluded).
    grad_profiles: [{"step": int, "norms": [||dL/dh_t|| for t in 0..T-1]}] at a few points.
    timings: seconds: {"compile_s", "train_s", "eval_s", "total_s"}.
    """

    cell: Cell
    outcome: str
    steps_run: int
    steps_to_solve: int | None = None
    seconds_to_solve: float | None = None
    diverged_step: int | None = None
    val_loss: float | None = None
    val_metric: float | None = None
    test_loss: float | None = None
    test_metric: float | None = None
    curves: list[dict] = field(default_factory=list)
    grad_profiles: list[dict] = field(default_factory=list)
    timings: dict = field(default_factory=dict)
    env: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.outcome not in OUTCOMES:
            raise ValueError(f"outcome {self.outcome!r} not one of {OUTCOMES}")

    @property
    def key(self) -> str:
        return self.cell.key
