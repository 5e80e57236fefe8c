"""The seed's Keras set-up against Keras 3 itself: Adam with epsilon_hat against
keras.optimizers.Adam trajectories, the models with Keras's weights mapped to torch's
layout against Keras's LSTM / GRU / SimpleRNN + Dense, and the "keras" initialisation
against the weights Keras's initializers drew. The fixtures come from
tools/make_golden_keras.py; neither keras nor torch is imported here."""

import json
from pathlib import Path

import numpy as np
import pytest
from test_nn_reference import assert_close, summed_magnitudes, tolerance

from optbench import nn, optim
from optbench.nn import reference

FIXTURES = Path(__file__).parent / "fixtures"
META = json.loads((FIXTURES / "keras_golden.json").read_text())
DATA = np.load(FIXTURES / "keras_golden.npz")
REGENERATE = (f"fixtures made with keras {META['keras']} ({META['backend']} backend); "
              f"regenerate with: {META['made_by']}")
GATES = {"lstm": 4, "gru": 3, "rnn": 1}


def test_fixture_format_and_index():
    assert META["format"] == 1, REGENERATE
    assert [c["case"] for c in META["adam"]] == [
        "keras-defaults", "keras-defaults-amsgrad", "other-betas-amsgrad"]
    assert len(META["rnn"]) == 6 and len(META["init"]) == 9
    for case in META["adam"]:
        for key in ("theta0", "grads", "float32/path", "float64/path"):
            assert f"adam/{case['case']}/{key}" in DATA.files, REGENERATE


# -- Adam --------------------------------------------------------------------------------
def hparams(case, **extra):
    """optbench's spelling of the case's keras.optimizers.Adam arguments."""
    k = case["hparams"]
    return {"lr": k["learning_rate"], "betas": (k["beta_1"], k["beta_2"]),
            "eps": k["epsilon"], "amsgrad": k["amsgrad"], "epsilon_hat": True} | extra


def adam_bound(case, path, u, keras_float32=False):
    """Per step and element, a bound on |theta_optbench - theta_keras| when both run the
    same rule in floating point with unit roundoff u, each rounding its own way.

    Replayed in float64 along the gradients: m_s, v_s (v-hat with amsgrad), and
    M_s = beta1 M_{s-1} + (1 - beta1) |g_s|, the same average of |g|. Per side:
    - v is a sum of non-negative terms rounded about twice a step: relative error <= 4 s u
      at step s (each step's error is relative to v_s and is then multiplied by
      beta2 < 1), so sqrt(v) + eps errs by <= (2 s + 3) u relatively; max keeps bounds.
    - m sums terms of both signs: its error is relative to M_s, <= 3 s u M_s.
    - the step size alpha_s = lr sqrt(1 - beta2^s) / (1 - beta1^s): a few roundings;
      Keras in float32 also rounds beta1 and beta2 to float32 and forms 1 - beta^s in
      float32, whose relative error is (s + 2) u beta^s / (1 - beta^s) (cancellation),
      halved under the square root for beta2.
    - theta_s = theta_{s-1} - step: one rounding of theta, u |theta_s|.
    The step's error is alpha_s / (sqrt(v_s) + eps) (|dm| + |m_s| r_s); both sides: x 2."""
    k = case["hparams"]
    lr, b1, b2, eps, ams = (k["learning_rate"], k["beta_1"], k["beta_2"], k["epsilon"],
                            k["amsgrad"])
    grads = DATA[f"adam/{case['case']}/grads"]
    m = M = v = vhat = np.zeros(grads.shape[1])
    total = np.zeros_like(m)
    bounds = []
    for s, g in enumerate(grads, 1):
        m = b1 * m + (1 - b1) * g
        M = b1 * M + (1 - b1) * np.abs(g)
        v = b2 * v + (1 - b2) * g * g
        vhat = np.maximum(vhat, v) if ams else v
        alpha = lr * np.sqrt(1 - b2**s) / (1 - b1**s)
        r = (2 * s + 3) * u + 6 * u
        if keras_float32:
            r += ((s + 2) * u * b2**s / (1 - b2**s) / 2 + (s + 2) * u * b1**s / (1 - b1**s))
        step_error = alpha / (np.sqrt(vhat) + eps) * (3 * s * u * M + np.abs(m) * r)
        total = total + 2 * (u * np.abs(path[s - 1]) + step_error)
        bounds.append(total)
    return np.array(bounds), {"m": m, "M": M, "v": v, "vhat": vhat}


def keras_path(case, dtype):
    return DATA[f"adam/{case['case']}/{dtype}/path"]


