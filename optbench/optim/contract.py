r"""The rule contract: what an optimizer's element rule is, how the kernels call it, and the
checks that refuse a spec breaking it, each with one line.

An element rule is a function of ONE element's values, all float32:

    @register_jitable                 # numba's; optbench wraps a plain function itself
    def adam(param, grad, exp_avg, exp_avg_sq, step_size, inv_bc2_sqrt, one_m_beta1, ...):
        ...
        return new_param, new_exp_avg, new_exp_avg_sq

- Its first two parameters are the parameter and its gradient (any names).
- Every other parameter is named after a state slot (`Spec.slots`: exp_avg, ...) or a
  scalar (a key of what `Spec.scalars` or `Spec.constants` return); the kernels pass each by
  its name, so the order is the author's. A slot the hyper-parameters leave out (AMSGrad's
  max_exp_avg_sq with amsgrad=False) may stay a parameter: it gets 0 and its result is
  dropped, and its code path should be pruned by an option.
- It returns the new parameter, then the new value of each slot parameter in the order of
  its parameters: `(param, *slots)`; just the new parameter when it takes no slot.
- It reads and writes nothing else: it gets values, not arrays, so it cannot index out of
  bounds, and the drivers (`optbench.optim.drivers`, `cuda_kernels`) decide which element
  each thread updates.
- Float32 throughout: the scalars are numpy.float32, and a literal such as `1 - x` or
  `2.0 * x` promotes to float64 in Numba: precompute such constants on the host
  (`one_m_beta1`) or write `np.float32(2.0)`. A rule whose results are not float32 is
  refused before it runs.
- Helpers it calls must be Numba-compilable too: decorate them with
  `numba.core.extending.register_jitable` (exported as `optbench.optim.jitable`).

`kernel_rule` turns such a rule into the index form the drivers loop over,
`update(i, p, g, s, h)` (p, g the arrays, s the tuple of slot arrays, h the tuple of
scalars), by generating a few lines that read the elements, call the rule and store its
results; Numba inlines the rule, so the compiled step is the same single fused pass as a
rule written against the arrays.
"""

from __future__ import annotations

import inspect
import operator
import types
from dataclasses import dataclass, field
from functools import lru_cache

import numba
import numpy as np
from numba.core import types as nbtypes
from numba.core.extending import register_jitable

from optbench import sources
from optbench.errors import UsageError
from optbench.optim.scalar import ZERO
from optbench.optim.spec import validate

F32 = np.float32


def element(spec, options: tuple):
    """The element function of `spec` for these options (`spec.rule(*options)` when the spec
    has options, else `spec.rule`), made Numba-callable."""
    return _element(spec.rule, spec.options is not None, options)


@lru_cache(maxsize=None)
def _element(rule, factory: bool, options: tuple):
    """One copy per (rule, options), so a rule's closures are built once."""
    fn = rule(*options) if factory else rule
    if not inspect.isfunction(fn):
        raise UsageError(f"rule {_name(rule)}: expected a Python function of the element's "
                         f"values, got {type(fn).__name__}")
    return register_jitable(_copy(fn))


def _copy(fn):
    """A copy of `fn` that optbench registers with Numba, whether or not the author did."""
    out = types.FunctionType(fn.__code__, fn.__globals__, fn.__name__, fn.__defaults__,
                             fn.__closure__)
    out.__qualname__ = fn.__qualname__
    out.__module__ = fn.__module__
    out.__wrapped__ = fn
    return out


def _name(fn) -> str:
    return getattr(fn, "__qualname__", None) or repr(fn)


def parameters(fn) -> tuple[str, ...]:
    """The element function's parameter names; UsageError unless all are plain positional."""
    fn = getattr(fn, "__wrapped__", fn)
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        raise UsageError(f"rule {_name(fn)}: its signature cannot be read") from None
    params = list(sig.parameters.values())
    plain = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    for p in params:
        if p.kind not in plain or p.default is not inspect.Parameter.empty:
            raise UsageError(
                f"rule {fn.__name__}{sig}: parameter {p.name!r} must be a plain positional "
                "parameter without a default (param, grad, then slots and scalars by name)")
    if len(params) < 2:
        raise UsageError(f"rule {fn.__name__}{sig}: it needs at least the element's param "
                         "and grad as its first two parameters")
    return tuple(p.name for p in params)


