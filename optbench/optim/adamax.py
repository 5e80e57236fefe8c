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

from optbench.optim.pieces import lerp, weight_decay
from optbench.optim.scalar import ONE, maximum
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
    return {"clr": f32(h["lr"] / (1 - beta1**state.step))}


def constants(h):
    beta1, beta2 = h["betas"]
    return {"one_m_beta1": f32(1 - beta1), "beta2": f32(beta2), "eps": f32(h["eps"]),
            "wd": f32(h["weight_decay"])}


def rule(has_wd):
    """The element rule with these options as compile-time constants."""
    decayed = weight_decay(has_wd, False)

    @register_jitable
    def adamax(param, grad, exp_avg, exp_inf, clr, one_m_beta1, beta2, eps, wd):
        x, d = decayed(param, grad, wd, ONE)
        m = lerp(exp_avg, d, one_m_beta1)
        u = maximum(beta2 * exp_inf, abs(d) + eps)
        return x - clr * m / u, m, u

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
    cases=({}, dict(lr=1e-2, betas=(0.8, 0.99), eps=1e-3, weight_decay=1e-2)),
    doc=__doc__,
)
