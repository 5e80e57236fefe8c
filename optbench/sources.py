"""A hash of the code that a plugin's optimizer or task runs, wherever that code lives.

Two things must change when a plugin's code changes: the key of every stored cell it ran
(else a rerun would reuse results of the old code) and the key of its compiled kernels in
Numba's on-disk cache. Numba keys a cached kernel on its own source file and on the pickled
closure, and pickles a module-level function by its name, so a helper edited in the user's
file (`e * e` -> `2 * e * e`) would load the old machine code. `key(obj)` therefore follows
the functions `obj` reaches (its closures, the globals its code names, a spec's or a
class's functions, jitted functions' Python sources) and hashes the whole source of every
module they are defined in, except the modules whose changes are keyed otherwise: this
package (its own cache stamp, `optim.drivers.SOURCE_KEY`, and `cell.PROTOCOL`), the
standard library and the numeric libraries below (their versions).

The hash covers source text only (not file names or module names), so a plugin file shipped
as text to a remote worker gives the same key there as on the machine that read the file.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import inspect
import sys
import types

# Modules outside the plugin's own code: edits there are not the plugin's.
_SKIP = frozenset(sys.stdlib_module_names) | {
    "optbench", "numpy", "numba", "llvmlite", "scipy", "pandas", "torch", "sklearn",
    "matplotlib", "builtins", "_operator",
}
# The attribute a module loaded from shipped text carries its source in (optbench.plugins).
SOURCE_ATTR = "__optbench_source__"


def key(*objects) -> str:
    """16 hex digits over the sources of the non-library modules `objects` reach, or "" when
    they reach none (code of this package and the libraries only)."""
    parts = sorted(_digest(text) for text in _sources(objects).values())
    if not parts:
        return ""
    return hashlib.sha256("".join(parts).encode()).hexdigest()[:16]


def _digest(text: str | bytes) -> str:
    return hashlib.sha256(text if isinstance(text, bytes) else text.encode()).hexdigest()


def _skipped(module_name: str | None) -> bool:
    return not module_name or module_name.split(".")[0] in _SKIP


def module_source(module: types.ModuleType) -> str | bytes | None:
    """The source of `module`: shipped text, or its .py file's bytes; None if it has none."""
    text = getattr(module, SOURCE_ATTR, None)
    if text is not None:
        return text
    path = getattr(module, "__file__", None)
    if path and path.endswith(".py"):
        try:
            with open(path, "rb") as f:
                return f.read()
        except OSError:
            return None
    return None


def _sources(objects) -> dict[str, str | bytes]:
    """{module name or function id: source} of everything reached."""
    found: dict[str, str | bytes] = {}
    seen: set[int] = set()
    stack = list(objects)
    while stack:
        obj = stack.pop()
        if id(obj) in seen or obj is None or isinstance(obj, (str, bytes, int, float, bool)):
            continue
        seen.add(id(obj))
        if isinstance(obj, types.ModuleType):
            _add_module(obj, found)
        elif isinstance(obj, types.FunctionType):
            if _skipped(obj.__module__):
                continue
            module = sys.modules.get(obj.__module__)
            if module is None or not _add_module(module, found):
                found[f"function {obj.__qualname__}"] = _function_text(obj)
            stack += [c.cell_contents for c in obj.__closure__ or () if _filled(c)]
            stack += [obj.__globals__[n] for n in _names(obj.__code__) if n in obj.__globals__]
            stack += list(obj.__defaults__ or ())
        elif isinstance(obj, (types.MethodType, staticmethod, classmethod)):
            stack.append(obj.__func__)
        elif isinstance(obj, property):
            stack += [obj.fget, obj.fset]
        elif isinstance(obj, functools.partial):
            stack += [obj.func, *obj.args, *obj.keywords.values()]
        elif isinstance(obj, type):
            if _skipped(obj.__module__):
                continue
            module = sys.modules.get(obj.__module__)
            if module is not None:
                _add_module(module, found)
            for base in obj.__mro__:
                if not _skipped(base.__module__):
                    stack += list(vars(base).values())
        elif isinstance(obj, dict):
            stack += list(obj.values())
        elif isinstance(obj, (list, tuple, set, frozenset)):
            stack += list(obj)
        elif dataclasses.is_dataclass(obj):
            stack += [getattr(obj, f.name) for f in dataclasses.fields(obj)]
        elif hasattr(obj, "py_func"):  # a Numba dispatcher: its Python function
            stack.append(obj.py_func)
        elif callable(obj) and not _skipped(type(obj).__module__):
            stack.append(type(obj))  # an instance with __call__: its class
    return found


def _add_module(module, found) -> bool:
    """Record the module's source unless it is a library's; False if it has no source."""
    name = module.__name__
    if _skipped(name):
        return True
    if name in found:
        return True
    text = module_source(module)
    if text is None:
        return False
    found[name] = text
    return True


def _filled(cell) -> bool:
    try:
        _ = cell.cell_contents
    except ValueError:  # a closure variable not assigned yet
        return False
    return True


def _names(code: types.CodeType) -> set[str]:
    """The global names `code` and the code nested in it refer to."""
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _names(const)
    return names


def _function_text(fn) -> str:
    """A function's source where its module has none (defined at an interactive prompt)."""
    try:
        return inspect.getsource(fn)
    except (OSError, TypeError):
        code = fn.__code__
        return repr((code.co_code, code.co_consts, code.co_names))
