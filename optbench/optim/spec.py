"""What defines an optimizer: its spec, and the checks every hyper-parameter goes through.

A spec is data plus a few small functions: the numpy reference, the element rule, the host
scalars and the state slots, all of which name what they pass instead of relying on an
order (`optbench.optim.contract` states the rule contract and checks it). The built-in
specs live in one module each and are listed in `optbench.optim.registry`; a spec written
anywhere else joins them with `optbench.optim.register(spec)`.

Hyper-parameters keep torch.optim's names, defaults and meaning. Their allowed ranges live
in `RANGES`, keyed by those names, so every optimizer refuses the same bad value the same
way; a spec adds ranges for names of its own (`Spec.ranges`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from numbers import Real
from typing import Any

import numpy as np

from optbench.errors import UsageError


@dataclass(frozen=True)
class Spec:
    """One optimizer.

    name:      the registry name (`optim.create(name, ...)`).
    defaults:  hyper-parameters with torch.optim's names and defaults, in its order; `lr`
               is required. A bool default makes a switch, a tuple a sequence of numbers
               (betas), anything else a real number checked against `ranges` / `RANGES`.
    rule:      the element rule (see `optbench.optim.contract`): a function of one element's
               values, `rule(param, grad, <slots by name>, <scalars by name>)`, returning
               the new param and the new slot values `(param, *slots)` in its parameters'
               order (just the param when it takes no slot). Numba compiles it for the CPU
               and CUDA kernels. With `options`, `rule(*options)` returns that function.
    reference: the numpy step `reference(params, grads, state, hparams)`, written as the
               paper writes the rule: `state[slot]` are the slot vectors, `state.step` the
               step number (1 on the first step), `state.host` the host scalars.
    slots:     {slot name: initial value}, or hparams -> that dict when the slots depend on
               the hyper-parameters (amsgrad's max_exp_avg_sq). Names follow torch's state
               dict (exp_avg, exp_avg_sq, momentum_buffer, ...).
    scalars:   (hparams, state) -> {name: numpy.float32}: the rule's scalars that change with
               the step (bias corrections, ...), computed on the host after `state.step` was
               incremented, in Python floats as torch computes them, then rounded to float32.
    constants: hparams -> {name: numpy.float32}: the rule's scalars fixed by the
               hyper-parameters (1 - beta1, eps, ...), computed once.
    options:   hparams -> tuple of bools: switches that select code paths of the rule. They
               are compile-time constants of the kernels (one compiled kernel per tuple), so
               every switched-off path is pruned before LLVM sees it.
    host:      scalar state kept on the host, with initial values (NAdam's mu_product).
    fixed:     hyper-parameters this optimizer pins (AdamW: decoupled_weight_decay=True);
               they appear in the validated hparams but cannot be set.
    ranges:    {hyper-parameter: (lo, hi)} (closed) or `between(...)`, for the names that
               `RANGES` does not know.
    check:     hparams -> error message or None, for constraints between hyper-parameters.
    cases:     hyper-parameter sets that between them switch on every code path of the rule;
               the tests, the conformance kit and tools/check_cuda_ptx.py run each.
    label:     the name shown in reports (default: name).
    torch:     the torch.optim class it reproduces ("torch.optim.Adam"), or what else it
               follows (Lion: the reference code); "" for none.
    paper:     where the update rule comes from.
    doc:       the update rule in math, its paper, and where Keras and optax differ.
    """

    name: str
    defaults: Mapping[str, Any]
    rule: Callable
    reference: Callable
    slots: Mapping[str, float] | Callable[[dict], Mapping[str, float]] = field(
        default_factory=dict)
    scalars: Callable[[dict, Any], Mapping[str, Any]] | None = None
    constants: Callable[[dict], Mapping[str, Any]] | None = None
    options: Callable[[dict], tuple] | None = None
    host: Mapping[str, float] = field(default_factory=dict)
    fixed: Mapping[str, Any] = field(default_factory=dict)
    ranges: Mapping[str, Any] = field(default_factory=dict)
    check: Callable[[dict], str | None] | None = None
    cases: tuple = ({},)
    label: str = ""
    torch: str = ""
    paper: str = ""
    doc: str = ""

    def slot_values(self, h: dict) -> dict:
        """{slot name: initial value} for these hyper-parameters."""
        return dict(self.slots(h) if callable(self.slots) else self.slots)

    def scalar_values(self, h: dict, state) -> dict:
        return dict(self.scalars(h, state)) if self.scalars is not None else {}

    def constant_values(self, h: dict) -> dict:
        return dict(self.constants(h)) if self.constants is not None else {}

    def option_values(self, h: dict) -> tuple:
        return tuple(self.options(h)) if self.options is not None else ()

    @property
    def display(self) -> str:
        return self.label or self.name


def between(lo, hi=math.inf, lo_open=False, hi_open=False):
    """(predicate, text template) for lo <= x <= hi, either end open; "{}" is the name."""
    def ok(x):
        return (lo < x if lo_open else lo <= x) and (x < hi if hi_open else x <= hi)

    upper = "< inf" if hi == math.inf else f"{'<' if hi_open else '<='} {hi}"
    return ok, f"{lo} {'<' if lo_open else '<='} {{}} {upper}"


_between = between
_NONNEG = between(0.0)
_POSITIVE = between(0.0, lo_open=True)
_UNIT_OPEN = between(0.0, 1.0, hi_open=True)  # [0, 1)

# name -> (predicate, allowed range as a text template). Values must also be finite.
RANGES: dict[str, tuple[Callable[[float], bool], str]] = {
    "lr": _NONNEG,
    "eps": _POSITIVE,
    "weight_decay": _NONNEG,
    "momentum": _UNIT_OPEN,
    "dampening": between(0.0, 1.0),
    "alpha": _UNIT_OPEN,
    "lr_decay": _NONNEG,
    "initial_accumulator_value": _NONNEG,
    "momentum_decay": _NONNEG,
    "betas": _UNIT_OPEN,  # each of the pair
}

# The built-ins' switches; any hyper-parameter whose default is a bool is one.
FLAGS = frozenset({"nesterov", "amsgrad", "centered", "decoupled_weight_decay", "epsilon_hat"})


def range_of(spec: Spec, name: str):
    """(predicate, text) of hyper-parameter `name`: the spec's own, else the shared one, else
    None."""
    given = spec.ranges.get(name)
    if given is None:
        return RANGES.get(name)
    if len(given) == 2 and callable(given[0]):
        return given
    return between(*given)


def _real(spec: Spec, name: str, value, label: str | None = None) -> float:
    label = label or name
    if isinstance(value, bool) or not isinstance(value, Real):
        raise UsageError(
            f"{spec.name}: {label}={value!r} must be a real number, not {type(value).__name__}"
        )
    x = float(value)
    ok, text = range_of(spec, name) or (lambda x: True, "")
    if not (math.isfinite(x) and ok(x)):
        allowed = text.format(label) if text else "a finite number"
        raise UsageError(f"{spec.name}: {label}={value!r} is out of range; allowed: {allowed}")
    return x


def _sequence(spec: Spec, name: str, value, default) -> tuple:
    n = len(default)
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__") or len(value) != n:
        _, text = range_of(spec, name) or (None, "{}")
        what = ("a pair (beta1, beta2) with " + text.format("beta") if name == "betas"
                else f"a sequence of {n} numbers, each {text.format(name)}")
        raise UsageError(f"{spec.name}: {name}={value!r} must be {what}")
    return tuple(_real(spec, name, b, f"{name}[{k}]") for k, b in enumerate(value))


def validate(spec: Spec, given: Mapping[str, Any]) -> dict:
    """Return spec.defaults updated with `given`, checked and normalized (floats, tuples of
    floats for sequences such as betas, bools for switches); raise UsageError naming the
    first bad value."""
    unknown = [k for k in given if k not in spec.defaults]
    if unknown:
        raise UsageError(
            f"{spec.name}: unknown hyper-parameter {unknown[0]!r}; allowed: "
            + ", ".join(spec.defaults)
        )
    h = {**spec.defaults, **given}
    for name, value in h.items():
        default = spec.defaults[name]
        if isinstance(default, bool):
            if not isinstance(value, (bool, np.bool_)):
                raise UsageError(f"{spec.name}: {name}={value!r} must be True or False")
            h[name] = bool(value)
        elif isinstance(default, (tuple, list)):
            h[name] = _sequence(spec, name, value, default)
        else:
            h[name] = _real(spec, name, value)
    if spec.check is not None and (problem := spec.check(h)):
        raise UsageError(f"{spec.name}: {problem}")
    return {**h, **spec.fixed}
