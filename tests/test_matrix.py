"""The matrix: config validation against the registries, expansion into cells, tuning."""

import json
import math

import pandas as pd
import pytest

from optbench import matrix as mx
from optbench import nn, optim, tasks
from optbench.cell import Cell
from optbench.errors import UsageError

BASE = {"name": "t", "tasks": ["adding"], "lengths": [10], "optimizers": ["adam"], "seeds": 1}


def expand(**changes):
    return mx.expand({**BASE, **changes}, source="test")


def test_lr_grid_is_log_spaced_around_the_centre():
    grid = mx.lr_grid(1e-3, 5, 2.0)
    assert grid == [1e-4, 3.16e-4, 1e-3, 3.16e-3, 1e-2]
    assert mx.lr_grid(3e-4, 3, 1.0) == [9.49e-5, 3e-4, 9.49e-4]
    assert mx.lr_grid(0.0123456, 3, 2.0)[1] == 0.0123456  # the centre stays exact
    assert mx.lr_grid(0.1, 1, 2.0) == [0.1]
    ratios = [b / a for a, b in zip(grid, grid[1:])]
    assert all(math.isclose(r, 10 ** 0.5, rel_tol=2e-3) for r in ratios)


def test_expansion_crosses_every_axis_and_shares_the_default_cell():
    m = expand(tasks=["adding", "copy"], lengths=[10, 20], models=["lstm", "gru"], hidden=[4, 8],
               optimizers=["adam", "sgd"], seeds=2, tuning={"lr_points": 3})
    combos = 2 * 2 * 2 * 2 * 2 * 2  # seeds tasks lengths models hidden optimizers
    assert len(m.members) == combos * (1 + 3)
    assert len(m.cells) == combos * 3  # the defaults cell is the grid's centre
    assert len({c.key for c in m.cells}) == len(m.cells)
    defaults = [c for c, t in m.members if t == "defaults"]
    assert {c.lr for c in defaults if c.optimizer == "adam"} == {
        optim.spec("adam").defaults["lr"]}
    # seeds outermost: an interrupted run already covers every configuration at seed 0
    seeds = [c.seed for c in m.cells]
    assert seeds == sorted(seeds)


def test_cells_carry_every_hyper_parameter_with_its_default():
    m = expand(optimizers=[{"name": "sgd", "momentum": 0.9, "lr": 1}], tiers=["defaults"])
    (cell,) = m.cells
    defaults = dict(optim.spec("sgd").defaults)
    assert set(cell.hparams) == set(defaults)
    assert cell.hparams["momentum"] == 0.9 and cell.hparams["lr"] == 1.0
    assert isinstance(cell.hparams["lr"], float)  # lr = 1 and lr = 1.0 are one cell
    assert cell.key == expand(optimizers=[{"name": "sgd", "momentum": 0.9, "lr": 1.0}],
                              tiers=["defaults"]).cells[0].key
    assert cell == Cell(**{**cell.to_dict(), "hparams": json.loads(json.dumps(cell.hparams))})


def test_one_optimizer_twice_with_other_hyper_parameters():
    m = expand(optimizers=["sgd", {"name": "sgd", "momentum": 0.9}], tiers=["defaults"])
    assert [c.hparams["momentum"] for c in m.cells] == [0.0, 0.9]
    with pytest.raises(UsageError, match=r"optimizers\[1\]: the same optimizer and hyper-para"):
        expand(optimizers=["sgd", {"name": "sgd", "momentum": 0.0}])


def test_per_task_lengths_and_steps():
    m = expand(tasks=["adding", "copy"], lengths={"adding": [10, 30], "copy": [5]},
               steps={"adding": 100, "copy": 300}, tiers=["defaults"], seeds=1)
    assert sorted((c.task, c.length, c.steps) for c in m.cells) == [
        ("adding", 10, 100), ("adding", 30, 100), ("copy", 5, 300)]


