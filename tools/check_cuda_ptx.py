"""Compile every CUDA kernel of optbench.optim to PTX, without a GPU, and check the step
kernels do all their arithmetic in float32.

The CUDA simulator runs the kernels as Python, so it never checks that Numba can compile
them; this does. It needs NVVM and NVRTC (no driver, no GPU):

    pip install --target /tmp/nvvm 'nvidia-cuda-nvcc==13.*' 'nvidia-cuda-nvrtc==13.*'
    LD_LIBRARY_PATH=/tmp/nvvm/nvidia/cu13/lib PYTHONPATH=/tmp/nvvm \
        python tools/check_cuda_ptx.py [--cc 9.0]

It covers the kernel tests' table of cases (tests/fixtures/optim_golden.json), so every
code path of every rule is compiled. Exit status 1 if any kernel fails or uses float64.
"""

from __future__ import annotations

import argparse
import json
import sys
import types as pytypes
from pathlib import Path

CASES = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "optim_golden.json"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cc", default="9.0", help="compute capability (default 9.0)")
    cc = tuple(int(x) for x in parser.parse_args().cc.split("."))

    import numba.cuda.dispatcher as dispatcher
    from numba import cuda, types

    # Device functions ask the current device for its compute capability; there is none.
    dispatcher.get_current_device = lambda: pytypes.SimpleNamespace(compute_capability=cc)

    from optbench import optim
    from optbench.optim import cuda_kernels

    vec = types.Array(types.float32, 1, "C")
    failures = 0

    def check(label, fn, sig, allow_f64=False):
        nonlocal failures
        try:
            ptx, _ = cuda.compile_ptx(fn, sig, cc=cc)
        except Exception as exc:  # report every kernel, then fail
            failures += 1
            print(f"FAIL  {label}: {type(exc).__name__}: {str(exc).splitlines()[0]}")
            return
        f64 = sum(".f64" in line for line in ptx.splitlines())
        bad = f64 and not allow_f64
        failures += bool(bad)
        print(f"{'FAIL' if bad else 'ok  '}  {label}: {len(ptx.splitlines())} PTX lines, "
              f"{f64} with .f64")

    for case in json.loads(CASES.read_text())["cases"]:
        opt = optim.create(case["optimizer"], backend="numpy", **case["hparams"])
        state = opt.init(__import__("numpy").zeros(1, "float32"))
        state.step = 1
        nh = len(opt.spec.scalars(opt.hparams, state) + opt.spec.constants(opt.hparams))
        kernel = cuda_kernels.step_kernel(opt.spec.rule, opt.spec.options(opt.hparams))
        sig = (vec, vec, types.UniTuple(vec, len(opt.slots)), types.UniTuple(types.float32, nh))
        check(f"{case['optimizer']} {case['hparams']}", kernel.py_func, sig)
    check("sum_squares", cuda_kernels.sum_squares.py_func,
          (vec, types.Array(types.float64, 1, "C")), allow_f64=True)
    check("scale", cuda_kernels.scale.py_func, (vec, types.float32))
    check("clamp", cuda_kernels.clamp.py_func, (vec, types.float32))
    print("all kernels compile, float32 throughout the steps" if not failures
          else f"{failures} kernel(s) failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
