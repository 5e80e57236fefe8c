"""The tasks: generators checked against the papers' descriptions, baselines against the
memoryless predictors they describe, and bad input refused with a one-line UsageError."""

import math
import sys

import numpy as np
import pytest

from optbench import tasks
from optbench.errors import UsageError
from optbench.tasks.base import Batch, log_softmax
from optbench.tasks.digits import permutation

LENGTH = {"adding": 40, "copy": 15, "temporal_order_4": 30, "temporal_order_8": 30,
          "digits": 64, "digits_permuted": 64}


def rng(seed=0):
    return np.random.default_rng(seed)


def test_names_and_unknown_name():
    assert set(tasks.names()) == set(LENGTH)
    with pytest.raises(UsageError, match="unknown task 'nope'; allowed: adding, copy, "):
        tasks.get("nope")


@pytest.mark.parametrize("name", list(LENGTH))
def test_contract(name):
    task = tasks.get(name)
    length = LENGTH[name]
    x, y, mask = task.sample(rng(), 5, length)
    assert mask is None
    assert x.dtype == np.float32 and x.flags.c_contiguous
    assert x.shape == (5, task.steps(length), task.input_size)
    if task.loss == "mse":
        assert y.dtype == np.float32 and y.shape == (5, task.output_size)
    else:
        assert y.dtype == np.int64
        assert y.shape == ((5,) if task.head == "last" else (5, task.steps(length)))
        assert 0 <= y.min() and y.max() < task.output_size
    # deterministic in the Generator
    again = task.sample(rng(), 5, length)
    assert np.array_equal(x, again.x) and np.array_equal(y, again.y)
    assert task.head in ("last", "every") and task.loss in ("mse", "xent")
    assert isinstance(task.higher_is_better, bool) and task.metric_name


@pytest.mark.parametrize("name", list(LENGTH))
def test_bad_lengths_and_batch_sizes_are_refused(name):
    task = tasks.get(name)
    for bad in (0, -3, 2.5, "64", True, task.min_length - 1):
        with pytest.raises(UsageError, match=f"task '{name}': length .* not allowed; allowed: "):
            task.sample(rng(), 2, bad)
    for bad in (0, -1, 1.5, None):
        with pytest.raises(UsageError, match="batch_size must be a positive integer"):
            task.sample(rng(), bad, LENGTH[name])


def test_digits_allow_only_64():
    for bad in (63, 65, 128):
        with pytest.raises(UsageError, match=r"length .* not allowed; allowed: 64 only"):
            tasks.get("digits").baseline(bad)


@pytest.mark.parametrize("name", list(LENGTH))
def test_eval_sets_fixed_per_seed_and_apart_from_training(name):
    task = tasks.get(name)
    length = LENGTH[name]
    val = task.eval_set(3, length, "val")
    test = task.eval_set(3, length, "test")
    assert len(val.y) == task.val_size and len(test.y) == task.test_size
    again = task.eval_set(3, length, "val")
    assert np.array_equal(val.x, again.x) and np.array_equal(val.y, again.y)
    if name.startswith("digits"):
        # one split for every seed; the three parts share no image
        assert np.array_equal(task.eval_set(4, length, "val").x, val.x)
        seen = {img.tobytes() for img in task.split("train").x}
        assert not any(img.tobytes() in seen for img in np.concatenate([val.x, test.x]))
    else:
        assert not np.array_equal(task.eval_set(4, length, "val").x, val.x)
        first = task.sample(task.train_rng(3), task.val_size, length)
        assert not np.array_equal(first.x, val.x)
        assert not np.array_equal(val.x, test.x[: task.val_size])
    with pytest.raises(UsageError, match="split 'train' unknown; allowed: val, test"):
        task.eval_set(3, length, "train")
    with pytest.raises(UsageError, match="seed must be a non-negative integer"):
        task.eval_set(-1, length, "val")


# -- adding --------------------------------------------------------------------------------

@pytest.mark.parametrize("length", [2, 3, 41])
def test_adding_markers_and_target(length):
    x, y, _ = tasks.get("adding").sample(rng(1), 300, length)
    values, markers = x[..., 0], x[..., 1]
    assert values.min() >= 0 and values.max() < 1
    half = length // 2
    assert (markers[:, :half].sum(1) == 1).all() and (markers[:, half:].sum(1) == 1).all()
    assert np.isin(markers, [0, 1]).all()
    np.testing.assert_array_equal(y[:, 0], (values * markers).sum(1, dtype=np.float32))


