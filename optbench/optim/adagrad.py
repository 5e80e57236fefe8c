r"""Adagrad (torch.optim.Adagrad): Duchi, Hazan & Singer 2011, JMLR 12, "Adaptive
Subgradient Methods for Online Learning and Stochastic Optimization", diagonal version.

With gradient g at step t = 1, 2, ..., learning rate gamma, decay eta, weight decay lambda:

    g       <- g + lambda * theta                      (weight_decay != 0)
    gamma_t  = gamma / (1 + (t - 1) * eta)              (lr_decay eta)
    G_t      = G_{t-1} + g^2                            (G_0 = initial_accumulator_value)
    theta   <- theta - gamma_t * g / (sqrt(G_t) + eps)

Where others differ: Keras and optax put epsilon inside the square root,
g / sqrt(G + eps), with eps = 1e-7 and G_0 = 0.1 by default (torch: eps = 1e-10 outside,
G_0 = 0); neither has lr_decay.
"""

import math

import numpy as np
from numba.core.extending import register_jitable

from optbench.optim.pieces import weight_decay
from optbench.optim.scalar import ONE
from optbench.optim.spec import Spec

f32 = np.float32


def reference(p, g, state, h):
    lr, wd = h["lr"], h["weight_decay"]
    if wd != 0:
        g = g + wd * p
    clr = lr / (1 + (state.step - 1) * h["lr_decay"])
    G = state["sum"]
    G += g * g
    p -= clr * g / (np.sqrt(G) + h["eps"])


def scalars(h, state):
    return {"clr": f32(h["lr"] / (1 + (state.step - 1) * h["lr_decay"]))}


def constants(h):
    return {"wd": f32(h["weight_decay"]), "eps": f32(h["eps"])}


def rule(has_wd):
    """The element rule with these options as compile-time constants."""
    decayed = weight_decay(has_wd, False)

    @register_jitable
    def adagrad(param, grad, sum, clr, wd, eps):
        x, d = decayed(param, grad, wd, ONE)
        G = sum + d * d
        return x - clr * d / (math.sqrt(G) + eps), G

    return adagrad


SPEC = Spec(
    name="adagrad",
    torch="torch.optim.Adagrad",
    paper="Duchi, Hazan & Singer 2011, JMLR 12",
    defaults=dict(lr=1e-2, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0,
                  eps=1e-10),
    slots=lambda h: {"sum": h["initial_accumulator_value"]},
    options=lambda h: (h["weight_decay"] != 0,),
    scalars=scalars,
    constants=constants,
    rule=rule,
    reference=reference,
    cases=({}, dict(lr=0.05, lr_decay=1e-2, weight_decay=1e-2, initial_accumulator_value=0.1,
                    eps=1e-3)),
    doc=__doc__,
)