@dataclass(frozen=True)
class Layout:
    """How one optimizer configuration's kernel calls its rule.

    params:  the rule's parameter names (the first two: param and grad).
    slots:   the slots the state holds, in the order of the state's arrays (s[k]).
    scalars: the per-step scalars' names, then `constants` the fixed scalars' names: h is
             scalars + constants, in this order.
    """

    name: str = field(compare=False)  # for messages: specs that share a rule share kernels
    params: tuple[str, ...] = ()
    slots: tuple[str, ...] = ()
    scalars: tuple[str, ...] = ()
    constants: tuple[str, ...] = ()

    @property
    def h_names(self) -> tuple[str, ...]:
        return self.scalars + self.constants

    @property
    def slot_params(self) -> tuple[str, ...]:
        """The rule's parameters that are slots (present or left out), in its order: the
        order of its results after the param."""
        h = set(self.h_names)
        return tuple(n for n in self.params[2:] if n not in h)


def known_slots(spec) -> set[str]:
    """Every slot name the spec uses under its defaults or any of its cases."""
    names = set()
    for case in ({}, *spec.cases):
        try:
            names |= set(spec.slot_values(validate(spec, case)))
        except UsageError:
            continue
    return names


class _Probe:
    """A stand-in state for asking a spec its scalars without touching a real state (the
    scalars may update host state, as NAdam's mu_product)."""

    def __init__(self, spec, slots: dict):
        self.step = 1
        self.host = dict(spec.host)
        self.names = tuple(slots)
        self.size = 0


def _scalars(what: str, spec, values) -> dict:
    if not isinstance(values, dict):
        raise UsageError(f"{spec.name}: {what} must return a dict {{name: numpy.float32}}; got "
                         f"{type(values).__name__}")
    for name, value in values.items():
        if not isinstance(name, str) or not name.isidentifier():
            raise UsageError(f"{spec.name}: {what} returned the name {name!r}; names must be "
                             "identifiers (they name the rule's parameters)")
        if type(value) is not F32:
            raise UsageError(
                f"{spec.name}: {what} returned {name}={value!r} of type {type(value).__name__}; "
                "the kernels compute in float32: return numpy.float32(...)")
    return values


def layout(spec, h: dict) -> Layout:
    """The kernel layout of `spec` under validated hyper-parameters `h`; UsageError, one
    line, where the spec breaks the contract (see the module docstring)."""
    slots = spec.slot_values(h)
    for name, value in slots.items():
        if not isinstance(name, str) or not name.isidentifier():
            raise UsageError(f"{spec.name}: slot name {name!r} must be an identifier")
        if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)) \
                or not np.isfinite(value):
            raise UsageError(f"{spec.name}: slot {name!r} starts at {value!r}; give a finite "
                             "number")
    scalars = _scalars("scalars(hparams, state)", spec,
                       spec.scalar_values(h, _Probe(spec, slots)))
    constants = _scalars("constants(hparams)", spec, spec.constant_values(h))
    both = set(scalars) & set(constants)
    if both:
        raise UsageError(f"{spec.name}: {min(both)!r} is both a per-step scalar and a "
                         "constant; give each scalar one name")
    fn = element(spec, spec.option_values(h))
    params = parameters(fn)
    h_names = (*scalars, *constants)
    taken = set(slots) & set(h_names)
    if taken:
        raise UsageError(f"{spec.name}: {min(taken)!r} names both a slot and a scalar")
    sig = f"{fn.__name__}({', '.join(params)})"
    clash = {params[0], params[1]} & (set(slots) | set(h_names))
    if clash:
        raise UsageError(f"{spec.name}: rule {sig}: its first two parameters are the element's "
                         f"param and grad, but {min(clash)!r} names a slot or scalar")
    if len(set(params)) != len(params):
        raise UsageError(f"{spec.name}: rule {sig} repeats a parameter name")
    allowed = known_slots(spec) | set(slots)
    for name in params[2:]:
        if name not in allowed and name not in h_names:
            raise UsageError(
                f"{spec.name}: rule {sig}: parameter {name!r} is neither a state slot ("
                f"{', '.join(sorted(allowed)) or 'none'}) nor a scalar ("
                f"{', '.join(h_names) or 'none'}); the rule gets one element's values by these "
                "names, after the param and grad")
    for what, names in (("slot", slots), ("scalar", h_names)):
        missing = [n for n in names if n not in params]
        if missing:
            raise UsageError(f"{spec.name}: rule {sig} has no parameter for the {what} "
                             f"{missing[0]!r}; it gets every slot and scalar by name")
    return Layout(spec.name, params, tuple(slots), tuple(scalars), tuple(constants))