def test_adding_baseline_is_the_mse_of_predicting_one():
    task = tasks.get("adding")
    batch = task.sample(rng(2), 200_000, 20)
    mse, metric = task.evaluate(np.ones((200_000, 1), np.float32), batch)
    assert mse == metric
    # Var(a + b) = 1/6; the standard error of the mean of 200k squares is ~4e-4
    assert abs(mse - task.baseline(20)) < 2e-3
    assert task.solved(0.0099, 20) and not task.solved(0.0101, 20)
    assert not task.solved(float("nan"), 20)


# -- copy ----------------------------------------------------------------------------------

@pytest.mark.parametrize("delay", [1, 7])
def test_copy_layout_follows_arjovsky(delay):
    task = tasks.get("copy")
    x, y, _ = task.sample(rng(3), 50, delay)
    symbols = x.argmax(-1)
    assert (x.sum(-1) == 1).all()
    steps = delay + 20
    assert symbols.shape == (50, steps)
    data = symbols[:, :10]
    assert data.max() < 8
    blank, delim = 8, 9
    assert (symbols[:, 10:delay + 9] == blank).all()  # T - 1 blanks
    assert (symbols[:, delay + 9] == delim).all()
    assert (symbols[:, delay + 10:] == blank).all()  # 10 blanks after the delimiter
    assert (y[:, :delay + 10] == blank).all()
    np.testing.assert_array_equal(y[:, delay + 10:], data)


def test_copy_baseline_is_the_memoryless_cross_entropy():
    task = tasks.get("copy")
    delay = 30
    batch = task.sample(rng(4), 64, delay)
    steps = delay + 20
    logits = np.full((64, steps, 9), -1e4, np.float32)
    logits[:, : delay + 10, 8] = 0  # certain blank
    logits[:, delay + 10:, :8] = 0  # uniform over the 8 data symbols
    loss, metric = task.evaluate(logits, batch)
    assert loss == metric
    assert loss == pytest.approx(10 * math.log(8) / (delay + 20), rel=1e-12)
    assert loss == pytest.approx(task.baseline(delay), rel=1e-12)
    assert task.solved(1 / steps, delay) and not task.solved(1.01 / steps, delay)


# -- temporal order ------------------------------------------------------------------------

def test_temporal_order_windows_are_the_papers_at_100_and_disjoint_everywhere():
    assert tasks.get("temporal_order_4").windows(100) == [(10, 20), (50, 60)]
    assert tasks.get("temporal_order_8").windows(100) == [(10, 20), (33, 43), (66, 76)]
    for name in ("temporal_order_4", "temporal_order_8"):
        task = tasks.get(name)
        for length in range(10, 1500):
            w = task.windows(length)
            assert w[0][0] >= 1 and w[-1][1] <= length - 2
            assert all(a[1] < b[0] for a, b in zip(w, w[1:])), (name, length)


@pytest.mark.parametrize("name,relevant", [("temporal_order_4", 2), ("temporal_order_8", 3)])
def test_temporal_order_sequences_and_classes(name, relevant):
    task = tasks.get(name)
    length = 100
    x, y, _ = task.sample(rng(5), 4000, length)
    s = x.argmax(-1)
    E, B, X, Y = 0, 1, 6, 7
    assert (s[:, 0] == E).all() and (s[:, -1] == B).all()
    assert np.isin(s[:, 1:-1], [2, 3, 4, 5, X, Y]).all()
    rel = np.isin(s, [X, Y])
    assert (rel.sum(1) == relevant).all()
    pos = np.nonzero(rel)[1].reshape(-1, relevant)
    for k, (lo, hi) in enumerate(task.windows(length)):
        assert pos[:, k].min() == lo and pos[:, k].max() == hi  # whole window used
    # The paper's table: X,X -> Q(0); X,Y -> R(1); Y,X -> S(2); Y,Y -> U(3); 6b alike.
    order = (s[rel].reshape(-1, relevant) == Y).astype(int)
    expected = [int("".join(map(str, row)), 2) for row in order]
    np.testing.assert_array_equal(y, expected)
    counts = np.bincount(y, minlength=2**relevant)
    assert counts.min() > 0.8 * 4000 / 2**relevant  # about uniform
    acc = task.evaluate(np.zeros((4000, 2**relevant), np.float32) + np.eye(2**relevant)[0], Batch(x, y))[1]
    assert acc == pytest.approx(task.baseline(length), abs=0.03)
    assert task.solved(0.99, length) and not task.solved(0.989, length)


