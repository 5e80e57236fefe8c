"""Scalar helpers the element rules share, with torch's NaN semantics.

They run in three places: compiled into the Numba CPU and CUDA kernels, and as plain Python
under the CUDA simulator. Constants are float32 so nothing promotes to float64.
"""

import numpy as np
from numba.core.extending import register_jitable

ZERO = np.float32(0.0)
ONE = np.float32(1.0)


@register_jitable
def maximum(a, b):
    """max(a, b) that returns NaN if either is NaN, as torch.maximum does."""
    return a if (a > b or a != a) else b


@register_jitable
def sign(x):
    """-1, 0 or 1 (float32); NaN stays NaN, as torch.sign."""
    if x > ZERO:
        return ONE
    if x < ZERO:
        return -ONE
    return x
