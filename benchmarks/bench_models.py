"""The recurrent models' training step at the seed's configuration, and one whole cell.

The training step is one batch of the adding problem (T = 100, batch 32, 2 inputs) through
a 128-unit layer and its head: forward, BPTT, global-norm clipping and an Adam step, as
optbench.train takes it (`python -m optbench kernels --section models` times it, less
the clipping, against PyTorch). peakmem_ is the process's peak resident memory; asv counts the
imports and the setup too, and Numba, LLVM and the loaded kernels hold most of it (for
the LSTM, 186 MB: 115 MB after the imports, 176 MB once the first call had loaded the
kernels), so it moves when the step's buffers grow past that level.
"""

from optbench.cell import Cell

from ._common import seed_cell, train_step

# One whole small benchmark cell, as `python -m optbench run` runs it: 200 steps of an
# LSTM(32) on the adding problem at T = 25 with Adam at its default lr, scored on the
# validation set every 50 steps and on the test set at the end. At lr 1e-3 it does not
# solve within 200 steps, so every run does the same work.
SMALL_CELL = Cell(task="adding", length=25, model="lstm", hidden=32, optimizer="adam",
                  hparams={"lr": 1e-3}, seed=0, steps=200, eval_every=50)


class TrainStep:
    params = [["lstm", "gru", "rnn"]]
    param_names = ["model"]

    def setup(self, model):
        self.step, _ = train_step(seed_cell(model))
        self.step()  # compile or load from the cache: kept out of the figures

    def time_train_step(self, model):
        self.step()

    def peakmem_train_step(self, model):
        self.step()


class RunCell:
    number = 1
    repeat = (1, 5, 30.0)
    timeout = 300

    def setup(self):
        from optbench.train import run_cell

        self.run_cell = run_cell
        run_cell(SMALL_CELL)  # compile or load from the cache: kept out of the timing

    def time_run_cell(self):
        self.run_cell(SMALL_CELL)


class LockstepStep:
    """One lockstep training step of K LSTM(32) models on the CPU (T = 25, batch 32: the
    `quick` preset's shape; forward, BPTT, per-model clipping and the (K, P) Adam step),
    beside which K separate models' steps show what grouping buys
    (`python -m optbench kernels --section lockstep` times both against torch)."""

    params = [[1, 16]]
    param_names = ["models"]

    def setup(self, models):
        import numpy as np

        from optbench.lockstep.bench import _lockstep

        self.step = _lockstep("cpu", "lstm", 32, 25, 32, 2, models, np.random.default_rng(0))
        self.step()  # compile or load from the cache: kept out of the figures

    def time_lockstep_step(self, models):
        self.step()
