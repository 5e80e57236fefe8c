"""The CUDA kernels compile for a real device, not only in the simulator: tools/check_cuda_ptx.py
--ir types Adam's 1-D and batched step kernels and the clipping kernels for the CUDA target
and lowers them to NVVM IR (no GPU, no NVVM needed), with no float64 in the steps."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.cuda
def test_step_kernels_lower_for_a_real_device_in_float32():
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    out = subprocess.run([sys.executable, "tools/check_cuda_ptx.py", "--ir", "--optimizers",
                          "adam"], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    lines = dict(re.findall(r"^ok +(.+?): \d+ NVVM IR lines, (\d+) with double$", out.stdout,
                            re.M))
    steps = [label for label in lines if label.startswith("adam")]
    assert len(steps) == 6 and sum(label.endswith("batched") for label in steps) == 3
    assert all(lines[label] == "0" for label in steps)
    assert int(lines["sum_squares"]) > 0  # its float64 sums: the check does see doubles
    assert {"scale", "clamp"} <= set(lines)


@pytest.mark.cuda
def test_lockstep_kernels_lower_for_a_real_device_in_float32():
    """Every kernel of optbench.lockstep.cuda_kernels, for LSTM, GRU and RNN, head on the
    last step with MSE and on every step with cross-entropy: typed for the CUDA target,
    lowered to NVVM IR, no float64 anywhere (what the simulator cannot check)."""
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    out = subprocess.run([sys.executable, "tools/check_cuda_ptx.py", "--ir", "--only",
                          "lockstep"], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=600, check=False)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    lines = dict(re.findall(r"^ok +(lockstep .+?): \d+ NVVM IR lines, (\d+) with double$",
                            out.stdout, re.MULTILINE))
    kernels = ("pack", "forward", "predict", "loss_terms", "reduce_rows", "backward",
               "weight_grads", "head_grads")
    expected = {f"lockstep {cell} ({variant}) {k}" for cell in ("lstm", "gru", "rnn")
                for variant in ("last, mse", "every, xent") for k in kernels}
    assert set(lines) == expected
    assert all(n == "0" for n in lines.values())
