"""Optimizers for flat float32 parameter vectors, on three backends.

    from optbench import optim
    optim.names()                                    # registered names
    opt = optim.create("adam", lr=1e-3, betas=(0.9, 0.999), eps=1e-8,
                       weight_decay=0.0, amsgrad=False, backend="cpu")
    state = opt.init(params)        # params: 1-D contiguous float32 (device array for "cuda")
    opt.step(params, grads, state)  # updates params and state in place; state counts steps
    optim.clip_grad_norm(grads, max_norm)            # in place; returns the norm before clipping

    # K models in one launch: params (K, P), any hyper-parameter a numpy array of K values
    opt = optim.create("adam", backend="cpu", lr=np.array([1e-4, 3e-4, 1e-3]))   # K = 3
    state = opt.init(params_KP)                      # a BatchedState
    opt.step(params_KP, grads_KP, state)             # = 3 separate 1-D steps, bit for bit
    optim.clip_grad_norm(grads_KP, max_norm)         # each row alone; returns the K norms

Your own optimizer: write its element rule and numpy reference, describe it in a `Spec`
and `optim.register(spec)` it (the contract: `optbench.optim.contract`; an example:
examples/plugins/adabelief.py; the checks a plugin author runs: `optbench.testing`).

Backends: "numpy", the plainly written reference that reads like the papers; "cpu", one fused
pass per step under `@njit(parallel=True)`; "cuda", `@cuda.jit`. Names, hyper-parameters,
defaults and update rules follow torch.optim; `optim.spec(name).doc` states each rule, its
paper and where Keras and optax differ; `optbench.optim.batch` the rules of the batched step.
"""

from numba.core.extending import register_jitable as jitable

from optbench.optim.batch import BatchedState
from optbench.optim.clip import clip_grad_norm, clip_grad_value
from optbench.optim.optimizer import BACKENDS, Optimizer, State, create
from optbench.optim.registry import (
    builtin_names,
    names,
    origin,
    register,
    source_key,
    spec,
    unregister,
)
from optbench.optim.spec import Spec, between

__all__ = [
    "BACKENDS", "BatchedState", "Optimizer", "Spec", "State", "between", "builtin_names",
    "clip_grad_norm", "clip_grad_value", "create", "jitable", "names", "origin", "register",
    "source_key", "spec", "unregister",
]
