"""Sequential digits, plain and permuted: the one real-data task.

Data: scikit-learn's bundled optical-recognition digits (`sklearn.datasets.load_digits`:
1797 images of 8 x 8 pixels with values 0..16, 10 classes), the small cousin of the
sequential MNIST of Le, Jaitly & Hinton 2015 (sec. 4.2). Each image is fed one pixel per
step in row-major order, scaled to [0, 1] (input_size 1, T = 64); the class is read at
the last step, scored with softmax cross-entropy; the metric is accuracy. The permuted
variant applies one fixed permutation of the 64 pixel positions to every image (as
permuted MNIST does), which puts related pixels far apart in time.

Split: one fixed shuffle (seeded by SPLIT_SEED, the same for every run seed) puts 360
images in the test set, 360 in the validation set and the other 1077 in the training set;
training batches draw from the training set uniformly with replacement. The held-out
images are the same for every seed, as MNIST's test set is, so seeds differ only in the
model's initialisation and the order of the batches, and every seed is scored on the
same images.

Lengths: only T = 64 (one step per pixel); there is no other length of an 8 x 8 image.

Baseline: a predictor that sees no pixels predicts the training set's most frequent class;
its validation accuracy (0.083 on this split) is the baseline.
Solved: validation accuracy >= 0.90, nine in ten digits read right after the last pixel.
Logistic regression on all 64 pixels at once gets 0.95 (val) / 0.97 (test) on this split
(scikit-learn defaults), so 0.90 sits just below what a model that sees the whole image
reaches: the network must carry most of the image to the last step.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from optbench.errors import UsageError
from optbench.tasks.base import Batch, ClassificationTask

LENGTH = 64
CLASSES = 10
SPLIT_SEED = 8_1997  # fixes the train/val/test split (every run seed shares it)
PERMUTATION_SEED = 64_2015  # fixes the permutation of the permuted variant
N_VAL = N_TEST = 360
INSTALL_HINT = 'the digits tasks need scikit-learn: pip install "optbench[digits]"'


def require_sklearn() -> None:
    try:
        import sklearn.datasets  # noqa: F401
    except ImportError:
        raise UsageError(INSTALL_HINT) from None


@lru_cache(maxsize=1)
def _split() -> dict[str, Batch]:
    """{"train", "val", "test"} -> Batch of the plain (unpermuted) images."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = (data.images.reshape(-1, LENGTH, 1) / 16.0).astype(np.float32)
    y = data.target.astype(np.int64)
    order = np.random.default_rng(SPLIT_SEED).permutation(len(y))
    parts = {"test": order[:N_TEST], "val": order[N_TEST:N_TEST + N_VAL],
             "train": order[N_TEST + N_VAL:]}
    return {k: Batch(np.ascontiguousarray(x[i]), y[i]) for k, i in parts.items()}


def permutation() -> np.ndarray:
    """The fixed pixel order of the permuted variant: step t shows pixel permutation()[t]."""
    return np.random.default_rng(PERMUTATION_SEED).permutation(LENGTH)


class Digits(ClassificationTask):
    input_size = 1
    output_size = CLASSES
    head = "last"
    solved_accuracy = 0.90
    min_length = LENGTH
    val_size, test_size = N_VAL, N_TEST
    allowed_lengths = f"{LENGTH} only (one step per pixel of an 8 x 8 image)"

    def __init__(self, permuted: bool):
        require_sklearn()
        self.permuted = permuted
        self.name = "digits_permuted" if permuted else "digits"
        self.order = permutation() if permuted else np.arange(LENGTH)

    def check_length(self, length):
        if super().check_length(length) != LENGTH:
            raise UsageError(
                f"task {self.name!r}: length {length!r} not allowed; allowed: {self.allowed_lengths}"
            )
        return LENGTH

    def split(self, name: str) -> Batch:
        """The whole "train", "val" or "test" split, pixels in this variant's order."""
        x, y, _ = _split()[name]
        return Batch(np.ascontiguousarray(x[:, self.order]), y)

    def _sample(self, rng, batch_size, length):
        x, y, _ = _split()["train"]
        i = rng.integers(0, len(y), batch_size)
        return Batch(np.ascontiguousarray(x[i][:, self.order]), y[i])

    def _held_out(self, stream, length, split):
        return self.split(split)  # the same held-out images for every seed

    def baseline(self, length):
        self.check_length(length)
        majority = np.bincount(_split()["train"].y, minlength=CLASSES).argmax()
        return float(np.mean(_split()["val"].y == majority))

    def baseline_loss(self, length):
        """Cross-entropy of predicting the training set's class frequencies."""
        self.check_length(length)
        p = np.bincount(_split()["train"].y, minlength=CLASSES) / len(_split()["train"].y)
        return float(-np.mean(np.log(p[_split()["val"].y])))
