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
    # torch's state order; the rule finds grad_avg after momentum_buffer when both exist.
    names = ["square_avg"]
    if h["momentum"] > 0:
        names.append("momentum_buffer")
    if h["centered"]:
        names.append("grad_avg")
    return dict.fromkeys(names, 0.0)


def scalars(h, state):
    return ()


def constants(h):
    alpha = h["alpha"]
    return (f32(h["lr"]), f32(alpha), f32(1 - alpha), f32(h["eps"]), f32(h["weight_decay"]),
            f32(h["momentum"]))


def rule(has_wd, has_momentum, centered):
    """The element update with these options as compile-time constants."""

    @register_jitable
    def rmsprop(i, p, g, s, h):
        lr, alpha, one_m_alpha, eps, wd, mu = h
        x = p[i]
        d = g[i]
        if has_wd:
            d = d + wd * x
        v = alpha * s[0][i] + one_m_alpha * d * d
        s[0][i] = v
        if centered:
            k = 2 if has_momentum else 1
            gbar = s[k][i] + one_m_alpha * (d - s[k][i])
            s[k][i] = gbar
            delta = math.sqrt(v - gbar * gbar) + eps
        else:
            delta = math.sqrt(v) + eps
        if has_momentum:
            b = mu * s[1][i] + d / delta
            s[1][i] = b
            p[i] = x - lr * b
        else:
            p[i] = x - lr * d / delta

    return rmsprop


SPEC = Spec(
    name="rmsprop",
    torch="torch.optim.RMSprop",
    paper="Tieleman & Hinton 2012, lecture 6e; Graves 2013, arXiv:1308.0850 (centered)",
    defaults=dict(lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0,
                  centered=False),
    slots=slots,
    options=lambda h: (h["weight_decay"] != 0, h["momentum"] > 0, h["centered"]),
    scalars=scalars,
    constants=constants,
    rule=rule,
    reference=reference,
    doc=__doc__,
)