def getter(names: tuple[str, ...]):
    """dict -> the tuple of its values for `names`, in that order (C speed, per step)."""
    if not names:
        return lambda d: ()
    if len(names) == 1:
        name = names[0]
        return lambda d: (d[name],)
    return operator.itemgetter(*names)


def kernel_rule(spec, options: tuple, lay: Layout) -> KernelRule:
    """The index-form update of `spec`'s rule for these options and this layout (cached: one
    compiled kernel per combination)."""
    return _kernel_rule(spec.rule, spec.options is not None, options, lay)


@lru_cache(maxsize=None)
def _kernel_rule(rule, factory: bool, options: tuple, lay: Layout) -> KernelRule:
    fn = _element(rule, factory, options)
    return KernelRule(_adapter(fn, lay), sources.key(getattr(fn, "__wrapped__", fn)), lay.name)


@dataclass(frozen=True, eq=False)
class KernelRule:
    """What the drivers compile: `KernelRule()` returns `update(i, p, g, s, h)`.
    `source_key` hashes the rule's code outside this package (empty for the built-ins),
    which the drivers add to their cache key."""

    update: object
    source_key: str
    name: str

    def __call__(self):
        return self.update


def _adapter(fn, lay: Layout):
    """Generate `update(i, p, g, s, h)`: read element i of p, g and the slots, call the rule
    with each value under its parameter's name, store its results."""
    h_index = {n: k for k, n in enumerate(lay.h_names)}
    args = ["p[i]", "g[i]"]
    for name in lay.params[2:]:
        if name in h_index:
            args.append(f"h{h_index[name]}")
        elif name in lay.slots:
            args.append(f"s[{lay.slots.index(name)}][i]")
        else:
            args.append("ZERO")  # a slot these hyper-parameters leave out
    lines = ["def update(i, p, g, s, h):"]
    if lay.h_names:
        lines.append(f"    {', '.join(f'h{k}' for k in range(len(lay.h_names)))}, = h")
    call = f"rule({', '.join(args)})"
    outs = lay.slot_params
    if not outs:
        lines.append(f"    p[i] = {call}")
    else:
        lines += [f"    r = {call}", "    p[i] = r[0]"]
        lines += [f"    s[{lay.slots.index(n)}][i] = r[{j + 1}]"
                  for j, n in enumerate(outs) if n in lay.slots]
    namespace = {"rule": fn, "ZERO": ZERO, "__name__": __name__}
    code = compile("\n".join(lines), f"<optbench rule {lay.name}>", "exec")
    exec(code, namespace)  # noqa: S102 - the text is built above from checked identifiers
    return register_jitable(namespace["update"])


def check_compiles(spec, h: dict) -> None:
    """Compile the rule for float32 values under hyper-parameters `h` and check what it
    returns; UsageError, one line, if it does not compile or returns anything but float32
    (one per slot parameter, after the param)."""
    lay = layout(spec, h)
    fn = element(spec, spec.option_values(h))
    probe = numba.njit(getattr(fn, "__wrapped__", fn), error_model="numpy")
    sig = f"{fn.__name__}({', '.join(lay.params)})"
    try:
        probe.compile((nbtypes.float32,) * len(lay.params))
    except Exception as exc:  # noqa: BLE001 - any compile error of the user's rule is one line
        first = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()
                      and not ln.startswith(("-", "During"))), type(exc).__name__)
        raise UsageError(f"{spec.name}: rule {sig} does not compile with Numba for float32 "
                         f"values: {first[:300]} (helpers it calls need register_jitable)"
                         ) from None
    returned = probe.nopython_signatures[-1].return_type
    outs = lay.slot_params
    want = nbtypes.float32 if not outs else nbtypes.UniTuple(nbtypes.float32, 1 + len(outs))
    if returned != want:
        shape = ("the new param" if not outs else
                 f"(param, {', '.join(outs)}): {1 + len(outs)} values")
        raise UsageError(
            f"{spec.name}: rule {sig} returns {returned}; it must return {shape}, all float32 "
            "(a float64 usually comes from a Python literal: precompute it on the host or "
            "write numpy.float32(...))")
