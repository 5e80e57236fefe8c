"""Optimizers for flat float32 parameter vectors, on three backends.

    from optbench import optim
    optim.names()                                    # registered names
    opt = optim.create("adam", lr=1e-3, betas=(0.9, 0.999), eps=1e-8,
                       weight_decay=0.0, amsgrad=False, backend="cpu")
    state = opt.init(params)        # params: 1-D contiguous float32 (device array for "cuda")
    opt.step(params, grads, state)  # updates params and state in place; state counts steps
    optim.clip_grad_norm(grads, max_norm)            # in place; returns the norm before clipping

Backends: "numpy", the plainly written reference that reads like the papers; "cpu", one fused
pass per step under `@njit(parallel=True)`; "cuda", `@cuda.jit`. Names, hyper-parameters,
defaults and update rules follow torch.optim; `optim.spec(name).doc` states each rule, its
paper and where Keras and optax differ.
"""

from optbench.optim.clip import clip_grad_norm, clip_grad_value
from optbench.optim.optimizer import BACKENDS, Optimizer, State, create, names, spec

__all__ = [
    "BACKENDS", "Optimizer", "State", "clip_grad_norm", "clip_grad_value", "create", "names",
    "spec",
]