def run_adam(case, backend, dtype, **extra):
    """theta after every step of optbench's adam on the case's gradients, and the state."""
    theta0 = DATA[f"adam/{case['case']}/theta0"].astype(dtype)
    opt = optim.create("adam", backend=backend, **hparams(case, **extra))
    state = opt.init(theta0.astype(np.float32))  # the slot names; float64 below if asked
    if dtype == np.float64:  # the numpy reference is dtype-generic: run it in float64
        state.slots = tuple(np.zeros_like(theta0) for _ in state.slots)
    p, path = theta0.copy(), []
    for g in DATA[f"adam/{case['case']}/grads"]:
        if dtype == np.float64:
            state.step += 1
            opt.spec.reference(p, g.copy(), state, opt.hparams)
        else:
            opt.step(p, g.astype(np.float32), state)
        path.append(p.copy())
    return np.array(path), state


@pytest.mark.parametrize("case", META["adam"], ids=[c["case"] for c in META["adam"]])
def test_reference_in_float64_follows_keras_in_float64(case):
    """The formula: optbench's numpy reference run on float64 arrays against Keras with
    floatx float64, to the float64 rounding bound; and the end state by Keras's names."""
    path, state = run_adam(case, "numpy", np.float64)
    want = keras_path(case, "float64")
    bound, replay = adam_bound(case, want, 2.0**-53)
    assert (np.abs(path - want) <= bound).all(), REGENERATE
    steps = case["steps"]
    prefix = f"adam/{case['case']}/float64/state/theta_"
    u = 2.0**-53
    np.testing.assert_allclose(state["exp_avg"], DATA[prefix + "momentum"], rtol=0,
                               atol=2 * 3 * steps * u * replay["M"].max())
    np.testing.assert_allclose(state["exp_avg_sq"], DATA[prefix + "velocity"],
                               rtol=2 * 4 * steps * u)
    if case["hparams"]["amsgrad"]:
        np.testing.assert_allclose(state["max_exp_avg_sq"], DATA[prefix + "velocity_hat"],
                                   rtol=2 * 4 * steps * u)


@pytest.mark.parametrize("backend", ["numpy", "cpu"])
@pytest.mark.parametrize("case", META["adam"], ids=[c["case"] for c in META["adam"]])
def test_float32_adam_follows_keras_float32(case, backend):
    """What the seed program ran: Keras's float32 Adam against optbench's float32 step
    (reference and CPU kernel), within the float32 bound, Keras's float32 powers of beta
    included. torch's epsilon convention on the same data is far outside that bound,
    so the test tells the conventions apart."""
    path, _ = run_adam(case, backend, np.float32)
    want = keras_path(case, "float32")
    bound, _ = adam_bound(case, want, 2.0**-24, keras_float32=True)
    worst = np.unravel_index(np.argmax(np.abs(path - want) - bound), bound.shape)
    assert (np.abs(path - want) <= bound).all(), (
        f"step {worst[0] + 1}, element {worst[1]}: {path[worst]} vs keras {want[worst]}, "
        f"bound {bound[worst]:.3g} ({REGENERATE})")
    torch_form, _ = run_adam(case, backend, np.float32, epsilon_hat=False)
    assert (np.abs(torch_form - want) > 10 * bound).any()


# -- the models with Keras's weights -----------------------------------------------------
def from_keras(kind, w):
    """torch-layout views from Keras's weights: kernels transposed; Keras's GRU orders its
    gate blocks z, r, h where torch has r, z, n, and keeps the input and recurrent biases
    as rows 0 and 1; LSTM and SimpleRNN have one bias, put in bias_ih_l0."""
    G = GATES[kind]
    H = w["recurrent_kernel"].shape[0]
    order = np.arange(G * H)
    if kind == "gru":
        order = np.concatenate([np.arange(H, 2 * H), np.arange(H), np.arange(2 * H, 3 * H)])
    bias = w["bias"] if w["bias"].ndim == 2 else np.stack([w["bias"], np.zeros(G * H)])
    return {"weight_ih_l0": w["kernel"][:, order].T, "weight_hh_l0": w["recurrent_kernel"][:, order].T,
            "bias_ih_l0": bias[0][order], "bias_hh_l0": bias[1][order],
            "head.weight": w["dense/kernel"].T, "head.bias": w["dense/bias"]}


