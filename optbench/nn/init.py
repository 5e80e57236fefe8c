"""Parameter initialisation, drawn in float64 from one numpy Generator in a fixed order
(so a float32 and a float64 model of the same seed hold the same values up to rounding).

- Input weights: Glorot uniform, U(-a, a) with a = sqrt(6 / (fan_in + fan_out))
  (Glorot & Bengio 2010, eq. 16), per gate: fan_in = I, fan_out = H.
- Recurrent weights: orthogonal, per gate (each H x H block is orthogonal; Saxe,
  McClelland & Ganguli 2014): Q of the QR factorisation of a standard normal matrix,
  with the signs of R's diagonal folded in so that Q is Haar-distributed (Mezzadri 2007).
- Head: Glorot uniform (fan_in = H, fan_out = O), bias 0.
- Biases 0, except the gate biases below. Each one is put in `bias_ih_l0` only: torch
  adds bias_ih and bias_hh, so a value written in both would count twice.
  "default": LSTM forget-gate bias 1 (Gers et al. 2000; Jozefowicz, Zaremba & Sutskever
  2015), nothing for GRU / RNN.
  "chrono" (Tallec & Ollivier 2018, "Can recurrent neural networks warp time?", sec. 4):
  LSTM b_f = log(u), b_i = -b_f with u ~ U[1, T_max - 1]; GRU b_z = log(u), since z is
  the gate that keeps h_{t-1} in torch's GRU (their leaky-unit argument with
  alpha = 1 - z). T_max is the longest dependency the model should carry, e.g. the
  sequence length. A tanh RNN has no gate to set, so "chrono" is refused for it.

"keras": the defaults of Keras 3's LSTM / GRU / SimpleRNN + Dense, whose weights are
whole kernels in Keras's layout (inputs x units): kernel (I, G*H), recurrent_kernel
(H, G*H), torch's weight_ih_l0 and weight_hh_l0 transposed.
- kernel: Glorot uniform over the whole kernel, a = sqrt(6 / (I + G*H)): smaller than
  the per-gate range above by sqrt((I + H) / (I + G*H)), about 1/2 for LSTM.
- recurrent_kernel: Keras's Orthogonal (keras/src/initializers/random_initializers.py)
  on the non-square (H, G*H) shape: Q of the QR factorisation of a standard normal
  (G*H, H) matrix, signed by R's diagonal, transposed to (H, G*H). Its H rows are
  orthonormal, so torch's weight_hh_l0 has orthonormal columns, W^T W = I_H; no gate's
  H x H block is orthogonal (each holds about 1/G of the squared norm). For the tanh
  RNN (G = 1) the matrix is square and the scheme is the same as "default".
- biases 0; LSTM (unit_forget_bias=True) forget gate 1, in bias_ih_l0, bias_hh_l0 0
  (Keras has one bias vector; torch adds its two). Keras's GRU (reset_after=True) has
  an input and a recurrent bias, both 0, like torch's.
- head (Dense): Glorot uniform (fan_in H, fan_out O), bias 0, as above.
The gate order of Keras's LSTM (i, f, c, o) is torch's (i, f, g, o). Keras's GRU orders
its gates z, r, h where torch has r, z, n; the draws are identically distributed in any
order of the gate blocks (i.i.d. entries; permuting the column blocks of a matrix with
orthonormal rows keeps them orthonormal), so the scheme needs no permutation, but
copying weights from a Keras GRU into torch's layout does.
"""

from __future__ import annotations

import numpy as np

SCHEMES = ("default", "chrono", "keras")


def glorot_uniform(rng: np.random.Generator, fan_out: int, fan_in: int) -> np.ndarray:
    limit = np.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, size=(fan_out, fan_in))


def orthogonal(rng: np.random.Generator, n: int) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((n, n)))
    return q * np.sign(np.diag(r))


def orthogonal_keras(rng: np.random.Generator, rows: int, cols: int) -> np.ndarray:
    """Keras 3's Orthogonal initializer (gain 1) for a (rows, cols) kernel: QR of a standard
    normal (max, min) matrix, Q signed by R's diagonal, transposed when rows < cols."""
    q, r = np.linalg.qr(rng.standard_normal((max(rows, cols), min(rows, cols))))
    q = q * np.sign(np.diag(r))
    return q.T if rows < cols else q


def _keras(views: dict, kind: str, gates: tuple[str, ...], rng: np.random.Generator) -> None:
    """The "keras" scheme (module docstring), drawn in Keras's layout and transposed."""
    hidden = views["weight_hh_l0"].shape[1]
    inputs = views["weight_ih_l0"].shape[1]
    width = len(gates) * hidden
    limit = np.sqrt(6.0 / (inputs + width))
    views["weight_ih_l0"][...] = rng.uniform(-limit, limit, size=(inputs, width)).T
    views["weight_hh_l0"][...] = orthogonal_keras(rng, hidden, width).T
    views["head.weight"][...] = glorot_uniform(rng, hidden, views["head.weight"].shape[0]).T
    if kind == "lstm":
        f = gates.index("f")
        views["bias_ih_l0"][f * hidden:(f + 1) * hidden] = 1.0


def initialise(views: dict, kind: str, gates: tuple[str, ...], rng: np.random.Generator,
               scheme: str = "default", chrono_tmax: float | None = None) -> None:
    """Fill the torch-named `views` of one model in place (see the module docstring)."""
    hidden = views["weight_hh_l0"].shape[1]
    inputs = views["weight_ih_l0"].shape[1]
    for v in views.values():
        v[...] = 0
    if scheme == "keras":
        _keras(views, kind, gates, rng)
        return
    for g in range(len(gates)):
        rows = slice(g * hidden, (g + 1) * hidden)
        views["weight_ih_l0"][rows] = glorot_uniform(rng, hidden, inputs)
        views["weight_hh_l0"][rows] = orthogonal(rng, hidden)
    out = views["head.weight"].shape[0]
    views["head.weight"][...] = glorot_uniform(rng, out, hidden)

    bias = views["bias_ih_l0"]

    def gate(name):
        i = gates.index(name)
        return slice(i * hidden, (i + 1) * hidden)

    if scheme == "chrono":
        log_u = np.log(rng.uniform(1.0, chrono_tmax - 1.0, size=hidden))
        if kind == "lstm":
            bias[gate("f")] = log_u
            bias[gate("i")] = -log_u
        else:  # gru
            bias[gate("z")] = log_u
    elif kind == "lstm":
        bias[gate("f")] = 1.0
