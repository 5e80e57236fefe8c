"""optbench.nn: the public API, input checks, initialisation, determinism, NaN handling,
and the building blocks (float32 activations, the packed matrix products)."""

import numba
import numpy as np
import pytest

from optbench import nn
from optbench.errors import UsageError
from optbench.nn._act import sigmoid, tanh
from optbench.nn._gemm import SIGMOID, STORE, TANH, gemm, mm, mm_tn, pack, panel_table, row
from optbench.nn._jit import EVAL_ROWS, kernel, panel_width
from helpers import assert_sum_within_bound


def data(model, B=4, T=6, loss="mse", seed=0, dtype=None):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((B, T, model.input_size)).astype(dtype or model.dtype)
    every = model.head == "every"
    if loss == "mse":
        y = rng.standard_normal((B, T, model.output_size) if every else (B, model.output_size))
        return x, y.astype(model.dtype)
    return x, rng.integers(0, model.output_size, (B, T) if every else (B,))


# -- API --------------------------------------------------------------------------------
@pytest.mark.parametrize("kind,gates", [("lstm", 4), ("gru", 3), ("rnn", 1)])
def test_layout_uses_torch_names_shapes_and_one_flat_vector(kind, gates):
    I, H, O = 3, 7, 2
    model = nn.build(kind, I, H, O)
    assert model.params.dtype == np.float32 and model.params.ndim == 1
    assert {k: v.shape for k, v in model.views.items()} == {
        "weight_ih_l0": (gates * H, I), "weight_hh_l0": (gates * H, H),
        "bias_ih_l0": (gates * H,), "bias_hh_l0": (gates * H,),
        "head.weight": (O, H), "head.bias": (O,)}
    assert model.n_params == gates * H * (I + H + 2) + O * (H + 1) == model.params.size
    for v in model.views.values():
        assert np.shares_memory(v, model.params)
    model.views["head.bias"][:] = 7  # a write through a view lands in the flat vector
    assert np.count_nonzero(model.params == 7) == O


def test_names_and_options():
    assert nn.names() == ("lstm", "rnn", "gru")
    assert nn.HEADS == ("last", "every") and nn.INITS == ("default", "chrono", "keras")
    assert tuple(nn.LOSSES) == ("mse", "xent")


def test_loss_and_grad_reuses_its_gradient_buffer_and_reports_every_step():
    model = nn.build("lstm", 2, 5, 1)
    x, y = data(model, B=3, T=7)
    loss1, g1, diag1 = model.loss_and_grad(x, y)
    first = g1.copy()
    loss2, g2, diag2 = model.loss_and_grad(x, y)
    assert isinstance(loss1, float) and g2 is g1 and diag1.grad_norm_per_step.shape == (7,)
    assert loss1 == loss2 and np.array_equal(first, g2)
    assert np.array_equal(diag1.grad_norm_per_step, diag2.grad_norm_per_step)
    assert diag1.grad_norm_per_step is not diag2.grad_norm_per_step


@pytest.mark.parametrize("kind", nn.names())
@pytest.mark.parametrize("head", nn.HEADS)
def test_streaming_forward_equals_training_forward_bit_for_bit(kind, head):
    model = nn.build(kind, 3, 9, 4, head=head, seed=1)
    for loss in ("mse", "xent"):
        x, y = data(model, B=5, T=8, loss=loss)
        value, _, _ = model.loss_and_grad(x, y, loss=loss)
        assert model.loss(x, y, loss=loss) == value


def test_predict_rows_do_not_depend_on_the_batch_around_them():
    model = nn.build("gru", 2, 6, 3, head="every", seed=2)
    x, _ = data(model, B=EVAL_ROWS + 5, T=3)
    out = model.predict(x)
    assert out.shape == (EVAL_ROWS + 5, 3, 3) and out.dtype == np.float32
    for i in (0, 3, EVAL_ROWS - 1, EVAL_ROWS + 4):
        assert np.array_equal(out[i], model.predict(x[i:i + 1])[0])


