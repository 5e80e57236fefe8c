r"""Adam and AdamW (torch.optim.Adam, torch.optim.AdamW), with the AMSGrad variant, and
Keras's epsilon convention as an option.

Adam: Kingma & Ba 2015, ICLR, arXiv:1412.6980, Algorithm 1. AMSGrad: Reddi, Kale & Kumar
2018, ICLR, "On the Convergence of Adam and Beyond". AdamW: Loshchilov & Hutter 2019, ICLR,
"Decoupled Weight Decay Regularization".

With gradient g at step t = 1, 2, ..., learning rate gamma, weight decay lambda:

    g      <- g + lambda * theta                        (weight_decay, coupled: Adam's L2)
    theta  <- theta * (1 - gamma * lambda)               (decoupled_weight_decay: AdamW)
    m_t     = beta1 * m_{t-1} + (1 - beta1) * g
    v_t     = beta2 * v_{t-1} + (1 - beta2) * g^2
    v_t     = max(vmax_{t-1}, v_t) =: vmax_t              (amsgrad: the max over the raw v)
    theta  <- theta - gamma / (1 - beta1^t) * m_t / (sqrt(v_t) / sqrt(1 - beta2^t) + eps)

epsilon_hat=True: eps is the paper's "epsilon hat" (Kingma & Ba, end of section 2), added
to sqrt(v) before v's bias correction, as Keras and TensorFlow do:

    theta  <- theta - gamma * sqrt(1 - beta2^t) / (1 - beta1^t) * m_t / (sqrt(v_t) + eps)

the same element rule with other host scalars (step size gamma sqrt(1 - beta2^t) /
(1 - beta1^t), v's correction factor 1), so the kernels are shared. torch's eps equals
this eps / sqrt(1 - beta2^t), so the two differ most in the first steps (at t = 1 the
same eps counts 32 times more in Keras's form) and where sqrt(v) is as small as eps.
With amsgrad, Keras (keras/src/optimizers/adam.py, Keras 3) also takes the max over the
raw v and adds eps to its root, which is what this rule does. Keras's default epsilon
is 1e-7.

"adamw" is Adam with decoupled_weight_decay=True and weight_decay=1e-2 by default, as
torch.optim.AdamW.

v's bias correction multiplies by 1 / sqrt(1 - beta2^t), computed once per step on the host,
where torch divides by sqrt(1 - beta2^t): one division less per element (a division costs
several multiplies' time in a loop that otherwise streams memory), at most one rounding
apart.

Where others differ:
- Keras: epsilon-hat (above) with epsilon = 1e-7 by default; beta1, beta2 and the bias
  corrections in the variables' dtype (float32), where optbench computes the scalars in
  double and rounds them once.
- optax: epsilon outside the root of the bias-corrected v, like torch, plus eps_root inside
  it (default 0). optax.amsgrad keeps the max of the bias-corrected v (torch: of the raw v).
- AdamW's default weight decay: torch 1e-2, optax 1e-4, Keras 0.004.
"""

import math

import numpy as np
from numba.core.extending import register_jitable

from optbench.optim.pieces import ema_square, lerp, weight_decay
from optbench.optim.scalar import maximum
from optbench.optim.spec import Spec

f32 = np.float32


def reference_moments(p, g, state, h):
    """Weight decay and the two moments, in place; shared with NAdam and RAdam. Returns the
    gradient (with coupled weight decay added), m and v."""
    lr, wd = h["lr"], h["weight_decay"]
    beta1, beta2 = h["betas"]
    if wd != 0:
        if h["decoupled_weight_decay"]:
            p *= 1 - lr * wd
        else:
            g = g + wd * p
    m, v = state["exp_avg"], state["exp_avg_sq"]
    m += (1 - beta1) * (g - m)  # beta1 * m + (1 - beta1) * g, as torch's lerp_
    v *= beta2
    v += (1 - beta2) * g * g
    return g, m, v


