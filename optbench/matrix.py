"""The benchmark matrix: presets and TOML configs, validated and expanded into Cells.

A matrix is declared data: the axes below, crossed. Presets (`PRESETS`) and TOML files
(`examples/custom.toml` documents every key) go through the same parser, `expand`, which
checks every name against the registries (`optim`, `nn`, `tasks`) and every value before
any work starts; a bad one is a one-line `UsageError` that names the key.

Tuning protocol (DeepOBS, Schneider et al. 2019; Crowded Valley, Schmidt et al. 2021):

- tier "tuned": each optimizer gets a log-spaced learning-rate grid centred on its
  default lr (`lr_grid`), widened while the best lr sits at an edge; the best lr per
  (optimizer, task, length, ...) is the one with the best median rank over the tuning
  seeds (`optbench.selection`).
- tier "confirm": that lr rerun on fresh seeds (`confirm_seeds`); the report's figures of
  the tuned optimizers come from these, free of the selection's optimism.
- tier "defaults": each optimizer at its default hyper-parameters, untuned.

A cell in two tiers (the grid's centre is the default lr) is one cell: run and stored once.

Top-level keys (`KEYS`; defaults in brackets):

    name        matrix name recorded in the store            [file stem / preset name]
    plugins     .py files (relative to the TOML file) and module names to load first:
                their optimizers and tasks join the built-in ones (optbench.plugins) []
    tasks       list of task names (optbench.tasks.names())  required
    lengths     list of sequence lengths for every task, or a table task -> list;
                required for each task without a [horizon] search
    models      list of model kinds (optbench.nn.names())    ["lstm"]
    hidden      list of hidden sizes                         [128]
    optimizers  list of names, or array of tables (below)    required
                ("all", alone or in the list: every built-in optimizer)
    seeds       tuning seeds: a list, or n for seeds 0..n-1  [3]
    confirm_seeds  fresh seeds the tuned lr is rerun on: a list, or n for seeds
                1000..1000+n-1; 0 = off (figures then come from the tuning seeds)  [0]
    steps       step budget per cell, or a table task -> int [2000]
    batch_size  sequences per step                           [32]
    eval_every  steps between validation evaluations         [100]
    clip_norm   global-norm clipping threshold; false = off  [1.0]
    clip_value  element-wise clipping threshold; false = off [false]
    init        model init: "default", "keras" or "chrono"   ["default"]
    tiers       which tiers to run: "defaults", "tuned"      [both]
    schedule    the learning-rate schedule of every optimizer that sets none: "constant",
                "warmup", "cosine", "step", or a table with its parameters (optbench.schedules)
                ["constant"]
    [tuning]    lr_points (grid size, odd keeps the default in the grid) [5]
                lr_decades (the grid spans this many decades around the default) [2]
                extend (grid points a side may gain while the best lr is at that edge) [2]
    [horizon]   search the longest length each optimizer solves, per task:
                TASK = {start = L0, max = L1} (such a task needs no `lengths`);
                factor (growth per step) [2], bisect (lengths tried between the last
                solved and the first failed) [1], solved_fraction (of the confirmation
                seeds, for a length to count as solved) [0.5]

The tuned tier, its confirmation and the horizon search are planned in waves as results
come in (`optbench.plan`); a rerun asks for the same cells, so a run resumes anywhere.

An `[[optimizers]]` table has `name`, optionally `lr` (the centre of its grid and its
"defaults" cell), `lr_grid` (an explicit list of learning rates instead of the log-spaced
grid), `schedule` (its learning-rate schedule, as the top-level key), and any of the
optimizer's hyper-parameters by their torch.optim names. The same
name may appear twice with different hyper-parameters (e.g. SGD with and without momentum).
Instead of `name`, `torch = "torch.optim.ASGD"` (or "some_package.module:Class") makes any
torch optimizer class a contestant, its other keys the class's keyword arguments
(`optbench.optim.torch_adapter`; needs torch).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, fields, replace

from optbench import cost, machine, plugins, schedules
from optbench.cell import Cell
from optbench.errors import UsageError

# Imported where used: nn, optim and tasks (numpy, Numba), which a config's checks reach
# only after its syntax passed, and optbench.plan, which builds on this module's configs.

TIERS = ("defaults", "tuned")
ROLES = (*TIERS, "confirm")  # the tiers a cell can hold in a matrix
_DEFAULT = {f.name: f.default for f in fields(Cell) if f.name not in ("hparams", "code")}
KEYS = {
    "name": None,
    "tasks": None,
    "lengths": None,
    "models": [_DEFAULT["model"]],
    "hidden": [_DEFAULT["hidden"]],
    "optimizers": None,
    "seeds": 3,
    "steps": _DEFAULT["steps"],
    "batch_size": _DEFAULT["batch_size"],
    "eval_every": _DEFAULT["eval_every"],
    "clip_norm": _DEFAULT["clip_norm"],
    "clip_value": False,
    "init": _DEFAULT["init"],
    "tiers": list(TIERS),
    "tuning": {"lr_points": 5, "lr_decades": 2.0, "extend": 2},
    "plugins": [],
    "schedule": None,
    "confirm_seeds": 0,
    "horizon": {},
}
HORIZON_KEYS = {"factor": 2.0, "bisect": 1, "solved_fraction": 0.5}
REQUIRED = ("tasks", "optimizers")
# Bounds beyond the registries' own checks, so that what passes also runs and is stored:
# every integer fits the store's 64-bit INTEGER; a matrix stays small enough to plan (a
# million cells take minutes and gigabytes to expand and record; split larger ones into
# matrices that share an --out directory); the lr grid stays a grid of float32 numbers
# (the kernels' precision), and a name is one plain file name (the report's).
MAX_INT = 2**63 - 1
MAX_CELLS = 250_000
MAX_LR_POINTS = 101
MAX_LR_DECADES = 30.0
MAX_NAME = 100
_FLOAT32 = (1.1754944e-38, 3.4028235e38)

# Presets: data in the config format above. How long each takes is measured (smoke, quick,
# seed) or bounded by `tools/estimate_presets.py` (standard, full: every cell using its
# whole budget and every search reaching its max); the README's preset table has the
# figures and the machine.
ALL = "all"  # in `optimizers`: every built-in optimizer (optbench.optim.builtin_names())
PRESETS: dict[str, dict] = {
    # Seconds: the mechanics end to end (tests, first contact), every stage of a plan
    # included: a grid that may widen, a confirmation seed, a two-length horizon search.
    "smoke": dict(
        tasks=["adding"], horizon={"adding": {"start": 5, "max": 10}}, hidden=[8],
        optimizers=["adam", "sgd"], seeds=[0], confirm_seeds=1, steps=100, eval_every=25,
        batch_size=16, tuning={"lr_points": 3, "lr_decades": 2.0, "extend": 1},
    ),
    # Minutes, and an answer that separates the contestants: how long a lag on the adding
    # problem each of six optimizers (plain SGD to sign-based Lion) learns with LSTM(32)
    # in 1500 steps: lengths double from 10 to 200 while the lr tuned on two seeds solves
    # at least 3 of 5 fresh seeds, with one bisection after the first failure.
    "quick": dict(
        tasks=["adding"], horizon={"adding": {"start": 10, "max": 200}}, hidden=[32],
        optimizers=["sgd", "adagrad", "rmsprop", "adam", "nadam", "lion"],
        seeds=2, confirm_seeds=5, steps=1500, eval_every=50,
        tuning={"lr_points": 3, "lr_decades": 2.0, "extend": 2},
    ),
    # Hours: every optimizer, LSTM against GRU, horizons on two tasks, a 5-point grid.
    "standard": dict(
        tasks=["adding", "temporal_order_4", "copy"],
        horizon={"adding": {"start": 25, "max": 400}, "temporal_order_4": {"start": 25,
                                                                          "max": 200}},
        lengths={"copy": [10, 20]}, models=["lstm", "gru"], hidden=[64], optimizers=ALL,
        seeds=3, confirm_seeds=5, steps=3000, eval_every=100,
        tuning={"lr_points": 5, "lr_decades": 2.0, "extend": 2},
    ),
    # Days: every task, model and optimizer, two widths, a 7-point grid (meant for a Dask
    # cluster).
    "full": dict(
        tasks=["adding", "copy", "temporal_order_4", "temporal_order_8", "digits",
               "digits_permuted"],
        horizon={"adding": {"start": 25, "max": 800}, "temporal_order_4": {"start": 25,
                                                                          "max": 400},
                 "temporal_order_8": {"start": 25, "max": 400}},
        lengths={"copy": [10, 20, 50], "digits": [64], "digits_permuted": [64]},
        models=["lstm", "gru", "rnn"], hidden=[64, 128], optimizers=ALL, seeds=3,
        confirm_seeds=5, steps=5000, eval_every=100,
        tuning={"lr_points": 7, "lr_decades": 3.0, "extend": 2},
    ),
    # The seed program, as Keras 3 runs it: LSTM(128) + Dense(1) with Keras's default
    # initialisation (optbench.nn.init "keras"), keras.optimizers.Adam(1e-3) (epsilon 1e-7
    # added to sqrt(v) before the bias correction: adam's epsilon_hat), no gradient
    # clipping, MSE, batch 32, on the adding problem at T = 100: its "defaults" cells. The
    # tuned tier puts the same model beside it with the lr tuned for that Adam, RMSprop and
    # NAdam (confirmed on fresh seeds), so the report tests the seed's choice.
    "seed": dict(
        tasks=["adding"], lengths=[100], models=["lstm"], hidden=[128], init="keras",
        optimizers=[{"name": "adam", "lr": 1e-3, "eps": 1e-7, "epsilon_hat": True},
                    "rmsprop", "nadam"],
        clip_norm=False, seeds=3, confirm_seeds=3, steps=4000, eval_every=100, batch_size=32,
        tuning={"lr_points": 3, "lr_decades": 2.0, "extend": 1},
    ),
}
DEFAULT_PRESET = "quick"


@dataclass(frozen=True)
class Matrix:
    """An expanded matrix: its name, the normalised config, and the (cell, tier) pairs of its
    first wave in run order (what it needs before any result is in; `plan` gives the rest)."""

    name: str
    config: dict
    members: tuple[tuple[Cell, str], ...]

    @property
    def cells(self) -> tuple[Cell, ...]:
        """Each distinct cell of the first wave once, in run order."""
        return _distinct(self.members)

    @property
    def adaptive(self) -> bool:
        """Whether later waves can add cells (a tuned tier: grids widen, confirmations and
        horizon searches follow results). A Matrix made by hand from a list of members,
        without an expanded config, is run as it is."""
        return "tuned" in self.config["tiers"] and "optimizers" in self.config

    def plan(self, finished) -> tuple[tuple[Cell, str], ...]:
        """Every (cell, tier) the matrix needs given `finished` (cell key -> figures)."""
        if not self.adaptive:
            return self.members
        from optbench.plan import plan

        return tuple(plan(self.config, finished))

    @property
    def digest(self) -> str:
        """Identifies the matrix in a store: its name and normalised config (which decide
        every cell any wave can ask for)."""
        body = json.dumps([self.name, self.config], sort_keys=True)
        return hashlib.sha256(body.encode()).hexdigest()[:20]


def _distinct(members) -> tuple[Cell, ...]:
    return tuple({cell.key: cell for cell, _ in reversed(members)}.values())[::-1]


# -- entry points --------------------------------------------------------------------------
def from_preset(name: str) -> Matrix:
    if name not in PRESETS:
        raise UsageError(f"unknown preset {name!r}; allowed: {', '.join(PRESETS)}")
    return expand({"name": name, **PRESETS[name]}, source=f"preset {name!r}")


def from_toml(path: str) -> Matrix:
    """Read, validate and expand a TOML matrix file."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python < 3.11
        import tomli as tomllib
    try:
        with open(path, "rb") as f:
            config = tomllib.load(f)
    except OSError as exc:
        raise UsageError(f"cannot read config {path!r}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"config {path!r} is not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:  # TOML is UTF-8
        raise UsageError(f"config {path!r} is not UTF-8 text (byte {exc.object[exc.start]:#04x} "
                         f"at offset {exc.start})") from None
    config.setdefault("name", os.path.splitext(os.path.basename(path))[0])
    return expand(config, source=f"config {path!r}",
                  directory=os.path.dirname(os.path.abspath(path)))


def expand(config: dict, source: str = "config", directory: str | None = None) -> Matrix:
    """Validate `config` (the keys in this module's docstring) and cross its axes into cells.
    Its `plugins` are loaded first (file paths relative to `directory`, else to the working
    directory), so their optimizers and tasks are known to the checks."""
    c = _Checker(source)
    unknown = sorted(set(config) - set(KEYS))
    if unknown:
        c.fail(unknown[0], f"unknown key; allowed: {', '.join(KEYS)}")
    try:
        plugins.load_all(config.get("plugins"), directory)
    except UsageError as exc:
        c.fail("plugins", str(exc))
    for key in REQUIRED:
        if key not in config:
            c.fail(key, "missing (required)")
    cfg = {key: config.get(key, default) for key, default in KEYS.items()}
    norm = _normalise(cfg, c)
    _check_size(norm, c)
    from optbench.plan import plan

    matrix = Matrix(norm["name"], norm, tuple(plan(norm, {})))
    _check_memory(matrix, c)
    return matrix


def count(norm: dict) -> int:
    """The most members (cell, tier) a normalised config can plan (every horizon search to
    its max, every grid widened as far as allowed), without expanding it."""
    tuned = "tuned" in norm["tiers"]
    lengths = sum(len(_lengths(norm, t)) for t in norm["tasks"])
    per_seed = lengths * len(norm["models"]) * len(norm["hidden"])
    per_problem = sum((("defaults" in norm["tiers"]) + tuned * (
        len(o["lr_grid"]) + 2 * norm["tuning"]["extend"])) for o in norm["optimizers"])
    confirm = tuned * len(norm["confirm_seeds"]) * per_seed * len(norm["optimizers"])
    return len(norm["seeds"]) * per_seed * per_problem + confirm


def _lengths(norm: dict, task: str) -> list[int]:
    """Every length of `task` a plan can visit: its fixed lengths, or its horizon search's
    lengths and bisections."""
    from optbench.plan import horizon_lengths

    search = horizon_lengths(norm, task)
    if search is None:
        return norm["lengths"][task]
    return search + [search[-1]] * norm["horizon"]["bisect"]


def _check_size(norm: dict, c: _Checker) -> None:
    n = count(norm)
    if n > MAX_CELLS:
        c.fail("seeds" if len(norm["seeds"]) > 1000 else "matrix",
               f"{n:,} cells; at most {MAX_CELLS:,} per matrix (split it into several "
               "matrices: they can share one --out directory)")


def _check_memory(matrix: Matrix, c: _Checker) -> None:
    """Each distinct cell shape against the machine's memory (one line naming the shape)."""
    seen = {}
    longest = {t: max(_lengths(matrix.config, t)) for t in matrix.config["tasks"]}
    # the longest length a later wave can reach costs the most memory
    cells = [replace(c, length=longest[c.task]) for c in matrix.cells]
    for cell in cells:
        shape = (cell.task, cell.length, cell.model, cell.hidden, cell.batch_size)
        curves = cell.steps // cell.eval_every
        if seen.get(shape, -1) < curves:
            seen[shape] = curves
            try:
                machine.check_memory(cost.cell_bytes(cell), f"a cell of {cell.task} "
                                     f"T={cell.length}, {cell.model}({cell.hidden}), batch "
                                     f"{cell.batch_size}, {cell.steps:,} steps")
            except UsageError as exc:
                c.fail("cells", str(exc))


# -- validation ----------------------------------------------------------------------------
class _Checker:
    """Raises one-line UsageErrors that name the source and the key."""

    def __init__(self, source: str):
        self.source = source

    def fail(self, key: str, message: str):
        raise UsageError(f"{self.source}: {key}: {message}")

    def int_(self, key, value, low=1, high=MAX_INT):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            self.fail(key, f"must be an integer >= {low}; got {value!r}")
        if value > high:
            self.fail(key, f"must be at most {high:,}; got {value:,}")
        return value

    def positive(self, key, value):
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not math.isfinite(value) or value <= 0:
            self.fail(key, f"must be a positive finite number; got {value!r}")
        return float(value)

    def list_(self, key, value, item=None):
        if not isinstance(value, list) or not value:
            self.fail(key, f"must be a non-empty list; got {value!r}")
        if item is not None:
            value = [item(f"{key}[{i}]", v) for i, v in enumerate(value)]
        if len(set(map(json.dumps, value))) != len(value):
            self.fail(key, f"has duplicates: {value!r}")
        return value

    def choice(self, key, value, allowed):
        if not isinstance(value, str) or value not in allowed:
            self.fail(key, f"unknown {value!r}; allowed: {', '.join(allowed)}")
        return value

    def off_or_positive(self, key, value):
        return None if value is False else self.positive(key, value)

    def per_task(self, key, value, tasks, item):
        """`value` for every task, or a table task -> value naming every task."""
        if not isinstance(value, dict):
            return {t: item(key, value, t) for t in tasks}
        extra = sorted(set(value) - set(tasks))
        if extra:
            self.fail(f"{key}.{extra[0]}", f"not one of the tasks: {', '.join(tasks)}")
        missing = [t for t in tasks if t not in value]
        if missing:
            self.fail(key, f"no entry for task {missing[0]!r}")
        return {t: item(f"{key}.{t}", value[t], t) for t in tasks}


def _normalise(cfg: dict, c: _Checker) -> dict:
    from optbench import nn, optim, tasks

    name = cfg["name"]
    if not isinstance(name, str) or not name.strip():
        c.fail("name", f"must be a non-empty string; got {name!r}")
    check_name(name, c)
    task_names = c.list_("tasks", cfg["tasks"], lambda k, v: c.choice(k, v, tasks.names()))

    def length_list(key, value, task):
        def one(k, v):
            try:
                return tasks.get(task).check_length(v)
            except UsageError as exc:
                c.fail(k, str(exc))
        return c.list_(key, value, one)

    horizon = _horizon(cfg["horizon"], task_names, c)
    fixed = [t for t in task_names if t not in horizon["tasks"]]
    if fixed and cfg["lengths"] is None:
        c.fail("lengths", f"missing (required for {', '.join(fixed)}: tasks without a "
               "[horizon] search)")
    if isinstance(cfg["lengths"], dict) and set(cfg["lengths"]) & set(horizon["tasks"]):
        task = sorted(set(cfg["lengths"]) & set(horizon["tasks"]))[0]
        c.fail(f"lengths.{task}", "this task searches its lengths ([horizon]); give it there")
    lengths = c.per_task("lengths", cfg["lengths"], fixed, length_list) if fixed else {}
    steps = c.per_task("steps", cfg["steps"], task_names, lambda k, v, t: c.int_(k, v))
    eval_every = c.int_("eval_every", cfg["eval_every"])
    if eval_every > min(steps.values()):
        c.fail("eval_every", f"{eval_every} is more than the step budget {min(steps.values())}")
    seeds = cfg["seeds"]
    seeds = list(range(c.int_("seeds", seeds, high=MAX_CELLS))) if isinstance(seeds, int) and not isinstance(
        seeds, bool) else c.list_("seeds", seeds, lambda k, v: c.int_(k, v, low=0))
    confirm = _confirm_seeds(cfg["confirm_seeds"], seeds, c)
    tiers = c.list_("tiers", cfg["tiers"], lambda k, v: c.choice(k, v, TIERS))
    tuning = cfg["tuning"]
    if not isinstance(tuning, dict) or set(tuning) - set(KEYS["tuning"]):
        c.fail("tuning", f"must be a table with keys {', '.join(KEYS['tuning'])}; got {tuning!r}")
    tuning = {**KEYS["tuning"], **tuning}
    points = c.int_("tuning.lr_points", tuning["lr_points"], high=MAX_LR_POINTS)
    decades = c.positive("tuning.lr_decades", tuning["lr_decades"])
    extend = c.int_("tuning.extend", tuning["extend"], low=0)
    if decades > MAX_LR_DECADES:
        c.fail("tuning.lr_decades", f"must be at most {MAX_LR_DECADES:g}; got {decades:g}")
    schedule = _schedule(cfg["schedule"], "schedule", c, min(steps.values()))
    return {
        "name": name,
        "plugins": list(cfg["plugins"] or []),
        "tasks": task_names,
        "lengths": lengths,
        "models": c.list_("models", cfg["models"], lambda k, v: c.choice(k, v, nn.names())),
        "hidden": c.list_("hidden", cfg["hidden"], c.int_),
        "optimizers": _optimizers(cfg["optimizers"], c, optim, points, decades, schedule,
                                  min(steps.values())),
        "seeds": seeds,
        "confirm_seeds": confirm,
        "horizon": horizon,
        "steps": steps,
        "batch_size": c.int_("batch_size", cfg["batch_size"]),
        "eval_every": eval_every,
        "clip_norm": c.off_or_positive("clip_norm", cfg["clip_norm"]),
        "clip_value": c.off_or_positive("clip_value", cfg["clip_value"]),
        "init": c.choice("init", cfg["init"], nn.INITS),
        "tiers": tiers,
        "tuning": {"lr_points": points, "lr_decades": decades, "extend": extend},
        "schedule": schedule,
    }


def _confirm_seeds(value, seeds: list[int], c: _Checker) -> list[int]:
    from optbench.plan import CONFIRM_SEED_BASE

    if isinstance(value, int) and not isinstance(value, bool):
        n = c.int_("confirm_seeds", value, low=0)
        value = list(range(CONFIRM_SEED_BASE, CONFIRM_SEED_BASE + n))
        return value
    value = c.list_("confirm_seeds", value, lambda k, v: c.int_(k, v, low=0))
    shared = sorted(set(value) & set(seeds))
    if shared:
        c.fail("confirm_seeds", f"seed {shared[0]} is also a tuning seed; confirmation needs "
               "seeds that did not choose the lr")
    return value


def _horizon(raw, task_names: list[str], c: _Checker) -> dict:
    """{"tasks": {task: {"start", "max"}}, "factor", "bisect", "solved_fraction"}."""
    from optbench import tasks

    if not isinstance(raw, dict):
        c.fail("horizon", f"must be a table of task = {{start = L0, max = L1}} and options "
               f"({', '.join(HORIZON_KEYS)}); got {raw!r}")
    out = {"tasks": {}, **HORIZON_KEYS}
    for key, value in raw.items():
        if key in HORIZON_KEYS:
            continue
        if key not in task_names:
            c.fail(f"horizon.{key}", "not one of the tasks "
                   f"({', '.join(task_names)}) nor an option ({', '.join(HORIZON_KEYS)})")
        if not isinstance(value, dict) or set(value) != {"start", "max"}:
            c.fail(f"horizon.{key}", f"must be {{start = L0, max = L1}}; got {value!r}")
        task = tasks.get(key)
        bounds = []
        for end in ("start", "max"):
            try:
                bounds.append(task.check_length(value[end]))
            except UsageError as exc:
                c.fail(f"horizon.{key}.{end}", str(exc))
        if bounds[1] < bounds[0]:
            c.fail(f"horizon.{key}", f"max {bounds[1]} is below start {bounds[0]}")
        out["tasks"][key] = {"start": bounds[0], "max": bounds[1]}
    if "factor" in raw:
        factor = c.positive("horizon.factor", raw["factor"])
        if factor < 1.1:
            c.fail("horizon.factor", f"must be >= 1.1 so that lengths grow; got {factor!r}")
        out["factor"] = factor
    if "bisect" in raw:
        out["bisect"] = c.int_("horizon.bisect", raw["bisect"], low=0)
    if "solved_fraction" in raw:
        f = c.positive("horizon.solved_fraction", raw["solved_fraction"])
        if f > 1:
            c.fail("horizon.solved_fraction", f"must be in (0, 1]; got {f!r}")
        out["solved_fraction"] = f
    return out


def _schedule(value, key: str, c: _Checker, steps: int) -> dict | None:
    try:
        out = schedules.normalise(value, key)
        schedules.check_budget(out, steps, key)
    except UsageError as exc:
        c.fail(key, str(exc).removeprefix(f"{key}: "))
    return out


def _optimizers(raw, c: _Checker, optim, points: int, decades: float, schedule=None,
                steps: int = 1) -> list[dict]:
    """Each entry as {"name", "hparams" (every hyper-parameter, lr included, and `schedule`
    when the lr follows one), "lr_grid"}."""
    if raw == ALL:
        raw = [ALL]
    if isinstance(raw, list) and ALL in raw:
        at = raw.index(ALL)
        raw = raw[:at] + list(optim.builtin_names()) + raw[at + 1:]
    out = []
    for i, entry in enumerate(c.list_("optimizers", raw)):
        key = f"optimizers[{i}]"
        entry = {"name": entry} if isinstance(entry, str) else entry
        if not isinstance(entry, dict):
            c.fail(key, f"must be an optimizer name or a table with a name; got {entry!r}")
        if "torch" in entry:  # any torch.optim class, through optbench.optim.torch_adapter
            if "name" in entry:
                c.fail(key, "give `name` (an optbench optimizer) or `torch` (a class), not both")
            from optbench.optim import torch_adapter

            try:
                name = torch_adapter.register(entry["torch"])
            except UsageError as exc:
                c.fail(f"{key}.torch", str(exc))
            entry = {"name": name, **{k: v for k, v in entry.items() if k != "torch"}}
        name = c.choice(f"{key}.name", entry.get("name"), optim.names())
        defaults = optimizer_defaults(name)
        given = {k: v for k, v in entry.items() if k not in ("name", "lr_grid", "schedule")}
        for k in given:
            if k not in defaults:
                c.fail(f"{key}.{k}", f"not a hyper-parameter of {name}; allowed: "
                       f"{', '.join([*defaults, 'lr_grid', 'schedule'])}")
        hparams = json.loads(json.dumps({k: _like(v, given.get(k, v)) for k, v in defaults.items()}))
        try:
            optim.create(name, backend="numpy", **hparams)
        except UsageError as exc:
            c.fail(key, str(exc))
        lr = c.positive(f"{key}.lr", hparams["lr"])
        sched = (_schedule(entry["schedule"], f"{key}.schedule", c, steps)
                 if "schedule" in entry else schedule)
        if sched is not None:
            hparams["schedule"] = sched
        grid = entry.get("lr_grid")
        grid = lr_grid(lr, points, decades) if grid is None else c.list_(
            f"{key}.lr_grid", grid, c.positive)
        outside = [x for x in grid if not _FLOAT32[0] <= x <= _FLOAT32[1]]
        if outside:
            c.fail(f"{key}.lr_grid" if entry.get("lr_grid") is not None else "tuning.lr_decades",
                   f"learning rate {outside[0]:g} is outside float32's normal range "
                   f"({_FLOAT32[0]:g} .. {_FLOAT32[1]:g})")
        normalised = {"name": name, "hparams": hparams, "lr_grid": grid}
        for j, other in enumerate(out):
            if (other["name"], other["hparams"]) == (name, hparams):
                c.fail(key, f"the same optimizer and hyper-parameters as optimizers[{j}]")
        out.append(normalised)
    return out


def _like(default, value):
    """`value` with ints as floats where the default is a float, so 1 and 1.0 make one key."""
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(default, (list, tuple)) and isinstance(value, (list, tuple)) \
            and len(default) == len(value):
        return [_like(d, v) for d, v in zip(default, value)]
    return value


def check_name(name: str, c: _Checker | None = None) -> str:
    """A matrix name is a report's file name: one plain name, not a path."""
    bad = (len(name) > MAX_NAME and f"longer than {MAX_NAME} characters"
           or name in (".", "..") and "not a file name"
           or any(ch in name for ch in "/\\\0") and "holds a path separator or NUL"
           or any(ord(ch) < 32 for ch in name) and "holds a control character"
           or name != name.strip() and "starts or ends with white space")
    if bad:
        message = f"{bad}: {name[:40]!r}{'...' if len(name) > 40 else ''}; allowed: a file name"
        if c is None:
            raise UsageError(f"matrix name {message}")
        c.fail("name", message)
    return name


def optimizer_defaults(name: str) -> dict:
    """The optimizer's hyper-parameters and their defaults, from its spec in `optbench.optim`."""
    from optbench import optim

    return dict(optim.spec(name).defaults)


def lr_grid(centre: float, points: int, decades: float) -> list[float]:
    """`points` learning rates evenly spaced in log10 over `decades` decades, centred on
    `centre`; rounded to 3 significant digits except the centre itself, which stays exact so
    the grid's middle cell is the "defaults" cell."""
    grid = []
    for i in range(points):
        e = 0.0 if points == 1 else decades * (i / (points - 1) - 0.5)
        grid.append(centre if e == 0 else float(f"{centre * 10 ** e:.3g}"))
    return grid
