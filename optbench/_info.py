"""`python -m optbench info`: what this machine and its libraries are."""

from __future__ import annotations

import json


def configure(parser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def run(args) -> int:
    from optbench.env import environment

    # Run one tiny parallel kernel so Numba picks (and we can report) its threading layer.
    import numba
    import numpy as np

    @numba.njit(parallel=True, cache=False)
    def _touch(a):
        for i in numba.prange(a.size):
            a[i] += 1.0

    _touch(np.zeros(4))
    env = environment()
    if args.json:
        print(json.dumps(env, indent=2))
        return 0
    width = max(map(len, env))
    for key, value in env.items():
        print(f"{key:<{width}}  {value if value is not None else '-'}")
    return 0
