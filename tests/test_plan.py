"""The planner against a synthetic world whose answers are known: each optimizer solves a
length iff it is at most its true horizon and the lr lies in its window; the searches must
find those horizons, widen grids towards the window, judge on the confirmation seeds, and
ask for the same cells however the results arrive."""

import math

import pytest

from optbench import matrix as mx
from optbench import plan as P

# optimizer -> (true horizon, lr window)
WORLD = {"adam": (150, (3e-3, 3e-2)), "sgd": (30, (1e-3, 1e-2)), "rmsprop": (1000, (1e-4, 1e-1))}


def fake(cell) -> dict:
    """A cell's figures in WORLD: solved iff length and lr fit; steps grow with the distance
    of the lr from the window's geometric centre so that one lr wins; confirmation seed 1003
    never solves (a seed-sensitive task)."""
    horizon, (lo, hi) = WORLD[cell.optimizer]
    centre = math.sqrt(lo * hi)
    ok = cell.length <= horizon and lo <= cell.lr <= hi and cell.seed != 1003
    if ok:
        steps = 100 + int(100 * abs(math.log10(cell.lr / centre)))
        return {"outcome": "solved", "val_metric": 0.005, "steps_to_solve": steps}
    miss = abs(math.log10(cell.lr / centre))  # unsolved: the closer lr scores better
    return {"outcome": "budget", "val_metric": 0.1 + 0.01 * miss, "steps_to_solve": None}


def run_to_end(config, waves_out=None):
    """Plan, 'run' the new cells, replan, until nothing new: what runner.execute does."""
    finished, members = {}, []
    while True:
        members_now = P.plan(config, finished)
        assert set(members) <= set(members_now), "a later wave dropped cells"
        todo = [c for c, _ in members_now if c.key not in finished]
        if waves_out is not None:
            waves_out.append(len(todo))
        if not todo:
            return members_now, finished
        for cell in todo:
            finished[cell.key] = fake(cell)
        members = members_now


def config(**changes):
    base = {"name": "t", "tasks": ["adding"], "optimizers": ["adam", "sgd", "rmsprop"],
            "seeds": 2, "confirm_seeds": 4, "hidden": [8], "steps": 100, "eval_every": 50,
            "horizon": {"adding": {"start": 25, "max": 400}},
            "tuning": {"lr_points": 3, "lr_decades": 2.0, "extend": 2}}
    return mx.expand({**base, **changes}, source="test").config


def horizons(config, finished):
    out = {}
    for row in P.status(config, finished):
        if row["solved"]:
            name = row["entrant"]["name"]
            out[name] = max(out.get(name, 0), row["length"])
    return out


def test_the_search_finds_each_optimizers_horizon_within_its_resolution():
    cfg = config()
    members, finished = run_to_end(cfg)
    found = horizons(cfg, finished)
    # adam: 25, 50, 100 solved, 200 failed, bisection tries round(sqrt(100 * 200)) = 141
    assert found["adam"] == 141
    # sgd: 25 solved, 50 failed, bisection 35 fails (true horizon 30)
    assert found["sgd"] == 25
    # rmsprop solves up to the cap
    assert found["rmsprop"] == 400
    lengths = {row["length"] for row in P.status(cfg, finished) if row["entrant"]["name"] == "adam"}
    assert lengths == {25, 50, 100, 200, 141}


def test_without_bisection_the_search_stops_at_the_first_failure():
    cfg = config(horizon={"adding": {"start": 25, "max": 400}, "bisect": 0})
    _, finished = run_to_end(cfg)
    lengths = {r["length"] for r in P.status(cfg, finished) if r["entrant"]["name"] == "adam"}
    assert lengths == {25, 50, 100, 200}
    assert horizons(cfg, finished)["adam"] == 100


def test_a_grid_widens_towards_the_window_and_flags_a_pick_left_at_its_edge():
    # sgd's default lr is 1e-3: the 3-point grid over 2 decades is 1e-4, 1e-3, 1e-2, and its
    # window 1e-3..1e-2 lies inside; adam's (1e-3 centre) too; rmsprop's default 1e-2 grid
    # 1e-3..1e-1 is inside its window, so every lr solves and the smallest steps win.
    cfg = config(optimizers=[{"name": "adam", "lr": 1e-5}], horizon={
        "adding": {"start": 25, "max": 25}})
    _, finished = run_to_end(cfg)
    (row,) = P.status(cfg, finished)
    # grid 1e-6, 1e-5, 1e-4: nothing solves, 1e-4 is closest -> widened to 1e-3 (solves),
    # then 1e-2 (solves, closer to the centre 9.5e-3): two points added, the limit
    assert row["lrs"] == [1e-6, 1e-5, 1e-4, 1e-3, 1e-2]
    assert row["lr"] == 1e-2 and row["edge"] == "high"
    assert row["solved"]


