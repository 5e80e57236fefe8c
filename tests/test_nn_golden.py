"""optbench.nn against torch autograd: outputs, loss, every gradient by name and the
||dL/dh_t|| profile, read from fixtures that tools/make_golden_nn.py wrote with torch
(nn.LSTM / GRU / RNN + nn.Linear, float64; the profile from the unrolled cells with
retain_grad on each h_t). torch is not imported here."""

import json
from pathlib import Path

import numpy as np
import pytest

from optbench import nn

FIXTURES = Path(__file__).parent / "fixtures"
META = json.loads((FIXTURES / "nn_golden.json").read_text())
DATA = np.load(FIXTURES / "nn_golden.npz")
REGENERATE = (f"fixtures made with torch {META['torch']}; "
              f"if the model definition changed on purpose, regenerate: {META['made_by']}")
# float64 reproduces torch's float64 to rounding; float32 runs on float32-rounded weights
# with a float32 tanh (|error| < 3e-7): errors seen are 4e-16 and 2e-7 of the largest
# value; the tolerances leave a factor of about 10.
TOL = {"float64": dict(rtol=1e-11, atol=1e-13), "float32": dict(rtol=1e-5, atol=2e-6)}


def load(case: dict, dtype: str):
    get = lambda key: DATA[f"{case['case']}/{key}"]  # noqa: E731
    model = nn.build(case["kind"], case["I"], case["H"], case["O"], head=case["head"],
                     dtype=dtype)
    for name, view in model.views.items():
        view[...] = get(f"param/{name}")
    mask = get("mask") if case["masked"] else None
    return model, get, mask


def check(what, actual, expected, dtype):
    scale = max(1.0, float(np.max(np.abs(expected))))
    tol = TOL[dtype]
    np.testing.assert_allclose(actual, expected, rtol=tol["rtol"], atol=tol["atol"] * scale,
                               err_msg=f"{what} differs from torch ({REGENERATE})")


def test_fixture_index_matches_the_arrays():
    assert len(META["cases"]) == 21
    for case in META["cases"]:
        for key in ("x", "y", "yhat", "loss", "grad_norm_per_step"):
            assert f"{case['case']}/{key}" in DATA.files, (case["case"], key, REGENERATE)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", META["cases"], ids=[c["case"] for c in META["cases"]])
def test_matches_torch(case, dtype):
    model, get, mask = load(case, dtype)
    x = get("x").astype(dtype)
    y = get("y").astype(dtype) if case["loss"] == "mse" else get("y")
    loss, grads, diag = model.loss_and_grad(x, y, loss=case["loss"], mask=mask)
    check("loss", loss, get("loss"), dtype)
    check("outputs", model.predict(x), get("yhat"), dtype)
    for name, view in model.unflatten(grads).items():
        check(f"gradient of {name}", view, get(f"grad/{name}"), dtype)
    check("grad_norm_per_step", diag.grad_norm_per_step, get("grad_norm_per_step"), dtype)


@pytest.mark.slow
def test_matches_torch_with_the_other_layout(tmp_path):
    """The vector layout this CPU does not choose (32 bytes: AVX2 and arm64 machines,
    16-column float32 panels, other padding; 64 bytes: AVX-512), forced, against the same
    fixtures and the product kernels' own tests, in a process with its own Numba cache:
    so both layouts are tested on every machine."""
    import os
    import subprocess
    import sys

    from optbench.nn._jit import VECTOR_BYTES

    other = "32" if VECTOR_BYTES == 64 else "64"
    env = {**os.environ, "OPTBENCH_NN_VECTOR_BYTES": other, "NUMBA_CACHE_DIR": str(tmp_path)}
    cases = " or ".join(f"{kind}/every/xent/masked" for kind in nn.names())
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__,
         str(Path(__file__).with_name("test_nn.py")),
         "-k", f"(test_matches_torch and ({cases}) and not other_layout) or product"],
        cwd=Path(__file__).parents[1], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-3000:]
    import re

    passed = re.search(r"(\d+) passed", out.stdout)
    # the 12 golden cases named above and test_nn.py's 11 product-kernel tests
    assert passed and int(passed.group(1)) == 23, out.stdout[-500:]
