"""`create()`, `Optimizer` and `State`: where input is checked and a step is dispatched.

Every public entry point checks its input completely before it touches anything, and raises
`UsageError` naming the problem and what is allowed. Past the checks, a step is one kernel
launch ("cpu", "cuda") or one call of the numpy reference ("numpy").
"""

from __future__ import annotations

import numpy as np

from optbench.errors import UsageError
from optbench.optim import adagrad, adam, adamax, drivers, lion, nadam, radam, rmsprop, sgd
from optbench.optim.spec import Spec, validate

SPECS: dict[str, Spec] = {
    s.name: s
    for s in (sgd.SPEC, adagrad.SPEC, rmsprop.SPEC, adam.SPEC, adam.SPEC_W, nadam.SPEC,
              radam.SPEC, adamax.SPEC, lion.SPEC)
}

BACKENDS = ("numpy", "cpu", "cuda")

F32 = np.dtype(np.float32)


def vector_size(x, what: str, backend: str, writeable: bool = True) -> int:
    """The length of `x` if it is a 1-D contiguous float32 vector for `backend`, else a
    UsageError saying what is wrong (host arrays must also be writeable unless told)."""
    if backend == "cuda":
        if isinstance(x, np.ndarray) or not hasattr(x, "copy_to_host"):
            raise UsageError(
                f"{what} must be a Numba CUDA device array for backend 'cuda' "
                f"(numba.cuda.to_device(array), or numba.cuda.as_cuda_array(x) for a torch "
                f"or CuPy array); got {type(x).__name__}"
            )
        contiguous = x.is_c_contiguous()
    else:
        if not isinstance(x, np.ndarray):
            raise UsageError(
                f"{what} must be a numpy.ndarray for backend {backend!r}; "
                f"got {type(x).__name__}"
            )
        flags = x.flags
        contiguous = flags.c_contiguous
        if writeable and not flags.writeable:
            raise UsageError(f"{what} is read-only; the step updates it in place")
    if x.dtype != F32:
        raise UsageError(f"{what} must be float32, got {x.dtype}")
    if x.ndim != 1:
        raise UsageError(f"{what} must be one flat 1-D vector, got shape {x.shape}")
    if not contiguous:
        raise UsageError(f"{what} must be contiguous (np.ascontiguousarray), got strides "
                         f"{x.strides}")
    return x.shape[0]


def names() -> tuple[str, ...]:
    """The registered optimizer names."""
    return tuple(SPECS)


def spec(name: str) -> Spec:
    """The spec of optimizer `name` (its defaults, paper, and `doc` with the update rule)."""
    try:
        return SPECS[name]
    except (KeyError, TypeError):
        raise UsageError(
            f"unknown optimizer {name!r}; choose one of: {', '.join(SPECS)}"
        ) from None


def create(name: str, backend: str = "cpu", **hparams) -> Optimizer:
    """An optimizer with torch.optim's hyper-parameter names and defaults, on a backend:
    "numpy" (the plain reference), "cpu" (Numba, parallel) or "cuda" (Numba CUDA)."""
    s = spec(name)
    if backend not in BACKENDS:
        raise UsageError(f"unknown backend {backend!r}; choose one of: {', '.join(BACKENDS)}")
    return Optimizer(s, validate(s, hparams), backend)


class State:
    """One parameter vector's optimizer state.

    step:  completed steps (torch's state["step"]); the next step is number step + 1.
    names: the slot names (torch's state-dict names: exp_avg, exp_avg_sq, ...).
    slots: one float32 vector per name, each the params' length (device arrays for "cuda";
           copy_to_host() one to look at it); `state[name]` is the same vector.
    host:  scalar state kept on the host (NAdam's mu_product).

    Slots are separate allocations, as torch's: as rows of one (slots, n) array the CPU step
    ran 1.5-2.5x slower at 2^26 parameters, as separate vectors at torch's speed.
    """

    __slots__ = ("step", "names", "slots", "host", "size", "on_device")

    def __init__(self, names: tuple[str, ...], slots: tuple, host: dict, size: int,
                 on_device: bool):
        self.step = 0
        self.names = names
        self.slots = slots
        self.host = host
        self.size = size
        self.on_device = on_device

    def __getitem__(self, name: str):
        try:
            return self.slots[self.names.index(name)]
        except ValueError:
            raise KeyError(f"no slot {name!r}; this state has {self.names}") from None

    def __repr__(self) -> str:
        return f"State(step={self.step}, size={self.size}, slots={self.names}, host={self.host})"


class Optimizer:
    """An optimizer bound to its hyper-parameters and a backend. See `optbench.optim.create`."""

    def __init__(self, spec: Spec, hparams: dict, backend: str):
        self.spec = spec
        self.hparams = hparams
        self.backend = backend
        self.slots: dict[str, float] = spec.slots(hparams)  # state vectors: initial values
        self._names = tuple(self.slots)
        self._constants = spec.constants(hparams)
        options = spec.options(hparams)
        if backend == "cpu":
            self._kernel = drivers.cpu_step(spec.rule, options)
        elif backend == "cuda":
            self._cuda = drivers.cuda_module()
            from optbench.optim import cuda_kernels

            self._launch = cuda_kernels.launch
            self._kernel = cuda_kernels.step_kernel(spec.rule, options)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def bytes_per_param(self) -> int:
        """Memory traffic of one step per parameter: read p, g and each slot; write p and
        each slot; float32. Adam: 4 * (2 + 2) + 4 * (1 + 2) = 28 bytes."""
        return 4 * (2 + len(self.slots)) + 4 * (1 + len(self.slots))

    def __repr__(self) -> str:
        hp = ", ".join(f"{k}={v!r}" for k, v in self.hparams.items())
        return f"optim.create({self.name!r}, backend={self.backend!r}, {hp})"

    def init(self, params) -> State:
        """A fresh state (step 0) for `params`: a 1-D contiguous float32 vector (numpy for
        "numpy"/"cpu", a CUDA device array for "cuda")."""
        n = vector_size(params, "params", self.backend)
        slots = tuple(np.full(n, value, F32) for value in self.slots.values())
        if self.backend == "cuda":
            slots = tuple(self._cuda.to_device(x) for x in slots)
        return State(self._names, slots, dict(self.spec.host), n, self.backend == "cuda")

    def step(self, params, grads, state: State) -> None:
        """One update of `params` (in place) from `grads`; `state` advances one step."""
        n = vector_size(params, "params", self.backend)
        if vector_size(grads, "grads", self.backend, writeable=False) != n:
            raise UsageError(f"grads has {grads.shape[0]} elements, params {n}; they must match")
        if not isinstance(state, State) or state.names != self._names:
            raise UsageError(
                f"state does not belong to this {self.name} optimizer (its slots are "
                f"{getattr(state, 'names', type(state).__name__)}, this optimizer's "
                f"{self._names}); make it with opt.init(params)"
            )
        if state.size != n or state.on_device != (self.backend == "cuda"):
            where = "device" if state.on_device else "host"
            raise UsageError(
                f"state was made for {state.size} params on the {where}; this step has {n} "
                f"params for backend {self.backend!r}: make it with opt.init(params)"
            )
        state.step += 1
        if self.backend == "numpy":
            self.spec.reference(params, grads, state, self.hparams)
            return
        h = self.spec.scalars(self.hparams, state) + self._constants
        if self.backend == "cpu":
            self._kernel(params, grads, state.slots, h)
        else:
            self._kernel[self._launch(n)](params, grads, state.slots, h)
