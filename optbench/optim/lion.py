r"""Lion: Chen et al. 2023, NeurIPS, "Symbolic Discovery of Optimization Algorithms",
Algorithm 2, as lion_pytorch.py (lucidrains/lion-pytorch) implements it.
torch.optim has no Lion; names and defaults follow lion_pytorch: lr = 1e-4,
betas = (0.9, 0.99), weight_decay = 0.

With gradient g, learning rate gamma, weight decay lambda:

    theta  <- theta * (1 - gamma * lambda)              (decoupled weight decay)
    c       = beta1 * m + (1 - beta1) * g
    theta  <- theta - gamma * sign(c)
    m      <- beta2 * m + (1 - beta2) * g

Where others differ: Keras's Lion defaults to learning_rate = 1e-3 and applies weight
decay through its generic option; optax.lion defaults to weight_decay = 1e-3 (here 0).
Every update has size gamma per element, so a learning rate 3-10x below AdamW's is usual.
"""

import numpy as np
from numba.core.extending import register_jitable

from optbench.optim.pieces import weight_decay
from optbench.optim.scalar import ZERO, sign
from optbench.optim.spec import Spec

f32 = np.float32


def reference(p, g, state, h):
    lr, wd = h["lr"], h["weight_decay"]
    beta1, beta2 = h["betas"]
    m = state["exp_avg"]
    if wd != 0:
        p *= 1 - lr * wd
    c = beta1 * m + (1 - beta1) * g
    p -= lr * np.sign(c)
    m *= beta2
    m += (1 - beta2) * g


def constants(h):
    lr, wd = h["lr"], h["weight_decay"]
    beta1, beta2 = h["betas"]
    return {"lr": f32(lr), "beta1": f32(beta1), "one_m_beta1": f32(1 - beta1),
            "beta2": f32(beta2), "one_m_beta2": f32(1 - beta2), "decay": f32(1 - lr * wd)}


def rule(has_wd):
    """The element rule with these options as compile-time constants."""
    decayed = weight_decay(has_wd, True)

    @register_jitable
    def lion(param, grad, exp_avg, lr, beta1, one_m_beta1, beta2, one_m_beta2, decay):
        x, d = decayed(param, grad, ZERO, decay)
        m = exp_avg
        return x - lr * sign(beta1 * m + one_m_beta1 * d), beta2 * m + one_m_beta2 * d

    return lion


SPEC = Spec(
    name="lion",
    torch="lion_pytorch.Lion (lucidrains/lion-pytorch; not in torch.optim)",
    paper="Chen et al. 2023, NeurIPS (arXiv:2302.06675)",
    defaults=dict(lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0),
    slots=lambda h: {"exp_avg": 0.0},
    options=lambda h: (h["weight_decay"] != 0,),
    constants=constants,
    rule=rule,
    reference=reference,
    cases=({}, dict(lr=3e-4, betas=(0.95, 0.98), weight_decay=0.1)),
    doc=__doc__,
)
