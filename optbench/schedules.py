"""Learning-rate schedules: a cell's lr as a function of the step, applied on the host.

    schedule = "cosine"                                   # in a matrix TOML, top level or
    schedule = { kind = "cosine", warmup = 100, final = 0.1 }   # in an [[optimizers]] table

Kinds (t = 1, 2, ... the step, T the cell's step budget, w = `warmup` steps, default 0;
every kind but "constant" may warm up):

    constant  lr                                                   (no schedule: today's cells)
    warmup    lr * t / w while t <= w, then lr                     (linear warmup)
    cosine    after the warmup, lr * (final + (1 - final) * (1 + cos(pi * p)) / 2),
              p = (t - w) / (T - w): from lr down to final * lr at the last step
              (Loshchilov & Hutter 2017, SGDR, one cycle; `final` default 0)
    step      after the warmup, lr * gamma ** floor((t - w - 1) / every): gamma times lower
              every `every` steps (torch's StepLR stepped once per step; gamma default 0.1)

AlgoPerf's baselines warm up linearly and then decay by a cosine (Dahl et al. 2023). The lr
of the tuned grid is the schedule's peak. A cell's schedule is part of its hyper-parameters
(`hparams["schedule"]`, canonical: kind and every parameter), so it is in the cell key and
in the report's label of the optimizer; "constant" is no schedule at all, so a cell without
one keeps its key and its results. Each step's lr is computed on the host and handed to the
optimizer's step (`Optimizer.step(..., lr=)`): nothing recompiles.
"""

from __future__ import annotations

import math
from numbers import Integral, Real

from optbench.errors import UsageError

KINDS = ("constant", "warmup", "cosine", "step")
# Each kind's parameters and their defaults (None: required).
PARAMS = {
    "constant": {},
    "warmup": {"warmup": None},
    "cosine": {"warmup": 0, "final": 0.0},
    "step": {"warmup": 0, "every": None, "gamma": 0.1},
}


def normalise(value, where: str = "schedule") -> dict | None:
    """The canonical form of a schedule given as a kind or a table ({"kind": ..., params});
    None for a constant lr. UsageError, one line naming `where`, for anything else."""
    if value is None or value == "constant":
        return None
    table = {"kind": value} if isinstance(value, str) else value
    if not isinstance(table, dict) or not isinstance(table.get("kind"), str):
        raise UsageError(f"{where}: a schedule is a kind ({', '.join(KINDS)}) or a table with "
                         f"`kind` and its parameters; got {value!r}")
    kind = table["kind"]
    if kind not in KINDS:
        raise UsageError(f"{where}: unknown kind {kind!r}; allowed: {', '.join(KINDS)}")
    allowed = PARAMS[kind]
    extra = sorted(set(table) - {"kind", *allowed})
    if extra:
        raise UsageError(f"{where}: {kind} has no parameter {extra[0]!r}; allowed: "
                         f"{', '.join(allowed) or 'none'}")
    out = {"kind": kind}
    for name, default in allowed.items():
        given = table.get(name, default)
        if given is None:
            raise UsageError(f"{where}: {kind} needs `{name}`")
        out[name] = _check(where, name, given)
    if kind == "constant":
        return None
    return out


def _check(where: str, name: str, value):
    if name in ("warmup", "every"):
        low = 1 if name == "every" else 0
        if isinstance(value, bool) or not isinstance(value, Integral) or value < low:
            raise UsageError(f"{where}: {name} must be an integer >= {low} (steps); got "
                             f"{value!r}")
        return int(value)
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value):
        raise UsageError(f"{where}: {name} must be a finite number; got {value!r}")
    value = float(value)
    if name == "final" and not 0 <= value <= 1:
        raise UsageError(f"{where}: final is a fraction of the peak lr, 0 <= final <= 1; got "
                         f"{value!r}")
    if name == "gamma" and not 0 < value <= 1:
        raise UsageError(f"{where}: gamma must be 0 < gamma <= 1; got {value!r}")
    return value


def check_budget(schedule: dict | None, steps: int, where: str) -> None:
    """UsageError unless the warmup ends within a step budget of `steps`."""
    if schedule and schedule.get("warmup", 0) >= steps and schedule["kind"] != "warmup":
        raise UsageError(f"{where}: warmup {schedule['warmup']} leaves no step of the "
                         f"{schedule['kind']} decay within the budget of {steps} steps")
    if schedule and schedule.get("warmup", 0) > steps:
        raise UsageError(f"{where}: warmup {schedule['warmup']} is longer than the budget of "
                         f"{steps} steps")


def factor(schedule: dict | None, t: int, total: int) -> float:
    """The multiple of the peak lr at step t (1-based) of a budget of `total` steps."""
    if not schedule:
        return 1.0
    w = schedule.get("warmup", 0)
    if t <= w:
        return t / w
    kind = schedule["kind"]
    if kind == "warmup":
        return 1.0
    if kind == "cosine":
        p = (t - w) / max(total - w, 1)
        final = schedule["final"]
        return final + (1.0 - final) * (1.0 + math.cos(math.pi * min(p, 1.0))) / 2.0
    return schedule["gamma"] ** ((t - w - 1) // schedule["every"])


def describe(schedule: dict) -> str:
    """'cosine(warmup=100, final=0.1)': for labels, the parameters that differ from the
    kind's defaults."""
    kind = schedule["kind"]
    shown = {k: v for k, v in schedule.items()
             if k != "kind" and PARAMS[kind].get(k) != v}
    return kind + (f"({', '.join(f'{k}={v:g}' for k, v in shown.items())})" if shown else "")
