"""Compile every CUDA kernel of optbench.optim and optbench.lockstep to PTX, without a GPU,
and check the step kernels do all their arithmetic in float32.

The CUDA simulator runs the kernels as Python, so it never checks that Numba can compile
them; this does. It needs NVVM and NVRTC (no driver, no GPU):

    pip install --target /tmp/nvvm 'nvidia-cuda-nvcc==13.*' 'nvidia-cuda-nvrtc==13.*'
    LD_LIBRARY_PATH=/tmp/nvvm/nvidia/cu13/lib PYTHONPATH=/tmp/nvvm \
        python tools/check_cuda_ptx.py [--cc 9.0]

It covers every registered optimizer's `cases` (the table the kernel tests run), so every
code path of every rule is compiled, for one model and for K models in one launch; with
`--plugin FILE_OR_MODULE` (repeatable) a plugin's optimizers too. Exit
status 1 if any kernel fails or uses float64. With ptxas on PATH or beside NVVM (the nvcc
wheel has it), it also prints each step kernel's registers per thread and stack frame: the
registers set how many blocks fit on an SM (optbench.optim.tuning), a stack frame would
mean the per-thread element arrays spilled out of registers.

Without NVVM, `--ir` runs Numba's own part only: it types every kernel for a real device
(not the simulator) and lowers it to NVVM IR, checking for `double` there instead of
`.f64` in PTX. That catches what the simulator cannot (a device function or array form the
CUDA target lacks, a float64 promotion) but not NVVM's own errors. tests/test_cuda_ir.py
runs it for Adam and SGD.

    python tools/check_cuda_ptx.py --ir [--optimizers adam,sgd] [--only optim|lockstep]

The lockstep engine's kernels (training step and evaluation of LSTM, GRU and RNN, both
heads and both losses) are checked the same way, all of them float32 throughout.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import types as pytypes
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # this checkout's optbench, not an installed one


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cc", default="9.0", help="compute capability (default 9.0)")
    parser.add_argument("--ir", action="store_true",
                        help="lower to NVVM IR only (needs no NVVM; see the docstring)")
    parser.add_argument("--optimizers", default=None,
                        help="comma-separated optimizers (default: all registered)")
    parser.add_argument("--plugin", action="append", default=[], metavar="FILE_OR_MODULE",
                        help="load a plugin first, so its optimizers are checked too")
    parser.add_argument("--only", choices=("optim", "lockstep"), default=None,
                        help="only the optimizer and clipping kernels, or only the lockstep "
                        "engine's (default: both)")
    args = parser.parse_args()
    cc = tuple(int(x) for x in args.cc.split("."))
    only = set(args.optimizers.split(",")) if args.optimizers else None

    import numba.cuda.dispatcher as dispatcher
    from numba import config, cuda, types
    from numba.cuda.compiler import compile_cuda

    if config.ENABLE_CUDASIM:
        sys.exit("NUMBA_ENABLE_CUDASIM is set: the simulator compiles nothing; unset it")

    # Device functions ask the current device for its compute capability; there is none.
    dispatcher.get_current_device = lambda: pytypes.SimpleNamespace(compute_capability=cc)

    from optbench import optim, plugins
    from optbench.optim import contract, cuda_kernels, tuning

    plugins.load_all(args.plugin, what="--plugin")

    vec = types.Array(types.float32, 1, "C")
    mat = types.Array(types.float32, 2, "C")
    ptxas = None  # NVVM's own ptxas first: the PTX versions match
    if not args.ir:
        ptxas = _beside_nvvm("ptxas") or shutil.which("ptxas")
    f64_mark, unit = (" double", "NVVM IR") if args.ir else (".f64", "PTX")
    failures = 0

    def check(label, fn, sig, allow_f64=False):
        nonlocal failures
        try:
            if args.ir:
                ptx = compile_cuda(fn, types.void, sig, cc=cc).library.get_llvm_str()
            else:
                ptx, _ = cuda.compile_ptx(fn, sig, cc=cc)
        except Exception as exc:  # report every kernel, then fail
            failures += 1
            print(f"FAIL  {label}: {type(exc).__name__}: {str(exc).splitlines()[0]}")
            return
        f64 = sum(f64_mark in line for line in ptx.splitlines())
        bad = f64 and not allow_f64
        failures += bool(bad)
        print(f"{'FAIL' if bad else 'ok  '}  {label}: {len(ptx.splitlines())} {unit} lines, "
              f"{f64} with{f64_mark}" + (_resources(ptxas, ptx, cc) if ptxas else ""))

    if args.only != "optim":
        for label, kernel, sig in lockstep_kernels():
            check(label, kernel.py_func, sig)
    if args.only == "lockstep":
        print(f"all kernels compile to {unit}, float32 throughout" if not failures
              else f"{failures} kernel(s) failed")
        return 1 if failures else 0
    per_thread = tuning.CUDA_ELEMENTS_PER_THREAD
    for name in optim.names():
        if only is not None and name not in only:
            continue
        spec = optim.spec(name)
        if hasattr(spec, "kwargs"):  # a torch class: no kernel
            continue
        for hparams in spec.cases:
            h = optim.create(name, backend="numpy", **hparams).hparams
            lay = contract.layout(spec, h)
            rule = contract.kernel_rule(spec, spec.option_values(h), lay)
            slots, nh = len(lay.slots), len(lay.h_names)
            kernel = cuda_kernels.step_kernel(rule, (), slots, per_thread)
            sig = (vec, vec, types.UniTuple(vec, slots), types.UniTuple(types.float32, nh))
            check(f"{name} {hparams}", kernel.py_func, sig)
            kernel = cuda_kernels.batched_step_kernel(rule, (), slots, per_thread, nh)
            check(f"{name} {hparams} batched", kernel.py_func,
                  (vec, vec, types.UniTuple(vec, slots), mat))
    check("sum_squares", cuda_kernels.sum_squares.py_func,
          (mat, types.Array(types.float64, 2, "C")), allow_f64=True)
    check("scale", cuda_kernels.scale.py_func, (mat, vec))
    check("clamp", cuda_kernels.clamp.py_func, (vec, types.float32))
    print(f"all kernels compile to {unit}, float32 throughout the steps" if not failures
          else f"{failures} kernel(s) failed")
    return 1 if failures else 0


def lockstep_kernels():
    """(label, kernel, signature) of every kernel of optbench.lockstep.cuda_kernels, for
    each cell kind with the head on the last step and MSE, and on every step with
    cross-entropy (the two loss kernels, both head paths), at the launch shapes the engine
    picks for H = 64 (`standard`'s models), batches of 32 and evaluation sets of 512."""
    from numba import types

    from optbench.lockstep import cuda_kernels as ck
    from optbench.lockstep.cuda import launch_shape

    f32, i64 = types.float32, types.int64

    def arr(dims, dtype=f32):
        return types.Array(dtype, dims, "C")

    out = []
    for kind, name in enumerate(("lstm", "gru", "rnn")):
        for every, xent, outputs in ((False, False, 1), (True, True, 9)):
            inputs = 10 if xent else 2
            seq, groups = launch_shape(64, inputs, 32, kind)
            k = ck.kernels(kind, 64, inputs, outputs, every, xent, seq, groups)
            # evaluation: the forward pass at its own launch shape (512 sequences)
            evaluation = ck.kernels(kind, 64, inputs, outputs, every, xent,
                                    *launch_shape(64, inputs, 512, kind, training=False))
            sigs = {
                "pack": (arr(2), arr(3), i64),
                "forward": (arr(4), arr(3), arr(2), arr(4), arr(4), arr(4), arr(4)),
                "predict": (arr(4), arr(3), arr(2), arr(4), arr(4), arr(4), arr(4)),
                "loss_terms": (arr(4), arr(4), arr(3, i64), arr(3), arr(1), arr(4), arr(2)),
                "reduce_rows": (arr(2), i64, arr(1)),
                "backward": (arr(2), arr(4), arr(4), arr(4), arr(4), arr(3)),
                "weight_grads": (arr(4), arr(4), arr(4), arr(2)),
                "head_grads": (arr(4), arr(4), arr(2)),
            }
            what = f"{'every' if every else 'last'}, {'xent' if xent else 'mse'}"
            for kernel, sig in sigs.items():
                source = evaluation if kernel == "predict" else k
                out.append((f"lockstep {name} ({what}) {kernel}", getattr(source, kernel), sig))
    return out


def _beside_nvvm(tool: str) -> str | None:
    """`tool` in the bin folder of the CUDA wheel whose libnvvm is on LD_LIBRARY_PATH."""
    for lib in os.environ.get("LD_LIBRARY_PATH", "").split(os.pathsep):
        path = Path(lib).parent / "bin" / tool
        if lib and path.is_file():
            return str(path)
    return None


def _resources(ptxas: str, ptx: str, cc: tuple) -> str:
    """', N registers, M bytes stack' of the PTX's kernel, as ptxas -v reports them."""
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "k.ptx"
        src.write_text(ptx)
        out = subprocess.run([ptxas, f"-arch=sm_{cc[0]}{cc[1]}", "-v", str(src), "-o",
                              str(Path(tmp) / "k.cubin")], capture_output=True, text=True)
    info = out.stderr
    if out.returncode or "Used " not in info:
        return f", ptxas failed: {(info.strip() or str(out.returncode)).splitlines()[-1]}"
    regs = info.split("Used ")[1].split(" registers")[0]
    stack = info.split(" bytes stack frame")[0].rsplit(None, 1)[-1]
    return f", {regs} registers, {stack} bytes stack"


if __name__ == "__main__":
    sys.exit(main())
