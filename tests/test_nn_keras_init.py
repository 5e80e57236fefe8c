"""The "keras" initialisation against the definitions of Keras 3's defaults for LSTM, GRU,
SimpleRNN and Dense (optbench.nn.init): Glorot uniform over the whole input kernel, one
orthogonal recurrent kernel, the forget bias. Keras's own draws: test_keras_golden.py."""

import numpy as np
import pytest

from optbench import nn
from optbench.nn.init import orthogonal_keras

GATES = {"lstm": 4, "gru": 3, "rnn": 1}


@pytest.mark.parametrize("kind", nn.names())
def test_the_whole_recurrent_kernel_is_orthogonal(kind):
    """Keras's recurrent kernel (H, G*H) = weight_hh_l0^T has orthonormal rows, so
    weight_hh_l0 has orthonormal columns, and its squared entries sum to H. The per-gate
    scheme ("default") sums to G*H instead: each H x H block is orthogonal there."""
    H, G = 12, GATES[kind]
    w = nn.build(kind, 3, H, 1, seed=2, init="keras", dtype="float64").views["weight_hh_l0"]
    np.testing.assert_allclose(w.T @ w, np.eye(H), atol=1e-12)
    assert np.sum(w**2) == pytest.approx(H, rel=1e-12)
    per_gate = nn.build(kind, 3, H, 1, seed=2, dtype="float64").views["weight_hh_l0"]
    assert np.sum(per_gate**2) == pytest.approx(G * H, rel=1e-12)
    if G > 1:  # no gate's block is orthogonal on its own
        for g in range(G):
            block = w[g * H:(g + 1) * H]
            assert np.abs(block @ block.T - np.eye(H)).max() > 0.1


def test_orthogonal_keras_follows_keras_definition_on_each_shape():
    """(rows, cols): rows < cols gives orthonormal rows (the transposed Q), else orthonormal
    columns; the draw is Q of a (max, min) normal matrix with R's diagonal positive."""
    for rows, cols in ((3, 12), (12, 3), (5, 5)):
        rng = np.random.default_rng(0)
        k = orthogonal_keras(rng, rows, cols)
        assert k.shape == (rows, cols)
        small = k @ k.T if rows <= cols else k.T @ k
        np.testing.assert_allclose(small, np.eye(min(rows, cols)), atol=1e-12)
        a = np.random.default_rng(0).standard_normal((max(rows, cols), min(rows, cols)))
        q = k.T if rows < cols else k
        r = q.T @ a  # a = q r with r upper triangular, positive diagonal
        np.testing.assert_allclose(np.tril(r, -1), 0, atol=1e-12)
        assert (np.diag(r) > 0).all()


@pytest.mark.parametrize("kind", nn.names())
def test_glorot_limit_is_over_the_whole_input_kernel(kind):
    """U(-a, a), a = sqrt(6 / (I + G*H)) (fan_in I, fan_out G*H of the (I, G*H) kernel);
    48 or more draws pass 0.8 a with probability over 1 - 0.9^48 > 0.99 (the seed is
    fixed). The per-gate range sqrt(6 / (I + H)) is wider, which the default's draws show."""
    I_, H, O_ = 3, 16, 2
    G = GATES[kind]
    v = nn.build(kind, I_, H, O_, seed=5, init="keras", dtype="float64").views
    limit = np.sqrt(6 / (I_ + G * H))
    w = v["weight_ih_l0"]
    assert w.shape == (G * H, I_) and w.size >= 48
    assert np.abs(w).max() <= limit and np.abs(w).max() > 0.8 * limit
    assert np.abs(v["head.weight"]).max() <= np.sqrt(6 / (H + O_))
    if G > 1:
        default = nn.build(kind, I_, H, O_, seed=5, dtype="float64").views["weight_ih_l0"]
        assert np.abs(default).max() > limit


def test_biases_are_zero_but_lstm_forget_gate_one_in_bias_ih():
    H = 6
    lstm = nn.build("lstm", 2, H, 1, init="keras").views
    expected = np.zeros(4 * H, np.float32)
    expected[H:2 * H] = 1  # unit_forget_bias: Keras's [0 (i), 1 (f), 0 (c), 0 (o)]
    assert np.array_equal(lstm["bias_ih_l0"], expected)
    assert not lstm["bias_hh_l0"].any() and not lstm["head.bias"].any()
    for kind in ("gru", "rnn"):
        v = nn.build(kind, 2, H, 1, init="keras").views
        assert not v["bias_ih_l0"].any() and not v["bias_hh_l0"].any()


def test_keras_init_depends_on_the_seed_only_and_on_no_dtype():
    a, b = (nn.build("lstm", 2, 8, 1, seed=3, init="keras") for _ in range(2))
    assert np.array_equal(a.params, b.params)
    assert not np.array_equal(a.params, nn.build("lstm", 2, 8, 1, seed=4, init="keras").params)
    wide = nn.build("lstm", 2, 8, 1, seed=3, init="keras", dtype="float64")
    assert np.array_equal(a.params, wide.params.astype(np.float32))
    assert not np.array_equal(a.params, nn.build("lstm", 2, 8, 1, seed=3).params)
