"""The conformance kit for plugin authors: is my optimizer or task one optbench can run?

    from optbench import testing
    testing.check_optimizer("adabelief")       # a registered name, or a Spec not registered
    testing.check_task("parity")               # a registered name, or a Task instance

Each check raises AssertionError naming the first problem (so it works as a pytest test)
and returns what it checked. The package's own tests run both on every built-in optimizer
and task.

check_optimizer, for the defaults and each of the spec's `cases`:
- the spec and its rule keep the contract (`optbench.optim.contract`), and the rule
  compiles with Numba for float32 values and returns float32 (the param and each slot);
- state layout: the state's slots are the spec's, with its initial values;
- the host scalars are numpy.float32 at every step;
- the "cpu" kernel agrees with the numpy reference over `steps` steps of gradients spanning
  five decades (bit for bit with `exact=True`, else within rtol 1e-5 and an atol of 1e-6
  times the largest parameter: a few float32 roundings per step, the difference of two
  orders of the same operations, stay far inside that over tens of steps, and a wrong
  formula does not), and so does "cuda" (the simulator without a GPU; on a GPU NVVM's FMA
  contraction is one rounding apart per operation) when it is available;
- K models in one (K, P) step with per-model learning rates equal K separate steps bit for
  bit (what the batched kernels promise whenever the rule reads nothing but its element);
- determinism: the same steps twice give the same bits;
- bad input: an unknown hyper-parameter and a negative lr are refused with UsageError.

check_task, at its shortest length and a longer one:
- the attributes the loop and the report read (`optbench.tasks` checks them on
  registration); shapes and dtypes of a batch (x float32 (B, steps(T), input_size); y float32
  (B, output_size) for "mse", int64 class indices (B,) or (B, T) for "xent", within
  output_size; mask None or float32 (B, T));
- determinism: the same Generator state gives the same batch, a seed the same validation
  and test sets, and those two differ;
- the baseline and its loss are finite; the solved rule says no at the baseline and yes at
  a perfect score, and flips once between them (the report's threshold);
- bad lengths are refused with UsageError.
"""

from __future__ import annotations

import math

import numpy as np

from optbench.errors import UsageError

F32 = np.float32


def _fail(name: str, message: str):
    raise AssertionError(f"{name}: {message}")


# -- optimizers -----------------------------------------------------------------------------
def _spec(spec_or_name):
    from optbench import optim

    return optim.spec(spec_or_name) if isinstance(spec_or_name, str) else spec_or_name


def _optimizer(spec, backend: str, **hparams):
    """An Optimizer of `spec` (registered or not) on `backend`."""
    from optbench.optim import batch
    from optbench.optim.optimizer import Optimizer

    return Optimizer(spec, *batch.per_model(spec, hparams), backend)


def gradients(rng, n: int) -> np.ndarray:
    """float32 gradients spanning five decades, with about 2 % exact zeros."""
    g = rng.standard_normal(n) * 10.0 ** rng.uniform(-3, 1, n)
    g[rng.random(n) < 0.02] = 0.0
    return g.astype(F32)


def _run(spec, hparams, backend, n, steps, seed=0):
    """(params, {slot: values}) on the host after `steps` steps from seeded data."""
    rng = np.random.default_rng(seed)
    opt = _optimizer(spec, backend, **hparams)
    params = rng.standard_normal(n).astype(F32)
    if backend == "cuda":
        from numba import cuda  # only where a CUDA backend is asked for

        to = cuda.to_device
    else:
        def to(x):
            return x
    p = to(params)
    state = opt.init(p)
    for _ in range(steps):
        g = gradients(rng, n)
        if spec.scalars is not None and backend == "numpy":
            probe = _Probe(state)
            for key, value in spec.scalar_values(opt.hparams, probe).items():
                if type(value) is not F32:
                    _fail(spec.name, f"scalars() returned {key}={value!r} "
                          f"({type(value).__name__}) at step {state.step + 1}; want float32")
        opt.step(p, to(g), state)
    host = (lambda x: x) if backend != "cuda" else (lambda x: x.copy_to_host())
    return host(p), {k: host(state[k]) for k in state.names}


class _Probe:
    """The next step's view of a state, for asking the scalars without side effects."""

    def __init__(self, state):
        self.step = state.step + 1
        self.host = dict(state.host)
        self.names = state.names


def _cuda_available() -> bool:
    try:
        from numba import cuda

        return cuda.is_available()
    except Exception:  # noqa: BLE001 - no numba-cuda, no driver: the check is skipped
        return False


