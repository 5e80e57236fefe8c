"""Plugins: optimizers and tasks from the user's own files and modules, and from installed
packages, without editing optbench.

    python -m optbench run --config mine.toml            # mine.toml: plugins = ["my_opt.py"]
    python -m optbench run --config mine.toml --plugin pkg.mod --plugin other.py

A plugin is a Python file or an importable module that registers what it defines when it
is imported: `optbench.optim.register(SPEC)`, `optbench.tasks.register(TaskClass)`. An
installed package contributes plugins through the entry-point group `optbench.plugins`
(each entry a module to import, or a Spec or Task class to register); they load the first
time a registry is asked for its names.

Every problem with a plugin is one line before any work: a missing file, a module that does
not import, a spec that breaks the rule contract, a name taken by a built-in, a rule that
does not compile to float32 (`verify`).

Workers: the executors run cells through `shipped(fn)`, which carries the plugins loaded
here to each worker process and loads them there before its first cell: a file plugin
travels as its source text (a remote Dask worker needs no copy of the file, only the
modules the file itself imports), a module plugin by name (it must be importable on the
worker, as optbench itself must).
"""

from __future__ import annotations

import hashlib
import importlib
import os
import sys
import traceback
import types
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass

from optbench import sources
from optbench.errors import UsageError

# The registries (optbench.tasks, optbench.optim: numpy, Numba) are imported inside the
# functions: the CLI loads this module with every config, before anything needs them.

GROUP = "optbench.plugins"

_LOADING: list[str] = []  # the plugins being imported, innermost last
LOADED: dict[str, Plugin] = {}  # module name -> plugin, in load order
_ENTRY_POINTS_LOADED = False


@dataclass(frozen=True)
class Plugin:
    """A loaded plugin.

    ref:    as the user gave it (a file path or a module name).
    kind:   "file" or "module".
    module: its name in sys.modules.
    source: a file plugin's text (what a worker loads); None for a module.
    """

    ref: str
    kind: str
    module: str
    source: str | None = None

    @property
    def origin(self) -> str:
        return f"plugin {self.ref}"


def loading() -> str | None:
    """The origin to record for what is registered now: the plugin being imported."""
    return _LOADING[-1] if _LOADING else None


@contextmanager
def _importing(origin: str):
    """Mark `origin` as the plugin being imported; on failure, take back what it registered."""
    from optbench import tasks
    from optbench.optim import registry

    before = (set(registry.SPECS), set(tasks.names(load_plugins=False)))
    _LOADING.append(origin)
    try:
        yield
    except BaseException:
        for name in set(registry.SPECS) - before[0]:
            registry.unregister(name)
        for name in set(tasks.names(load_plugins=False)) - before[1]:
            tasks.unregister(name)
        raise
    finally:
        _LOADING.pop()


def load(ref: str, base: str | None = None) -> Plugin:
    """Import the plugin `ref` (a .py file, relative to `base` if given, else to the working
    directory; or a module name) and return it; UsageError, one line, if that fails or the
    plugin registers nothing. Loading the same plugin again is a no-op."""
    if not isinstance(ref, str) or not ref.strip():
        raise UsageError(f"plugin {ref!r}: give a .py file or a module name")
    if ref.endswith(".py") or "/" in ref or os.sep in ref:
        path = os.path.abspath(os.path.join(base or os.getcwd(), os.path.expanduser(ref)))
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except FileNotFoundError:
            raise UsageError(f"plugin {ref!r}: no such file ({path})") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"plugin {ref!r}: cannot read {path} ({exc})") from None
        return _load_text(Plugin(ref, "file", _module_name(path, text), text), path)
    if not all(part.isidentifier() for part in ref.split(".")):
        raise UsageError(f"plugin {ref!r} is neither a .py file nor a module name (pkg.mod)")
    return _load_module(Plugin(ref, "module", ref))


