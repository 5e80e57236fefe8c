"""`create()`, `Optimizer` and `State`: where input is checked and a step is dispatched.

Every public entry point checks its input completely before it touches anything, and raises
`UsageError` naming the problem and what is allowed. Past the checks, a step is one kernel
launch ("cpu", "cuda") or one call of the numpy reference ("numpy"); for K models as a
(K, P) array (`optbench.optim.batch`) one launch for all K, or K calls of the reference.
"""

from __future__ import annotations

import math

import numpy as np

from optbench.errors import UsageError
from optbench.optim import batch, contract, drivers, tuning
from optbench.optim.batch import BatchedState, SlotLookup
from optbench.optim.registry import SPECS, names, spec
from optbench.optim.spec import Spec

__all__ = ["BACKENDS", "SPECS", "Optimizer", "State", "create", "names", "spec"]

BACKENDS = ("numpy", "cpu", "cuda")

F32 = np.dtype(np.float32)


def checked_shape(x, what: str, backend: str, writeable: bool):
    """x's shape if x is a C-contiguous float32 array for `backend`, else a UsageError saying
    what is wrong (host arrays must also be writeable unless told)."""
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
    if x.ndim not in (1, 2):
        raise UsageError(f"{what} must be one flat 1-D vector, or (K, P) for K models; got "
                         f"shape {x.shape}")
    if not contiguous:
        raise UsageError(f"{what} must be contiguous (np.ascontiguousarray), got strides "
                         f"{x.strides}")
    return x.shape


def vector_size(x, what: str, backend: str, writeable: bool = True) -> int:
    """The length of `x` if it is a 1-D contiguous float32 vector for `backend`, else a
    UsageError saying what is wrong (host arrays must also be writeable unless told)."""
    shape = checked_shape(x, what, backend, writeable)
    if len(shape) != 1:
        raise UsageError(f"{what} must be one flat 1-D vector, got shape {shape}")
    return shape[0]


def batch_shape(x, what: str, backend: str, writeable: bool = True) -> tuple[int, int]:
    """(K, P) if `x` is a C-contiguous (K, P) float32 array for `backend` (one row per
    model), else a UsageError saying what is wrong."""
    shape = checked_shape(x, what, backend, writeable)
    if len(shape) != 2 or 0 in shape:
        raise UsageError(f"{what} must be a (K, P) array, one row of P > 0 parameters per "
                         f"model, got shape {shape}")
    return shape


def create(name: str, backend: str = "cpu", **hparams) -> Optimizer:
    """An optimizer with torch.optim's hyper-parameter names and defaults, on a backend:
    "numpy" (the plain reference), "cpu" (Numba, parallel) or "cuda" (Numba CUDA).
    A hyper-parameter given as a numpy array has one value per model: the optimizer then
    steps K models as (K, P) arrays (`optbench.optim.batch`)."""
    s = spec(name)
    if backend not in BACKENDS:
        raise UsageError(f"unknown backend {backend!r}; choose one of: {', '.join(BACKENDS)}")
    if hasattr(s, "kwargs"):  # a torch optimizer class (optim.torch_adapter)
        from optbench.optim.torch_adapter import TorchOptimizer

        return TorchOptimizer(s, s.validate(hparams), backend)
    return Optimizer(s, *batch.per_model(s, hparams), backend)


