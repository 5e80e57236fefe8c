"""Any torch.optim optimizer, or any class written to its interface, as an optbench optimizer.

    [[optimizers]]
    torch = "torch.optim.ASGD"            # or "some_package.module:Class"
    lr = 1e-2                             # the centre of its lr grid, tuned as usual
    t0 = 1e5                              # any other keyword argument of the class

    opt = optim.create(torch_adapter.register("torch.optim.ASGD"), lr=1e-2)
    state = opt.init(params)              # params: the model's flat float32 vector
    opt.step(params, grads, state)        # torch's step, in place on params

The class is registered under the name given ("torch.optim.ASGD"); its hyper-parameters are
its constructor's keyword arguments with their defaults, except the switches that pick an
implementation (foreach, fused, capturable, differentiable), which torch picks for a CPU
tensor. Values are checked by building the class once on a one-element tensor, so a bad one
is torch's own message on one line.

No copies: `init` wraps the model's parameter vector with `torch.from_numpy` (the same
memory) and each step wraps that step's gradient vector the same way, so torch updates the
numpy parameters in place. Only the host ("cpu") runs it; per-model hyper-parameter arrays
(the batched step) are not offered. torch stays optional: it is imported when such an
optimizer is named, and a missing torch is one line.

A cell's `code` hash for these optimizers is torch's version and the source of the class's
module, so results of another torch version are new cells, not reused ones.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import warnings
from dataclasses import dataclass

import numpy as np

from optbench.errors import UsageError
from optbench.optim.spec import Spec

# Keyword arguments that choose how torch computes, not what: left to torch (a CPU tensor
# gets the single-tensor loop, as torch.optim's own default there).
IMPLEMENTATION = frozenset({"foreach", "fused", "capturable", "differentiable"})


def _torch():
    try:
        import torch
    except ImportError:
        raise UsageError("torch optimizers need PyTorch: pip install 'optbench[compare]'"
                         ) from None
    return torch


def resolve(path: str):
    """The class at "torch.optim.ASGD" (a dotted path) or "some_package.module:Class"."""
    if not isinstance(path, str) or not path.strip():
        raise UsageError(f"torch = {path!r}: give a class such as \"torch.optim.ASGD\" or "
                         "\"some_package.module:Class\"")
    _torch()
    module_name, _, attr = path.partition(":") if ":" in path else path.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UsageError(f"torch = {path!r}: cannot import {module_name!r} ({exc})") from None
    cls = getattr(module, attr, None)
    if not inspect.isclass(cls):
        raise UsageError(f"torch = {path!r}: {module_name} has no class {attr!r}")
    if not issubclass(cls, _torch().optim.Optimizer):
        raise UsageError(f"torch = {path!r} is not a torch.optim.Optimizer subclass")
    step = inspect.signature(cls.step).parameters.get("closure")
    if step is not None and step.default is inspect.Parameter.empty:
        raise UsageError(f"torch = {path!r}: its step needs a closure that re-evaluates the "
                         "loss (as LBFGS); optbench steps from one gradient")
    return cls


def _defaults(cls, path: str) -> dict:
    params = list(inspect.signature(cls.__init__).parameters.values())[2:]  # self, params
    out = {}
    for p in params:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) or p.name in IMPLEMENTATION:
            continue
        if p.default is inspect.Parameter.empty:
            raise UsageError(f"torch = {path!r}: keyword {p.name!r} has no default; optbench "
                             "fills every argument from defaults and the matrix")
        default = p.default
        if hasattr(default, "item") and getattr(default, "ndim", 1) == 0:
            default = default.item()  # a tensor default (lr) as its number
        out[p.name] = default
    if "lr" not in out:
        raise UsageError(f"torch = {path!r} has no lr keyword: optbench tunes the lr")
    return out


def _for_torch(value, default):
    """A JSON value (lists) in the form the class's default has (tuples)."""
    if isinstance(default, tuple) and isinstance(value, list):
        return tuple(_for_torch(v, d) for v, d in zip(value, default))
    return value


