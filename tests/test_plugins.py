"""Bring your own optimizer and task: registration and its refusals, plugins from files and
modules, the conformance kit on the built-ins and on the examples, and cell keys that follow
plugin code (built-in keys unchanged)."""

import os
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from optbench import selection

from optbench import matrix as mx
from optbench import optim, plugins, tasks, testing
from optbench.cell import Cell
from optbench.cli import main
from optbench.errors import UsageError

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples" / "plugins"
ADABELIEF = (EXAMPLES / "adabelief.py").read_text()


@pytest.fixture
def registries():
    """Take back whatever a test registers or loads."""
    optimizers, task_names = set(optim.names()), set(tasks.names())
    loaded = dict(plugins.LOADED)
    yield
    for name in set(optim.names()) - optimizers:
        optim.unregister(name)
    for name in set(tasks.names()) - task_names:
        tasks.unregister(name)
    for module in set(plugins.LOADED) - set(loaded):
        sys.modules.pop(module, None)
    plugins.LOADED.clear()
    plugins.LOADED.update(loaded)


def write(path: Path, text: str) -> str:
    path.write_text(textwrap.dedent(text))
    return str(path)


def one_line(exc) -> str:
    message = str(exc.value)
    assert "\n" not in message, message
    return message


# -- the conformance kit ---------------------------------------------------------------------
@pytest.mark.parametrize("name", optim.builtin_names())
def test_every_builtin_optimizer_passes_the_conformance_kit(name):
    """CUDA is left out here: tests/test_optim.py compares every case's CUDA kernel."""
    report = testing.check_optimizer(name, exact=True, cuda=False)
    assert report["cases"] == len({repr(c) for c in ({}, *optim.spec(name).cases)})


@pytest.mark.parametrize("name", tasks.builtin_names())
def test_every_builtin_task_passes_the_conformance_kit(name):
    testing.check_task(name)


@pytest.mark.cuda
def test_the_example_plugins_pass_the_conformance_kit(registries):
    plugins.load(str(EXAMPLES / "adabelief.py"))
    plugins.load(str(EXAMPLES / "parity.py"))
    assert testing.check_optimizer("adabelief", exact=True, steps=10, size=40,
                                   cuda=True)["backends"] == ["numpy", "cpu", "cuda"]
    assert testing.check_task("parity", lengths=[4, 30])["lengths"] == [4, 30]


def test_the_kit_finds_a_kernel_that_differs_from_its_reference(registries, tmp_path):
    # The rule forgets the second moment's bias correction that the reference applies.
    text = ADABELIEF.replace("(math.sqrt(s) * inv_bc2_sqrt + eps)", "(math.sqrt(s) + eps)")
    plugins.load(write(tmp_path / "wrong.py", text))
    with pytest.raises(AssertionError, match="cpu: params after 30 steps differs from the "
                                             "reference beyond float32 rounding"):
        testing.check_optimizer("adabelief", cuda=False)


def test_the_kit_finds_a_task_that_is_not_deterministic(registries, tmp_path):
    path = write(tmp_path / "noisy.py", (EXAMPLES / "parity.py").read_text().replace(
        "bits = rng.integers(0, 2, (batch_size, length))",
        "bits = np.random.default_rng().integers(0, 2, (batch_size, length))"))
    plugins.load(path)
    with pytest.raises(AssertionError, match="the same Generator state gave different"):
        testing.check_task("parity")


# -- registration and its refusals -----------------------------------------------------------
def spec_of(**changes):
    """The example's AdaBelief spec, changed."""
    namespace = {}
    exec(compile(ADABELIEF.replace("optim.register(optim.Spec(", "SPEC = (optim.Spec("),  # noqa: S102
                 "adabelief.py", "exec"), namespace)
    from dataclasses import replace

    return replace(namespace["SPEC"], **changes)