# -- digits --------------------------------------------------------------------------------

def test_digits_pixels_and_permutation():
    from sklearn.datasets import load_digits

    plain, permuted = tasks.get("digits"), tasks.get("digits_permuted")
    data = load_digits()
    flat = data.images.reshape(len(data.target), 64) / 16
    train = plain.split("train")
    assert len(train.y) == 1797 - 720
    # every training sequence is one of sklearn's images, pixel by pixel, with its label
    index = {np.round(row * 16).astype(int).tobytes(): label for row, label in zip(flat, data.target)}
    for xs, label in zip(train.x[:50, :, 0], train.y[:50]):
        assert index[np.round(xs * 16).astype(int).tobytes()] == label
    perm = permutation()
    assert sorted(perm) == list(range(64)) and not np.array_equal(perm, np.arange(64))
    np.testing.assert_array_equal(permuted.split("val").x, plain.split("val").x[:, perm])
    np.testing.assert_array_equal(permuted.split("val").y, plain.split("val").y)
    b = permuted.sample(rng(6), 8, 64)
    assert b.x.min() >= 0 and b.x.max() <= 1


def test_digits_baseline_is_the_majority_class():
    task = tasks.get("digits")
    majority = np.bincount(task.split("train").y).argmax()
    val = task.split("val")
    logits = np.zeros((len(val.y), 10), np.float32)
    logits[:, majority] = 1
    assert task.evaluate(logits, val)[1] == task.baseline(64)
    assert 0.05 < task.baseline(64) < 0.15
    # and the loss baseline is the cross-entropy of the training class frequencies
    p = np.bincount(task.split("train").y, minlength=10) / len(task.split("train").y)
    assert task.evaluate(np.log(np.tile(p, (len(val.y), 1))), val)[0] == pytest.approx(
        task.baseline_loss(64), rel=1e-9)


def test_digits_without_sklearn_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(UsageError) as exc:
        tasks.get("digits_permuted")
    assert str(exc.value) == 'the digits tasks need scikit-learn: pip install "optbench[digits]"'
    assert "digits" in tasks.names()


# -- scores --------------------------------------------------------------------------------

def test_scores_against_hand_computation():
    logits = np.array([[2.0, 0.5, -1.0], [0.0, 0.0, 3.0]], np.float32)
    y = np.array([0, 1])
    lse = [math.log(math.exp(2) + math.exp(0.5) + math.exp(-1)), math.log(2 + math.exp(3))]
    want = ((lse[0] - 2.0) + (lse[1] - 0.0)) / 2
    task = tasks.get("temporal_order_4")
    loss, acc = task.evaluate(logits, Batch(np.zeros((2, 10, 8), np.float32), y))
    assert loss == pytest.approx(want, rel=1e-12) and acc == 0.5
    # a large logit does not overflow
    assert np.isfinite(log_softmax(np.array([[1e4, 0.0]], np.float32))).all()
    # a mask weights the per-step terms
    task = tasks.get("copy")
    logits = rng(7).standard_normal((2, 3, 9)).astype(np.float32)
    y = np.array([[1, 2, 3], [4, 5, 6]])
    mask = np.array([[1, 0, 1], [0, 0, 1]], np.float32)
    lp = log_softmax(logits)
    terms = [-lp[0, 0, 1], -lp[0, 2, 3], -lp[1, 2, 6]]
    loss, _, count = task.score(logits, Batch(None, y, mask))
    assert count == 3 and loss == pytest.approx(sum(terms), rel=1e-12)


def test_chunked_scores_add_up():
    task = tasks.get("adding")
    batch = task.sample(rng(8), 10, 12)
    out = rng(9).random((10, 1)).astype(np.float32)
    whole = task.score(out, batch)
    parts = [task.score(out[i:i + 4], Batch(batch.x[i:i + 4], batch.y[i:i + 4])) for i in (0, 4, 8)]
    assert np.allclose(whole, np.sum(parts, axis=0), rtol=1e-12)
