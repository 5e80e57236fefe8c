"""What defines an optimizer: its spec, and the checks every hyper-parameter goes through.

A spec is data plus a few small functions. Adding an optimizer means writing one module with
its numpy reference, its element rule, its host scalars and its spec, and listing the spec
in `optbench.optim.optimizer.SPECS`.
Hyper-parameters keep torch.optim's names, defaults and meaning; their allowed ranges live
in `RANGES`, keyed by those names, so every optimizer refuses the same bad value the same way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from numbers import Real
from typing import Any, Callable, Mapping

import numpy as np

from optbench.errors import UsageError


@dataclass(frozen=True)
class Spec:
    """One optimizer.

    name:      the registry name (`optim.create(name, ...)`).
    torch:     the torch.optim class it reproduces (or, for Lion, the reference code).
    paper:     where the update rule comes from.
    defaults:  hyper-parameters with torch.optim's names and defaults, in its order.
    slots:     hparams -> {slot name: initial value}: the per-parameter state vectors, in the
               order the element rule indexes them (`s[0][i]`, `s[1][i]`, ...). Names follow
               torch's state dict (exp_avg, exp_avg_sq, momentum_buffer, ...).
    options:   hparams -> tuple of bools: switches that select code paths of the rule. They
               are compile-time constants of the kernels (one compiled kernel per tuple).
    scalars:   (hparams, state) -> tuple of float32: the rule's scalars that change with the
               step (bias corrections, ...), computed on the host after `state.step` was
               incremented, in Python floats as torch computes them, then rounded to float32.
    constants: hparams -> tuple of float32: the rule's scalars fixed by the hyper-parameters
               (1 - beta1, eps, ...), computed once. The rule gets h = scalars + constants.
    rule:      rule(*options) -> the per-element update `update(i, p, g, s, h)` (numba
               register_jitable), with the options as compile-time constants: it reads grads
               g[i] and writes params p[i] and state s[k][i], with h the scalars. The CPU and
               CUDA drivers both call it.
    reference: the numpy reference step `reference(params, grads, state, hparams)`, written
               as the paper and torch.optim's single-tensor code path write it.
    host:      scalar state kept on the host, with initial values (NAdam's mu_product).
    fixed:     hyper-parameters this optimizer pins (AdamW: decoupled_weight_decay=True);
               they appear in the validated hparams but cannot be set.
    check:     hparams -> error message or None, for constraints between hyper-parameters.
    doc:       the update rule in math, its paper, and where Keras and optax differ.
    """

    name: str
    torch: str
    paper: str
    defaults: Mapping[str, Any]
    slots: Callable[[dict], dict]
    options: Callable[[dict], tuple]
    scalars: Callable[[dict, Any], tuple]
    constants: Callable[[dict], tuple]
    rule: Callable
    reference: Callable
    host: Mapping[str, float] = field(default_factory=dict)
    fixed: Mapping[str, Any] = field(default_factory=dict)
    check: Callable[[dict], str | None] | None = None
    doc: str = ""


def _between(lo, hi=math.inf, lo_open=False, hi_open=False):
    """(predicate, text template) for lo <= x <= hi, either end open; "{}" is the name."""
    def ok(x):
        return (lo < x if lo_open else lo <= x) and (x < hi if hi_open else x <= hi)

    upper = "< inf" if hi == math.inf else f"{'<' if hi_open else '<='} {hi}"
    return ok, f"{lo} {'<' if lo_open else '<='} {{}} {upper}"


_NONNEG = _between(0.0)
_POSITIVE = _between(0.0, lo_open=True)
_UNIT_OPEN = _between(0.0, 1.0, hi_open=True)  # [0, 1)

# name -> (predicate, allowed range as a text template). Values must also be finite.
RANGES: dict[str, tuple[Callable[[float], bool], str]] = {
    "lr": _NONNEG,
    "eps": _POSITIVE,
    "weight_decay": _NONNEG,
    "momentum": _UNIT_OPEN,
    "dampening": _between(0.0, 1.0),
    "alpha": _UNIT_OPEN,
    "lr_decay": _NONNEG,
    "initial_accumulator_value": _NONNEG,
    "momentum_decay": _NONNEG,
    "betas": _UNIT_OPEN,  # each of the pair
}

FLAGS = frozenset({"nesterov", "amsgrad", "centered", "decoupled_weight_decay", "epsilon_hat"})


def _real(optimizer: str, name: str, value, label: str | None = None) -> float:
    label = label or name
    if isinstance(value, bool) or not isinstance(value, Real):
        raise UsageError(
            f"{optimizer}: {label}={value!r} must be a real number, not {type(value).__name__}"
        )
    x = float(value)
    ok, text = RANGES[name]
    if not (math.isfinite(x) and ok(x)):
        raise UsageError(
            f"{optimizer}: {label}={value!r} is out of range; allowed: {text.format(label)}"
        )
    return x


def validate(spec: Spec, given: Mapping[str, Any]) -> dict:
    """Return spec.defaults updated with `given`, checked and normalized (floats, a tuple of
    two floats for betas, bools for flags); raise UsageError naming the first bad value."""
    unknown = [k for k in given if k not in spec.defaults]
    if unknown:
        raise UsageError(
            f"{spec.name}: unknown hyper-parameter {unknown[0]!r}; allowed: "
            + ", ".join(spec.defaults)
        )
    h = {**spec.defaults, **given}
    for name, value in h.items():
        if name in FLAGS:
            if not isinstance(value, (bool, np.bool_)):
                raise UsageError(f"{spec.name}: {name}={value!r} must be True or False")
            h[name] = bool(value)
        elif name == "betas":
            if isinstance(value, (str, bytes)) or not hasattr(value, "__len__") or len(value) != 2:
                raise UsageError(
                    f"{spec.name}: betas={value!r} must be a pair (beta1, beta2) with "
                    + RANGES["betas"][1].format("beta")
                )
            h[name] = tuple(
                _real(spec.name, name, b, f"betas[{k}]") for k, b in enumerate(value)
            )
        else:
            h[name] = _real(spec.name, name, value)
    if spec.check is not None and (problem := spec.check(h)):
        raise UsageError(f"{spec.name}: {problem}")
    return {**h, **spec.fixed}
