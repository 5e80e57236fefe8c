"""The lockstep engine's CUDA backend: the `Cpu` backend's interface over device arrays
and the kernels of optbench.lockstep.cuda_kernels.

Batches are drawn on the host from each member's own stream (the same draws as on the
CPU) and copied to the device at each step; the kernels are queued without waiting, so
the host draws the next step's batches while the device runs this one, and `wait`
blocks on the K loss sums only. Clipping and the batched optimizer step are
optbench.optim's (K, P) CUDA kernels on the same device arrays.

Launch shape: a block per (model, SB sequences), hidden x groups threads, each thread
SEQ sequences of one hidden unit (`launch_shape`: SEQ = 8 or the batch if smaller, then
as many groups as fit 256 threads and the shared-memory budget). Against the CPU backend
the results agree within float32 rounding of sums taken in another order
(tests/test_lockstep_cuda.py derives the bound).
"""

from __future__ import annotations

from contextlib import nullcontext

import numpy as np

from optbench.errors import UsageError
from optbench.lockstep.cpu import KINDS, batch_sets

MAX_HIDDEN = 1024  # one thread per hidden unit and sequence group: CUDA's block limit
THREADS = 256  # threads per block to aim for in forward / backward
SHARED_BYTES = 40 * 1024  # shared memory per block to stay within (48 KiB static)