def _module_name(path: str, text: str) -> str:
    """The plugin module's name: its file's stem and a hash of its text, so an edited file
    is a new module and a worker loading the same text gets the same name."""
    stem = "".join(c if c.isalnum() or c == "_" else "_"
                   for c in os.path.splitext(os.path.basename(path))[0])
    return f"optbench_plugin_{stem}_{hashlib.sha256(text.encode()).hexdigest()[:10]}"


def _load_text(plugin: Plugin, path: str | None = None) -> Plugin:
    if plugin.module in sys.modules:
        LOADED.setdefault(plugin.module, plugin)
        return plugin
    module = types.ModuleType(plugin.module)
    module.__file__ = path or f"<plugin {plugin.ref}>"
    setattr(module, sources.SOURCE_ATTR, plugin.source)
    sys.modules[plugin.module] = module  # dataclasses and pickling look modules up here
    try:
        with _importing(plugin.origin):
            code = compile(plugin.source, module.__file__, "exec")
            exec(code, module.__dict__)  # noqa: S102 - the user's own plugin file
            _registered_something(plugin)
    except UsageError:
        del sys.modules[plugin.module]
        raise
    except BaseException as exc:
        del sys.modules[plugin.module]
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        raise UsageError(f"plugin {plugin.ref!r} failed to import: {_one_line(exc)}") from None
    LOADED[plugin.module] = plugin
    return plugin


def _load_module(plugin: Plugin) -> Plugin:
    if plugin.module in LOADED:
        return LOADED[plugin.module]
    try:
        with _importing(plugin.origin):
            if plugin.module in sys.modules:
                # Imported before (by the user's own code): its registrations already ran.
                importlib.import_module(plugin.module)
            else:
                importlib.import_module(plugin.module)
                _registered_something(plugin)
    except UsageError:
        raise
    except ModuleNotFoundError as exc:
        if exc.name and plugin.module.startswith(exc.name):
            raise UsageError(f"plugin {plugin.ref!r}: no module named {exc.name!r} (a plugin "
                             "is an importable module, or a file ending in .py)") from None
        raise UsageError(f"plugin {plugin.ref!r} failed to import: {_one_line(exc)}") from None
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # noqa: BLE001 - whatever the user's module raises: one line
        raise UsageError(f"plugin {plugin.ref!r} failed to import: {_one_line(exc)}") from None
    LOADED[plugin.module] = plugin
    return plugin


def _registered_something(plugin: Plugin) -> None:
    from optbench import tasks
    from optbench.optim import registry

    if plugin.origin in set(registry.ORIGINS.values()) | set(tasks.origins().values()):
        return
    raise UsageError(f"plugin {plugin.ref!r} registers no optimizer and no task: call "
                     "optbench.optim.register(SPEC) or optbench.tasks.register(TaskClass) in it")


def _one_line(exc: BaseException) -> str:
    """`Type: message (file:line)` of the innermost frame in the user's code."""
    where = ""
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if not f.filename.startswith(os.path.dirname(os.path.abspath(__file__)))
              and "importlib" not in f.filename]
    if isinstance(exc, SyntaxError) and exc.lineno:
        where = f" ({exc.filename}:{exc.lineno})"
    elif frames:
        where = f" ({frames[-1].filename}:{frames[-1].lineno})"
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if isinstance(exc, SyntaxError):
        message = exc.msg
    return f"{type(exc).__name__}: {message}{where}"


def load_all(refs, base: str | None = None, what: str | None = None) -> list[Plugin]:
    """Load each of `refs` (a list of strings); a UsageError is prefixed with `what` (the
    option or key that named them)."""
    if refs is None:
        return []
    try:
        if not isinstance(refs, list) or not all(isinstance(r, str) for r in refs):
            raise UsageError(f"must be a list of .py files and module names; got {refs!r}")
        return [load(ref, base) for ref in refs]
    except UsageError as exc:
        raise UsageError(f"{what}: {exc}" if what else str(exc)) from None