def test_a_registered_optimizer_runs_on_every_backend_and_in_the_batched_step(registries):
    optim.register(spec_of())
    assert optim.names()[-1] == "adabelief" and "adabelief" not in optim.builtin_names()
    p = np.ones((2, 50), np.float32)
    opt = optim.create("adabelief", backend="cpu", lr=np.array([1e-3, 1e-2]))
    state = opt.init(p)
    opt.step(p, np.full((2, 50), 0.5, np.float32), state)
    assert state.names == ("exp_avg", "exp_avg_var")
    # Step 1: m = (1 - b1) g, s = (1 - b2) (g - m)^2, so the step is lr * g / |g - m| = lr / b1.
    np.testing.assert_allclose(p[:, 0], [1 - 1e-3 / 0.9, 1 - 1e-2 / 0.9], rtol=1e-6)


def bad_rule_spec(rule_source: str, **changes):
    namespace = {}
    exec(textwrap.dedent(rule_source), {"np": np, "math": __import__("math")}, namespace)  # noqa: S102
    return spec_of(rule=namespace["rule"], **changes)


@pytest.mark.parametrize("spec,message", [
    (lambda: spec_of(name="adam"), "optimizer 'adam' (from "),
    (lambda: bad_rule_spec("""
        def rule(i, p, g, s, h):  # the array form: it could write out of bounds
            p[i] = p[i] - h[0] * g[i]
        """), "rule rule(i, p, g, s, h): parameter 'g' is neither a state slot"),
    (lambda: bad_rule_spec("""
        def rule(param, grad, exp_avg, exp_avg_var, step_size, beta2, one_m_beta1,
                 one_m_beta2, eps):
            return param, exp_avg, exp_avg_var
        """), "has no parameter for the scalar 'inv_bc2_sqrt'"),
    (lambda: bad_rule_spec("""
        def rule(param, grad, exp_avg, step_size, inv_bc2_sqrt, one_m_beta1, beta2,
                 one_m_beta2, eps):
            return param, exp_avg
        """), "has no parameter for the slot 'exp_avg_var'"),
    (lambda: bad_rule_spec("""
        def rule(param, grad, exp_avg, exp_avg_var, step_size, inv_bc2_sqrt, one_m_beta1,
                 beta2, one_m_beta2, eps=1e-8):
            return param, exp_avg, exp_avg_var
        """), "must be a plain positional parameter without a default"),
    (lambda: spec_of(constants=lambda h: {"one_m_beta1": 0.1, "beta2": np.float32(0.9),
                                          "one_m_beta2": np.float32(0.1),
                                          "eps": np.float32(1e-8)}),
     "constants(hparams) returned one_m_beta1=0.1 of type float; the kernels compute in "
     "float32"),
    (lambda: spec_of(defaults=dict(betas=(0.9, 0.999), eps=1e-16)), "defaults must be a dict"),
    (lambda: spec_of(defaults=dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-16, xi=0.5)),
     "hyper-parameter 'xi' has no allowed range: give one in ranges={'xi': (lo, hi)}"),
    (lambda: spec_of(slots={"exp_avg": 0.0, "exp_avg_var": float("nan")}),
     "slot 'exp_avg_var' starts at nan"),
    (lambda: spec_of(name="ada belief"), "must be a non-empty string without spaces"),
])
def test_a_spec_that_breaks_the_contract_is_refused_in_one_line(registries, spec, message):
    with pytest.raises(UsageError) as exc:
        optim.register(spec())
    assert message in one_line(exc)
    assert "adabelief" not in optim.names() or message.startswith("optimizer 'adam'")


