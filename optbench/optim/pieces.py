"""Pieces the element rules share, on one element's float32 values.

Each is the element form of a line of the numpy references, with the same operations in
the same order, so a rule built from them stays bit-identical to its reference. They are
`register_jitable`, so Numba inlines them into the fused step kernels (CPU and CUDA).
"""

from numba.core.extending import register_jitable


def weight_decay(has_wd, decoupled):
    """(param, grad) after weight decay: coupled (L2, Adam's weight_decay: the gradient
    gains wd * param) or decoupled (AdamW: the param shrinks by decay = 1 - lr * wd).
    `has_wd` and `decoupled` are compile-time switches."""

    @register_jitable
    def decayed(x, d, wd, decay):
        if has_wd:
            if decoupled:
                x = x * decay
            else:
                d = d + wd * x
        return x, d

    return decayed


@register_jitable
def lerp(m, d, one_m_beta):
    """beta * m + (1 - beta) * d, computed as torch's lerp_ does: m + (1 - beta) * (d - m)."""
    return m + one_m_beta * (d - m)


@register_jitable
def ema_square(v, d, beta, one_m_beta):
    """beta * v + (1 - beta) * d^2 (torch's mul_ then addcmul_)."""
    return beta * v + one_m_beta * d * d
