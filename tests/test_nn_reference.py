"""optbench.nn.reference, the plain numpy model: against torch's fixtures, against central
differences of itself, and as the oracle of the compiled kernels (float32 and float64) on
drawn shapes, heads, losses and masks. torch is not imported here."""

import json
from contextlib import contextmanager
from pathlib import Path
from unittest.mock import patch

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from optbench import nn
from optbench.errors import UsageError
from optbench.nn import reference

FIXTURES = Path(__file__).parent / "fixtures"
META = json.loads((FIXTURES / "nn_golden.json").read_text())
DATA = np.load(FIXTURES / "nn_golden.npz")


def roundings(B, T, n_in, H):
    """How many roundings lie on the longest chain behind any value of the model.

    Each value ends a chain of at most T steps. A step sums K = H + I + 1 products (error
    at most gamma_K ~ K u of the magnitudes summed: Higham, Accuracy and Stability,
    eq. 3.5) and does about 8 more roundings in its element-wise part (optbench's float32
    activations are within 3e-7 of the exact ones, about 5 u); a weight gradient adds a
    sum over B*T rows. Weights drawn at torch's default scale, U(-1/sqrt(H), 1/sqrt(H))
    (the fixtures: twice that, for T = 4-5 steps), do not amplify earlier errors much
    (sigmoid' <= 1/4, tanh' <= 1, ||W_hh|| about 1, forget gate < 1): the errors add up."""
    return T * (H + n_in + 1 + 8) + B * T


def tolerance(dtype, B, T, n_in, H):
    """What two computations of the same model may differ by, relative to the magnitudes
    they sum (`summed_magnitudes`; for the loss and the norms, sums of non-negative terms,
    the largest value), when one runs in `dtype` and the other in float64 or both in
    float64: n u for each side (x 2), and x 4 for the errors of each summed product's
    factors, which are relative to the magnitudes those factors were computed from, not
    to their own (a small h_t, the tanh of a sum that cancels, carries the sum's error)."""
    return 8 * roundings(B, T, n_in, H) * np.finfo(dtype).eps / 2


@contextmanager
def summed_magnitudes():
    """Inside the block, reference.loss_and_grad also adds up |a| |b| of every product that
    its weight gradients sum (the same accumulation on absolute values), into the yielded
    dict of torch names: the scale against which the rounding of such a sum is measured
    (a gradient entry can be far smaller than its terms, e.g. softmax - onehot summed
    over a batch)."""
    sums = {}
    gate, head = reference._gate_grads, reference._head_grads

    def head_too(grads, dyhat, read):
        head(grads, dyhat, read)
        sums.update({name: np.zeros_like(g) for name, g in grads.items()})
        head(sums, abs(dyhat), abs(read))

    def gate_too(grads, d_input, d_hidden, x, h):
        gate(grads, d_input, d_hidden, x, h)
        gate(sums, abs(d_input), abs(d_hidden), abs(x), abs(h))

    with patch.object(reference, "_head_grads", head_too), \
            patch.object(reference, "_gate_grads", gate_too):
        yield sums


def assert_close(what, actual, expected, tol, scale=None):
    """max |actual - expected| <= tol * scale, scale the largest |expected| unless given."""
    scale = float(np.max(np.abs(expected) if scale is None else scale)) or 1.0
    err = float(np.max(np.abs(np.asarray(actual, np.float64) - expected)))
    assert err <= tol * scale, f"{what}: error {err:.3g} > {tol:.3g} x {scale:.3g}"


def assert_model_close(where, got, want, sums, tol):
    """(loss, grads by name, norms) against the reference's, each within `tol`."""
    assert_close(f"{where}: loss", got[0], want[0], tol)
    assert_close(f"{where}: grad_norm_per_step", got[2], want[2], tol)
    for name in reference.NAMES:
        assert_close(f"{where}: gradient of {name}", got[1][name], want[1][name], tol,
                     sums[name])


# -- the reference against torch ----------------------------------------------------------
@pytest.mark.parametrize("case", META["cases"], ids=[c["case"] for c in META["cases"]])
def test_reference_matches_torch(case):
    def get(key):
        return DATA[f"{case['case']}/{key}"]

    views = {name: get(f"param/{name}") for name in reference.NAMES}
    mask = get("mask") if case["masked"] else None
    with summed_magnitudes() as sums:
        ours = reference.loss_and_grad(case["kind"], views, get("x"), get("y"), case["head"],
                                       case["loss"], mask)
    for name in reference.NAMES:
        assert ours[1][name].shape == views[name].shape and ours[1][name].dtype == np.float64
    torch = (get("loss"), {name: get(f"grad/{name}") for name in reference.NAMES},
             get("grad_norm_per_step"))
    tol = tolerance(np.float64, case["B"], case["T"], case["I"], case["H"])
    assert_model_close(case["case"], ours, torch, sums, tol)


# -- the reference against central differences of itself ----------------------------------
CASES = [(kind, head, loss, masked)
         for kind in reference.CELLS for head in reference.HEADS for loss in reference.LOSSES
         for masked in ((False, True) if head == "every" else (False,))]


def draw(kind, head, loss, masked, rng, B, T, n_in, H, n_out, scale=1.0):
    """Torch-named weights U(+-scale/sqrt(H)), inputs, targets and (optionally) a mask of
    non-negative float weights with zeros, never all zero."""
    G = reference.GATES[kind]
    shapes = {"weight_ih_l0": (G * H, n_in), "weight_hh_l0": (G * H, H), "bias_ih_l0": (G * H,),
              "bias_hh_l0": (G * H,), "head.weight": (n_out, H), "head.bias": (n_out,)}
    bound = scale / np.sqrt(H)
    views = {k: rng.uniform(-bound, bound, s) for k, s in shapes.items()}
    x = rng.standard_normal((B, T, n_in))
    every = head == "every"
    if loss == "mse":
        y = rng.standard_normal((B, T, n_out) if every else (B, n_out))
    else:
        y = rng.integers(0, n_out, (B, T) if every else (B,))
    mask = None
    if masked:
        mask = rng.random((B, T)) * (rng.random((B, T)) < 0.7)
        mask[0, 0] = 0.5
    return views, x, y, mask