@pytest.mark.parametrize("rule,message", [
    ("""
    def rule(param, grad, exp_avg, exp_avg_var, step_size, inv_bc2_sqrt, one_m_beta1, beta2,
             one_m_beta2, eps):
        return param - 2.0 * step_size * grad, exp_avg, exp_avg_var   # 2.0: float64
    """, "returns Tuple(float64, float32, float32); it must return (param, exp_avg, exp_avg_var): 3 "
         "values, all float32"),
    ("""
    def rule(param, grad, exp_avg, exp_avg_var, step_size, inv_bc2_sqrt, one_m_beta1, beta2,
             one_m_beta2, eps):
        return param - step_size * grad, exp_avg
    """, "returns UniTuple(float32 x 2); it must return (param, exp_avg, exp_avg_var)"),
    ("""
    def helper(x):  # not register_jitable: Numba cannot call it
        return x
    def rule(param, grad, exp_avg, exp_avg_var, step_size, inv_bc2_sqrt, one_m_beta1, beta2,
             one_m_beta2, eps):
        return helper(param), exp_avg, exp_avg_var
    """, "does not compile with Numba for float32 values"),
])
def test_a_rule_that_returns_the_wrong_dtype_or_does_not_compile_is_refused(registries, rule,
                                                                            message):
    from optbench.optim import contract

    s = bad_rule_spec(rule)
    optim.register(s)  # the static checks pass; compiling finds it
    with pytest.raises(UsageError) as exc:
        contract.check_compiles(s, optim.create("adabelief", backend="numpy").hparams)
    assert message in one_line(exc)


def test_the_same_plugin_twice_is_one_registration_another_under_its_name_is_refused(
        registries, tmp_path):
    first = plugins.load(write(tmp_path / "a.py", ADABELIEF))
    assert plugins.load(str(tmp_path / "a.py")) == first
    with pytest.raises(UsageError) as exc:
        plugins.load(write(tmp_path / "b.py", ADABELIEF.replace("1e-16", "1e-15")))
    assert "optimizer 'adabelief' from plugin" in one_line(exc)
    assert "is already registered from plugin" in str(exc.value)


@pytest.mark.parametrize("make,message", [
    (lambda d: str(d / "missing.py"), "no such file"),
    (lambda d: write(d / "broken.py", "import numpy\nraise RuntimeError('boom')\n"),
     "failed to import: RuntimeError: boom ("),
    (lambda d: write(d / "syntax.py", "def f(:\n"), "failed to import: SyntaxError:"),
    (lambda d: write(d / "needs.py", "import not_a_module_at_all\n"),
     "failed to import: ModuleNotFoundError: No module named 'not_a_module_at_all'"),
    (lambda d: write(d / "empty.py", "x = 1\n"), "registers no optimizer and no task"),
    (lambda d: "no_such_plugin_module", "no module named 'no_such_plugin_module'"),
    (lambda d: "not a module", "neither a .py file nor a module name"),
    (lambda d: write(d / "clash.py", "from optbench import tasks\nfrom optbench.tasks.adding "
                                     "import Adding\ntasks.register(Adding)\n"),
     "task 'adding' (from plugin"),
])
def test_a_bad_plugin_is_one_line(registries, tmp_path, make, message):
    before = set(optim.names()), set(tasks.names())
    with pytest.raises(UsageError) as exc:
        plugins.load(make(tmp_path))
    assert message in one_line(exc)
    assert (set(optim.names()), set(tasks.names())) == before


def test_a_plugin_that_fails_halfway_takes_back_what_it_registered(registries, tmp_path):
    with pytest.raises(UsageError):
        plugins.load(write(tmp_path / "half.py", ADABELIEF + "\nraise ValueError('late')\n"))
    assert "adabelief" not in optim.names()


PLUGIN_TOML = """
name = "mine"
plugins = [{plugins}]
tasks = ["adding"]
lengths = [6]
hidden = [4]
optimizers = ["adabelief", "adam"]
seeds = 1
steps = 20
eval_every = 10
batch_size = 8
[tuning]
lr_points = 1
"""


BAD_PLUGINS = {
    "import_error.py": "import numpy\nraise RuntimeError('boom')\n",
    "array_form.py": ADABELIEF.replace(
        "def rule(param, grad, exp_avg, exp_avg_var, step_size, inv_bc2_sqrt, one_m_beta1, beta2,\n"
        "         one_m_beta2, eps):", "def rule(i, p, g, s, h):"),
    "builtin_name.py": ADABELIEF.replace('name="adabelief"', 'name="adam"'),
    "float64.py": ADABELIEF.replace("m = exp_avg + one_m_beta1", "m = 1.0 * exp_avg + one_m_beta1"),
}


