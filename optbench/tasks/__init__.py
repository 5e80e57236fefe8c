"""Synthetic long-dependency tasks (and one small real one): generators, scores,
memoryless baselines and solved rules.

    from optbench import tasks
    tasks.names()
    task = tasks.get("adding")
    x, y, mask = task.sample(rng, batch_size=32, length=100)   # rng: numpy Generator
    val = task.eval_set(seed, length, "val")                   # fixed per (seed, length)
    task.baseline(length); task.solved(metric, length)

Each task's module documents its generator with the paper's description, the baseline's
derivation and the solved threshold with its reason.
"""

from __future__ import annotations

from optbench.errors import UsageError
from optbench.tasks.adding import Adding
from optbench.tasks.base import Batch, Task
from optbench.tasks.copy import Copy
from optbench.tasks.order import TemporalOrder

_FACTORIES = {
    "adding": Adding,
    "copy": Copy,
    "temporal_order_4": lambda: TemporalOrder(relevant=2),
    "temporal_order_8": lambda: TemporalOrder(relevant=3),
    "digits": lambda: _digits(permuted=False),
    "digits_permuted": lambda: _digits(permuted=True),
}

__all__ = ["Batch", "Task", "get", "names"]


def _digits(permuted: bool) -> Task:
    from optbench.tasks.digits import Digits  # imports scikit-learn only when asked for

    return Digits(permuted)


def names() -> tuple[str, ...]:
    return tuple(_FACTORIES)


def get(name: str) -> Task:
    """The task called `name`; UsageError naming the allowed names otherwise."""
    try:
        factory = _FACTORIES[name]
    except (KeyError, TypeError):
        raise UsageError(f"unknown task {name!r}; allowed: {', '.join(names())}") from None
    return factory()