def test_explicit_grid_and_tiers():
    m = expand(optimizers=[{"name": "adam", "lr_grid": [0.1, 0.01]}], seeds=[7])
    assert [(c.lr, t) for c, t in m.members] == [(1e-3, "defaults"), (0.1, "tuned"), (0.01, "tuned")]
    assert {c.seed for c in m.cells} == {7}
    assert [t for _, t in expand(tiers=["tuned"]).members] == ["tuned"] * 5


def test_clipping_off_and_on():
    (cell,) = expand(clip_norm=False, clip_value=0.5, tiers=["defaults"], seeds=1).cells
    assert cell.clip_norm is None and cell.clip_value == 0.5


def test_the_digest_names_exactly_the_cells_and_tiers():
    a = expand()
    assert a.digest == expand().digest
    assert a.digest != expand(seeds=2).digest
    assert a.digest != expand(tiers=["tuned"]).digest
    assert a.digest != expand(name="other").digest


@pytest.mark.parametrize("changes, message", [
    ({"lenghts": [10]}, "test: lenghts: unknown key; allowed: name, tasks, lengths"),
    ({"tasks": "adding"}, "tasks: must be a non-empty list; got 'adding'"),
    ({"tasks": []}, "tasks: must be a non-empty list; got []"),
    ({"tasks": ["adding", "adding"]}, "tasks: has duplicates"),
    ({"tasks": ["adder"]}, "tasks[0]: unknown 'adder'; allowed: adding, copy"),
    ({"lengths": [0]}, "lengths[0]: task 'adding': length 0 not allowed"),
    ({"lengths": {"adding": [10], "cpy": [5]}}, "lengths.cpy: not one of the tasks: adding"),
    ({"tasks": ["adding", "copy"], "lengths": {"adding": [10]}}, "lengths: no entry for task 'copy'"),
    ({"models": ["lstm", "transformer"]}, "models[1]: unknown 'transformer'; allowed: "),
    ({"hidden": [0]}, "hidden[0]: must be an integer >= 1; got 0"),
    ({"hidden": [8.5]}, "hidden[0]: must be an integer >= 1; got 8.5"),
    ({"seeds": 0}, "seeds: must be an integer >= 1; got 0"),
    ({"seeds": [-1]}, "seeds[0]: must be an integer >= 0; got -1"),
    ({"steps": 0}, "steps: must be an integer >= 1; got 0"),
    ({"steps": {"adding": True}}, "steps.adding: must be an integer >= 1; got True"),
    ({"eval_every": 500, "steps": 100}, "eval_every: 500 is more than the step budget 100"),
    ({"batch_size": "32"}, "batch_size: must be an integer >= 1; got '32'"),
    ({"clip_norm": 0}, "clip_norm: must be a positive finite number; got 0"),
    ({"clip_value": "off"}, "clip_value: must be a positive finite number; got 'off'"),
    ({"init": "xavier"}, "init: unknown 'xavier'; allowed: default, chrono"),
    ({"tiers": ["best"]}, "tiers[0]: unknown 'best'; allowed: defaults, tuned"),
    ({"tuning": {"lr_points": 0}}, "tuning.lr_points: must be an integer >= 1; got 0"),
    ({"tuning": {"points": 3}}, "tuning: must be a table with keys lr_points, lr_decades"),
    ({"name": ""}, "name: must be a non-empty string"),
    ({"optimizers": ["adamm"]}, "optimizers[0].name: unknown 'adamm'; allowed: "),
    ({"optimizers": [3]}, "optimizers[0]: must be an optimizer name or a table with a name"),
    ({"optimizers": [{"name": "adam", "momentum": 0.9}]},
     "optimizers[0].momentum: not a hyper-parameter of adam; allowed: lr, betas"),
    ({"optimizers": [{"name": "adam", "betas": [0.9, 1.5]}]}, "optimizers[0]: adam: betas"),
    ({"optimizers": [{"name": "sgd", "lr": -0.1}]}, "optimizers[0]: sgd: lr=-0.1"),
    ({"optimizers": [{"name": "sgd", "lr": 0}]}, "optimizers[0].lr: must be a positive finite"),
    ({"optimizers": [{"name": "adam", "lr_grid": [0.1, 0]}]},
     r"optimizers[0].lr_grid[1]: must be a positive finite number; got 0"),
])
def test_bad_configs_are_refused_with_the_key(changes, message):
    config = {**BASE, **changes}
    with pytest.raises(UsageError) as exc:
        mx.expand(config, source="test")
    assert message in str(exc.value)
    assert "\n" not in str(exc.value)