@pytest.mark.parametrize("plugin,message", [
    ("missing.py", "plugins: plugin 'missing.py': no such file"),
    ("import_error.py", "plugins: plugin 'import_error.py' failed to import: RuntimeError: boom"),
    ("array_form.py", "rule rule(i, p, g, s, h): parameter 'g' is neither a state slot"),
    ("builtin_name.py", "optimizer 'adam' (from plugin builtin_name.py) has the name of a "
                        "built-in optimizer"),
    ("float64.py", "rule rule(param, grad, exp_avg, exp_avg_var, step_size, inv_bc2_sqrt, "
                   "one_m_beta1, beta2, one_m_beta2, eps) returns UniTuple(float64 x 3)"),
])
def test_the_run_command_refuses_a_bad_plugin_with_exit_2_before_any_cell(
        registries, tmp_path, capsys, plugin, message):
    """Every kind of bad plugin through the CLI: one line, exit status 2, no store made. (A
    rule cannot write out of bounds: it gets values, not arrays; one written against the
    arrays is refused by its signature.)"""
    for name, text in BAD_PLUGINS.items():
        write(tmp_path / name, text)
    config = write(tmp_path / "mine.toml", PLUGIN_TOML.format(plugins=f'"{plugin}"'))
    assert main(["run", "--config", config, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("optbench run: error: ") and message in err and "\n" not in err
    assert not (tmp_path / "out").exists()  # nothing ran, no store made


def test_plugin_flag_and_toml_key_load_files_relative_to_where_they_are_named(
        registries, tmp_path, monkeypatch):
    (tmp_path / "conf").mkdir()
    write(tmp_path / "conf" / "adabelief.py", ADABELIEF)
    config = write(tmp_path / "conf" / "mine.toml", PLUGIN_TOML.format(plugins='"adabelief.py"'))
    monkeypatch.chdir(tmp_path)
    m = mx.from_toml(config)
    assert m.config["plugins"] == ["adabelief.py"]
    assert {c.optimizer for c in m.cells} == {"adabelief", "adam"}
    with pytest.raises(UsageError, match="--plugin: plugin 'adabelief.py': no such file"):
        plugins.load_all(["adabelief.py"], what="--plugin")


def test_a_plugin_flag_whose_names_the_matrix_does_not_run_says_so(
        registries, tmp_path, capsys):
    write(tmp_path / "adabelief.py", ADABELIEF)
    assert main(["run", "smoke", "--plugin", str(tmp_path / "adabelief.py"), "--dry-run",
                 "--out", str(tmp_path / "out")]) == 0
    first = capsys.readouterr().err.splitlines()[0]
    assert first == ("note: --plugin added adabelief, which matrix smoke does not run; name "
                     "them in a TOML file's optimizers or tasks and run it with --config")


def test_a_plugin_flag_whose_names_the_matrix_runs_needs_no_note(registries, tmp_path, capsys):
    write(tmp_path / "adabelief.py", ADABELIEF)
    config = write(tmp_path / "mine.toml", PLUGIN_TOML.format(plugins=""))
    assert main(["run", "--config", config, "--plugin", str(tmp_path / "adabelief.py"),
                 "--dry-run", "--out", str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err
    assert "matrix mine:" in err and "note:" not in err


# -- cell keys --------------------------------------------------------------------------------
def test_builtin_cells_keep_their_keys():
    """Keys computed by the optbench before plugins existed: stores made then still resume."""
    assert Cell().key == "0b0fca9f5f77d98213cf"
    assert Cell(task="copy", length=20, optimizer="sgd", hparams={"lr": 0.1, "momentum": 0.9},
                clip_norm=None).key == "7600832b874113ed22e4"
    assert all(c.code is None for c in mx.from_preset("smoke").cells)


def test_plugin_cells_are_keyed_on_the_plugins_code(registries, tmp_path):
    config = write(tmp_path / "mine.toml", PLUGIN_TOML.format(plugins='"adabelief.py"'))
    write(tmp_path / "adabelief.py", ADABELIEF)
    keys = {c.optimizer: c.key for c in mx.from_toml(config).cells}
    assert {c.optimizer: c.code is None for c in mx.from_toml(config).cells} == {
        "adabelief": False, "adam": True}
    optim.unregister("adabelief")
    write(tmp_path / "adabelief.py", ADABELIEF.replace("e = grad - m", "e = grad - m  # edited"))
    again = {c.optimizer: c.key for c in mx.from_toml(config).cells}
    assert again["adam"] == keys["adam"]
    assert again["adabelief"] != keys["adabelief"]  # even a comment: the source changed


def test_a_worker_with_other_plugin_code_refuses_the_cell(registries, tmp_path):
    from optbench.train import run_cell

    write(tmp_path / "adabelief.py", ADABELIEF)
    cell = next(c for c in mx.from_toml(write(tmp_path / "mine.toml", PLUGIN_TOML.format(
        plugins='"adabelief.py"'))).cells if c.optimizer == "adabelief")
    stale = Cell(**{**cell.__dict__, "code": "0" * 16})
    with pytest.raises(UsageError, match="was planned with plugin code 0000000000000000"):
        run_cell(stale)


def test_an_entry_point_plugin_loads_in_a_fresh_process(tmp_path):
    """An installed package's entry point (group optbench.plugins) registers without any
    flag: a dist-info on sys.path is what pip leaves."""
    import subprocess

    pkg = tmp_path / "optbench_adabelief"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(ADABELIEF)
    info = tmp_path / "optbench_adabelief-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: optbench-adabelief\n"
                                   "Version: 1.0\n")
    (info / "entry_points.txt").write_text("[optbench.plugins]\nadabelief = optbench_adabelief\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}
    out = subprocess.run([sys.executable, "-c", "from optbench import optim; "
                          "print(optim.names()[-1], optim.origin('adabelief'))"],
                         env=env, capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["adabelief", "entry", "point", "adabelief", "=",
                                  "optbench_adabelief"]


# -- the self-describing store -----------------------------------------------------------------
def _tiny(name, lengths, optimizers=("adam",)):
    return mx.expand(dict(name=name, tasks=["adding"], lengths=lengths, hidden=[4],
                          optimizers=list(optimizers), seeds=1, steps=20, eval_every=10,
                          tiers=["defaults"]))


def test_the_store_describes_its_optimizers_and_tasks_and_merges_lengths(tmp_path):
    import sqlite3

    from helpers import run_cell as fake_run_cell

    from optbench import runner
    from optbench.store import Store, load

    with Store.open(str(tmp_path)) as store:
        runner.execute(_tiny("a", [6]), store, runner.Serial(), fn=fake_run_cell)
        runner.execute(_tiny("b", [9], ["sgd"]), store, runner.Serial(), fn=fake_run_cell)
    r = load(str(tmp_path))
    assert r.optimizers["adam"]["defaults"]["betas"] == [0.9, 0.999]
    assert r.optimizers["sgd"]["origin"] == "built-in" and r.optimizers["sgd"]["source"] == ""
    adding = r.tasks["adding"]
    assert (adding["metric_name"], adding["higher_is_better"]) == ("mse", False)
    assert sorted(adding["lengths"]) == ["6", "9"]  # both matrices' lengths
    assert adding["lengths"]["6"] == {"baseline": 1 / 6, "baseline_loss": 1 / 6,
                                      "threshold": pytest.approx(0.01), "steps": 6}
    assert r.catalog.task("adding", [6]).solved(0.009, 6)
    assert list(r.cells["higher_is_better"].unique()) == [False]

    # A store written before the descriptions: the live registries stand in.
    with sqlite3.connect(tmp_path / "optbench.sqlite") as conn:
        conn.execute("DROP TABLE optimizers")
        conn.execute("DROP TABLE tasks")
    old = load(str(tmp_path))
    assert old.optimizers == {} and "higher_is_better" not in old.cells
    assert selection.pick_lr(old.tier("defaults")).equals(selection.pick_lr(r.tier("defaults")))
    assert old.catalog.task("adding", [6]).threshold(6) == pytest.approx(0.01)