@dataclass(frozen=True)
class TorchSpec(Spec):
    """A registered torch optimizer: `torch` is the class's path; `defaults` its keywords."""

    @property
    def cls(self):
        return resolve(self.torch)

    def code_key(self) -> str:
        """torch's version and the source of the class's module (its code)."""
        from optbench import sources

        torch = _torch()
        module = inspect.getmodule(self.cls)
        text = sources.module_source(module) if module is not None else None
        body = text if isinstance(text, bytes) else (text or self.torch).encode()
        return hashlib.sha256(torch.__version__.encode() + b"|" + body).hexdigest()[:16]

    def validate(self, given: dict) -> dict:
        """The class's keywords: defaults updated with `given`, checked by building it."""
        unknown = [k for k in given if k not in self.defaults]
        if unknown:
            raise UsageError(f"{self.name}: {unknown[0]!r} is not a keyword of {self.torch}; "
                             f"allowed: {', '.join(self.defaults)}")
        for name, value in given.items():
            if isinstance(value, np.ndarray):
                raise UsageError(f"{self.name}: {name} as an array: torch optimizers step one "
                                 "model at a time (no per-model hyper-parameters)")
        h = {**self.defaults, **given}
        torch = _torch()
        try:
            self.cls([torch.zeros(1)], **self.kwargs(h))
        except (ValueError, TypeError, RuntimeError) as exc:
            message = " ".join(str(exc).split())
            raise UsageError(f"{self.name}: {message}") from None
        return h

    def kwargs(self, h: dict) -> dict:
        return {k: _for_torch(v, self.defaults.get(k)) for k, v in h.items()}

    def verify(self, given: dict) -> None:
        """What `plugins.verify` does for a rule: here, build it and take one step."""
        opt = TorchOptimizer(self, self.validate(given), "cpu")
        p = np.ones(3, np.float32)
        opt.step(p, np.full(3, 0.5, np.float32), opt.init(p))


def register(path: str) -> str:
    """Register the torch optimizer class at `path` under that name (once); return it."""
    from optbench.optim import registry

    if path in registry.SPECS:
        if isinstance(registry.SPECS[path], TorchSpec):
            return path
        raise UsageError(f"torch = {path!r}: that name is an optbench optimizer already")
    cls = resolve(path)
    spec = TorchSpec(name=path, defaults=_defaults(cls, path), rule=_no_rule, reference=_no_rule,
                     label=path.rpartition(".")[2].rpartition(":")[2], torch=path,
                     paper=f"{path} (through optbench's torch adapter)",
                     doc=(inspect.getdoc(cls) or "").split("\n\n")[0])
    registry.add_external(spec, origin=f"torch adapter ({path})")
    return path


def _no_rule(*args):
    raise UsageError("a torch optimizer has no element rule: it steps through torch")


class TorchState:
    """The torch optimizer bound to one parameter vector: `torch_optimizer`, `tensor` (the
    parameters, sharing the numpy vector's memory), `step` (completed steps)."""

    __slots__ = ("torch_optimizer", "tensor", "array", "step", "size", "names", "slots", "host")

    def __init__(self, torch_optimizer, tensor, array):
        self.torch_optimizer, self.tensor, self.array = torch_optimizer, tensor, array
        self.step, self.size = 0, array.size
        self.names, self.slots, self.host = (), (), {}

    def __repr__(self) -> str:
        return f"TorchState(step={self.step}, size={self.size}, {type(self.torch_optimizer)})"


class TorchOptimizer:
    """A torch optimizer class bound to its hyper-parameters (see the module docstring)."""

    def __init__(self, spec: TorchSpec, hparams: dict, backend: str):
        if backend == "cuda":
            raise UsageError(f"{spec.name}: torch optimizers run on the host here (backend "
                             "'cpu'); the model's vectors live there")
        self.spec, self.hparams, self.backend = spec, hparams, backend
        self.models = None
        self.slots: dict = {}
        self._cls = spec.cls
        self._kwargs = spec.kwargs(hparams)
        self._torch = _torch()

    @property
    def name(self) -> str:
        return self.spec.name

    def __repr__(self) -> str:
        return f"optim.create({self.name!r}, {self.hparams})"

    def init(self, params) -> TorchState:
        from optbench.optim.optimizer import vector_size

        vector_size(params, "params", "cpu")
        tensor = self._torch.from_numpy(params)  # the same memory: torch updates params
        return TorchState(self._cls([tensor], **self._kwargs), tensor, params)

    def step(self, params, grads, state: TorchState, lr=None) -> None:
        """torch's step of `params` from `grads`, in place; `lr` this step's learning rate
        (a schedule's) instead of hparams["lr"]."""
        from optbench.optim.optimizer import learning_rate, vector_size

        if not isinstance(state, TorchState):
            raise UsageError(f"state does not belong to this {self.name} optimizer; make it "
                             "with opt.init(params)")
        n = vector_size(params, "params", "cpu")
        if params is not state.array and (params.ctypes.data != state.array.ctypes.data
                                          or n != state.size):
            raise UsageError("params must be the vector this state was made for (torch holds "
                             "a view of it): make the state with opt.init(params)")
        if vector_size(grads, "grads", "cpu", writeable=False) != n:
            raise UsageError(f"grads has {grads.shape[0]} elements, params {n}; they must match")
        if grads.flags.writeable:
            state.tensor.grad = self._torch.from_numpy(grads)
        else:
            with warnings.catch_warnings():
                # torch warns that it could write a read-only array; optimizers do not.
                warnings.simplefilter("ignore", UserWarning)
                state.tensor.grad = self._torch.from_numpy(grads)
        if lr is not None:
            rate = learning_rate(lr, self.name)
            for group in state.torch_optimizer.param_groups:
                group["lr"] = rate
        state.torch_optimizer.step()
        state.tensor.grad = None  # the next step's gradient is another array
        state.step += 1