def load_entry_points() -> None:
    """Load the installed packages' plugins (group `optbench.plugins`), once per process."""
    global _ENTRY_POINTS_LOADED
    if _ENTRY_POINTS_LOADED:
        return
    _ENTRY_POINTS_LOADED = True
    from importlib.metadata import entry_points

    for ep in entry_points(group=GROUP):
        origin = f"entry point {ep.name} = {ep.value}"
        try:
            with _importing(origin):
                _register_object(ep.load())
        except UsageError:
            raise
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # noqa: BLE001 - whatever the entry point raises
            raise UsageError(f"plugin {origin} (group {GROUP}) failed to load: "
                             f"{_one_line(exc)}") from None


def _register_object(obj) -> None:
    """An entry point's object: a module (it registered itself on import), a Spec, or a
    Task class."""
    from optbench import optim, tasks

    if isinstance(obj, types.ModuleType):
        return
    if isinstance(obj, optim.Spec):
        optim.register(obj)
    elif isinstance(obj, type) and issubclass(obj, tasks.Task):
        tasks.register(obj)
    else:
        raise UsageError(f"entry point object {obj!r} is neither a module, an optim.Spec nor a "
                         "tasks.Task class")


# -- what a matrix needs --------------------------------------------------------------------
def code_key(optimizer: str, task: str) -> str | None:
    """A hash of the plugin code a cell of (optimizer, task) runs, or None when both are
    built in (so built-in cells keep their keys)."""
    from optbench import optim, tasks

    return combine_code(optim.source_key(optimizer), tasks.source_key(task))


def combine_code(optimizer_source: str | None, task_source: str | None) -> str | None:
    """`code_key` from the two source hashes (as a store's descriptions record them)."""
    parts = (optimizer_source or "", task_source or "")
    if not any(parts):
        return None
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def verify(matrix) -> None:
    """Compile the rule of every plugin optimizer configuration of `matrix` and draw a small
    batch of every plugin task: UsageError, one line, for the first that fails. Built-ins
    are tested by the package's own tests and skipped."""
    from optbench import optim, tasks
    from optbench.optim import contract

    seen = set()
    for cell in matrix.cells:
        if optim.origin(cell.optimizer) != "built-in":
            s = optim.spec(cell.optimizer)
            if hasattr(s, "verify"):
                key = (cell.optimizer, repr(sorted(cell.hparams.items())))
                if key not in seen:
                    seen.add(key)
                    s.verify(_optimizer_hparams(cell.hparams))
            else:
                h = optim.create(cell.optimizer, backend="numpy",
                                 **_optimizer_hparams(cell.hparams)).hparams
                key = (cell.optimizer, s.option_values(h))
                if key not in seen:
                    seen.add(key)
                    contract.check_compiles(s, h)
        if tasks.origin(cell.task) != "built-in" and ("task", cell.task) not in seen:
            seen.add(("task", cell.task))
            from optbench.testing import task_problem

            problem = task_problem(tasks.get(cell.task), cell.length)
            if problem:
                raise UsageError(f"task {cell.task!r} ({tasks.origin(cell.task)}): {problem}")


def _optimizer_hparams(hparams: dict) -> dict:
    """A cell's hparams without the keys that are not the optimizer's (the lr schedule)."""
    return {k: v for k, v in hparams.items() if k != "schedule"}


# -- shipping to workers --------------------------------------------------------------------
def ensure(plugins: tuple[Plugin, ...]) -> None:
    """Load `plugins` in this process unless already loaded (a worker's first cell)."""
    for plugin in plugins:
        if plugin.module in LOADED:
            continue
        if plugin.kind == "file":
            _load_text(plugin)
        else:
            _load_module(plugin)


@dataclass(frozen=True)
class WithPlugins:
    """`fn` (a cell runner) that first loads `plugins` in the process it runs in. Picklable,
    so the process pool and Dask carry it to their workers."""

    fn: Callable
    plugins: tuple[Plugin, ...]

    def __call__(self, cell):
        ensure(self.plugins)
        return self.fn(cell)


def shipped(fn: Callable) -> Callable:
    """`fn` with the plugins loaded in this process attached (fn itself when none is)."""
    return WithPlugins(fn, tuple(LOADED.values())) if LOADED else fn
