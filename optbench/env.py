"""What machine and libraries produced a figure: recorded with every result and benchmark."""

from __future__ import annotations

import os
import platform
import subprocess
from functools import lru_cache
from importlib import metadata

from optbench import __version__


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cuda_status() -> str:
    """'simulator', 'gpu: <name>', or 'unavailable (<why>)'. Never raises."""
    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        return "simulator (NUMBA_ENABLE_CUDASIM=1)"
    try:
        from numba import cuda
    except Exception as exc:  # pragma: no cover - numba itself is a dependency
        return f"unavailable ({type(exc).__name__})"
    try:
        if cuda.is_available():
            name = cuda.get_current_device().name
            return "gpu: " + (name.decode() if isinstance(name, bytes) else str(name))
    except Exception as exc:
        return f"unavailable ({type(exc).__name__}: {str(exc).splitlines()[0][:80]})"
    return "unavailable (no GPU or driver; set NUMBA_ENABLE_CUDASIM=1 for the simulator)"


@lru_cache(maxsize=1)
def git_commit() -> str | None:
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    try:
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here, capture_output=True, text=True, timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() + ("-dirty" if dirty else "")


def numba_threads() -> tuple[str, int]:
    """(threading layer, thread count). The layer is only known once a parallel kernel ran."""
    import numba

    n = numba.get_num_threads()
    try:
        layer = numba.threading_layer()
    except ValueError:
        layer = f"not yet chosen (NUMBA_THREADING_LAYER={numba.config.THREADING_LAYER})"
    return layer, n


def environment(include_cuda: bool = True) -> dict:
    """A flat, JSON-able description of this process's environment."""
    import numpy

    from optbench.nn._jit import layout  # Numba, which importing this module must not load

    layer, threads = numba_threads()
    env = {
        "optbench": __version__,
        "git_commit": git_commit(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "numpy": numpy.__version__,
        "numba": _version("numba"),
        "numba_cuda": _version("numba-cuda"),
        "llvmlite": _version("llvmlite"),
        "scipy": _version("scipy"),
        "pandas": _version("pandas"),
        "matplotlib": _version("matplotlib"),
        "dask": _version("dask"),
        "distributed": _version("distributed"),
        "torch": _version("torch"),
        "numba_threading_layer": layer,
        "numba_threads": threads,
        "nn_layout": layout(),
    }
    if include_cuda:
        env["cuda"] = cuda_status()
    return env
