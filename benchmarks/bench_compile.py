"""Numba compile time: what a first run waits for before it computes.

Each figure comes from a fresh Python process (`_common.py` run as a script) that builds
one step and times its first call against a warm call of the same step:

- cold: NUMBA_CACHE_DIR is a new, empty directory, so every kernel the step reaches is
  compiled, as on a first install (Numba 0.68 has no switch that turns `cache=True` off;
  a cache directory of its own starts cold and leaves the checkout's __pycache__ alone);
- warm: a second process with the same directory, now filled: the kernels load from the
  on-disk cache. A change that breaks caching (a kernel compiled with two option sets, an
  uncacheable closure) shows as functions compiled with a warm cache (0 today) and as
  warm seconds rising towards cold.

Targets: the Adam step alone, and the seed's LSTM training step (BPTT, clipping, Adam).
GRU and RNN compile the same shared kernels plus their cells, each another 20-50 s cold
on a 2-core machine; they are left out to keep `asv run --quick` short.
"""

import json
import os
import subprocess
import sys
import tempfile

from . import _common

TARGETS = ["adam", "lstm"]


def _first_call(target: str, cache_dir: str) -> dict:
    import optbench

    env = {**os.environ, "NUMBA_CACHE_DIR": cache_dir,
           # the parent's optbench, whichever that is (see benchmarks/__init__.py)
           "PYTHONPATH": os.path.dirname(os.path.dirname(optbench.__file__))}
    out = subprocess.run([sys.executable, _common.__file__, target], env=env, check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.splitlines()[-1])


def first_calls(target: str) -> dict:
    """{"cold": ..., "warm": ...}, each {"compile_s": first call minus a warm call,
    "compiled": functions Numba compiled}: with an empty cache, then with the cache that
    the cold process filled."""
    with tempfile.TemporaryDirectory(prefix="optbench-numba-cache-") as cache_dir:
        runs = {mode: _first_call(target, cache_dir) for mode in ("cold", "warm")}
    return {mode: {"compile_s": max(0.0, r["first_s"] - r["warm_s"]),
                   "compiled": r["compiled"]}
            for mode, r in runs.items()}


class Compile:
    """First-call overhead of a step, cold (compile) and warm (load from the cache)."""

    params = [TARGETS]
    param_names = ["target"]
    unit = "seconds"
    rounds = 1
    timeout = 600

    def setup_cache(self):
        return {target: first_calls(target) for target in TARGETS}

    setup_cache.timeout = 900

    def track_cold_cache(self, runs, target):
        return runs[target]["cold"]["compile_s"]

    def track_warm_cache(self, runs, target):
        return runs[target]["warm"]["compile_s"]

    def track_compiled_with_warm_cache(self, runs, target):
        return runs[target]["warm"]["compiled"]

    track_compiled_with_warm_cache.unit = "functions"
