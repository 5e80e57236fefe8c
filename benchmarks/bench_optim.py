"""Time of one optimizer step, per optimizer, backend and size.

Sizes: 2^10 parameters (the step runs serially on the calling thread: call overhead),
2^16 (about the seed's LSTM, 67 713 parameters) and 2^22 (memory-bound: 16 MiB per
vector). `python -m optbench kernels` times the same steps against the memory bandwidth
and torch.optim; this suite tracks them over commits.
"""

from optbench import optim

from ._common import optimizer_step


class OptimizerStep:
    params = [list(optim.builtin_names()), ["cpu", "cuda"], [1 << 10, 1 << 16, 1 << 22]]
    param_names = ["optimizer", "backend", "params"]

    def setup(self, name, backend, n):
        if backend == "cuda":
            from optbench.env import cuda_status

            status = cuda_status()
            if not status.startswith("gpu"):  # the simulator's timings would mean nothing
                raise NotImplementedError(f"the cuda step is timed on a GPU only; CUDA here: "
                                          f"{status}")
        self.step, _ = optimizer_step(name, backend, n)
        self.step()  # compile or load from the cache: kept out of the timing

    def time_step(self, name, backend, n):
        self.step()