@pytest.mark.parametrize("case", META["rnn"], ids=[c["case"] for c in META["rnn"]])
def test_model_with_mapped_weights_matches_keras(case):
    """Keras's LSTM / GRU / SimpleRNN(H) + Dense(O), float32 (what Keras computes on the
    torch backend), MSE: its outputs, loss and gradients (mapped to torch's layout as the
    weights are) against optbench's float32 model and the float64 reference on the same
    weights, within test_nn_reference's float32 rounding bound."""
    def get(key):
        return DATA[f"rnn/{case['case']}/{key}"]

    kind, head = case["kind"], case["head"]
    names = ("kernel", "recurrent_kernel", "bias", "dense/kernel", "dense/bias")
    views = from_keras(kind, {n: get(f"weight/{n}") for n in names})
    grads = from_keras(kind, {n: get(f"grad/{n}") for n in names})
    if kind != "gru":  # one Keras bias: torch's two each receive its whole gradient
        grads["bias_hh_l0"] = grads["bias_ih_l0"]
    model = nn.build(kind, case["I"], case["H"], case["O"], head=head)
    for name, v in model.views.items():
        v[...] = views[name]  # float32 values: exact
    x, y = get("x"), get("y")
    value, g, _ = model.loss_and_grad(x, y)
    with summed_magnitudes() as sums:
        ref_value, ref_grads, _ = reference.loss_and_grad(kind, views, x, y, head, "mse")
    tol = tolerance(np.float32, case["B"], case["T"], case["I"], case["H"])
    assert_close(f"outputs ({REGENERATE})", model.predict(x), get("yhat"), tol)
    for label, (loss, by_name) in (("reference", (ref_value, ref_grads)),
                                   ("model", (value, model.unflatten(g)))):
        assert_close(f"{label}: loss", loss, get("loss"), tol)
        for name in reference.NAMES:
            assert_close(f"{label}: gradient of {name} ({REGENERATE})", by_name[name],
                         grads[name], tol, sums[name])


def test_a_wrong_gate_order_is_caught():
    """The mapping test can fail: Keras's GRU blocks taken in their own order (z, r, h)
    give another model, far outside the tolerance."""
    def get(key):
        return DATA[f"rnn/gru/last/{key}"]

    w = {n: get(f"weight/{n}") for n in ("kernel", "recurrent_kernel", "bias", "dense/kernel",
                                         "dense/bias")}
    views = from_keras("gru", w)
    views |= {"weight_ih_l0": w["kernel"].T, "weight_hh_l0": w["recurrent_kernel"].T,
              "bias_ih_l0": w["bias"][0], "bias_hh_l0": w["bias"][1]}
    value = reference.loss_and_grad("gru", views, get("x"), get("y"))[0]
    assert abs(value - float(get("loss"))) > 1e-3 * abs(float(get("loss")))


# -- Keras's initializers ---------------------------------------------------------------
def check_keras_defaults(kind, kernel, recurrent, bias, what):
    """The definition of Keras 3's defaults, on Keras-layout weights (input_dim 3, 8 units):
    recurrent kernel with orthonormal rows (float32 draws: to 1e-6), squared norm H; kernel
    inside the whole kernel's Glorot limit and past 0.8 of it (3 x 8 G >= 24 draws pass
    0.8 a with probability >= 1 - 0.9^24 = 0.92 each; three seeds per kind); biases 0 but
    LSTM's forget block 1."""
    G, H = GATES[kind], 8
    assert kernel.shape == (3, G * H) and recurrent.shape == (H, G * H), what
    np.testing.assert_allclose(recurrent @ recurrent.T, np.eye(H), atol=1e-6, err_msg=what)
    assert np.sum(recurrent.astype(np.float64)**2) == pytest.approx(H, rel=1e-6), what
    limit = np.sqrt(6 / (3 + G * H))
    assert np.abs(kernel).max() <= limit * (1 + 1e-6), what
    expected = np.zeros((2, G * H) if kind == "gru" else G * H)
    if kind == "lstm":
        expected[H:2 * H] = 1
    assert np.array_equal(bias, expected), what
    return np.abs(kernel).max() / limit


@pytest.mark.parametrize("kind", list(GATES))
def test_keras_initializers_and_ours_meet_the_same_definition(kind):
    reach = {"keras": [], "optbench": []}
    for seed in range(3):
        drawn = [DATA[f"init/{kind}/{seed}/{key}"] for key in ("kernel", "recurrent_kernel",
                                                               "bias")]
        reach["keras"].append(check_keras_defaults(kind, *drawn, f"keras {kind} {seed}"))
        v = nn.build(kind, 3, 8, 1, seed=seed, init="keras", dtype="float64").views
        bias = v["bias_ih_l0"] if kind != "gru" else np.stack([v["bias_ih_l0"], v["bias_hh_l0"]])
        assert kind == "gru" or not v["bias_hh_l0"].any()
        reach["optbench"].append(check_keras_defaults(
            kind, v["weight_ih_l0"].T, v["weight_hh_l0"].T, bias, f"optbench {kind} {seed}"))
    for who, r in reach.items():
        assert max(r) > 0.8, (who, r)  # uniform over the whole range, not a narrower one
