"""The optimizer registry: the built-in specs, and any registered at run time.

    from optbench import optim
    optim.register(SPEC)            # checked against the rule contract; one line if not
    optim.names()                   # built-ins first, then the registered ones
    optim.builtin_names()

Registration checks the spec completely except compiling its rule (the run command compiles
every rule a matrix uses before any cell runs, `check_compiles`; so does
`optbench.testing.check_optimizer`). Each entry records where it came from (`origin`):
"built-in", the plugin file or module that registered it, or the caller's module.
"""

from __future__ import annotations

from collections.abc import Mapping
from numbers import Real

from optbench import plugins, sources
from optbench.errors import UsageError
from optbench.optim import adagrad, adam, adamax, contract, lion, nadam, radam, rmsprop, sgd
from optbench.optim.spec import Spec, range_of, validate

BUILTIN: dict[str, Spec] = {
    s.name: s
    for s in (sgd.SPEC, adagrad.SPEC, rmsprop.SPEC, adam.SPEC, adam.SPEC_W, nadam.SPEC,
              radam.SPEC, adamax.SPEC, lion.SPEC)
}
SPECS: dict[str, Spec] = dict(BUILTIN)  # every registered spec, built-ins first
ORIGINS: dict[str, str] = dict.fromkeys(BUILTIN, "built-in")
_SOURCE_KEYS: dict[str, str] = {}


def names() -> tuple[str, ...]:
    """The registered optimizer names (built-ins, then plugins, in registration order)."""
    _entry_points()
    return tuple(SPECS)


def builtin_names() -> tuple[str, ...]:
    return tuple(BUILTIN)


def spec(name: str) -> Spec:
    """The spec of optimizer `name` (its defaults, paper, and `doc` with the update rule).
    A torch optimizer class named by its path ("torch.optim.ASGD", "pkg.module:Class")
    registers itself on first use (`optbench.optim.torch_adapter`), in any process."""
    _entry_points()
    try:
        return SPECS[name]
    except (KeyError, TypeError):
        pass
    if isinstance(name, str) and (name.startswith("torch.") or ":" in name):
        from optbench.optim import torch_adapter  # it registers here: imports each other

        return SPECS[torch_adapter.register(name)]
    raise UsageError(f"unknown optimizer {name!r}; choose one of: {', '.join(SPECS)}")


def origin(name: str) -> str:
    """Where optimizer `name` came from: "built-in", a plugin, or a module."""
    spec(name)
    return ORIGINS[name]


def source_key(name: str) -> str:
    """A hash of the code of optimizer `name` outside this package ("" for a built-in)."""
    s = spec(name)
    if ORIGINS[name] == "built-in":
        return ""
    if hasattr(s, "code_key"):  # a torch optimizer: torch's version and its module's source
        return s.code_key()
    if name not in _SOURCE_KEYS:
        _SOURCE_KEYS[name] = sources.key(s)
    return _SOURCE_KEYS[name]


def register(s: Spec, *, origin: str | None = None) -> Spec:
    """Add optimizer `s` to the registry after checking it against the rule contract; return
    it (so `register` also works as `SPEC = optim.register(Spec(...))`). Registering the
    same name again from the same code is a no-op; another spec under a taken name, or a
    built-in's name, is refused with one line."""
    check(s)
    where = origin or plugins.loading() or getattr(s.rule, "__module__", None) or "?"
    if s.name in BUILTIN:
        raise UsageError(f"optimizer {s.name!r} (from {where}) has the name of a built-in "
                         "optimizer; give it another name")
    key = sources.key(s)
    if s.name in SPECS:
        if _SOURCE_KEYS.get(s.name) == key:
            SPECS[s.name] = s  # the same code loaded again (a worker, or a plugin named twice)
            return s
        raise UsageError(f"optimizer {s.name!r} from {where} is already registered from "
                         f"{ORIGINS[s.name]}; give one of them another name")
    SPECS[s.name] = s
    ORIGINS[s.name] = where
    _SOURCE_KEYS[s.name] = key
    return s


def add_external(s: Spec, *, origin: str) -> None:
    """Register a spec that steps without an element rule (a torch optimizer): the name
    checks only."""
    if s.name in SPECS:
        raise UsageError(f"optimizer {s.name!r} ({origin}) is already registered from "
                         f"{ORIGINS[s.name]}")
    SPECS[s.name] = s
    ORIGINS[s.name] = origin


def unregister(name: str) -> None:
    """Remove a registered (non-built-in) optimizer; for tests and notebooks."""
    if name in BUILTIN:
        raise UsageError(f"optimizer {name!r} is built in; it cannot be unregistered")
    SPECS.pop(name, None)
    ORIGINS.pop(name, None)
    _SOURCE_KEYS.pop(name, None)


def check(s: Spec) -> None:
    """UsageError, one line, unless `s` keeps the spec and rule contract (see `Spec` and
    `optbench.optim.contract`) under its defaults and each of its cases."""
    if not isinstance(s, Spec):
        raise UsageError(f"register() wants an optbench.optim.Spec; got {type(s).__name__}")
    name = s.name
    if not isinstance(name, str) or not name or any(c.isspace() for c in name) \
            or len(name) > 100:
        raise UsageError(f"optimizer name {name!r} must be a non-empty string without spaces")
    if not isinstance(s.defaults, Mapping) or "lr" not in s.defaults:
        raise UsageError(f"{name}: defaults must be a dict of hyper-parameters with 'lr'")
    for key, value in s.defaults.items():
        numbers = value if isinstance(value, (tuple, list)) else [value]
        if isinstance(value, bool):
            continue
        if not numbers or not all(isinstance(v, Real) and not isinstance(v, bool)
                                  for v in numbers):
            raise UsageError(f"{name}: default {key}={value!r} must be a number, a bool or a "
                             "tuple of numbers")
        if range_of(s, key) is None:
            raise UsageError(f"{name}: hyper-parameter {key!r} has no allowed range: give one "
                             f"in ranges={{{key!r}: (lo, hi)}}")
    for field in ("rule", "reference"):
        if not callable(getattr(s, field)):
            raise UsageError(f"{name}: {field} must be a function")
    for field in ("scalars", "constants", "options", "check"):
        if getattr(s, field) is not None and not callable(getattr(s, field)):
            raise UsageError(f"{name}: {field} must be a function or None")
    if not (callable(s.slots) or isinstance(s.slots, Mapping)):
        raise UsageError(f"{name}: slots must be a dict {{name: initial value}} or a function "
                         "of the hyper-parameters returning one")
    if not isinstance(s.cases, (tuple, list)) or not all(isinstance(c, dict) for c in s.cases):
        raise UsageError(f"{name}: cases must be a tuple of hyper-parameter dicts")
    for i, case in enumerate(({}, *s.cases)):
        where = "its defaults" if i == 0 else f"cases[{i - 1}]"
        try:
            contract.layout(s, validate(s, case))
        except UsageError as exc:
            raise UsageError(f"{exc} (under {where})") from None


def _entry_points() -> None:
    """Load the installed packages' plugins (entry-point group `optbench.plugins`) once."""
    plugins.load_entry_points()