def test_missing_required_keys():
    with pytest.raises(UsageError, match="test: optimizers: missing"):
        mx.expand({"tasks": ["adding"], "lengths": [5]}, source="test")


def test_toml_files(tmp_path):
    m = mx.from_toml("examples/custom.toml")
    assert m.name == "custom" and m.config["tuning"] == {"lr_points": 3, "lr_decades": 2.0}
    bad = tmp_path / "bad.toml"
    bad.write_text("tasks = [adding]\n")
    with pytest.raises(UsageError, match=r"config '.*bad.toml' is not valid TOML: .*line 1"):
        mx.from_toml(str(bad))
    with pytest.raises(UsageError, match="cannot read config 'nowhere.toml': No such file"):
        mx.from_toml("nowhere.toml")
    good = tmp_path / "mine.toml"
    good.write_text('tasks = ["adding"]\nlengths = [5]\noptimizers = ["adam"]\nseeds = 1\n')
    assert mx.from_toml(str(good)).name == "mine"


def test_presets_expand_and_the_quick_one_is_a_real_comparison():
    for name in mx.PRESETS:
        assert mx.from_preset(name).name == name
    quick = mx.from_preset("quick").config
    assert len(quick["optimizers"]) >= 6 and len(quick["tasks"]) >= 2 and len(quick["seeds"]) >= 3
    assert all(len(lengths) >= 2 for lengths in quick["lengths"].values())
    assert set(quick["tiers"]) == set(mx.TIERS)
    with pytest.raises(UsageError, match="unknown preset 'fast'; allowed: smoke, quick"):
        mx.from_preset("fast")


def test_the_seed_preset_is_the_seed_set_up():
    m = mx.from_preset("seed")
    assert {(c.task, c.model, c.hidden, c.optimizer, c.lr, c.batch_size) for c in m.cells} == {
        ("adding", "lstm", 128, "adam", 1e-3, 32)}
    task = tasks.get("adding")
    assert (task.loss, task.output_size, task.head) == ("mse", 1, "last")  # Dense(1), MSE
    # Keras's conventions: its initialisation, its Adam epsilon, no clipping.
    for c in m.cells:
        assert (c.init, c.clip_norm, c.clip_value, c.length) == ("keras", None, None, 100)
        assert (c.hparams["eps"], c.hparams["epsilon_hat"]) == (1e-7, True)
        assert c.hparams["betas"] == [0.9, 0.999] and c.hparams["amsgrad"] is False


def test_registries_are_the_source_of_names():
    assert set(mx.from_toml("examples/custom.toml").config["models"]) <= set(nn.names())


# -- tuning --------------------------------------------------------------------------------
def _frame(rows):
    """rows: (task, optimizer, lr, seed, val_metric, outcome[, steps_to_solve])."""
    return pd.DataFrame([
        dict(task=t, length=10, model="lstm", hidden=4, optimizer=o, steps=100, batch_size=8,
             eval_every=10, clip_norm=1.0, clip_value=None, init="default", lr=lr, seed=s,
             hparams_json=json.dumps({"lr": lr, "eps": 1e-8}), val_metric=v, outcome=out,
             steps_to_solve=(rest[0] if rest else 50) if out == "solved" else None,
             test_metric=None if v is None else v + 1)
        for t, o, lr, s, v, out, *rest in rows
    ])