@pytest.mark.parametrize("kind", nn.names())
def test_results_are_bit_identical_for_any_numba_thread_count(kind):
    model = nn.build(kind, 2, 37, 3, head="every", seed=4)
    x, y = data(model, B=11, T=5, loss="xent")
    threads = numba.get_num_threads()
    try:
        runs = []
        for n in sorted({1, threads}):
            numba.set_num_threads(n)
            loss, grads, diag = model.loss_and_grad(x, y, loss="xent")
            runs.append((loss, grads.copy(), diag.grad_norm_per_step))
    finally:
        numba.set_num_threads(threads)
    for loss, grads, norms in runs[1:]:
        assert loss == runs[0][0]
        assert np.array_equal(grads, runs[0][1]) and np.array_equal(norms, runs[0][2])


def test_work_buffers_and_packed_weights_start_on_a_cache_line():
    """The tiles load whole 64-byte rows; numpy's own allocations start 16 bytes into a
    line, which split every such load in two (H=32 step 1.14x slower on two threads)."""
    model = nn.build("lstm", 2, 32, 1)
    model.loss_and_grad(*data(model, B=8, T=3))
    ws = next(iter(model._workspaces.values()))
    arrays = [ws.z, ws.g, ws.c, ws.y, ws.dh, ws.dc, model._dwt]
    arrays += [d for d, _ in model._packed.values()]
    assert all(a.ctypes.data % 64 == 0 for a in arrays)


def test_each_thread_owns_one_contiguous_stretch_of_the_work_buffers():
    """Batch-major storage (optbench.nn._bptt): rows of a time slice lie a whole
    sequence apart, so a batch chunk's rows over all steps are one stretch of memory."""
    model = nn.build("lstm", 2, 8, 1)
    x, y = data(model, B=8, T=5)
    model.loss_and_grad(x, y)
    ws = next(iter(model._workspaces.values()))
    for view, base in ((ws.z, ws.zb), (ws.g, ws.gb), (ws.c, ws.cb), (ws.dy, ws.dyb)):
        assert base.flags.c_contiguous and view.base is not None
        assert view.strides[1] == base.strides[0] > view.strides[0]
    # G's extra training slot stays zero: it pairs with Z's last slot in the product.
    assert not ws.gb[:, -1].any() and ws.zb[:, -1, :8].any()


def test_row_is_a_contiguous_view_of_one_row_of_a_strided_slice():
    @numba.njit
    def first_and_sum(a, i):
        r = row(a, i)
        r[0] = -1.0
        return r.size, r.sum()

    base = np.arange(3 * 4 * 5, dtype=np.float32).reshape(3, 4, 5)
    view = base.transpose(1, 0, 2)[2]  # rows 20 elements apart
    assert first_and_sum(view, 1) == (5, -1.0 + 31 + 32 + 33 + 34)
    assert base[1, 2, 0] == -1.0 and base[0, 2, 0] == 10.0


def test_float64_input_is_cast_to_the_model_dtype():
    model = nn.build("rnn", 2, 4, 1)
    x, y = data(model, dtype=np.float64)
    assert model.loss_and_grad(x, y)[0] == model.loss_and_grad(x.astype(np.float32), y)[0]


def test_flops_count_the_three_products_of_each_step():
    model = nn.build("lstm", 2, 128, 1)
    B, T, H, I, O = 32, 100, 128, 2, 1
    gates = B * T * (H + 1 + I) * 4 * H  # [h | 1 | x] @ Wcat, multiply-adds
    recurrent = B * (T - 1) * 4 * H * H  # dG_{t+1} @ W_hh
    head = B * O * (H + 1) + B * O * H + O * B * (H + 1)
    assert model.flops(B, T) == 2 * (2 * gates + recurrent + head) == 1_273_782_400
    gru = nn.build("gru", 2, 128, 1)
    # GRU: r, z use [h | 1 | x]; the candidate's two products use [h | 1] and [1 | x].
    assert gru.flops(B, T) == 2 * (2 * B * T * H * (2 * (H + 1 + I) + (H + 1) + (1 + I))
                                   + B * (T - 1) * 3 * H * H + head)


