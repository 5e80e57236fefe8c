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

Your own task: subclass `Task` (or `ClassificationTask`), set its attributes, write
`_sample`, `baseline` and `solved`, and `tasks.register` it (examples/plugins/parity.py;
`optbench.testing.check_task` checks it).
"""

from __future__ import annotations

from optbench import plugins, sources
from optbench.errors import UsageError
from optbench.tasks.adding import Adding
from optbench.tasks.base import Batch, ClassificationTask, Task
from optbench.tasks.copy import Copy
from optbench.tasks.order import TemporalOrder

BUILTIN = {
    "adding": Adding,
    "copy": Copy,
    "temporal_order_4": lambda: TemporalOrder(relevant=2),
    "temporal_order_8": lambda: TemporalOrder(relevant=3),
    "digits": lambda: _digits(permuted=False),
    "digits_permuted": lambda: _digits(permuted=True),
}
_FACTORIES = dict(BUILTIN)  # every registered task, built-ins first
_ORIGINS = dict.fromkeys(BUILTIN, "built-in")
_SOURCE_KEYS: dict[str, str] = {}
HEADS = ("last", "every")
LOSSES = ("mse", "xent")

__all__ = ["Batch", "ClassificationTask", "Task", "builtin_names", "get", "names", "origin",
           "register", "source_key", "unregister"]


def _digits(permuted: bool) -> Task:
    from optbench.tasks.digits import Digits  # imports scikit-learn only when asked for

    return Digits(permuted)


def names(load_plugins: bool = True) -> tuple[str, ...]:
    """The registered task names (built-ins, then plugins, in registration order)."""
    if load_plugins:
        plugins.load_entry_points()
    return tuple(_FACTORIES)


def builtin_names() -> tuple[str, ...]:
    return tuple(BUILTIN)


def get(name: str) -> Task:
    """The task called `name`; UsageError naming the allowed names otherwise."""
    try:
        factory = _FACTORIES[name] if name in names() else None
    except TypeError:
        factory = None
    if factory is None:
        raise UsageError(f"unknown task {name!r}; allowed: {', '.join(names())}")
    return factory()


def origin(name: str) -> str:
    """Where task `name` came from: "built-in", a plugin, or a module."""
    get(name)
    return _ORIGINS[name]


def origins() -> dict[str, str]:
    return dict(_ORIGINS)


def source_key(name: str) -> str:
    """A hash of the code of task `name` outside this package ("" for a built-in)."""
    if origin(name) == "built-in":
        return ""
    if name not in _SOURCE_KEYS:
        _SOURCE_KEYS[name] = sources.key(_FACTORIES[name])
    return _SOURCE_KEYS[name]


def register(factory=None, *, name: str | None = None, origin: str | None = None):
    """Add a task: a Task subclass (registered under its `name` attribute; usable as a class
    decorator), or any function returning a Task with `name=`. Returns `factory`. The task
    is built once and checked (its attributes and methods); a name taken by a built-in or by
    other code is refused with one line; the same code registered again is a no-op."""
    if factory is None:
        return lambda f: register(f, name=name, origin=origin)
    if not callable(factory):
        raise UsageError(f"tasks.register wants a Task subclass or a function returning a "
                         f"Task; got {type(factory).__name__}")
    if name is None:
        name = getattr(factory, "name", None)
    where = origin or plugins.loading() or getattr(factory, "__module__", None) or "?"
    if not isinstance(name, str) or not name or any(c.isspace() for c in name):
        raise UsageError(f"a task from {where} needs a name without spaces (its `name` "
                         f"attribute, or register(..., name=...)); got {name!r}")
    if name in BUILTIN:
        raise UsageError(f"task {name!r} (from {where}) has the name of a built-in task; give "
                         "it another name")
    try:
        task = factory()
    except Exception as exc:  # noqa: BLE001 - whatever the user's factory raises: one line
        raise UsageError(f"task {name!r} (from {where}): building it failed: "
                         f"{type(exc).__name__}: {exc}") from None
    problem = contract_problem(task, name)
    if problem:
        raise UsageError(f"task {name!r} (from {where}): {problem}")
    key = sources.key(factory)
    if name in _FACTORIES:
        if _SOURCE_KEYS.get(name) == key:
            _FACTORIES[name] = factory
            return factory
        raise UsageError(f"task {name!r} from {where} is already registered from "
                         f"{_ORIGINS[name]}; give one of them another name")
    _FACTORIES[name], _ORIGINS[name], _SOURCE_KEYS[name] = factory, where, key
    return factory


def unregister(name: str) -> None:
    """Remove a registered (non-built-in) task; for tests and notebooks."""
    if name in BUILTIN:
        raise UsageError(f"task {name!r} is built in; it cannot be unregistered")
    for table in (_FACTORIES, _ORIGINS, _SOURCE_KEYS):
        table.pop(name, None)


def contract_problem(task, name: str) -> str | None:
    """What is wrong with `task` as a Task, or None: the attributes the training loop and
    the report read, and the methods a subclass must write."""
    if not isinstance(task, Task):
        return f"the factory returned {type(task).__name__}, not an optbench.tasks.Task"
    if getattr(task, "name", None) != name:
        return f"its name attribute is {getattr(task, 'name', None)!r}, registered as {name!r}"
    for attr in ("input_size", "output_size", "min_length"):
        value = getattr(task, attr, None)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            return f"{attr} must be a positive integer; got {value!r}"
    if getattr(task, "head", None) not in HEADS:
        return f"head must be one of {', '.join(HEADS)}; got {getattr(task, 'head', None)!r}"
    if getattr(task, "loss", None) not in LOSSES:
        return f"loss must be one of {', '.join(LOSSES)}; got {getattr(task, 'loss', None)!r}"
    if not isinstance(getattr(task, "metric_name", None), str):
        return "metric_name must be a string (the metric the report names)"
    if not isinstance(getattr(task, "higher_is_better", None), bool):
        return "higher_is_better must be True or False"
    for method in ("_sample", "baseline", "solved"):
        if getattr(type(task), method) is getattr(Task, method):
            return f"it must implement {method}() (see optbench.tasks.base.Task)"
    return None
