"""Long-range parity, an optbench task plugin: `plugins = ["parity.py"]`, task "parity".

Generator, for a length T: two input channels; channel 0 holds random bits (0 or 1) at every
step, channel 1 marks two of them with a 1: one at a uniform position in the first quarter
[0, T//4), one in the second [T//4, T//2). The target, read at the last step, is the XOR of
the two marked bits: both must be carried across at least T/2 steps, and neither bit alone
says anything about the answer (parity is the classic case where no partial credit guides
the gradient; Hochreiter & Schmidhuber 1997, sec. 5.3, used a longer parity).

Baseline: a predictor that remembers nothing is right half the time: accuracy 1/2.
Solved: validation accuracy >= 0.95.
"""

import math

import numpy as np

from optbench import tasks
from optbench.tasks import Batch, ClassificationTask


@tasks.register
class Parity(ClassificationTask):
    name = "parity"
    input_size = 2
    output_size = 2
    head = "last"
    min_length = 4  # a non-empty window in each quarter
    solved_accuracy = 0.95

    def _sample(self, rng, batch_size, length):
        bits = rng.integers(0, 2, (batch_size, length))
        rows = np.arange(batch_size)
        first = rng.integers(0, length // 4, batch_size)
        second = rng.integers(length // 4, length // 2, batch_size)
        x = np.zeros((batch_size, length, 2), np.float32)
        x[:, :, 0] = bits
        x[rows, first, 1] = 1
        x[rows, second, 1] = 1
        return Batch(x, (bits[rows, first] ^ bits[rows, second]).astype(np.int64))

    def baseline(self, length):
        self.check_length(length)
        return 0.5

    def baseline_loss(self, length):
        self.check_length(length)
        return math.log(2)