@pytest.mark.parametrize("kind", nn.names())
def test_float32_agrees_with_float64_at_the_benchmark_shape(kind):
    """The float32 kernels (rational tanh, 32-column panels with AVX-512) against float64
    (checked against torch and finite differences) on the same weights, B=32, T=100,
    H=128. Seen: relative differences <= 2e-7 (loss, profile), 1.5e-6 (gradients)."""
    rng = np.random.default_rng(3)
    wide = nn.build(kind, 2, 128, 1, seed=0, dtype="float64")
    wide.params[:] += 0.05 * rng.standard_normal(wide.n_params)
    narrow = nn.build(kind, 2, 128, 1, seed=0)
    narrow.params[:] = wide.params
    x, y = rng.standard_normal((32, 100, 2)), rng.standard_normal((32, 1))
    loss64, g64, diag64 = wide.loss_and_grad(x, y)
    loss32, g32, diag32 = narrow.loss_and_grad(x.astype(np.float32), y.astype(np.float32))
    assert loss32 == pytest.approx(loss64, rel=2e-6)
    for name, g in narrow.unflatten(g32).items():
        expect = wide.unflatten(g64)[name]
        np.testing.assert_allclose(g, expect, rtol=0, atol=2e-5 * np.abs(expect).max(),
                                   err_msg=f"{kind}: gradient of {name}")
    norms = diag64.grad_norm_per_step
    np.testing.assert_allclose(diag32.grad_norm_per_step, norms, rtol=0, atol=2e-6 * norms.max())


def test_strided_input_gives_the_same_result_as_contiguous():
    model = nn.build("gru", 2, 5, 3, head="every")
    x, y = data(model, B=4, T=6, loss="xent")
    wide = np.zeros((4, 12, 2), np.float32)
    wide[:, ::2] = x
    loss, grads, _ = model.loss_and_grad(x, y, loss="xent")
    grads = grads.copy()
    loss2, grads2, _ = model.loss_and_grad(wide[:, ::2], y, loss="xent")
    assert loss == loss2 and np.array_equal(grads, grads2)
    assert np.array_equal(model.predict(wide[:, ::2]), model.predict(x))


