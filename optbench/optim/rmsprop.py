r"""RMSprop (torch.optim.RMSprop): Tieleman & Hinton 2012, Coursera "Neural Networks for
Machine Learning", lecture 6e; the centered form is Graves 2013, arXiv:1308.0850, eqs. 38-45.

With gradient g, learning rate gamma, smoothing alpha, momentum mu, weight decay lambda:

    g      <- g + lambda * theta                       (weight_decay != 0)
    v      <- alpha * v + (1 - alpha) * g^2
    gbar   <- alpha * gbar + (1 - alpha) * g            (centered)
    delta   = sqrt(v - gbar^2) + eps   if centered   else   sqrt(v) + eps
    b      <- mu * b + g / delta;   theta <- theta - gamma * b     (momentum > 0)
    theta  <- theta - gamma * g / delta                            (momentum = 0)

Where others differ: Keras (rho = 0.9, epsilon = 1e-7) and optax (decay = 0.9, eps = 1e-8,
eps_in_sqrt=True) put epsilon inside the square root, g / sqrt(v + eps); Keras also folds
the learning rate into its momentum buffer (b <- mu*b + gamma*g/delta). TF1 started v at 1;
torch, Keras and optax start it at 0. torch's default alpha is 0.99, not 0.9.
"""

import math

import numpy as np
from numba.core.extending import register_jitable

from optbench.optim.pieces import ema_square, lerp, weight_decay
from optbench.optim.scalar import ONE
from optbench.optim.spec import Spec

f32 = np.float32


def reference(p, g, state, h):
    lr, alpha, eps, wd, mu = h["lr"], h["alpha"], h["eps"], h["weight_decay"], h["momentum"]
    if wd != 0:
        g = g + wd * p
    v = state["square_avg"]
    v *= alpha
    v += (1 - alpha) * g * g
    if h["centered"]:
        gbar = state["grad_avg"]
        gbar += (1 - alpha) * (g - gbar)  # alpha * gbar + (1 - alpha) * g, as torch's lerp_
        delta = np.sqrt(v - gbar * gbar) + eps
    else:
        delta = np.sqrt(v) + eps
    if mu > 0:
        b = state["momentum_buffer"]
        b *= mu
        b += g / delta
        p -= lr * b
    else:
        p -= lr * g / delta


def slots(h):
    # torch's state order.
    names = ["square_avg"]
    if h["momentum"] > 0:
        names.append("momentum_buffer")
    if h["centered"]:
        names.append("grad_avg")
    return dict.fromkeys(names, 0.0)


def constants(h):
    alpha = h["alpha"]
    return {"lr": f32(h["lr"]), "alpha": f32(alpha), "one_m_alpha": f32(1 - alpha),
            "eps": f32(h["eps"]), "wd": f32(h["weight_decay"]), "mu": f32(h["momentum"])}


def rule(has_wd, has_momentum, centered):
    """The element rule with these options as compile-time constants."""
    decayed = weight_decay(has_wd, False)

    @register_jitable
    def rmsprop(param, grad, square_avg, momentum_buffer, grad_avg, lr, alpha, one_m_alpha,
                eps, wd, mu):
        # momentum_buffer and grad_avg are absent (0 in, dropped out) without their option.
        x, d = decayed(param, grad, wd, ONE)
        v = ema_square(square_avg, d, alpha, one_m_alpha)
        gbar = grad_avg
        if centered:
            gbar = lerp(grad_avg, d, one_m_alpha)
            delta = math.sqrt(v - gbar * gbar) + eps
        else:
            delta = math.sqrt(v) + eps
        b = momentum_buffer
        if has_momentum:
            b = mu * momentum_buffer + d / delta
            x = x - lr * b
        else:
            x = x - lr * d / delta
        return x, v, b, gbar

    return rmsprop


SPEC = Spec(
    name="rmsprop",
    torch="torch.optim.RMSprop",
    paper="Tieleman & Hinton 2012, lecture 6e; Graves 2013, arXiv:1308.0850 (centered)",
    defaults=dict(lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0,
                  centered=False),
    slots=slots,
    options=lambda h: (h["weight_decay"] != 0, h["momentum"] > 0, h["centered"]),
    constants=constants,
    rule=rule,
    reference=reference,
    cases=({}, dict(lr=1e-3, alpha=0.9, eps=1e-3, weight_decay=1e-2, momentum=0.9,
                    centered=True),
           dict(lr=3e-3, centered=True)),
    doc=__doc__,
)