class State(SlotLookup):
    """One parameter vector's optimizer state.

    step:  completed steps (torch's state["step"]); the next step is number step + 1.
    names: the slot names (torch's state-dict names: exp_avg, exp_avg_sq, ...).
    slots: one float32 vector per name, each the params' length (device arrays for "cuda";
           copy_to_host() one to look at it); `state[name]` is the same vector.
    host:  scalar state kept on the host (NAdam's mu_product).

    Slots are separate allocations, as torch's: the CPU step streams each as a vector of its
    own, which at large sizes runs faster than the rows of one (slots, n) array.
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

    def __repr__(self) -> str:
        return f"State(step={self.step}, size={self.size}, slots={self.names}, host={self.host})"


class Optimizer:
    """An optimizer bound to its hyper-parameters and a backend. See `optbench.optim.create`.

    models: None, or the K per-model hyper-parameter dicts when some were given as arrays
            (then params must be (K, P)); `hparams` shows those values as arrays.
    """

    def __init__(self, spec: Spec, hparams: dict, models: tuple | None, backend: str):
        self.spec = spec
        self.hparams = hparams
        self.models = models
        self.backend = backend
        one = models[0] if models else hparams  # models share options and slot names
        self.slots: dict[str, float] = spec.slot_values(one)  # state vectors: initial values
        self._names = tuple(self.slots)
        self._options = spec.option_values(one)
        # The rule's scalars by name: h = per-step scalars + constants, in the layout's order.
        self.layout = contract.layout(spec, one)
        self._scalars = contract.getter(self.layout.scalars)
        self._scalar_values = spec.scalars or (lambda h, state: {})
        self._constants_of = contract.getter(self.layout.constants)
        if models is None:
            self._constants = self._constants_of(spec.constant_values(hparams))
        if backend == "numpy":
            return
        self.kernel_rule = contract.kernel_rule(spec, self._options, self.layout)
        if backend == "cpu":
            self._kernel = drivers.cpu_step(self.kernel_rule, ())
        else:
            self._cuda = drivers.cuda_module()
            from optbench.optim import cuda_kernels

            self._kernels = cuda_kernels
            self._per_thread = tuning.CUDA_ELEMENTS_PER_THREAD
            self._kernel = cuda_kernels.step_kernel(
                self.kernel_rule, (), len(self._names), self._per_thread)
            self._launchers: dict = {}  # (kernel, size, models) -> configured kernel

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

    def init(self, params) -> State | BatchedState:
        """A fresh state (step 0) for `params`: a 1-D contiguous float32 vector, or K models'
        parameters as a C-contiguous (K, P) array (numpy for "numpy"/"cpu", a CUDA device
        array for "cuda")."""
        shape = checked_shape(params, "params", self.backend, writeable=True)
        if len(shape) == 2:
            return self._init_batch(params)
        if self.models is not None:
            raise UsageError(self._needs_rows(shape))
        n = vector_size(params, "params", self.backend)
        slots = tuple(np.full(n, value, F32) for value in self.slots.values())
        if self.backend == "cuda":
            slots = tuple(self._cuda.to_device(x) for x in slots)
        return State(self._names, slots, dict(self.spec.host), n, self.backend == "cuda")

    def step(self, params, grads, state: State | BatchedState, lr=None) -> None:
        """One update of `params` (in place) from `grads`; `state` advances one step.

        lr: this step's learning rate instead of hparams["lr"] (a schedule's value, computed
        on the host: nothing recompiles); for K models one value or a numpy array of K."""
        if isinstance(state, BatchedState):
            self._step_batch(params, grads, state, lr)
            return
        if self.models is not None:
            raise UsageError(self._needs_rows(getattr(params, "shape", None)))
        n = vector_size(params, "params", self.backend)
        if vector_size(grads, "grads", self.backend, writeable=False) != n:
            raise UsageError(f"grads has {grads.shape[0]} elements, params {n}; they must match")
        self._check_state(state)
        self._check_fit(state, state.size, n)
        hparams, constants = self.hparams, self._constants
        if lr is not None:
            hparams = {**hparams, "lr": learning_rate(lr, self.name)}
            constants = self._constants_of(self.spec.constant_values(hparams))
        state.step += 1
        if self.backend == "numpy":
            self.spec.reference(params, grads, state, hparams)
            return
        h = self._scalars(self._scalar_values(hparams, state)) + constants
        if self.backend == "cpu":
            self._kernel(params, grads, state.slots, h)
        else:
            self._launch(self._kernel, (params, grads, state.slots, h), n)

    def _check_state(self, state) -> None:
        if not isinstance(state, (State, BatchedState)) or state.names != self._names:
            raise UsageError(
                f"state does not belong to this {self.name} optimizer (its slots are "
                f"{getattr(state, 'names', type(state).__name__)}, this optimizer's "
                f"{self._names}); make it with opt.init(params)"
            )

    def _needs_rows(self, shape) -> str:
        given = [n for n, v in self.hparams.items() if isinstance(v, np.ndarray)]
        k = len(self.models)
        return (f"this {self.name} optimizer has per-model hyper-parameters ({', '.join(given)}) "
                f"for K = {k} models: params and grads must be ({k}, P) arrays, one row per "
                f"model; got shape {shape}")

    def _models(self, k: int) -> tuple:
        """Each of k models' hyper-parameters: the per-model ones, or hparams k times."""
        if self.models is None:
            return (self.hparams,) * k
        if len(self.models) != k:
            raise UsageError(self._needs_rows(f"({k}, P)"))
        return self.models

    def _init_batch(self, params) -> BatchedState:
        k, n = batch_shape(params, "params", self.backend)
        models = self._models(k)
        slots = []
        for name in self._names:
            x = np.empty((k, n), F32)
            x[:] = np.array([self.spec.slot_values(m)[name] for m in models], F32)[:, None]
            slots.append(self._cuda.to_device(x) if self.backend == "cuda" else x)
        on_device = self.backend == "cuda"
        rows = tuple(State(self._names, tuple(x[i] for x in slots), dict(self.spec.host), n,
                           on_device) for i in range(k))
        constants = np.array([self._constants_of(self.spec.constant_values(m))
                              for m in models], F32).reshape(k, len(self.layout.constants))
        return BatchedState(self._names, tuple(slots), rows, (k, n), on_device, constants)

    def _check_fit(self, state, made_for, given) -> None:
        """UsageError unless `state` was made for params of this size (or (K, P) shape) on
        this backend's side of the bus."""
        if made_for != given or state.on_device != (self.backend == "cuda"):
            where = "device" if state.on_device else "host"
            raise UsageError(
                f"state was made for {made_for} params on the {where}; this step has "
                f"{given} params for backend {self.backend!r}: make it with opt.init(params)"
            )

    def _step_batch(self, params, grads, state: BatchedState, lr=None) -> None:
        shape = batch_shape(params, "params", self.backend)
        if batch_shape(grads, "grads", self.backend, writeable=False) != shape:
            raise UsageError(f"grads has shape {grads.shape}, params {shape}; they must match")
        self._check_state(state)
        models = self._models(shape[0])
        self._check_fit(state, state.shape, shape)
        constants = state.constants
        if lr is not None:
            rates = np.broadcast_to(np.asarray(lr, dtype=float), (shape[0],))
            models = tuple({**m, "lr": learning_rate(x, self.name)} for m, x in
                           zip(models, rates.tolist()))
            constants = np.array([self._constants_of(self.spec.constant_values(m))
                                  for m in models], F32).reshape(shape[0], -1)
        state.step += 1
        for row in state.rows:
            row.step = state.step
        if self.backend == "numpy":
            for p, g, row, h in zip(params, grads, state.rows, models):
                self.spec.reference(p, g, row, h)
            return
        scalars = np.array([self._scalars(self._scalar_values(h, row))
                            for h, row in zip(models, state.rows)],
                           F32).reshape(shape[0], len(self.layout.scalars))
        H = np.concatenate((scalars, constants), axis=1)
        p, g = params.reshape(-1), grads.reshape(-1)
        if self.backend == "cpu":
            kernel = drivers.cpu_batched_step(self.kernel_rule, (), H.shape[1])
            kernel(p, g, state.flat, H, tuning.CPU_SERIAL_BELOW, tuning.CPU_BATCH_CHUNK)
        else:
            kernel = self._kernels.batched_step_kernel(
                self.kernel_rule, (), len(self._names), self._per_thread, H.shape[1])
            self._launch(kernel, (p, g, state.flat, self._cuda.to_device(H)), *shape[::-1])

    def _launch(self, kernel, args, size: int, models: int = 1) -> None:
        key = (kernel, size, models)
        run = self._launchers.get(key)
        if run is None:
            run = self._launchers[key] = self._kernels.launcher(
                kernel, args, self._per_thread, size, models)
        run(*args)


def learning_rate(lr, optimizer: str) -> float:
    """A step's learning rate, checked as the hyper-parameter is."""
    if isinstance(lr, bool) or not isinstance(lr, (int, float, np.floating, np.integer)) \
            or not math.isfinite(lr) or lr < 0:
        raise UsageError(f"{optimizer}: the step's lr={lr!r} must be a finite number >= 0")
    return float(lr)