def test_pick_lr_takes_the_best_median_over_seeds():
    rows = [
        # lr 0.1: one lucky seed solved, median 0.5; lr 0.01: median 0.2 wins
        ("adding", "adam", 0.1, 0, 0.01, "solved"), ("adding", "adam", 0.1, 1, 0.5, "budget"),
        ("adding", "adam", 0.1, 2, 0.9, "budget"),
        ("adding", "adam", 0.01, 0, 0.2, "budget"), ("adding", "adam", 0.01, 1, 0.2, "budget"),
        ("adding", "adam", 0.01, 2, 0.3, "budget"),
        # a diverged seed counts as the worst, whatever its metric says
        ("adding", "sgd", 1.0, 0, 0.001, "diverged"), ("adding", "sgd", 1.0, 1, 0.001, "diverged"),
        ("adding", "sgd", 1.0, 2, 0.001, "solved"),
        ("adding", "sgd", 0.1, 0, 0.4, "budget"), ("adding", "sgd", 0.1, 1, None, "budget"),
        ("adding", "sgd", 0.1, 2, 0.4, "budget"),
        # higher is better for accuracy; ties go to the smaller lr
        ("copy", "adam", 0.1, 0, 0.9, "budget"), ("copy", "adam", 0.01, 0, 0.9, "budget"),
        ("copy", "adam", 0.001, 0, 0.5, "budget"),
        # solved beats unsolved, and among solved runs the faster wins, whatever the metric
        ("copy", "sgd", 0.1, 0, 0.995, "solved", 300), ("copy", "sgd", 0.01, 0, 0.991, "solved", 200),
        ("copy", "sgd", 0.001, 0, 0.98, "budget"),
    ]
    picked = mx.pick_lr(_frame(rows), {"adding": False, "copy": True}).set_index(
        ["task", "optimizer"])
    assert picked.loc[("adding", "adam"), "lr"] == 0.01
    assert picked.loc[("adding", "adam"), "val_median"] == 0.2
    assert picked.loc[("adding", "adam"), "test_median"] == 1.2
    assert picked.loc[("adding", "adam"), ["seeds", "solved", "diverged", "lrs"]].tolist() == [
        3, 0, 0, 2]
    assert picked.loc[("adding", "sgd"), "lr"] == 0.1
    assert picked.loc[("adding", "sgd"), "val_median"] == 0.4
    assert picked.loc[("copy", "adam"), "lr"] == 0.01
    assert picked.loc[("copy", "adam"), "val_median"] == 0.9
    assert picked.loc[("copy", "sgd"), "lr"] == 0.01
    assert picked.loc[("copy", "sgd"), ["solved", "steps_median"]].tolist() == [1, 200]


def test_pick_lr_lower_median_with_an_even_number_of_seeds():
    rows = [("adding", "adam", 0.1, s, v, "budget") for s, v in enumerate([0.1, 0.2, 0.3, 0.9])]
    rows += [("adding", "adam", 0.01, s, v, "budget") for s, v in enumerate([0.15, 0.25, 0.3, 0.3])]
    assert mx.pick_lr(_frame(rows), {"adding": False})["lr"].tolist() == [0.1]


def test_pick_lr_keeps_variants_apart_and_reports_all_diverged():
    df = _frame([("adding", "sgd", 0.1, 0, 0.3, "budget"), ("adding", "sgd", 1.0, 0, 1.0, "diverged")])
    other = _frame([("adding", "sgd", 0.1, 0, 0.1, "budget")])
    other["hparams_json"] = json.dumps({"lr": 0.1, "momentum": 0.9})
    picked = mx.pick_lr(pd.concat([df, other]), {"adding": False})
    assert sorted(picked["val_median"]) == [0.1, 0.3] and len(picked) == 2
    assert [mx.label("sgd", v) for v in picked["variant"]] == ["sgd(eps=1e-08)", "sgd(momentum=0.9)"]
    dead = _frame([("adding", "sgd", 1.0, s, 0.0, "diverged") for s in range(3)])
    assert math.isnan(mx.pick_lr(dead, {"adding": False})["val_median"].iloc[0])
