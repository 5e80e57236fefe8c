"""LSTM cell (Hochreiter & Schmidhuber 1997; forget gate: Gers, Schmidhuber & Cummins
2000) exactly as torch.nn.LSTM computes it, gates in torch's order i, f, g, o:

    i = sigmoid(W_ii x + b_ii + W_hi h + b_hi)        f = sigmoid(... f rows ...)
    g = tanh(W_ig x + b_ig + W_hg h + b_hg)           o = sigmoid(... o rows ...)
    c_t = f * c_{t-1} + i * g                         h_t = o * tanh(c_t)

Backward through time at step t, with dh = dL/dh_t (total: head + through step t+1)
and dc the part of dL/dc_t that came through c_{t+1}:

    dc += dh * o * (1 - tanh(c_t)^2)
    d pre_i = dc * g * i (1 - i)          d pre_f = dc * c_{t-1} * f (1 - f)
    d pre_g = dc * i * (1 - g^2)          d pre_o = dh * tanh(c_t) * o (1 - o)
    dc_{t-1} = dc * f

Both passes run one batch chunk per thread through all time steps, so threads never
wait on each other; see optbench.nn._bptt for the shared layout (G blocks 0..3 = i, f,
o, g: the three sigmoid gates side by side) and optbench.nn._gemm for the per-step
products.
"""

from __future__ import annotations

from llvmlite import ir
from numba import prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from optbench.nn._bptt import CellSpec, dh_step, start_state
from optbench.nn._gemm import (
    SIGMOID,
    TANH,
    data_pointer,
    mm,
    vector_act,
    vector_type,
)
from optbench.nn._jit import kernel


def _rows_and_pointers(context, builder, signature, args, first, which, n, ety):
    """(first row, end row) from the 2-element array args[first], then (data pointer, row
    stride in elements) of each 2-D array args[k], k in `which`."""
    rows = context.make_array(signature.args[first])(context, builder, args[first])
    out = [builder.load(rows.data), builder.load(builder.gep(rows.data, [n(1)]))]
    for k in which:
        a = context.make_array(signature.args[k])(context, builder, args[k])
        stride = builder.sdiv(builder.extract_value(a.strides, 0), n(context.get_abi_sizeof(ety)))
        out.append((data_pointer(context, builder, signature.args[k], args[k], n(0)), stride))
    return out


def _unit_pointer(builder, ptr, row, ld, col, hp, block, n):
    """Pointer to unit `col` of gate block `block` (blocks of Hp columns) in row `row` of
    a 2-D array with row stride `ld` whose data starts at `ptr`."""
    return builder.gep(ptr, [builder.add(builder.add(builder.mul(row, ld), col),
                                         builder.mul(hp, n(block)))])