def launch_shape(hidden: int, inputs: int, batch: int, kind: int,
                 training: bool = True) -> tuple[int, int]:
    """(SEQ, groups): sequences per thread and sequence groups per block, for a training
    step (forward and backward) or, `training` False, the evaluation's forward pass."""
    from optbench.lockstep.cuda_kernels import shape

    s = shape(kind, hidden, inputs, 1)
    seq = min(8, batch)
    groups = max(1, min(-(-batch // seq), THREADS // hidden))

    def shared(g):  # the larger of forward's and backward's shared arrays, in bytes
        sb = seq * g
        return 4 * max(2 * sb * s.zw, sb * (s.nbh + 1) * hidden if training else 0)

    while groups > 1 and shared(groups) > SHARED_BYTES:
        groups -= 1
    while seq > 1 and shared(groups) > SHARED_BYTES:
        seq //= 2
    if shared(groups) > SHARED_BYTES:
        raise UsageError(f"hidden size {hidden} is too large for the lockstep CUDA kernels' "
                         f"shared memory; allowed up to about {SHARED_BYTES // (4 * 5)}")
    return seq, groups


class Cuda:
    """See the module docstring and optbench.lockstep.cpu.Cpu (the same interface)."""

    device = "cuda"
    optim_backend = "cuda"

    def __init__(self, template, members: int, batch: int, steps: int, y_dtype):
        from optbench.optim.drivers import cuda_module

        cuda = cuda_module()
        from optbench.lockstep import cuda_kernels

        self.cuda, self.ck = cuda, cuda_kernels
        m = template
        if m.dtype != np.float32:
            raise ValueError("the lockstep engine trains float32 models")
        H, I, O = m.hidden_size, m.input_size, m.output_size
        if H > MAX_HIDDEN:
            raise UsageError(f"the lockstep CUDA kernels take hidden sizes up to {MAX_HIDDEN}; "
                             f"got {H}")
        self.template, self.members, self.batch, self.steps = m, members, batch, steps
        self.kind = KINDS.index(m.kind)
        self.every = m.head == "every"
        self.H, self.I, self.O = H, I, O
        self.slots = batch_sets(members, batch, steps, I, O, self.every, y_dtype)
        self.is_xent = self.slots[0]["labels"].shape[1] > 0
        seq, groups = launch_shape(H, I, batch, self.kind)
        self.k = cuda_kernels.kernels(self.kind, H, I, O, self.every, self.is_xent, seq, groups)
        s = self.k.shape
        if s.n_params != m.n_params:
            raise ValueError(f"parameter layout mismatch: {s.n_params} != {m.n_params}")
        S = steps if self.every else 1
        dev = cuda.device_array
        f32 = np.float32
        self.params = dev((members, m.n_params), f32)
        # Zeros, not uninitialised memory: the warm-up steps a copy of every sub-batch's
        # rows before any step has written them.
        self.grads = cuda.to_device(np.zeros((members, m.n_params), f32))
        self.wcat = dev((members, s.zw, s.nb * H), f32)
        self.hs = dev((members, steps + 1, batch, H), f32)
        self.cs = dev((members, steps + 1, batch, H) if self.kind == 0 else (1, 1, 1, 1), f32)
        self.gates = dev((members, steps, batch, s.nb * H), f32)
        self.yout = dev((members, S, batch, O), f32)
        self.dy = dev((members, S, batch, O), f32)
        self.norms = dev((members, batch, steps), f32)
        self.terms = dev((members, S * batch), f32)
        self.sums = dev(members, f32)
        b = self.slots[0]
        self.x = dev(b["x"].shape, f32)
        # The kind of target this task does not use: one element (never read), not an
        # array with a zero dimension.
        self.y = dev(b["y"].shape if not self.is_xent else (1, 1, 1, 1), f32)
        self.labels = dev(b["labels"].shape if self.is_xent else (1, 1, 1), np.int64)
        self.mask = dev(b["mask"].shape, f32)
        self.scale = dev(members, f32)
        self._n = 0
        self._dummy = dev((1, 1, 1, 1), f32)

    # -- training ------------------------------------------------------------------------
    def launch(self, slot: int, n: int) -> None:
        """Queue the training step of models 0 .. n-1 on batch set `slot`."""
        b, k, s = self.slots[slot], self.k, self.k.shape
        self.x[:n].copy_to_device(b["x"][:n])
        if self.is_xent:
            self.labels[:n].copy_to_device(b["labels"][:n])
            self.scale[:n].copy_to_device((1.0 / b["denom"][:n]).astype(np.float32))
        else:
            self.y[:n].copy_to_device(b["y"][:n])
            self.scale[:n].copy_to_device((2.0 / b["denom"][:n]).astype(np.float32))
        self.mask[:n].copy_to_device(b["mask"][:n])
        B = self.batch
        S = self.yout.shape[1]
        tpb = 128
        cells = s.zw * s.nb * self.H
        k.pack[(-(-cells // tpb), n), tpb](self.params, self.wcat, n)
        blocks = (n, -(-B // k.block_seqs))
        k.forward[blocks, k.threads](self.x, self.wcat, self.params, self.hs, self.cs,
                                     self.gates, self.yout)
        k.loss_terms[(-(-(S * B) // tpb), n), tpb](self.yout, self.y, self.labels, self.mask,
                                                  self.scale, self.dy, self.terms)
        k.reduce_rows[n, self.ck.REDUCE](self.terms, S * B, self.sums)
        k.backward[blocks, k.threads](self.params, self.hs, self.cs, self.gates, self.dy,
                                      self.norms)
        tile = self.ck.TILE
        k.weight_grads[(-(-(s.nb * self.H) // tile), -(-s.zw // tile), n), (tile, tile)](
            self.x, self.hs, self.gates, self.grads)
        heads = self.O * (self.H + 1)
        k.head_grads[(-(-heads // tpb), n), tpb](self.hs, self.dy, self.grads)
        self._n = n

    def wait(self) -> np.ndarray:
        """The loss sums (n,) of the queued step, as float64 (summed in float32)."""
        return self.sums[:self._n].copy_to_host().astype(np.float64)

    @staticmethod
    def update_threads(elements: int):
        """Host threads for clipping and optimizer steps: theirs run on the device."""
        return nullcontext()

    def profiles(self, rows) -> np.ndarray:
        """grad_norm_per_step of the last step for `rows`: the batch mean of ||dL/dh_t||,
        summed over the batch in order in float64 as optbench.nn does."""
        norms = self.norms.copy_to_host()[np.asarray(rows, np.int64)]
        out = np.zeros((norms.shape[0], norms.shape[2]))
        for b in range(norms.shape[1]):
            out += norms[:, b]
        return out / norms.shape[1]

    # -- evaluation ----------------------------------------------------------------------
    def predict(self, rows, xs: np.ndarray) -> np.ndarray:
        """Outputs (M, N, S, O) of the models in `rows` on xs (M, N, T, I)."""
        cuda = self.cuda
        rows = np.asarray(rows, np.int64)
        M, N, T = xs.shape[:3]
        # Evaluation sets are large: blocks of as many sequences as fill THREADS threads
        # (the forward pass alone, so shared memory holds only the z rows).
        seq, groups = launch_shape(self.H, self.I, N, self.kind, training=False)
        k = self.ck.kernels(self.kind, self.H, self.I, self.O, self.every, self.is_xent, seq,
                            groups)
        S = T if self.every else 1
        params = self.params if np.array_equal(rows, np.arange(rows.size)) else \
            cuda.to_device(self.params.copy_to_host()[rows])
        x = cuda.to_device(np.ascontiguousarray(xs, np.float32))
        wcat = cuda.device_array((M,) + self.wcat.shape[1:], np.float32)
        out = cuda.device_array((M, S, N, self.O), np.float32)
        s, tpb = k.shape, 128
        k.pack[(-(-(s.zw * s.nb * self.H) // tpb), M), tpb](params, wcat, M)
        k.predict[(M, -(-N // k.block_seqs)), k.threads](x, wcat, params, self._dummy,
                                                        self._dummy, self._dummy, out)
        return out.copy_to_host().transpose(0, 2, 1, 3)

    # -- memory --------------------------------------------------------------------------
    def load(self, params: np.ndarray) -> None:
        self.params.copy_to_device(np.ascontiguousarray(params, np.float32))

    def copy(self, a):
        out = self.cuda.device_array(a.shape, a.dtype)
        out.copy_to_device(a)
        return out

    @staticmethod
    def to_host(a) -> np.ndarray:
        return a.copy_to_host()

    @staticmethod
    def put(dst, values: np.ndarray) -> None:
        dst.copy_to_device(np.ascontiguousarray(values))

    def sync(self) -> None:
        self.cuda.synchronize()

    def environment(self) -> dict:
        from optbench.env import cuda_status

        return {"lockstep_device": "cuda", "cuda": cuda_status(),
                "lockstep_launch": f"{self.k.seq} sequences x {self.k.groups} groups per block"}

    # -- membership ----------------------------------------------------------------------
    def compact(self, keep) -> None:
        keep = np.asarray(keep, np.int64)
        host = self.params.copy_to_host()
        self.params[:keep.size].copy_to_device(host[keep])

    def row(self, i: int):
        return self.copy(self.params[i])

    def set_row(self, i: int, values) -> None:
        self.params[i].copy_to_device(values)

    def close(self) -> None:
        pass
