r"""RAdam (torch.optim.RAdam): Liu et al. 2020, ICLR, "On the Variance of the Adaptive
Learning Rate and Beyond", Algorithm 2.

With gradient g at step t = 1, 2, ..., learning rate gamma:

    g        <- g + lambda * theta                     (weight_decay, coupled)
    theta    <- theta * (1 - gamma * lambda)            (decoupled_weight_decay)
    m_t       = beta1 * m_{t-1} + (1 - beta1) * g
    v_t       = beta2 * v_{t-1} + (1 - beta2) * g^2
    mhat      = m_t / (1 - beta1^t)
    rho_inf   = 2 / (1 - beta2) - 1
    rho_t     = rho_inf - 2 t beta2^t / (1 - beta2^t)
    r_t       = sqrt((rho_t - 4)(rho_t - 2) rho_inf / ((rho_inf - 4)(rho_inf - 2) rho_t))
    theta    <- theta - gamma * mhat * r_t * sqrt(1 - beta2^t) / (sqrt(v_t) + eps)  if rho_t > 5
    theta    <- theta - gamma * mhat                                               otherwise

m's bias correction multiplies by 1 / (1 - beta1^t) from the host where torch divides (one
division less per element, at most one rounding apart).

Where others differ: torch adds eps to sqrt(v_t) before the bias correction (an
"epsilon hat", as Keras's Adam), optax.radam after it, sqrt(v_t / (1 - beta2^t)) + eps;
both switch at rho_t > 5 (optax's `threshold`).
"""

import math

import numpy as np
from numba.core.extending import register_jitable

from optbench.optim import adam
from optbench.optim.scalar import ZERO
from optbench.optim.spec import Spec

f32 = np.float32


def _rho(beta2, t):
    rho_inf = 2 / (1 - beta2) - 1
    rho_t = rho_inf - 2 * t * beta2**t / (1 - beta2**t)
    rect = math.sqrt(
        (rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t)
    ) if rho_t > 5 else 0.0
    return rho_t, rect


def reference(p, g, state, h):
    lr, eps = h["lr"], h["eps"]
    beta1, beta2 = h["betas"]
    t = state.step
    _, m, v = adam.reference_moments(p, g, state, h)
    mhat = m * (1 / (1 - beta1**t))
    rho_t, rect = _rho(beta2, t)
    if rho_t > 5:
        p -= mhat * lr * (math.sqrt(1 - beta2**t) / (np.sqrt(v) + eps)) * rect
    else:
        p -= mhat * lr


def scalars(h, state):
    beta1, beta2 = h["betas"]
    t = state.step
    rho_t, rect = _rho(beta2, t)
    return {"inv_bc1": f32(1 / (1 - beta1**t)), "bc2_sqrt": f32(math.sqrt(1 - beta2**t)),
            # 0 while rho_t <= 5: the step is then the plain momentum step
            "rect": f32(rect)}


def constants(h):
    return {"lr": f32(h["lr"]), **adam.constants(h)}


def rule(has_wd, decoupled):
    """The element rule with these options as compile-time constants."""
    update_moments = adam.moments(has_wd, decoupled)

    @register_jitable
    def radam(param, grad, exp_avg, exp_avg_sq, inv_bc1, bc2_sqrt, rect, lr, one_m_beta1,
              beta2, one_m_beta2, eps, wd, decay):
        x, _, m, v = update_moments(param, grad, exp_avg, exp_avg_sq, one_m_beta1, beta2,
                                    one_m_beta2, wd, decay)
        # Both steps are computed and one is picked: a select vectorizes, a branch would not.
        plain = m * inv_bc1 * lr
        rectified = plain * (bc2_sqrt / (math.sqrt(v) + eps)) * rect
        return x - (rectified if rect > ZERO else plain), m, v

    return radam


SPEC = Spec(
    name="radam",
    torch="torch.optim.RAdam",
    paper="Liu et al. 2020, ICLR (arXiv:1908.03265)",
    defaults=dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                  decoupled_weight_decay=False),
    slots=lambda h: {"exp_avg": 0.0, "exp_avg_sq": 0.0},
    options=lambda h: (h["weight_decay"] != 0, h["decoupled_weight_decay"]),
    scalars=scalars,
    constants=constants,
    rule=rule,
    reference=reference,
    cases=({}, dict(lr=3e-3, betas=(0.8, 0.99), eps=1e-3, weight_decay=1e-2),
           dict(weight_decay=0.1, decoupled_weight_decay=True)),
    doc=__doc__,
)
