"""K models in one step: per-model hyper-parameters, and the state of K models.

    lr = np.array([1e-4, 3e-4, 1e-3])                      # K = 3
    opt = optim.create("adam", backend="cpu", lr=lr, betas=np.array([[0.9, 0.999]] * 3))
    state = opt.init(params)           # params: (K, P) C-contiguous float32, one row a model
    opt.step(params, grads, state)     # = K separate 1-D steps, one launch
    optim.clip_grad_norm(grads, 1.0)   # (K, P) grads: each row clipped alone; K norms back

A per-model hyper-parameter is a 1-D numpy array of K values; any hyper-parameter may be
one (a numpy array, never a list, so configuration lists are not mistaken for models).
betas is a pair (beta1, beta2) whose members may each be a length-K array, or a (K, 2)
array, one (beta1, beta2) row per model. Values given once hold for every model; with no
array at all, init((K, P) params) steps K models that share every value.

Each model's values are checked as a 1-D optimizer's are. What picks compiled code must
agree across the K models: switches (amsgrad, nesterov, centered, ...) and whether a term
is switched on by a nonzero value (weight_decay, SGD's and RMSprop's momentum), which also
decides the state slots. Mixed models need separate batches; the error names the value.
"""

from __future__ import annotations

import numpy as np

from optbench.errors import UsageError
from optbench.optim.spec import Spec, validate


def per_model(spec: Spec, given: dict) -> tuple[dict, tuple[dict, ...] | None]:
    """(hparams, models): models is None when every value is given once (hparams is then
    the validated dict); else K validated dicts, one per model, and hparams shows each
    per-model value as an array (betas (K, 2))."""
    columns = {name: _column(spec, name, value) for name, value in given.items()}
    columns = {name: c for name, c in columns.items() if c is not None}
    if not columns:
        return validate(spec, given), None
    sizes = {name: len(c) for name, c in columns.items()}
    k = max(sizes.values())
    if any(n != k for n in sizes.values()):
        raise UsageError(
            f"{spec.name}: per-model hyper-parameters need one value per model, the same K "
            f"for all; got " + ", ".join(f"{name} {n}" for name, n in sizes.items())
        )
    models = []
    for i in range(k):
        try:
            models.append(validate(spec, {**given, **{n: c[i] for n, c in columns.items()}}))
        except UsageError as exc:
            raise UsageError(f"{exc} (model {i} of {k})") from None
    _same_kernel(spec, models)
    hparams = {**models[0], **{n: np.array([m[n] for m in models]) for n in columns}}
    return hparams, tuple(models)


def _column(spec: Spec, name: str, value) -> list | None:
    """`value`'s K per-model values, or None if it is one value for every model."""
    if name == "betas":
        if isinstance(value, np.ndarray) and value.ndim == 2:
            if value.shape[1] != 2:
                raise UsageError(f"{spec.name}: betas of shape {value.shape}: a per-model "
                                 "betas array has shape (K, 2), one (beta1, beta2) row per model")
            return [tuple(row) for row in value.tolist()]
        if isinstance(value, (tuple, list)) and len(value) == 2:
            pair = [_column(spec, f"betas[{j}]", b) for j, b in enumerate(value)]
            if pair[0] is None and pair[1] is None:
                return None
            k = len(pair[0] if pair[0] is not None else pair[1])
            b1, b2 = (c if c is not None else [b] * k for c, b in zip(pair, value))
            if len(b1) != len(b2):
                raise UsageError(f"{spec.name}: betas[0] has {len(b1)} per-model values, "
                                 f"betas[1] {len(b2)}; give both one per model")
            return list(zip(b1, b2))
        return None
    if not isinstance(value, np.ndarray):
        return None
    if value.ndim != 1 or value.size == 0:
        raise UsageError(f"{spec.name}: {name} as an array must be 1-D with one value per "
                         f"model (K >= 1), got shape {value.shape}")
    return value.tolist()


def _same_kernel(spec: Spec, models: list[dict]) -> None:
    """UsageError unless every model compiles to model 0's kernel (options and slots)."""
    def kernel(h):
        return spec.option_values(h), tuple(spec.slot_values(h))

    first = kernel(models[0])
    for i, m in enumerate(models):
        if kernel(m) == first:
            continue
        differ = [n for n in m if m[n] != models[0][n]]
        culprits = [n for n in differ if kernel({**models[0], n: m[n]}) != first] or differ
        raise UsageError(
            f"{spec.name}: models 0 and {i} need different compiled kernels ("
            + ", ".join(f"{n}={models[0][n]!r} vs {m[n]!r}" for n in culprits)
            + "): switches, and whether weight decay or momentum is zero, must agree across "
            "the models of one batch; step such models in separate batches"
        )


class SlotLookup:
    """`state[name]`: a state's slot by its name, for State and BatchedState."""

    __slots__ = ()

    def __getitem__(self, name: str):
        try:
            return self.slots[self.names.index(name)]
        except ValueError:
            raise KeyError(f"no slot {name!r}; this state has {self.names}") from None


class BatchedState(SlotLookup):
    """The optimizer state of K models stepped together.

    step:  completed steps, the same for every model.
    names: the slot names (torch's state-dict names).
    slots: one (K, P) float32 array per name (device arrays for "cuda"); `state[name]`.
    rows:  model k's `State`: its slots are views of row k, its host scalars its own
           (NAdam's mu_product); `rows[k].step` follows `step`.
    """

    __slots__ = ("step", "names", "slots", "rows", "shape", "on_device", "flat", "constants")

    def __init__(self, names, slots, rows, shape, on_device, constants):
        self.step = 0
        self.names = names
        self.slots = slots
        self.rows = rows
        self.shape = shape
        self.on_device = on_device
        self.flat = tuple(x.reshape(shape[0] * shape[1]) for x in slots)  # what kernels get
        self.constants = constants  # (K, len(spec.constants)) float32: each model's constants

    def __repr__(self) -> str:
        return (f"BatchedState(step={self.step}, models={self.shape[0]}, size={self.shape[1]}, "
                f"slots={self.names})")
