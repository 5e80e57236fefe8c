r"""Adamax (torch.optim.Adamax): Kingma & Ba 2015, ICLR, arXiv:1412.6980, section 7.1,
Adam with the infinity norm.

With gradient g at step t = 1, 2, ..., learning rate gamma, weight decay lambda:

    g      <- g + lambda * theta                       (weight_decay != 0)
    m_t     = beta1 * m_{t-1} + (1 - beta1) * g
    u_t     = max(beta2 * u_{t-1}, |g| + eps)
    theta  <- theta - gamma / (1 - beta1^t) * m_t / u_t

Where others differ: Keras adds epsilon outside the max, u = max(beta2*u, |g|) and
theta <- theta - gamma/(1-beta1^t) * m / (u + eps), with epsilon = 1e-7 and a default
learning rate of 1e-3 (torch: 2e-3, eps = 1e-8 inside the max).
"""

import numpy as np
from numba.core.extending import register_jitable

from optbench.optim.scalar import maximum
from optbench.optim.spec import Spec

f32 = np.float32


def reference(p, g, state, h):
    lr, eps, wd = h["lr"], h["eps"], h["weight_decay"]
    beta1, beta2 = h["betas"]
    if wd != 0:
        g = g + wd * p
    m, u = state["exp_avg"], state["exp_inf"]
    m += (1 - beta1) * (g - m)
    np.maximum(beta2 * u, np.abs(g) + eps, out=u)
    p -= lr / (1 - beta1**state.step) * m / u


def scalars(h, state):
    beta1 = h["betas"][0]
    return (f32(h["lr"] / (1 - beta1**state.step)),)


def constants(h):
    beta1, beta2 = h["betas"]
    return (f32(1 - beta1), f32(beta2), f32(h["eps"]), f32(h["weight_decay"]))


def rule(has_wd):
    """The element update with these options as compile-time constants."""

    @register_jitable
    def adamax(i, p, g, s, h):
        clr, one_m_beta1, beta2, eps, wd = h
        x = p[i]
        d = g[i]
        if has_wd:
            d = d + wd * x
        m = s[0][i] + one_m_beta1 * (d - s[0][i])
        u = maximum(beta2 * s[1][i], abs(d) + eps)
        s[0][i] = m
        s[1][i] = u
        p[i] = x - clr * m / u

    return adamax


SPEC = Spec(
    name="adamax",
    torch="torch.optim.Adamax",
    paper="Kingma & Ba 2015, ICLR (arXiv:1412.6980), section 7.1",
    defaults=dict(lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0),
    slots=lambda h: {"exp_avg": 0.0, "exp_inf": 0.0},
    options=lambda h: (h["weight_decay"] != 0,),
    scalars=scalars,
    constants=constants,
    rule=rule,
    reference=reference,
    doc=__doc__,
)
