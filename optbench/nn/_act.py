"""sigmoid and tanh for the cells' element-wise code, vectorizable in float32.

Numba calls libm for np.tanh / np.exp one element at a time (no SVML here): a function call
per element, which alone would cost more than the whole LSTM step.
In float32 these functions use Eigen's rational approximation of tanh (a degree 13/6
odd/even polynomial ratio on [-7.9053, 7.9053], clamped outside, as in Eigen's
`ptanh_float`), which LLVM turns into SIMD code (a few multiply-adds per vector); its error against
float64 tanh is below 3e-7 absolute. sigmoid(x) = (1 + tanh(x / 2)) / 2, so it carries
the same absolute error (not relative error: sigmoid(-20) comes out as 0, not 2e-9).
In float64 (gradient checks) they are libm's tanh and 1 / (1 + exp(-x)).

The clamp keeps NaN: `x > c` is false for NaN, so NaN flows through to the output.
"""

from __future__ import annotations

import numpy as np
from numba import types
from numba.extending import overload

from optbench.nn._jit import JIT

_f = np.float32
TANH_CLAMP = _f(7.90531110763549805)
TANH_P = tuple(_f(v) for v in (
    -2.76076847742355e-16, 2.00018790482477e-13, -8.60467152213735e-11,
    5.12229709037114e-08, 1.48572235717979e-05, 6.37261928875436e-04,
    4.89352455891786e-03))
TANH_Q = tuple(_f(v) for v in (
    1.19825839466702e-06, 1.18534705686654e-04, 2.26843463243900e-03,
    4.89352518554385e-03))


def tanh(x):
    """tanh; see the module docstring for the float32 approximation."""
    return np.tanh(x)


def sigmoid(x):
    """The logistic function 1 / (1 + exp(-x))."""
    return 1.0 / (1.0 + np.exp(-x))


def _tanh_f32(x):
    v = TANH_CLAMP if x > TANH_CLAMP else x
    v = -TANH_CLAMP if v < -TANH_CLAMP else v
    x2 = v * v
    p = TANH_P[0]
    p = p * x2 + TANH_P[1]
    p = p * x2 + TANH_P[2]
    p = p * x2 + TANH_P[3]
    p = p * x2 + TANH_P[4]
    p = p * x2 + TANH_P[5]
    p = p * x2 + TANH_P[6]
    q = TANH_Q[0]
    q = q * x2 + TANH_Q[1]
    q = q * x2 + TANH_Q[2]
    q = q * x2 + TANH_Q[3]
    return v * p / q


@overload(tanh, jit_options=JIT)
def _ov_tanh(x):
    if x == types.float32:
        return _tanh_f32
    return lambda x: np.tanh(x)


@overload(sigmoid, jit_options=JIT)
def _ov_sigmoid(x):
    if x == types.float32:
        half = _f(0.5)
        return lambda x: half + half * tanh(half * x)
    return lambda x: 1.0 / (1.0 + np.exp(-x))