@intrinsic
def _cell_forward(typingctx, rows, hidden, g, hp, c0, c1, z):
    """The cell update of one forward step for batch rows rows[0] .. rows[1]-1, in
    explicit vector code (see `_cell_backward` for why), over the vectors of units that
    hold units < H:

        c_t = f * c_{t-1} + i * g     (c0 -> c1; c1's padding units past those stay 0)
        h_t = o * tanh(c_t)           (-> z, units < H only: z's row goes on with 1, x)

    i, f, o, g: G at step t (g), activated by the gate product.
    """
    dtype = g.dtype
    sig = types.void(rows, types.intp, g, types.intp, c0, c1, z)

    def codegen(context, builder, signature, args):
        hidden, hp = args[1], args[3]
        vty, lanes, fma = vector_type(context, builder, dtype)
        def n(value):
            return ir.Constant(hp.type, value)

        lo, hi, (gp, ldg), (c0p, ldc), (c1p, _), (zp, ldz) = _rows_and_pointers(
            context, builder, signature, args, 0, (2, 4, 5, 6), n, vty.element)
        n_vec = builder.sdiv(builder.add(hidden, n(lanes - 1)), n(lanes))
        with cgutils.for_range_slice(builder, lo, hi, n(1)) as (b, _):  # noqa: SIM117
            with cgutils.for_range(builder, n_vec) as vloop:
                col = builder.mul(vloop.index, n(lanes))

                def at(ptr, ld, block=0):
                    return _unit_pointer(builder, ptr, b, ld, col, hp, block, n)

                def load(ptr, ld, block=0):
                    return builder.load(builder.bitcast(at(ptr, ld, block), vty.as_pointer()),
                                        align=1)

                i, f, o, gg = (load(gp, ldg, blk) for blk in range(4))
                cn = builder.call(fma, [f, load(c0p, ldc), builder.fmul(i, gg)])
                builder.store(cn, builder.bitcast(at(c1p, ldc), vty.as_pointer()), align=1)
                h = builder.fmul(o, vector_act(builder, cn, TANH, fma))
                hz = at(zp, ldz)
                whole = builder.icmp_signed("<=", builder.add(col, n(lanes)), hidden)
                with builder.if_else(whole) as (full, part):
                    with full:
                        builder.store(h, builder.bitcast(hz, vty.as_pointer()), align=1)
                    with part:
                        for lane in range(lanes):
                            inside = builder.icmp_signed("<", builder.add(col, n(lane)), hidden)
                            with builder.if_then(inside):
                                builder.store(builder.extract_element(h, ir.IntType(32)(lane)),
                                              builder.gep(hz, [n(lane)]))
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def _cell_backward(typingctx, rows, dh, g, hp, c0, c1, dc, norms, t):
    """The element-wise part of BPTT at step t for batch rows rows[0] .. rows[1]-1, over
    all Hp units in whole vectors (the padding units hold zeros in dh, c and dc, so G's
    come out zero there), in explicit vector code: with H = 32 the loops that Numba
    generated for it ran in LLVM's narrow remainder path (the main vector body takes 64
    units per turn) and cost most of the step's recurrent product. Per unit, with
    dh = dL/dh_t and dc = the part of dL/dc_t through c_{t+1}:

        dc += dh * o * (1 - tanh(c_t)^2)          G[o] = dh * tanh(c_t) * o (1 - o)
        G[i] = dc * g * i (1 - i)                 G[g] = dc * i (1 - g^2)
        G[f] = dc * c_{t-1} * f (1 - f)           dc *= f

    G (g at step t: the activated gates i, f, o, g in blocks of Hp columns) is
    overwritten with dL/d(pre-activations); norms[b, t] = ||dh[b]||.
    """
    intp = types.intp
    dtype = dh.dtype
    sig = types.void(rows, dh, g, intp, c0, c1, dc, norms, intp)

    def codegen(context, builder, signature, args):
        hp, t = args[3], args[8]
        vty, lanes, fma = vector_type(context, builder, dtype)
        ety = vty.element
        sqrt = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ety, [ety]),
            "llvm.sqrt.f32" if isinstance(ety, ir.FloatType) else "llvm.sqrt.f64")
        def n(value):
            return ir.Constant(t.type, value)

        lo, hi, (dhp, lddh), (gp, ldg), (c0p, ldc), (c1p, _), (dcp, lddc), (normp, ldn) = (
            _rows_and_pointers(context, builder, signature, args, 0, (1, 2, 4, 5, 6, 7), n, ety))
        n_vec = builder.sdiv(hp, n(lanes))  # Hp is a multiple of the panel width
        one = ir.Constant(vty, [1.0] * lanes)
        mul, sub = builder.fmul, builder.fsub
        sq = cgutils.alloca_once(builder, vty)
        with cgutils.for_range_slice(builder, lo, hi, n(1)) as (b, _):
            builder.store(ir.Constant(vty, None), sq)
            with cgutils.for_range(builder, n_vec) as vloop:
                col = builder.mul(vloop.index, n(lanes))

                def at(ptr, ld, block=0):
                    return builder.bitcast(_unit_pointer(builder, ptr, b, ld, col, hp, block, n),
                                           vty.as_pointer())

                ptrs = {"d": at(dhp, lddh), "i": at(gp, ldg), "f": at(gp, ldg, 1),
                        "o": at(gp, ldg, 2), "g": at(gp, ldg, 3), "cp": at(c0p, ldc),
                        "cn": at(c1p, ldc), "dc": at(dcp, lddc)}
                v = {k: builder.load(p, align=1) for k, p in ptrs.items()}
                d, o, i, f, gg = v["d"], v["o"], v["i"], v["f"], v["g"]
                builder.store(builder.call(fma, [d, d, builder.load(sq)]), sq)
                tc = vector_act(builder, v["cn"], TANH, fma)
                dc = builder.call(fma, [mul(d, o), sub(one, mul(tc, tc)), v["dc"]])
                builder.store(mul(mul(d, tc), sub(o, mul(o, o))), ptrs["o"], align=1)
                builder.store(mul(mul(dc, gg), sub(i, mul(i, i))), ptrs["i"], align=1)
                builder.store(mul(mul(dc, i), sub(one, mul(gg, gg))), ptrs["g"], align=1)
                builder.store(mul(mul(dc, v["cp"]), sub(f, mul(f, f))), ptrs["f"], align=1)
                builder.store(mul(dc, f), ptrs["dc"], align=1)
            acc = builder.load(sq)
            total = builder.extract_element(acc, ir.IntType(32)(0))
            for lane in range(1, lanes):
                total = builder.fadd(total, builder.extract_element(acc, ir.IntType(32)(lane)))
            builder.store(builder.call(sqrt, [total]),
                          builder.gep(normp, [builder.add(builder.mul(b, ldn), t)]))
        return context.get_dummy_value()

    return sig, codegen