def test_the_judgement_uses_the_confirmation_seeds_only():
    cfg = config(horizon={"adding": {"start": 25, "max": 25}}, confirm_seeds=[1003, 1004])
    members, finished = run_to_end(cfg)
    tiers = {(c.seed, t) for c, t in members}
    assert {s for s, t in tiers if t == "confirm"} == {1003, 1004}
    assert {s for s, t in tiers if t == "tuned"} == {0, 1}
    row = next(r for r in P.status(cfg, finished) if r["entrant"]["name"] == "adam")
    assert row["fraction"] == 0.5 and row["solved"]  # seed 1003 never solves
    cfg = config(horizon={"adding": {"start": 25, "max": 25}, "solved_fraction": 0.75},
                 confirm_seeds=[1003, 1004])
    _, finished = run_to_end(cfg)
    row = next(r for r in P.status(cfg, finished) if r["entrant"]["name"] == "adam")
    assert not row["solved"]


def test_results_in_any_order_give_the_same_plan():
    cfg = config()
    members, finished = run_to_end(cfg)
    assert P.plan(cfg, finished) == members  # replanned from a full store: nothing new
    # a store that holds the results of more cells than this matrix asked for plans the same
    extra = dict(finished)
    other = config(optimizers=["adam"], horizon={"adding": {"start": 50, "max": 800}})
    _, more = run_to_end(other)
    extra.update(more)
    assert [m for m in P.plan(cfg, extra)] == members


def test_fixed_lengths_run_every_length_and_the_first_wave_has_seeds_outermost():
    cfg = config(horizon={}, lengths=[20, 400], confirm_seeds=2)
    waves = []
    members, finished = run_to_end(cfg, waves)
    assert {c.length for c, _ in members} == {20, 400}
    first = P.plan(cfg, {})
    seeds = [c.seed for c, _ in first]
    assert seeds == sorted(seeds)
    assert {t for _, t in first} == {"defaults", "tuned"}
    assert waves[-1] == 0 and len(waves) >= 3  # grid, confirmation, then nothing


def test_a_defaults_only_matrix_is_one_wave():
    cfg = config(tiers=["defaults"], horizon={}, lengths=[10])
    waves = []
    members, _ = run_to_end(cfg, waves)
    assert waves == [len(members), 0]
    assert {t for _, t in members} == {"defaults"}


@pytest.mark.parametrize("changes,message", [
    ({"horizon": {"copy": {"start": 10, "max": 20}}}, "horizon.copy: not one of the tasks"),
    ({"horizon": {"adding": {"start": 10}}}, "must be {start = L0, max = L1}"),
    ({"horizon": {"adding": {"start": 40, "max": 20}}}, "max 20 is below start 40"),
    ({"horizon": {"adding": {"start": 1, "max": 20}}}, "horizon.adding.start"),
    ({"horizon": {"adding": {"start": 10, "max": 20}, "factor": 1.0}}, "must be >= 1.1"),
    ({"horizon": {"adding": {"start": 10, "max": 20}, "solved_fraction": 2}}, "in (0, 1]"),
    ({"horizon": {}, "lengths": None}, "lengths: missing"),
    ({"lengths": {"adding": [10]}}, "lengths.adding: this task searches its lengths"),
    ({"confirm_seeds": [1, 2]}, "seed 1 is also a tuning seed"),
    ({"confirm_seeds": -1}, "confirm_seeds: must be an integer >= 0"),
    ({"tuning": {"extend": -1}}, "tuning.extend: must be an integer >= 0"),
])
def test_bad_plans_are_refused_with_the_key(changes, message):
    from optbench.errors import UsageError

    base = {"name": "t", "tasks": ["adding"], "optimizers": ["adam"], "seeds": 2,
            "horizon": {"adding": {"start": 25, "max": 400}}}
    cfg = {**base, **changes}
    if cfg.get("lengths", 0) is None:
        del cfg["lengths"]
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")
                       .replace("{", r"\{").replace("}", r"\}")):
        mx.expand(cfg, source="test")


@pytest.mark.parametrize("world", [
    {"adam": (10_000, (1e-9, 1e9)), "sgd": (10_000, (1e-9, 1e9)), "rmsprop": (10_000, (1e-9, 1e9))},
    WORLD,
    {"adam": (0, (1, 2)), "sgd": (0, (1, 2)), "rmsprop": (0, (1, 2))},
])
def test_the_bound_costs_at_least_what_any_run_asks_for(world, monkeypatch):
    """Cost taken as steps x length (a cell's time grows with its length): whatever the
    results, the cells a run plans cost no more than plan.bound's."""
    monkeypatch.setattr(__import__(__name__), "WORLD", world)
    cfg = config()
    members, _ = run_to_end(cfg)
    ran = {c.key: c for c, _ in members}.values()
    assert sum(c.length for c in ran) <= sum(c.length for c in P.bound(cfg))