def _compare(name, what, got, want, exact):
    if exact:
        if not np.array_equal(got, want, equal_nan=True):
            bad = np.flatnonzero(~((got == want) | (np.isnan(got) & np.isnan(want))))
            _fail(name, f"{what} differs from the reference at {bad.size} elements (first: "
                  f"index {bad[0]}, {got[bad[0]]!r} vs {want[bad[0]]!r}); exact=True wants "
                  "the same float32 operations in the same order")
        return
    scale = max(1.0, float(np.nanmax(np.abs(want))) if want.size else 1.0)
    try:
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6 * scale)
    except AssertionError as exc:
        _fail(name, f"{what} differs from the reference beyond float32 rounding: "
              + " ".join(str(exc).split())[:300])


def check_optimizer(spec_or_name, *, steps: int = 30, size: int = 257, exact: bool = False,
                    cuda: bool | None = None) -> dict:
    """Check an optimizer against the contract (see the module docstring). `cuda`: None
    checks the CUDA kernel where a GPU or the simulator is there, True requires it. Returns
    {"cases": n, "backends": [...]}; raises AssertionError naming the first problem."""
    from optbench.optim import contract, registry
    from optbench.optim.spec import validate

    spec = _spec(spec_or_name)
    name = getattr(spec, "name", repr(spec))
    try:
        registry.check(spec)
    except UsageError as exc:
        _fail(name, str(exc))
    use_cuda = _cuda_available() if cuda is None else cuda
    backends = ["numpy", "cpu"] + (["cuda"] if use_cuda else [])
    cases = []
    for case in ({}, *spec.cases):
        if case not in cases:
            cases.append(case)
    for case in cases:
        label = f"{name} {case or 'defaults'}"
        h = validate(spec, case)
        try:
            contract.check_compiles(spec, h)
        except UsageError as exc:
            _fail(label, str(exc))
        p = np.zeros(4, F32)
        state = _optimizer(spec, "cpu", **case).init(p)
        want = spec.slot_values(h)
        if state.names != tuple(want):
            _fail(label, f"the state's slots are {state.names}, the spec's {tuple(want)}")
        for slot, start in want.items():
            if not np.array_equal(state[slot], np.full(4, start, F32)):
                _fail(label, f"slot {slot!r} does not start at {start}")
        ref = _run(spec, case, "numpy", size, steps)
        for backend in backends[1:]:
            got = _run(spec, case, backend, size, steps)
            _compare(label, f"{backend}: params after {steps} steps", got[0], ref[0], exact)
            for slot in ref[1]:
                _compare(label, f"{backend}: slot {slot!r} after {steps} steps", got[1][slot],
                         ref[1][slot], exact)
        again = _run(spec, case, "cpu", size, steps)
        first = _run(spec, case, "cpu", size, steps)
        if not np.array_equal(again[0], first[0], equal_nan=True):
            _fail(label, "two runs of the same steps on cpu gave different bits")
        _check_batched(spec, case, label, size, steps)
    for bad, what in (({"not_a_hyper_parameter": 1.0}, "an unknown hyper-parameter"),
                      ({"lr": -1.0}, "lr = -1")):
        try:
            _optimizer(spec, "numpy", **bad)
        except UsageError:
            continue
        _fail(name, f"{what} was accepted; it must raise UsageError")
    return {"cases": len(cases), "backends": backends}


def _check_batched(spec, case, label, size, steps):
    """K = 3 models in one (K, P) cpu step, per-model lr, equal three 1-D steps."""
    from optbench.optim.spec import validate

    lr = validate(spec, case)["lr"]
    lrs = np.array([lr, lr * 0.5, lr * 2.0])
    rng = np.random.default_rng(1)
    params = rng.standard_normal((3, size)).astype(F32)
    grads = [np.stack([gradients(rng, size) for _ in range(3)]) for _ in range(steps)]
    together = _optimizer(spec, "cpu", **{**case, "lr": lrs})
    p = params.copy()
    state = together.init(p)
    for g in grads:
        together.step(p, g, state)
    for k in range(3):
        alone = _optimizer(spec, "cpu", **{**case, "lr": float(lrs[k])})
        q = params[k].copy()
        st = alone.init(q)
        for g in grads:
            alone.step(q, np.ascontiguousarray(g[k]), st)
        if not np.array_equal(p[k], q, equal_nan=True):
            _fail(label, f"model {k} of a (3, P) batched step differs from its own 1-D steps; "
                  "the rule must read nothing but its own element and scalars")


# -- tasks ------------------------------------------------------------------------------------
def _task(task_or_name):
    from optbench import tasks

    return tasks.get(task_or_name) if isinstance(task_or_name, str) else task_or_name