@kernel
def lstm_forward_rows(x, z, g, c, y, cat_data, cat_pk, head_data, head_pk, rows, hidden,
                      hp, every):
    """Forward over x (B, T, I) for batch rows rows[0] .. rows[1]-1, on the calling thread.
    Slots are taken modulo the buffers' first dimension: T+1 / T for training (everything
    kept for BPTT), 2 / 1 when streaming. Writes h_t into z, c_t into c, the activated
    gates into g, head outputs into y."""
    steps = x.shape[1]
    lo, hi = rows[0], rows[1]
    start_state(z[0], lo, hi, hidden)
    c[0, lo:hi] = 0
    for t in range(steps):
        zt, zn = z[t % z.shape[0]], z[(t + 1) % z.shape[0]]
        gt = g[t % g.shape[0]]
        c0, c1 = c[t % c.shape[0]], c[(t + 1) % c.shape[0]]
        for b in range(lo, hi):
            for k in range(x.shape[2]):
                zt[b, hidden + 1 + k] = x[b, t, k]
        # The product applies the gates' sigmoid / tanh in registers (SPEC.activations).
        mm(zt, 0, cat_data, cat_pk, gt, 0, lo, hi, False)
        _cell_forward(rows, hidden, gt, hp, c0, c1, zn)
        if every or t == steps - 1:
            mm(zn, 0, head_data, head_pk, y[t % y.shape[0]], 0, lo, hi, False)


@kernel(parallel=True)
def lstm_forward(x, z, g, c, y, cat_data, cat_pk, head_data, head_pk, rows, hidden,
                 hp, every):
    """`lstm_forward_rows` for each chunk of rows (rows[i] .. rows[i+1]-1), one per thread."""
    for chunk in prange(rows.size - 1):
        lstm_forward_rows(x, z, g, c, y, cat_data, cat_pk, head_data, head_pk,
                          rows[chunk:chunk + 2], hidden, hp, every)


@kernel
def lstm_backward_rows(z, g, c, dy, bwd_data, bwd_pk, headt_data, headt_pk, dh, dc, norms,
                       rows, hidden, hp, every):
    """BPTT for batch rows rows[0] .. rows[1]-1, on the calling thread: overwrites g with
    dL/d(pre-activations) and norms[b, t] with ||dL/dh_t[b]||."""
    steps = g.shape[0]
    lo, hi = rows[0], rows[1]
    dc[lo:hi] = 0
    for t in range(steps - 1, -1, -1):
        last = t == steps - 1
        dh_step(last, every or last, False, dy[t % dy.shape[0]], headt_data, headt_pk,
                g[min(t + 1, steps - 1)], bwd_data, bwd_pk, dh, lo, hi)
        _cell_backward(rows, dh, g[t], hp, c[t], c[t + 1], dc, norms, t)


@kernel(parallel=True)
def lstm_backward(z, g, c, dy, bwd_data, bwd_pk, headt_data, headt_pk, dh, dc, norms,
                  rows, hidden, hp, every):
    """`lstm_backward_rows` for each chunk of rows, one per thread."""
    for chunk in prange(rows.size - 1):
        lstm_backward_rows(z, g, c, dy, bwd_data, bwd_pk, headt_data, headt_pk, dh, dc,
                           norms, rows[chunk:chunk + 2], hidden, hp, every)


SPEC = CellSpec(
    name="lstm", gates=("i", "f", "g", "o"), ih_blocks=(0, 1, 3, 2), hh_blocks=(0, 1, 3, 2),
    forward=lstm_forward, backward=lstm_backward, cell_state=True,
    forward_rows=lstm_forward_rows, backward_rows=lstm_backward_rows,
    activations=(SIGMOID, SIGMOID, SIGMOID, TANH),
    reference="Hochreiter & Schmidhuber 1997; Gers, Schmidhuber & Cummins 2000",
)
