"""Temporal order (Hochreiter & Schmidhuber 1997, sec. 5.6: experiments 6a and 6b).

Paper, 6a: "The sequence starts with an E, ends with a B (the 'trigger symbol') and
otherwise consists of randomly chosen symbols from the set {a, b, c, d} except for two
elements at positions t1 and t2 that are either X or Y. The sequence length is randomly
chosen between 100 and 110, t1 is randomly chosen between 10 and 20, and t2 is randomly
chosen between 50 and 60. There are 4 sequence classes Q, R, S, U which depend on the
temporal order of X and Y: X,X -> Q; X,Y -> R; Y,X -> S; Y,Y -> U."
6b adds a third relevant symbol: t1 in [10, 20], t2 in [33, 43], t3 in [66, 76], and 8
classes, one for each X/Y order.

Generator, for a length T: the paper's sequence with the length fixed to T (a batch shares
one length; the paper drew 100..110) and the position windows scaled with T:
[floor(lo * T / 100), floor(hi * T / 100)] for the paper's (lo, hi) at T = 100, so T = 100
gives the paper's windows exactly. Positions and distractors are uniform, each relevant
symbol is X or Y with probability 1/2, and the class is the X/Y order read as a binary
number (X = 0, Y = 1, first symbol most significant): Q, R, S, U = 0, 1, 2, 3 as in the
paper. Symbols are one-hot over E, B, a, b, c, d, X, Y (input_size 8); the class is the
target at the last step (the trigger B), scored with softmax cross-entropy.

Baseline: without memory the classes are equally likely: accuracy 1 / n_classes.
Solved: validation accuracy >= 0.99. The paper trained until the last 2000 training
sequences were all classified correctly; with a fixed validation set of 512 sequences,
99 % (at most 5 wrong) is the corresponding bar that does not need a perfect score.
"""

from __future__ import annotations

import numpy as np

from optbench.tasks.base import Batch, ClassificationTask, one_hot

E, B, X, Y = 0, 1, 6, 7
DISTRACTORS = (2, 3, 4, 5)  # a, b, c, d
SYMBOLS = 8
# The relevant positions' windows at T = 100, from the paper.
WINDOWS = {2: ((10, 20), (50, 60)), 3: ((10, 20), (33, 43), (66, 76))}


class TemporalOrder(ClassificationTask):
    input_size = SYMBOLS
    head = "last"
    solved_accuracy = 0.99
    min_length = 10  # the smallest T whose scaled windows stay disjoint and inside (0, T-1)

    def __init__(self, relevant: int):
        self.relevant = relevant
        self.output_size = 2**relevant
        self.name = f"temporal_order_{self.output_size}"

    def windows(self, length: int) -> list[tuple[int, int]]:
        """The inclusive position windows of the relevant symbols at this length."""
        length = self.check_length(length)
        return [(lo * length // 100, hi * length // 100) for lo, hi in WINDOWS[self.relevant]]

    def _sample(self, rng, batch_size, length):
        symbols = rng.choice(np.array(DISTRACTORS), (batch_size, length))
        symbols[:, 0] = E
        symbols[:, -1] = B
        rows = np.arange(batch_size)
        bits = rng.integers(0, 2, (batch_size, self.relevant))
        for k, (lo, hi) in enumerate(self.windows(length)):
            symbols[rows, rng.integers(lo, hi + 1, batch_size)] = X + bits[:, k]
        y = bits @ (1 << np.arange(self.relevant - 1, -1, -1))
        return Batch(one_hot(symbols, SYMBOLS), y.astype(np.int64))

    def baseline(self, length):
        self.check_length(length)
        return 1.0 / self.output_size

    def baseline_loss(self, length):
        self.check_length(length)
        return float(np.log(self.output_size))
