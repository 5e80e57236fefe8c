"""The adding problem in the variant of Le, Jaitly & Hinton 2015 (sec. 4.1) and Arjovsky,
Shah & Bengio 2016 (sec. 4.2).

Generator: two input channels of length T. Channel 0 holds values drawn i.i.d. from
U[0, 1); channel 1 is 0 except for exactly two 1s, the markers: one at a uniform position
in the first half [0, T//2), one at a uniform position in the second half [T//2, T). The
target, read at the last step, is the sum of the two marked values; the loss is the MSE.

Baseline: a predictor that sees no values predicts a constant c; the MSE E[(a + b - c)^2]
is smallest at c = E[a + b] = 1, where it is Var(a + b) = 2 * 1/12 = 1/6 at every T.

Solved: validation MSE <= 0.01, i.e. 6 % of the baseline: the model explains 94 % of the
target's variance, an RMS error of 0.1 against a target spread over [0, 2]. (Hochreiter &
Schmidhuber 1997 counted a sequence right at absolute error < 0.04; an MSE threshold is the
form the later papers plot.) The threshold is the same at every T.
"""

from __future__ import annotations

import numpy as np

from optbench.tasks.base import Batch, Task

SOLVED_MSE = 0.01


class Adding(Task):
    name = "adding"
    input_size = 2
    output_size = 1
    head = "last"
    loss = "mse"
    metric_name = "mse"
    higher_is_better = False
    min_length = 2  # one marker in each half needs two steps

    def _sample(self, rng, batch_size, length):
        half = length // 2
        values = rng.random((batch_size, length), dtype=np.float32)
        rows = np.arange(batch_size)
        first = rng.integers(0, half, batch_size)
        second = rng.integers(half, length, batch_size)
        x = np.zeros((batch_size, length, 2), dtype=np.float32)
        x[:, :, 0] = values
        x[rows, first, 1] = 1
        x[rows, second, 1] = 1
        y = (values[rows, first] + values[rows, second])[:, None]
        return Batch(x, y)

    def baseline(self, length):
        self.check_length(length)
        return 1.0 / 6.0

    def solved(self, metric, length):
        self.check_length(length)
        return bool(metric <= SOLVED_MSE)  # NaN compares False