def task_problem(task, length: int, batch_size: int = 3) -> str | None:
    """What is wrong with one batch of `task` at `length` (shapes, dtypes, classes), or None."""
    try:
        x, y, mask = task.sample(np.random.default_rng(0), batch_size, length)
    except UsageError:
        raise
    except Exception as exc:  # noqa: BLE001 - whatever the user's generator raises: one line
        return f"sample() at length {length} failed: {type(exc).__name__}: {exc}"
    steps = task.steps(length)
    if not isinstance(x, np.ndarray) or x.dtype != F32 or x.shape != (batch_size, steps,
                                                                       task.input_size):
        return (f"sample() at length {length}: x must be float32 of shape (B, steps(T), "
                f"input_size) = {(batch_size, steps, task.input_size)}; got "
                f"{getattr(x, 'dtype', type(x).__name__)} {getattr(x, 'shape', '')}")
    if task.loss == "mse":
        want, dtype = (batch_size, task.output_size), F32
    else:
        want = (batch_size,) if task.head == "last" else (batch_size, steps)
        dtype = np.dtype(np.int64)
    if not isinstance(y, np.ndarray) or y.dtype != dtype or y.shape != want:
        return (f"sample() at length {length}: y must be {np.dtype(dtype)} of shape {want} for "
                f"loss {task.loss!r}, head {task.head!r}; got "
                f"{getattr(y, 'dtype', type(y).__name__)} {getattr(y, 'shape', '')}")
    if task.loss == "xent" and (y.min() < 0 or y.max() >= task.output_size):
        return (f"sample() at length {length}: class indices must lie in [0, "
                f"{task.output_size}); got {y.min()}..{y.max()}")
    if mask is not None and (not isinstance(mask, np.ndarray) or mask.dtype != F32
                             or mask.shape != (batch_size, steps)):
        return (f"sample() at length {length}: mask must be None or float32 of shape "
                f"{(batch_size, steps)}")
    if not np.isfinite(x).all() or (task.loss == "mse" and not np.isfinite(y).all()):
        return f"sample() at length {length}: x or y holds NaN or inf"
    return None


def _same(a, b) -> bool:
    return all((u is None and v is None) or (u is not None and v is not None
                                             and np.array_equal(u, v)) for u, v in zip(a, b))


def _allowed(task, length) -> bool:
    try:
        task.check_length(length)
    except UsageError:
        return False
    return True


def check_task(task_or_name, lengths=None) -> dict:
    """Check a task (see the module docstring) at `lengths` (default: its shortest and a
    longer one). Returns {"lengths": [...]}; raises AssertionError naming the first problem."""
    from optbench import tasks as registry

    task = _task(task_or_name)
    name = getattr(task, "name", repr(task))
    problem = registry.contract_problem(task, name)
    if problem:
        _fail(name, problem)
    if lengths is None:  # its shortest and a longer one, where it takes more than one
        lengths = [n for n in (task.min_length, task.min_length + 7) if _allowed(task, n)]
    for length in lengths:
        problem = task_problem(task, length)
        if problem:
            _fail(name, problem)
        a = task.sample(np.random.default_rng(5), 4, length)
        b = task.sample(np.random.default_rng(5), 4, length)
        if not _same(a, b):
            _fail(name, f"sample() at length {length}: the same Generator state gave "
                  "different batches; draw everything from the rng it is given")
        val, test = task.eval_set(0, length, "val"), task.eval_set(0, length, "test")
        if not _same(val, task.eval_set(0, length, "val")):
            _fail(name, f"eval_set(0, {length}, 'val') differs between two calls")
        if val.x.shape == test.x.shape and np.array_equal(val.x, test.x):
            _fail(name, f"the validation and test sets at length {length} are the same data")
        base, loss = task.baseline(length), task.baseline_loss(length)
        if not (math.isfinite(base) and math.isfinite(loss) and loss > 0):
            _fail(name, f"baseline({length}) = {base!r} and baseline_loss({length}) = {loss!r} "
                  "must be finite, the loss > 0")
        perfect = 1.0 if task.higher_is_better else 0.0
        if task.solved(base, length) or not task.solved(perfect, length):
            _fail(name, f"solved() at length {length} must say no at the baseline ({base}) and "
                  f"yes at a perfect {task.metric_name} ({perfect})")
        if task.threshold(length) is None:
            _fail(name, f"solved() at length {length} does not flip once between the baseline "
                  "and a perfect score")
        outputs = np.zeros((4, task.output_size) if task.head == "last"
                           else (4, task.steps(length), task.output_size), F32)
        scores = task.evaluate(outputs, a)
        if not all(math.isfinite(s) for s in scores):
            _fail(name, f"evaluate() of zero outputs at length {length} is not finite: {scores}")
    if not lengths:
        _fail(name, f"its min_length {task.min_length} is not an allowed length")
    for bad in (task.min_length - 1, "10", 2.5):
        try:
            task.check_length(bad)
        except UsageError:
            continue
        _fail(name, f"length {bad!r} was accepted; check_length must raise UsageError")
    return {"lengths": lengths}
