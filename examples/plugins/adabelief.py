"""AdaBelief (Zhuang et al. 2020, NeurIPS, arXiv:2010.07468) as an optbench plugin: Adam whose
second moment is the variance of the gradient around its running mean, (g - m)^2, so the
step is large where the gradient is what the mean predicts. `plugins = ["adabelief.py"]`."""
import math

import numpy as np

from optbench import optim

f32 = np.float32


def reference(p, g, state, h):
    """numpy, as the paper's Algorithm 2 (its eps also inside s)."""
    (beta1, beta2), eps, t = h["betas"], h["eps"], state.step
    m, s = state["exp_avg"], state["exp_avg_var"]
    m += (1 - beta1) * (g - m)
    e = g - m
    s *= beta2
    s += (1 - beta2) * e * e
    s += eps
    p -= h["lr"] / (1 - beta1**t) * m / (np.sqrt(s) * (1 / math.sqrt(1 - beta2**t)) + eps)


def rule(param, grad, exp_avg, exp_avg_var, step_size, inv_bc2_sqrt, one_m_beta1, beta2,
         one_m_beta2, eps):
    """One element, in float32: the same operations in the same order as `reference`."""
    m = exp_avg + one_m_beta1 * (grad - exp_avg)
    e = grad - m
    s = beta2 * exp_avg_var + one_m_beta2 * e * e + eps
    return param - step_size * m / (math.sqrt(s) * inv_bc2_sqrt + eps), m, s


optim.register(optim.Spec(
    name="adabelief", defaults=dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-16),
    slots={"exp_avg": 0.0, "exp_avg_var": 0.0}, rule=rule, reference=reference,
    scalars=lambda h, state: {"step_size": f32(h["lr"] / (1 - h["betas"][0] ** state.step)),
                              "inv_bc2_sqrt": f32(1 / math.sqrt(1 - h["betas"][1] ** state.step))},
    constants=lambda h: {"one_m_beta1": f32(1 - h["betas"][0]), "beta2": f32(h["betas"][1]),
                         "one_m_beta2": f32(1 - h["betas"][1]), "eps": f32(h["eps"])},
    paper="Zhuang et al. 2020, NeurIPS (arXiv:2010.07468)", torch="adabelief_pytorch.AdaBelief",
))