# -- bad input ----------------------------------------------------------------------------
def one_line_error(call, *words):
    with pytest.raises(UsageError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message
    for word in words:
        assert word in message, (word, message)


@pytest.mark.parametrize("kwargs,words", [
    (dict(kind="lstmx"), ["lstmx", "lstm, rnn, gru"]),
    (dict(hidden_size=0), ["hidden_size", "positive integer"]),
    (dict(input_size=2.0), ["input_size"]),
    (dict(output_size=True), ["output_size"]),
    (dict(head="all"), ["head", "last, every"]),
    (dict(dtype="float16"), ["float16", "float32, float64"]),
    (dict(init="xavier"), ["xavier", "default, chrono"]),
    (dict(seed=-1), ["seed"]),
    (dict(kind="rnn", init="chrono", chrono_tmax=100), ["rnn", "no gates"]),
    (dict(init="chrono"), ["chrono_tmax"]),
    (dict(init="chrono", chrono_tmax=2), ["chrono_tmax", "> 2"]),
])
def test_build_refuses_bad_arguments(kwargs, words):
    args = dict(kind="lstm", input_size=2, hidden_size=4, output_size=1) | kwargs
    one_line_error(lambda: nn.build(**args), *words)


@pytest.mark.parametrize("head,loss,change,words", [
    ("last", "mse", dict(x=np.zeros((4, 6), np.float32)), ["x", "(batch, steps, 2)"]),
    ("last", "mse", dict(x=np.zeros((4, 6, 3), np.float32)), ["(batch, steps, 2)", "(4, 6, 3)"]),
    ("last", "mse", dict(x=np.zeros((0, 6, 2), np.float32)), ["batch, steps >= 1"]),
    ("last", "mse", dict(x=np.zeros((4, 6, 2), np.int64)), ["floating", "int64"]),
    ("last", "mse", dict(y=np.zeros((4,), np.float32)), ["(4, 3)", "(4,)"]),
    ("last", "mse", dict(y=np.zeros((4, 3), np.int64)), ["floating"]),
    ("last", "xent", dict(y=np.zeros((4,), np.float32)), ["integer class indices"]),
    ("last", "xent", dict(y=np.full(4, 3)), ["outside [0, 3)", "max 3"]),
    ("every", "xent", dict(y=np.zeros((4,), np.int64)), ["(4, 6)"]),
    ("last", "mae", {}, ["mae", "mse, xent"]),
    ("last", "mse", dict(mask=np.ones((4, 6))), ["head 'every'"]),
    ("every", "xent", dict(mask=np.ones((4, 5))), ["mask", "(4, 6)"]),
    ("every", "xent", dict(mask=np.ones((4, 6), np.int64)), ["bool or floating"]),
    ("every", "xent", dict(mask=-np.ones((4, 6))), [">= 0"]),
    ("every", "mse", dict(mask=np.zeros((4, 6), bool)), ["not all 0"]),
    ("every", "mse", dict(mask=np.full((4, 6), np.nan)), ["finite"]),
])
def test_loss_and_grad_refuses_bad_input(head, loss, change, words):
    model = nn.build("lstm", 2, 4, 3, head=head)
    x, y = data(model, loss="xent" if loss == "xent" else "mse")
    args = dict(x=x, y=y, loss=loss, mask=None) | change
    one_line_error(lambda: model.loss_and_grad(**args), *words)
    if "y" not in change and "mask" not in change and loss in nn.LOSSES:
        one_line_error(lambda: model.predict(args["x"]), *words)


def test_unflatten_refuses_arrays_of_another_layout():
    model = nn.build("rnn", 2, 3, 1)
    n = model.n_params
    one_line_error(lambda: model.unflatten(np.zeros(n + 1)), str(n), f"({n + 1},)")
    one_line_error(lambda: model.unflatten(np.zeros((1, n))), str(n))
    one_line_error(lambda: model.unflatten(list(model.params)), "list")
    assert model.unflatten(np.arange(n))["head.bias"][0] == n - 1


# -- initialisation -------------------------------------------------------------------------
@pytest.mark.parametrize("kind", nn.names())
def test_init_orthogonal_recurrent_glorot_input_and_head(kind):
    I, H, O = 3, 16, 2
    model = nn.build(kind, I, H, O, seed=5, dtype="float64")
    v = model.views
    for g in range(v["weight_hh_l0"].shape[0] // H):
        block = v["weight_hh_l0"][g * H:(g + 1) * H]
        np.testing.assert_allclose(block @ block.T, np.eye(H), atol=1e-12)
    limit = np.sqrt(6 / (I + H))
    assert np.abs(v["weight_ih_l0"]).max() <= limit
    assert np.abs(v["weight_ih_l0"]).max() > 0.8 * limit  # uniform over the range
    assert np.abs(v["head.weight"]).max() <= np.sqrt(6 / (H + O))
    assert not v["head.bias"].any() and not v["bias_hh_l0"].any()


def test_default_init_puts_the_forget_bias_in_one_vector_only():
    H = 6
    lstm = nn.build("lstm", 2, H, 1)
    b_ih, b_hh = lstm.views["bias_ih_l0"], lstm.views["bias_hh_l0"]
    assert np.array_equal(b_ih[H:2 * H], np.ones(H)) and not b_hh.any()
    assert not b_ih[:H].any() and not b_ih[2 * H:].any()
    for kind in ("gru", "rnn"):
        v = nn.build(kind, 2, H, 1).views
        assert not v["bias_ih_l0"].any() and not v["bias_hh_l0"].any()


def test_chrono_init_ranges():
    H, tmax = 200, 50
    lstm = nn.build("lstm", 2, H, 1, init="chrono", chrono_tmax=tmax, dtype="float64").views
    b_i, b_f = lstm["bias_ih_l0"][:H], lstm["bias_ih_l0"][H:2 * H]
    assert 0 <= b_f.min() and b_f.max() <= np.log(tmax - 1)
    assert b_f.max() > 0.9 * np.log(tmax - 1) and np.array_equal(b_i, -b_f)
    assert not lstm["bias_ih_l0"][2 * H:].any() and not lstm["bias_hh_l0"].any()
    gru = nn.build("gru", 2, H, 1, init="chrono", chrono_tmax=tmax, dtype="float64").views
    b_z = gru["bias_ih_l0"][H:2 * H]
    assert 0 <= b_z.min() and b_z.max() <= np.log(tmax - 1) and b_z.std() > 0.3
    assert not gru["bias_ih_l0"][:H].any() and not gru["bias_ih_l0"][2 * H:].any()


def test_init_depends_on_the_seed_only():
    a, b = nn.build("lstm", 2, 8, 1, seed=3), nn.build("lstm", 2, 8, 1, seed=3)
    assert np.array_equal(a.params, b.params)
    assert not np.array_equal(a.params, nn.build("lstm", 2, 8, 1, seed=4).params)
    wide = nn.build("lstm", 2, 8, 1, seed=3, dtype="float64")
    assert np.array_equal(a.params, wide.params.astype(np.float32))


# -- divergence is a value, not a crash -------------------------------------------------------
@pytest.mark.parametrize("kind", nn.names())
def test_nan_weights_and_inf_inputs_give_nan_not_errors(kind):
    model = nn.build(kind, 2, 5, 2, head="every")
    x, y = data(model, loss="xent")
    model.views["weight_hh_l0"][0, 0] = np.nan
    loss, grads, diag = model.loss_and_grad(x, y, loss="xent")
    assert np.isnan(loss) and np.isnan(grads).any() and np.isnan(model.predict(x)).any()
    # An infinite input saturates the gates (as in torch) but not the weight gradient.
    model = nn.build(kind, 2, 5, 2, head="every")
    x[0, 0, 0] = np.inf
    assert not np.isfinite(model.loss_and_grad(x, y, loss="xent")[1]).all()


# -- building blocks ---------------------------------------------------------------------------
@kernel
def _activations(x, t, s):
    for i in range(x.size):
        t[i] = tanh(x[i])
        s[i] = sigmoid(x[i])


def test_float32_tanh_and_sigmoid_are_within_3e7_and_keep_nan():
    x = np.concatenate([np.linspace(-20, 20, 200001), [np.nan, np.inf, -np.inf, 0.0]])
    for dtype, tol in ((np.float32, 3e-7), (np.float64, 1e-15)):
        xs = x.astype(dtype)
        t, s = np.empty_like(xs), np.empty_like(xs)
        _activations(xs, t, s)
        exact = xs.astype(np.float64)
        with np.errstate(over="ignore"):
            assert np.nanmax(np.abs(t[:-4] - np.tanh(exact[:-4]))) < tol
            assert np.nanmax(np.abs(s[:-4] - 1 / (1 + np.exp(-exact[:-4])))) < tol
        assert np.isnan(t[-4]) and np.isnan(s[-4])
        assert abs(t[-3] - 1) < tol and abs(t[-2] + 1) < tol and abs(s[-2]) < tol
        assert t[-1] == 0 and s[-1] == 0.5


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("M,K,N", [(1, 1, 1), (7, 13, 50), (9, 40, 33)])
def test_packed_product_matches_numpy(dtype, M, K, N):
    rng = np.random.default_rng(M)
    nr = panel_width(np.dtype(dtype).itemsize)
    b = rng.standard_normal((K + 2, N)).astype(dtype)
    a = rng.standard_normal((M + 1, K + 5)).astype(dtype)
    panels = -(-N // nr)
    ranges = [(1, K + 1) if p % 2 else (0, K + 2) for p in range(panels)]  # rows per panel
    pk, size = panel_table(ranges, nr)
    packed = np.full(size, np.nan, dtype)
    pack(b, packed, pk)
    c = rng.standard_normal((M + 1, panels * nr)).astype(dtype)
    before = c.copy()
    mm(a, 3, packed, pk, c, 0, 1, M + 1, True)  # rows 1..M; a's columns from 3
    for p, (k0, k1) in enumerate(ranges):
        cols = slice(p * nr, min((p + 1) * nr, N))
        assert_sum_within_bound(c[1:, cols], a[1:, 3 + k0:3 + k1], b[k0:k1, cols],
                                before[1:, cols])
    assert np.array_equal(c[0], before[0])  # rows outside [lo, hi) untouched
    mm(a, 3, packed, pk, c, 0, 0, M + 1, False)
    assert_sum_within_bound(c[:, :min(nr, N)], a[:, 3:K + 5], b[:, :min(nr, N)])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_packed_product_applies_each_panels_activation_in_registers(dtype):
    """mm with a panel table that names activations (the LSTM's gates): STORE, SIGMOID
    and TANH panels against numpy on pre-activations out to +-20 (past the float32
    clamp), a NaN row, row counts that use the tall tile and the 4-row remainder; ADD
    ignores the activations."""
    rng = np.random.default_rng(3)
    nr = panel_width(np.dtype(dtype).itemsize)
    M, K = 13, 21
    a = rng.standard_normal((M, K)).astype(dtype)
    a[5, 2] = np.nan
    b = (rng.standard_normal((K, 3 * nr)) * 1.5).astype(dtype)
    pk, size = panel_table([(0, K)] * 3, nr, [STORE, SIGMOID, TANH])
    packed = np.empty(size, dtype)
    pack(b, packed, pk)
    c = np.full((M, 3 * nr), -7.0, dtype)
    mm(a, 0, packed, pk, c, 0, 0, M, False)
    raw = np.empty_like(c)  # the same sums, stored as they are
    mm(a, 0, packed, np.ascontiguousarray(pk[:, :3]), raw, 0, 0, M, False)
    pre = raw.astype(np.float64)
    ok = ~np.isnan(a).any(axis=1)  # row 5 (NaN) is checked below
    assert_sum_within_bound(raw[ok], a[ok], b)
    assert np.nanmax(np.abs(pre)) > 10
    with np.errstate(over="ignore"):
        expect = np.concatenate([pre[:, :nr], 1 / (1 + np.exp(-pre[:, nr:2 * nr])),
                                 np.tanh(pre[:, 2 * nr:])], axis=1)
    tol = 3e-7 if dtype == np.float32 else 1e-12
    assert np.array_equal(c[:, :nr], raw[:, :nr], equal_nan=True)
    np.testing.assert_allclose(c[:, nr:], expect[:, nr:], rtol=0, atol=tol)
    assert np.isnan(c[5]).all() and not np.isnan(np.delete(c, 5, axis=0)).any()
    before = c.copy()
    mm(a, 0, packed, pk, c, 0, 0, M, True)
    assert_sum_within_bound(c[ok], a[ok], b, before[ok])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_weight_gradient_product_matches_numpy(dtype):
    rng = np.random.default_rng(1)
    nr = panel_width(np.dtype(dtype).itemsize)
    K, M, N = 301, 11, 3 * nr
    a, b = rng.standard_normal((K, M)).astype(dtype), rng.standard_normal((K, N)).astype(dtype)
    c = np.full((M, N), np.nan, dtype)
    panels = np.array([[0, 0, M], [2, 3, 9], [1, 5, 5]], np.int64)  # the last one: no rows
    mm_tn(a, b, c, panels, 64)  # K = 301: four blocks, the last one partial
    assert_sum_within_bound(c[:, :nr], a, b[:, :nr], transpose_a=True)
    assert_sum_within_bound(c[3:9, 2 * nr:], a[:, 3:9], b[:, 2 * nr:], transpose_a=True)
    assert np.isnan(c[:, nr:2 * nr]).all()


def test_blas_gemm_on_views():
    rng = np.random.default_rng(2)
    for dtype in (np.float32, np.float64):
        a = rng.standard_normal((20, 9)).astype(dtype)
        b = rng.standard_normal((20, 12)).astype(dtype)
        c = np.ones((9, 14), dtype)
        gemm(True, a, b[:, 2:], 1.0, c[:, 3:13])
        assert_sum_within_bound(c[:, 3:13], a, b[:, 2:], np.ones((9, 10)), transpose_a=True)
        assert (c[:, :3] == 1).all() and (c[:, 13:] == 1).all()
        gemm(False, a[:9], b[:9, :5], 0.0, c[:, :5])
        assert_sum_within_bound(c[:, :5], a[:9], b[:9, :5])
