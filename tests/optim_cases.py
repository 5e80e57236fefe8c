"""Shared by the optimizer tests: the table of cases and a seeded run of any backend.

CASES comes from the registry: every built-in optimizer with each of its spec's `cases`
(its defaults, and non-default hyper-parameters that switch on each of its code paths), so
a new built-in gets every test without editing them. tools/make_golden_optim.py runs the
same table through torch; GOLDEN_CASE finds a case's torch trajectory in that fixture.
"""

import json
from pathlib import Path

import numpy as np

from optbench import optim

FIXTURES = Path(__file__).parent / "fixtures"
GOLDEN = json.loads((FIXTURES / "optim_golden.json").read_text())
CASES = [(name, dict(h)) for name in optim.builtin_names() for h in optim.spec(name).cases]
CASE_IDS = [f"{i}-{name}-" + ("defaults" if not h else "+".join(sorted(h)))
            for i, (name, h) in enumerate(CASES)]


def golden_case(name: str, hparams: dict) -> dict | None:
    """The fixture's entry for (name, hparams) (sequences compared as JSON lists), or None."""
    want = json.loads(json.dumps(hparams))
    return next((c for c in GOLDEN["cases"]
                 if c["optimizer"] == name and c["hparams"] == want), None)


def gradients(rng, n: int) -> np.ndarray:
    """Random float32 gradients spanning five decades, with about 2% exact zeros."""
    g = rng.standard_normal(n) * 10.0 ** rng.uniform(-3, 1, n)
    g[rng.random(n) < 0.02] = 0.0
    return g.astype(np.float32)


def run(name, hparams, backend, n, steps, seed=0):
    """`steps` steps from seeded random params and gradients; returns (params, state) on the
    host (numpy arrays), whatever the backend."""
    rng = np.random.default_rng(seed)
    opt = optim.create(name, backend=backend, **hparams)
    params = rng.standard_normal(n).astype(np.float32)
    if backend == "cuda":
        from numba import cuda

        params = cuda.to_device(params)
    state = opt.init(params)
    for _ in range(steps):
        g = gradients(rng, n)
        opt.step(params, cuda.to_device(g) if backend == "cuda" else g, state)
    if backend == "cuda":
        return params.copy_to_host(), {k: state[k].copy_to_host() for k in state.names}
    return params, {k: state[k] for k in state.names}
