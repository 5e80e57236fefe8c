r"""NAdam (torch.optim.NAdam): Dozat 2016, ICLR workshop, "Incorporating Nesterov Momentum
into Adam", with the momentum schedule of Sutskever et al. 2013.

With gradient g at step t = 1, 2, ..., learning rate gamma, momentum decay psi:

    g        <- g + lambda * theta                     (weight_decay, coupled)
    theta    <- theta * (1 - gamma * lambda)            (decoupled_weight_decay)
    mu_t      = beta1 * (1 - 0.5 * 0.96^(t * psi))      (momentum schedule)
    P_t       = mu_1 * mu_2 * ... * mu_t                (kept on the host as mu_product)
    m_t       = beta1 * m_{t-1} + (1 - beta1) * g
    v_t       = beta2 * v_{t-1} + (1 - beta2) * g^2
    delta     = sqrt(v_t / (1 - beta2^t)) + eps
    theta    <- theta - gamma * (1 - mu_t) / (1 - P_t) * g / delta
                      - gamma * mu_{t+1} / (1 - P_t * mu_{t+1}) * m_t / delta

P_t is a float32 scalar, as torch keeps it (a float32 tensor), so both round it alike. v's
bias correction multiplies by 1 / (1 - beta2^t) from the host where torch divides (one
division less per element, at most one rounding apart).

Where others differ: Keras's Nadam uses the schedule 0.96^t (no psi: its momentum decays
about 250 times faster than torch's default psi = 4e-3) and epsilon = 1e-7; optax.nadam is
Adam with a Nesterov look-ahead on the bias-corrected m and no momentum schedule.
"""

import math

import numpy as np
from numba.core.extending import register_jitable

from optbench.optim import adam
from optbench.optim.spec import Spec

f32 = np.float32


def _schedule(beta1, psi, t):
    return beta1 * (1 - 0.5 * 0.96 ** (t * psi))


def reference(p, g, state, h):
    lr, eps = h["lr"], h["eps"]
    beta1, beta2 = h["betas"]
    t = state.step
    mu = _schedule(beta1, h["momentum_decay"], t)
    mu_next = _schedule(beta1, h["momentum_decay"], t + 1)
    state.host["mu_product"] = P = f32(state.host["mu_product"] * mu)
    g, m, v = adam.reference_moments(p, g, state, h)
    delta = np.sqrt(v * (1 / (1 - beta2**t))) + eps
    p += -lr * (1 - mu) / (1 - float(P)) * g / delta
    p += -lr * mu_next / (1 - float(P) * mu_next) * m / delta


def scalars(h, state):
    lr = h["lr"]
    beta1, beta2 = h["betas"]
    t = state.step
    mu = _schedule(beta1, h["momentum_decay"], t)
    mu_next = _schedule(beta1, h["momentum_decay"], t + 1)
    state.host["mu_product"] = P = f32(state.host["mu_product"] * mu)
    return {"c_grad": f32(-lr * (1 - mu) / (1 - float(P))),
            "c_avg": f32(-lr * mu_next / (1 - float(P) * mu_next)),
            "inv_bc2": f32(1 / (1 - beta2**t))}


def rule(has_wd, decoupled):
    """The element rule with these options as compile-time constants."""
    update_moments = adam.moments(has_wd, decoupled)

    @register_jitable
    def nadam(param, grad, exp_avg, exp_avg_sq, c_grad, c_avg, inv_bc2, one_m_beta1, beta2,
              one_m_beta2, eps, wd, decay):
        x, d, m, v = update_moments(param, grad, exp_avg, exp_avg_sq, one_m_beta1, beta2,
                                    one_m_beta2, wd, decay)
        delta = math.sqrt(v * inv_bc2) + eps
        x = x + c_grad * d / delta
        return x + c_avg * m / delta, m, v

    return nadam


SPEC = Spec(
    name="nadam",
    torch="torch.optim.NAdam",
    paper="Dozat 2016, ICLR workshop",
    defaults=dict(lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, momentum_decay=4e-3,
                  decoupled_weight_decay=False),
    slots=lambda h: {"exp_avg": 0.0, "exp_avg_sq": 0.0},
    options=lambda h: (h["weight_decay"] != 0, h["decoupled_weight_decay"]),
    scalars=scalars,
    constants=adam.constants,
    rule=rule,
    reference=reference,
    host={"mu_product": 1.0},
    cases=({}, dict(lr=1e-3, betas=(0.85, 0.98), eps=1e-3, weight_decay=1e-2,
                    momentum_decay=1e-2),
           dict(weight_decay=0.1, decoupled_weight_decay=True)),
    doc=__doc__,
)
