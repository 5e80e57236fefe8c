"""Copy memory (Arjovsky, Shah & Bengio 2016, sec. 4.1, after Hochreiter & Schmidhuber 1997).

Alphabet {a_0..a_9}: a_0..a_7 are data symbols, a_8 the blank, a_9 the delimiter.
Generator, for a delay T (the task's `length`): the input is 10 data symbols drawn
uniformly from the 8, then T - 1 blanks, the delimiter, then 10 blanks: T + 20 steps in
all, each symbol one-hot (input_size 10). The target is T + 10 blanks followed by the 10
data symbols in their order. The loss is the softmax cross-entropy at every step, averaged
over the T + 20 steps and the batch; the outputs are the 9 classes a_0..a_8 (the delimiter
is never a target). The metric is that same mean cross-entropy (nats per step, lower is
better), the quantity the paper plots and states its baseline in.

Baseline: a predictor without memory outputs the blank for the first T + 10 steps (cost 0)
and a uniform guess over the 8 data symbols for the last 10 (log 8 each):
10 log(8) / (T + 20).

Solved: mean cross-entropy <= 1 / (T + 20), i.e. at most 0.1 nats per recalled symbol
if the blanks cost nothing: a geometric-mean probability >= e^-0.1 = 0.90 on the right
symbol, about 5 % of the baseline's log 8 = 2.08 nats per recalled symbol.
"""

from __future__ import annotations

import math

import numpy as np

from optbench.tasks.base import Batch, Task, one_hot

DATA_SYMBOLS = 8
BLANK = 8
DELIMITER = 9
RECALL = 10  # symbols to remember
SOLVED_NATS_PER_SYMBOL = 0.1


class Copy(Task):
    name = "copy"
    input_size = 10
    output_size = 9
    head = "every"
    loss = "xent"
    metric_name = "cross-entropy"
    higher_is_better = False
    min_length = 1  # T - 1 >= 0 blanks

    def steps(self, length):
        return self.check_length(length) + 2 * RECALL

    def _sample(self, rng, batch_size, length):
        steps = length + 2 * RECALL
        data = rng.integers(0, DATA_SYMBOLS, (batch_size, RECALL))
        symbols = np.full((batch_size, steps), BLANK, dtype=np.int64)
        symbols[:, :RECALL] = data
        symbols[:, length + RECALL - 1] = DELIMITER
        y = np.full((batch_size, steps), BLANK, dtype=np.int64)
        y[:, -RECALL:] = data
        return Batch(one_hot(symbols, self.input_size), y)

    def baseline(self, length):
        return RECALL * math.log(DATA_SYMBOLS) / self.steps(length)

    def solved(self, metric, length):
        return bool(metric <= RECALL * SOLVED_NATS_PER_SYMBOL / self.steps(length))
