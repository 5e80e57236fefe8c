r"""SGD with momentum, dampening, Nesterov momentum and weight decay (torch.optim.SGD).

With gradient g, learning rate gamma, momentum mu, dampening tau, weight decay lambda:

    g     <- g + lambda * theta                        (weight_decay != 0)
    b_1    = g                                          (momentum != 0; first step: a copy)
    b_t    = mu * b_{t-1} + (1 - tau) * g               (later steps)
    g     <- g + mu * b_t   if nesterov   else   b_t
    theta <- theta - gamma * g

Heavy-ball momentum is Polyak (1964); Nesterov momentum as Sutskever et al. (2013), in the
form of Bengio et al. (2013) that needs the gradient only at the current point.

Where others differ: torch keeps the learning rate outside the buffer (b accumulates
gradients), as optax.sgd's trace does; Keras puts it inside, b <- mu*b - gamma*g and
theta <- theta + b (Nesterov: theta <- theta + mu*b - gamma*g), which differs from torch as
soon as the learning rate changes during training. Keras and optax have no dampening, and
neither copies the first gradient: their buffer starts at zero.
"""

import numpy as np
from numba.core.extending import register_jitable

from optbench.optim.pieces import weight_decay
from optbench.optim.scalar import ONE
from optbench.optim.spec import Spec

f32 = np.float32


def reference(p, g, state, h):
    lr, mu, wd = h["lr"], h["momentum"], h["weight_decay"]
    if wd != 0:
        g = g + wd * p
    if mu != 0:
        b = state["momentum_buffer"]
        if state.step == 1:
            b[:] = g
        else:
            b *= mu
            b += (1 - h["dampening"]) * g
        g = g + mu * b if h["nesterov"] else b
    p -= lr * g


def scalars(h, state):
    # Step 1 copies g into the buffer: b = 0 * b + 1 * g, exact, with no branch in the rule.
    first = state.step == 1
    return {"buf_decay": f32(0.0 if first else h["momentum"]),
            "buf_scale": f32(1.0 if first else 1 - h["dampening"])}


def constants(h):
    return {"lr": f32(h["lr"]), "wd": f32(h["weight_decay"]), "mu": f32(h["momentum"])}


def rule(has_wd, has_momentum, nesterov):
    """The element rule with these options as compile-time constants."""
    decayed = weight_decay(has_wd, False)

    @register_jitable
    def sgd(param, grad, momentum_buffer, buf_decay, buf_scale, lr, wd, mu):
        x, d = decayed(param, grad, wd, ONE)
        b = momentum_buffer  # without momentum the slot is absent: 0 in, dropped out
        if has_momentum:
            b = buf_decay * momentum_buffer + buf_scale * d
            d = d + mu * b if nesterov else b
        return x - lr * d, b

    return sgd


def _check(h):
    if h["nesterov"] and (h["momentum"] == 0 or h["dampening"] != 0):
        return (
            f"nesterov=True needs momentum > 0 and dampening = 0 (as torch); got "
            f"momentum={h['momentum']}, dampening={h['dampening']}"
        )
    return None


SPEC = Spec(
    name="sgd",
    torch="torch.optim.SGD",
    paper="Polyak 1964 (momentum); Sutskever et al. 2013, ICML (Nesterov momentum)",
    defaults=dict(lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False),
    slots=lambda h: {"momentum_buffer": 0.0} if h["momentum"] != 0 else {},
    options=lambda h: (h["weight_decay"] != 0, h["momentum"] != 0, h["nesterov"]),
    scalars=scalars,
    constants=constants,
    rule=rule,
    reference=reference,
    check=_check,
    cases=({}, dict(lr=0.01, momentum=0.9, dampening=0.1, weight_decay=1e-2),
           dict(lr=0.01, momentum=0.8, nesterov=True, weight_decay=1e-3)),
    doc=__doc__,
)
