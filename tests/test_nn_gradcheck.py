"""Hand-written BPTT against central differences, in float64, for every cell x head x
loss (and a step mask): dL/dp ~ (L(p + eps) - L(p - eps)) / (2 eps) for every parameter.
The differences go through `model.loss`, the streaming forward pass, so they also tie
the evaluation path to the training path."""

import numpy as np
import pytest

from optbench import nn

EPS = 1e-6
CASES = [(kind, head, loss, masked)
         for kind in nn.names() for head in nn.HEADS for loss in ("mse", "xent")
         for masked in ((False, True) if head == "every" else (False,))]


def batch(head, loss, masked, rng, B=3, T=5, I=2, O=3):
    x = rng.standard_normal((B, T, I))
    if loss == "mse":
        y = rng.standard_normal((B, T, O) if head == "every" else (B, O))
    else:
        y = rng.integers(0, O, (B, T) if head == "every" else (B,))
    mask = rng.random((B, T)) * (rng.random((B, T)) < 0.7) if masked else None
    if masked:
        mask[0, 0] = 0.5
    return x, y, mask


@pytest.mark.parametrize("kind,head,loss,masked", CASES)
def test_gradient_matches_central_differences(kind, head, loss, masked):
    rng = np.random.default_rng(CASES.index((kind, head, loss, masked)))
    hidden = {"lstm": 4, "gru": 5, "rnn": 6}[kind]
    model = nn.build(kind, 2, hidden, 3, head=head, seed=3, dtype="float64")
    # Biases and weights away from the init's special values (zero biases, orthogonal W).
    model.params[:] += 0.3 * rng.standard_normal(model.n_params)
    x, y, mask = batch(head, loss, masked, rng)
    value, grads, _ = model.loss_and_grad(x, y, loss=loss, mask=mask)
    assert value == pytest.approx(model.loss(x, y, loss=loss, mask=mask), rel=1e-13)
    grads = grads.copy()
    numeric = np.empty_like(grads)
    for i in range(model.n_params):
        keep = model.params[i]
        model.params[i] = keep + EPS
        up = model.loss(x, y, loss=loss, mask=mask)
        model.params[i] = keep - EPS
        down = model.loss(x, y, loss=loss, mask=mask)
        model.params[i] = keep
        numeric[i] = (up - down) / (2 * EPS)
    for name, g in model.unflatten(grads).items():
        np.testing.assert_allclose(g, model.unflatten(numeric)[name], rtol=1e-6, atol=1e-8,
                                   err_msg=f"{kind}/{head}/{loss}: d loss / d {name}")


@pytest.mark.parametrize("kind", nn.names())
def test_gradient_at_the_benchmark_shape_matches_directional_differences(kind):
    """At the seed's shape (B=32, T=100, H=128: whole panels, several row chunks, and
    T*B rows, so the weight-gradient product runs in several K blocks), for each named
    view v: grads . d = (L(p + eps d) - L(p - eps d)) / (2 eps) for a random direction d
    inside v (seen: relative error <= 2e-8)."""
    rng = np.random.default_rng(7)
    model = nn.build(kind, 2, 128, 1, seed=0, dtype="float64")
    model.params[:] += 0.05 * rng.standard_normal(model.n_params)
    x, y = rng.standard_normal((32, 100, 2)), rng.standard_normal((32, 1))
    grads = model.loss_and_grad(x, y)[1].copy()
    keep = model.params.copy()
    for name, view in model.views.items():
        d = np.zeros(model.n_params)
        model.unflatten(d)[name][...] = rng.standard_normal(view.shape)
        d /= np.linalg.norm(d)
        model.params[:] = keep + 1e-5 * d
        up = model.loss(x, y)
        model.params[:] = keep - 1e-5 * d
        down = model.loss(x, y)
        model.params[:] = keep
        assert grads @ d == pytest.approx((up - down) / 2e-5, rel=1e-6), f"{kind}: {name}"


@pytest.mark.parametrize("kind", nn.names())
@pytest.mark.parametrize("shape", [(1, 1), (6, 2)], ids=["B1-T1", "B6-T2"])
def test_gradient_at_edge_shapes_matches_central_differences(kind, shape):
    """One step of one sequence, and a batch that ends in a partial row tile."""
    B, T = shape
    rng = np.random.default_rng(B)
    model = nn.build(kind, 2, 3, 2, head="every", seed=1, dtype="float64")
    model.params[:] += 0.3 * rng.standard_normal(model.n_params)
    x, y = rng.standard_normal((B, T, 2)), rng.integers(0, 2, (B, T))
    grads = model.loss_and_grad(x, y, loss="xent")[1].copy()
    numeric = np.empty_like(grads)
    for i in range(model.n_params):
        keep = model.params[i]
        model.params[i] = keep + EPS
        up = model.loss(x, y, loss="xent")
        model.params[i] = keep - EPS
        numeric[i] = (up - model.loss(x, y, loss="xent")) / (2 * EPS)
        model.params[i] = keep
    np.testing.assert_allclose(grads, numeric, rtol=1e-6, atol=1e-8)