@pytest.mark.parametrize("kind,head,loss,masked", CASES)
def test_reference_gradient_matches_central_differences(kind, head, loss, masked):
    """(L(p + eps) - L(p - eps)) / (2 eps) for every parameter. Truncation error is
    O(eps^2 L''') ~ 1e-12 and rounding about u |L| / eps ~ 1e-10 here, so 1e-6 relative
    with 1e-8 absolute for near-zero entries leaves room and still catches any wrong term."""
    rng = np.random.default_rng(CASES.index((kind, head, loss, masked)))
    views, x, y, mask = draw(kind, head, loss, masked, rng, B=3, T=4, n_in=2, H=4, n_out=3,
                             scale=2.0)
    grads = reference.loss_and_grad(kind, views, x, y, head, loss, mask)[1]
    eps = 1e-6
    for name, v in views.items():
        numeric = np.empty_like(v)
        for idx in np.ndindex(v.shape):
            keep = v[idx]
            v[idx] = keep + eps
            up = reference.loss_and_grad(kind, views, x, y, head, loss, mask)[0]
            v[idx] = keep - eps
            down = reference.loss_and_grad(kind, views, x, y, head, loss, mask)[0]
            v[idx] = keep
            numeric[idx] = (up - down) / (2 * eps)
        np.testing.assert_allclose(grads[name], numeric, rtol=1e-6, atol=1e-8,
                                   err_msg=f"{kind}/{head}/{loss}: d loss / d {name}")


def test_reference_refuses_unknown_names():
    views, x, y, _ = draw("lstm", "last", "mse", False, np.random.default_rng(0), 2, 3, 2, 3, 1)
    for bad in ({"kind": "lstmx"}, {"head": "all"}, {"loss": "mae"}):
        args = {"kind": "lstm", "head": "last", "loss": "mse"} | bad
        with pytest.raises(UsageError, match="allowed: kind lstm, gru, rnn"):
            reference.loss_and_grad(args["kind"], views, x, y, args["head"], args["loss"])
    with pytest.raises(UsageError, match="mask is only for head 'every'"):
        reference.loss_and_grad("lstm", views, x, y, mask=np.ones((2, 3)))


# -- the compiled kernels against the reference -------------------------------------------
@settings(max_examples=30, deadline=None)
@given(kind=st.sampled_from(nn.names()), head=st.sampled_from(nn.HEADS),
       loss=st.sampled_from(sorted(nn.LOSSES)), masked=st.booleans(),
       shape=st.tuples(st.integers(1, 6), st.integers(1, 8), st.integers(1, 3),
                       st.integers(1, 12), st.integers(1, 3)),
       dtype=st.sampled_from(["float32", "float64"]), seed=st.integers(0, 2**32 - 1))
def test_compiled_model_matches_the_reference(kind, head, loss, masked, shape, dtype, seed):
    """Loss, outputs' gradients by name and ||dL/dh_t|| of optbench.nn.Model, float32 and
    float64, on drawn shapes (odd sizes: partial panels and row tiles), against the
    reference on the same (rounded) weights and inputs."""
    B, T, n_in, H, n_out = shape
    masked = masked and head == "every"
    views, x, y, mask = draw(kind, head, loss, masked, np.random.default_rng(seed), *shape)
    model = nn.build(kind, n_in, H, n_out, head=head, dtype=dtype)
    for name, v in model.views.items():
        v[...] = views[name]  # rounded to the model's dtype
    x = x.astype(dtype)
    if mask is not None:
        mask = mask.astype(dtype)
    value, grads, diag = model.loss_and_grad(x, y, loss=loss, mask=mask)
    with summed_magnitudes() as sums:
        want = reference.loss_and_grad(kind, model.views, x, y, head, loss, mask)
    where = f"{kind}/{head}/{loss}{'/masked' if masked else ''} {shape} {dtype}"
    assert_model_close(where, (value, model.unflatten(grads), diag.grad_norm_per_step), want,
                       sums, tolerance(np.dtype(dtype), B, T, n_in, H))


@pytest.mark.parametrize("kind", nn.names())
def test_float64_model_agrees_with_the_reference_to_1e10_at_a_wider_shape(kind):
    """Whole 32-column panels and several row tiles (H = 40, B = 20), where the compiled
    products take their blocked paths: float64 within 1e-10 of the largest value."""
    B, T, n_in, H, n_out = 20, 12, 3, 40, 2
    views, x, y, mask = draw(kind, "every", "xent", True, np.random.default_rng(11), B, T, n_in,
                             H, n_out)
    model = nn.build(kind, n_in, H, n_out, head="every", dtype="float64")
    for name, v in model.views.items():
        v[...] = views[name]
    value, grads, diag = model.loss_and_grad(x, y, loss="xent", mask=mask)
    with summed_magnitudes() as sums:
        want = reference.loss_and_grad(kind, views, x, y, "every", "xent", mask)
    tol = tolerance(np.float64, B, T, n_in, H)
    assert tol < 1e-10
    assert_model_close(kind, (value, model.unflatten(grads), diag.grad_norm_per_step), want,
                       sums, tol)