def reference(p, g, state, h):
    lr, eps = h["lr"], h["eps"]
    beta1, beta2 = h["betas"]
    t = state.step
    g, m, v = reference_moments(p, g, state, h)
    if h["amsgrad"]:
        vmax = state["max_exp_avg_sq"]
        np.maximum(vmax, v, out=vmax)
        v = vmax
    if h["epsilon_hat"]:
        p -= lr * math.sqrt(1 - beta2**t) / (1 - beta1**t) * m / (np.sqrt(v) + eps)
        return
    denom = np.sqrt(v) * (1 / math.sqrt(1 - beta2**t)) + eps
    p -= lr / (1 - beta1**t) * m / denom


def scalars(h, state):
    """(step size, v's bias-correction factor): with epsilon_hat both corrections move into
    the step size and the factor is 1, which the rule's product leaves exact."""
    lr = h["lr"]
    beta1, beta2 = h["betas"]
    t = state.step
    if h["epsilon_hat"]:
        return {"step_size": f32(lr * math.sqrt(1 - beta2**t) / (1 - beta1**t)),
                "inv_bc2_sqrt": f32(1.0)}
    return {"step_size": f32(lr / (1 - beta1**t)),
            "inv_bc2_sqrt": f32(1 / math.sqrt(1 - beta2**t))}


def constants(h):
    lr, wd = h["lr"], h["weight_decay"]
    beta1, beta2 = h["betas"]
    return {"one_m_beta1": f32(1 - beta1), "beta2": f32(beta2), "one_m_beta2": f32(1 - beta2),
            "eps": f32(h["eps"]), "wd": f32(wd), "decay": f32(1 - lr * wd)}


def moments(has_wd, decoupled):
    """The element form of reference_moments, shared with NAdam and RAdam: returns
    (param after decoupled decay, gradient after coupled decay, m, v)."""
    decayed = weight_decay(has_wd, decoupled)

    @register_jitable
    def update_moments(x, d, m, v, one_m_beta1, beta2, one_m_beta2, wd, decay):
        x, d = decayed(x, d, wd, decay)
        return x, d, lerp(m, d, one_m_beta1), ema_square(v, d, beta2, one_m_beta2)

    return update_moments


def rule(has_wd, decoupled, amsgrad):
    """The element rule with these options as compile-time constants."""
    update_moments = moments(has_wd, decoupled)

    @register_jitable
    def adam(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, step_size, inv_bc2_sqrt,
             one_m_beta1, beta2, one_m_beta2, eps, wd, decay):
        x, _, m, v = update_moments(param, grad, exp_avg, exp_avg_sq, one_m_beta1, beta2,
                                    one_m_beta2, wd, decay)
        vmax = max_exp_avg_sq  # without amsgrad the slot is absent: 0 in, dropped out
        vhat = v
        if amsgrad:
            vmax = maximum(max_exp_avg_sq, v)
            vhat = vmax
        return x - step_size * m / (math.sqrt(vhat) * inv_bc2_sqrt + eps), m, v, vmax

    return adam


def _slots(h):
    names = ["exp_avg", "exp_avg_sq"] + (["max_exp_avg_sq"] if h["amsgrad"] else [])
    return dict.fromkeys(names, 0.0)


def _options(h):
    return (h["weight_decay"] != 0, h["decoupled_weight_decay"], h["amsgrad"])


_COMMON = dict(
    slots=_slots, options=_options, scalars=scalars, constants=constants, rule=rule,
    reference=reference, doc=__doc__,
)

SPEC = Spec(
    name="adam",
    torch="torch.optim.Adam",
    paper="Kingma & Ba 2015, ICLR (arXiv:1412.6980); Reddi et al. 2018, ICLR (amsgrad)",
    defaults=dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False,
                  decoupled_weight_decay=False, epsilon_hat=False),
    cases=({}, dict(lr=3e-3, betas=(0.8, 0.99), eps=1e-3, weight_decay=1e-2, amsgrad=True),
           dict(weight_decay=0.1, decoupled_weight_decay=True)),
    **_COMMON,
)

SPEC_W = Spec(
    name="adamw",
    torch="torch.optim.AdamW",
    paper="Loshchilov & Hutter 2019, ICLR (arXiv:1711.05101)",
    defaults=dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False,
                  epsilon_hat=False),
    fixed=dict(decoupled_weight_decay=True),
    cases=({}, dict(lr=3e-3, betas=(0.85, 0.995), weight_decay=0.1, amsgrad=True)),
    **_COMMON,
)
