"""The numpy reference against torch: trajectories and clipping recorded by
tools/make_golden_optim.py (torch version inside the JSON). No torch needed here.

Tolerance for trajectories: 2e-6 absolute (+ 1e-6 relative). Parameters stay within |7|,
where a float32 ulp is at most 4.8e-7; torch's CPU kernels use FMAs and lerp where the
reference does a plain multiply and add, one rounding apart per operation, and on this
contracting quadratic such differences stay at a few ulps over 300 steps (at most 7.8e-7
when the fixture was made). A wrong formula moves far more: epsilon inside the square root,
or Keras's epsilon-hat, shifts the eps = 1e-3 Adam case by about 1e-3. State vectors are
running averages whose every entry carries roundings of the size of their largest entry's
ulp, so they are compared at 2e-6 of their largest entry.
"""

import numpy as np
import pytest
from optim_cases import CASE_IDS, CASES, FIXTURES, GOLDEN, golden_case

from optbench import optim

DATA = np.load(FIXTURES / "optim_golden.npz")
REGENERATE = (f"fixture made with torch {GOLDEN['torch']}; if the reference changed on "
              f"purpose, regenerate it: {GOLDEN['command']}")


def trajectory(name, hparams):
    opt = optim.create(name, backend="numpy", **hparams)
    theta = DATA["theta0"].copy()
    state = opt.init(theta)
    snaps = []
    for t in range(1, GOLDEN["steps"] + 1):
        grads = DATA["curvature"] * (theta - DATA["center"]) + DATA["noise"][t - 1]
        opt.step(theta, grads, state)
        if t in GOLDEN["snapshots"]:
            snaps.append(theta.copy())
    return np.stack(snaps), state


@pytest.mark.parametrize("name,hparams", CASES, ids=CASE_IDS)
def test_reference_follows_torch(name, hparams):
    case = golden_case(name, hparams)
    assert case is not None, f"no torch trajectory for {name} {hparams}. {REGENERATE}"
    snaps, state = trajectory(case["optimizer"], case["hparams"])
    i = case["id"]
    torch_snaps = DATA[f"{i}/params"]
    for row, t in enumerate(GOLDEN["snapshots"]):
        np.testing.assert_allclose(snaps[row], torch_snaps[row], rtol=1e-6, atol=2e-6,
                                   err_msg=f"params after step {t}. {REGENERATE}")
    torch_state = {k.split("/")[-1]: DATA[k] for k in DATA.files if k.startswith(f"{i}/state/")}
    assert set(torch_state) == set(state.names) | set(state.host), REGENERATE
    for slot, value in torch_state.items():
        ours = state.host[slot] if slot in state.host else state[slot]
        np.testing.assert_allclose(ours, value, rtol=1e-6, atol=2e-6 * max(1, np.abs(value).max()),
                                   err_msg=f"state {slot} after the last step. {REGENERATE}")
    assert np.abs(snaps[-1] - DATA["theta0"]).max() > 1e-2, "the case barely moved: no test"


@pytest.mark.parametrize("vector", GOLDEN["clip"]["vectors"])
@pytest.mark.parametrize("backend", ["numpy", "cpu"])
def test_clipping_follows_torch(vector, backend):
    """torch sums the squares in float32, we in float64: norms agree to ~1e-6 relative."""
    g_in = DATA[f"clip/{vector}/in"]
    for max_norm in GOLDEN["clip"]["max_norms"]:
        g = g_in.copy()
        norm = optim.clip_grad_norm(g, max_norm, backend=backend)
        assert norm == pytest.approx(float(DATA[f"clip/{vector}/norm"]), rel=2e-6), REGENERATE
        np.testing.assert_allclose(g, DATA[f"clip/{vector}/norm/{max_norm}"], rtol=2e-6,
                                   err_msg=REGENERATE)
    g = g_in.copy()
    optim.clip_grad_value(g, GOLDEN["clip"]["clip_value"], backend=backend)
    np.testing.assert_array_equal(g, DATA[f"clip/{vector}/value"], err_msg=REGENERATE)
