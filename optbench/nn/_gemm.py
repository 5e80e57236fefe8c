"""Matrix products of the recurrent models: a register-tiled kernel for the per-step
products and for the weight gradients over all steps (`mm_tn`), scipy's BLAS for the
head's small product.

Why not BLAS every time step? A time step multiplies a few batch rows by a fixed weight
matrix, e.g. (16 x 128) @ (128 x 512) per thread at the seed's configuration. OpenBLAS
packs the weight matrix again on every call, which on such small products costs about as
much as the multiply-adds. The weights do not change during a pass, so `pack` lays them
out once per call in panels of NR columns, and `mm` runs an MR x NR register tile over
them (`_tile`, written in LLVM vector IR so that the accumulators stay in registers),
close to the core's peak on the same shapes (`python -m optbench kernels --section
models` reports the GFLOP/s beside an SGEMM).

Packed layout. A packed right operand is a flat array `data` plus an int table `pk`
with one row (offset, k0, k1) per panel p: for k0 <= k < k1 and 0 <= j < NR,
``data[offset + (k - k0) * NR + j] = B[k, p * NR + j]`` (0 past the last column of B).
Rows of B outside [k0, k1) are zero for that panel and are skipped, which is how a
GRU's candidate gate leaves out the input (or the hidden) part of its product. An
optional fourth column names an activation that `mm` applies to the panel's results in
registers (the LSTM's gates: `_tile`'s SIGMOID and TANH modes).
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.core.imputils import impl_ret_borrowed
from numba.extending import intrinsic, overload
from numba.np.linalg import ensure_blas

from optbench.nn._act import TANH_CLAMP, TANH_P, TANH_Q
from optbench.nn._jit import JIT, MR, NV, VECTOR_BYTES, kernel

ensure_blas()  # numba's BLAS entry points come from scipy.linalg.cython_blas


# What a tile does with its sums (`_tile`'s `mode`): store them, add them to C, or
# store sigmoid / tanh of them.
STORE, ADD, SIGMOID, TANH = 0, 1, 2, 3


def _vector_tanh(builder, x, fma):
    """The float32 tanh of optbench.nn._act (Eigen's rational approximation) on a vector."""
    vty = x.type

    def const(v):
        return ir.Constant(vty, [float(v)] * vty.count)

    hi, lo = const(TANH_CLAMP), const(-TANH_CLAMP)
    # Selects, not minnum / maxnum: NaN compares false and so passes through, as in _act.
    v = builder.select(builder.fcmp_ordered(">", x, hi), hi, x)
    v = builder.select(builder.fcmp_ordered("<", v, lo), lo, v)
    x2 = builder.fmul(v, v)
    p = const(TANH_P[0])
    for coef in TANH_P[1:]:
        p = builder.call(fma, [p, x2, const(coef)])
    q = const(TANH_Q[0])
    for coef in TANH_Q[1:]:
        q = builder.call(fma, [q, x2, const(coef)])
    return builder.fdiv(builder.fmul(v, p), q)


def _lanewise(builder, x, name, fn):
    """fn(libm `name`, lane) for each lane of x (float64: the gradient-check mode)."""
    ety = x.type.element
    f = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ety, [ety]), name)
    out = ir.Constant(x.type, ir.Undefined)
    for lane in range(x.type.count):
        at = ir.IntType(32)(lane)
        out = builder.insert_element(out, fn(f, builder.extract_element(x, at)), at)
    return out


def vector_act(builder, x, act, fma):
    """act(x) for a vector x: SIGMOID, TANH, or x itself for any other mode."""
    if act not in (SIGMOID, TANH):
        return x
    if isinstance(x.type.element, ir.DoubleType):
        one = ir.Constant(x.type.element, 1.0)
        if act == TANH:
            return _lanewise(builder, x, "tanh", lambda f, v: builder.call(f, [v]))
        return _lanewise(builder, x, "exp", lambda f, v: builder.fdiv(
            one, builder.fadd(one, builder.call(f, [builder.fneg(v)]))))
    if act == TANH:
        return _vector_tanh(builder, x, fma)
    half = ir.Constant(x.type, [0.5] * x.type.count)  # sigmoid: (1 + tanh(x / 2)) / 2
    return builder.call(fma, [half, _vector_tanh(builder, builder.fmul(half, x), fma), half])


def vector_type(context, builder, dtype):
    """(LLVM vector type of VECTOR_BYTES, its lane count, llvm.fma on it) for `dtype`."""
    ety = context.get_value_type(dtype)
    lanes = VECTOR_BYTES // context.get_abi_sizeof(ety)
    vty = ir.VectorType(ety, lanes)
    suffix = "f32" if dtype == types.float32 else "f64"
    fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vty, [vty] * 3),
                                         f"llvm.fma.v{lanes}{suffix}")
    return vty, lanes, fma


def data_pointer(context, builder, array_type, array, offset):
    """Pointer to element `offset` of an array's data."""
    return builder.gep(context.make_array(array_type)(context, builder, array).data, [offset])


@intrinsic
def row(typingctx, a, i):
    """Row i of a 2-D array whose rows have unit column stride (every work buffer here),
    as a C-contiguous 1-D view. The buffers are batch-major (optbench.nn._bptt), so a
    time slice Z[s] has rows a whole sequence apart and Numba types it, and every row
    sliced from it the ordinary way, as of any layout ('A'): loops over such rows do not
    vectorize."""
    if not (isinstance(a, types.Array) and a.ndim == 2 and isinstance(i, types.Integer)):
        return None
    out_type = types.Array(a.dtype, 1, "C")

    def codegen(context, builder, signature, args):
        src = context.make_array(signature.args[0])(context, builder, args[0])
        index = context.cast(builder, args[1], signature.args[1], types.intp)
        start = builder.mul(index, builder.extract_value(src.strides, 0))
        byte = builder.bitcast(src.data, ir.IntType(8).as_pointer())
        data = builder.bitcast(builder.gep(byte, [start]), src.data.type)
        width = builder.extract_value(src.shape, 1)
        out = context.make_array(out_type)(context, builder)
        context.populate_array(out, data=data, shape=cgutils.pack_array(builder, [width]),
                               strides=cgutils.pack_array(builder, [src.itemsize]),
                               itemsize=src.itemsize, meminfo=src.meminfo, parent=None)
        return impl_ret_borrowed(context, builder, out_type, out._getvalue())

    return out_type(a, i), codegen


def vector_pointer(builder, base, index, vty):
    """Pointer to the vector that starts `index` elements past `base` (any alignment)."""
    return builder.bitcast(builder.gep(base, [index]), vty.as_pointer())


def products(builder, vty, fma, m_r, n_v, init, n_k, ap, a_rs, a_ks, bp, ldb):
    """The register tile's k loop: the m_r x n_v vectors init[r][v] + sum_k A[r, k] * B[k,
    v-th vector] (see `_tile`), as a list of lists of values after the loop."""
    lanes = vty.count
    intp = a_rs.type
    accs = [[cgutils.alloca_once(builder, vty) for _ in range(n_v)] for _ in range(m_r)]
    for r in range(m_r):
        for v in range(n_v):
            builder.store(init[r][v], accs[r][v])
    splat_mask = ir.Constant(ir.VectorType(ir.IntType(32), lanes), [0] * lanes)
    with cgutils.for_range(builder, n_k) as loop:
        k = loop.index
        bk = builder.gep(bp, [builder.mul(k, ldb)])
        ak = builder.gep(ap, [builder.mul(k, a_ks)])
        bv = [builder.load(vector_pointer(builder, bk, intp(v * lanes), vty), align=1)
              for v in range(n_v)]
        for r in range(m_r):
            x = builder.load(builder.gep(ak, [builder.mul(a_rs, intp(r))]))
            x = builder.insert_element(ir.Constant(vty, ir.Undefined), x, ir.IntType(32)(0))
            x = builder.shuffle_vector(x, ir.Constant(vty, ir.Undefined), splat_mask)
            for v in range(n_v):
                builder.store(builder.call(fma, [x, bv[v], builder.load(accs[r][v])]),
                              accs[r][v])
    return [[builder.load(accs[r][v]) for v in range(n_v)] for r in range(m_r)]


@intrinsic(prefer_literal=True)
def _tile(typingctx, mr, nv, mode, n_k, a, a_off, a_rs, a_ks, b, b_off, ldb, c, c_off, ldc):
    """C[r, j] = f(sum_k A[r, k] * B[k, j]) for r < mr, j < nv * VL, k < n_k.

    A[r, k] = a.data[a_off + r * a_rs + k * a_ks]; B[k, j] = b.data[b_off + k * ldb + j];
    C[r, j] = c.data[c_off + r * ldc + j]; VL = VECTOR_BYTES / itemsize lanes. `mode`:
    STORE overwrites C, ADD adds to it, SIGMOID / TANH store that function of the sums,
    applied in registers so that the cells' gates need no pass of their own (the
    functions of optbench.nn._act: float32 its approximation, float64 libm per lane).
    The mr * nv accumulators are vector registers; every k broadcasts mr values of A and
    fuses them with nv vectors of B (llvm.fma).
    """
    if not all(isinstance(t, types.IntegerLiteral) for t in (mr, nv, mode)):
        return None
    m_r, n_v, activation = mr.literal_value, nv.literal_value, mode.literal_value
    dtype = a.dtype
    sig = types.void(mr, nv, mode, types.intp, a, types.intp, types.intp, types.intp,
                     b, types.intp, types.intp, c, types.intp, types.intp)

    def codegen(context, builder, signature, args):
        _, _, _, n_k, a_arr, a_off, a_rs, a_ks, b_arr, b_off, ldb, c_arr, c_off, ldc = args
        vty, lanes, fma = vector_type(context, builder, dtype)
        ap = data_pointer(context, builder, signature.args[4], a_arr, a_off)
        bp = data_pointer(context, builder, signature.args[8], b_arr, b_off)
        cp = data_pointer(context, builder, signature.args[11], c_arr, c_off)
        intp = a_off.type
        at = [[vector_pointer(builder, cp, builder.add(builder.mul(ldc, intp(r)),
                                                        intp(v * lanes)), vty)
               for v in range(n_v)] for r in range(m_r)]
        init = [[builder.load(at[r][v], align=1) if activation == ADD
                 else ir.Constant(vty, None) for v in range(n_v)] for r in range(m_r)]
        sums = products(builder, vty, fma, m_r, n_v, init, n_k, ap, a_rs, a_ks, bp, ldb)
        for r in range(m_r):
            for v in range(n_v):
                builder.store(vector_act(builder, sums[r][v], activation, fma), at[r][v],
                              align=1)
        return context.get_dummy_value()

    return sig, codegen


def _tile_in_mode(mr, mode, n_k, a, a_off, a_rs, a_ks, b, b_off, ldb, c, c_off, ldc):
    """`_tile` with a literal height `mr` and a run-time `mode` (one instantiation each)."""


# Not cached on its own: its code fixes VECTOR_BYTES, and an overload's disk cache is
# stamped with this file only, so after a switch of OPTBENCH_NN_VECTOR_BYTES a cached
# copy ran the other layout's tiles (out-of-bounds writes). Its callers are cached, with
# it inside them, under the package stamp (optbench.nn._jit.kernel).
@overload(_tile_in_mode, prefer_literal=True, jit_options={**JIT, "cache": False})
def _ov_tile_in_mode(mr, mode, n_k, a, a_off, a_rs, a_ks, b, b_off, ldb, c, c_off, ldc):
    if not isinstance(mr, types.IntegerLiteral):
        return None
    m = mr.literal_value

    def impl(mr, mode, n_k, a, a_off, a_rs, a_ks, b, b_off, ldb, c, c_off, ldc):
        if mode == STORE:
            _tile(m, NV, STORE, n_k, a, a_off, a_rs, a_ks, b, b_off, ldb, c, c_off, ldc)
        elif mode == ADD:
            _tile(m, NV, ADD, n_k, a, a_off, a_rs, a_ks, b, b_off, ldb, c, c_off, ldc)
        elif mode == SIGMOID:
            _tile(m, NV, SIGMOID, n_k, a, a_off, a_rs, a_ks, b, b_off, ldb, c, c_off, ldc)
        else:
            _tile(m, NV, TANH, n_k, a, a_off, a_rs, a_ks, b, b_off, ldb, c, c_off, ldc)

    return impl


@kernel
def _tiles(rows, mode, n_k, a, a_off, a_rs, a_ks, b, b_off, ldb, c, c_off, ldc):
    """`rows` rows: one MR-row tile when rows == MR (all but a chunk's end), else 4-row
    tiles and 1-row tiles for the rest (a 3-row tile would run no faster: its
    multiply-adds and loads of the right operand take about as many cycles as three 1-row
    tiles, and every tile height adds four instantiations to compile)."""
    if MR > 4 and rows == MR:
        _tile_in_mode(MR, mode, n_k, a, a_off, a_rs, a_ks, b, b_off, ldb, c, c_off, ldc)
        return
    r = 0
    while rows - r >= 4:
        _tile_in_mode(4, mode, n_k, a, a_off + r * a_rs, a_rs, a_ks, b, b_off, ldb,
                      c, c_off + r * ldc, ldc)
        r += 4
    while r < rows:
        _tile_in_mode(1, mode, n_k, a, a_off + r * a_rs, a_rs, a_ks, b, b_off, ldb,
                      c, c_off + r * ldc, ldc)
        r += 1


@kernel
def mm(a, a_col, data, pk, c, c_col, lo, hi, acc):
    """C[r, c_col + p*NR + j] (+)= sum_k A[r, a_col + k] * P_p[k, j] for rows lo <= r < hi.

    `a`, `c`: 2-D arrays with unit column stride; (`data`, `pk`): a packed right operand
    (module docstring). Panels run in the outer loop so each stays in L1 across the rows.
    `c` must have room for whole panels (its column count is padded to a multiple of NR).
    """
    nr = NV * VECTOR_BYTES // data.itemsize
    lda = a.strides[0] // a.itemsize
    ldc = c.strides[0] // c.itemsize
    for p in range(pk.shape[0]):
        off, k0, k1 = pk[p, 0], pk[p, 1], pk[p, 2]
        mode = ADD if acc else pk[p, 3] if pk.shape[1] > 3 else STORE
        for r in range(lo, hi, MR):
            _tiles(min(MR, hi - r), mode, k1 - k0, a, r * lda + a_col + k0, lda, 1,
                   data, off, nr, c, r * ldc + c_col + p * nr, ldc)


@kernel
def mm_tn(a, b, c, panels, kc):
    """C[m0:m1, p*NR : (p+1)*NR] = A[:, m0:m1]^T @ B[:, p*NR : (p+1)*NR] for each row
    (p, m0, m1) of `panels`: sums over all rows k of A (K x M) and B (K x N), both
    row-major, the weight-gradient form. K runs in blocks of `kc` rows, outer, so that
    a block of A is read from memory once and stays in cache across the panels, and a
    panel's block of B (kc x NR) stays in L2 (or L1, for short blocks) across the row
    tiles. That needs B's row stride to be an odd number of cache lines (see
    model.row_stride): at 2 KiB, say, all rows would fall into a few sets and evict
    each other.
    """
    nr = NV * VECTOR_BYTES // b.itemsize
    lda = a.strides[0] // a.itemsize
    ldb = b.strides[0] // b.itemsize
    ldc = c.strides[0] // c.itemsize
    for k0 in range(0, a.shape[0], kc):
        n_k = min(kc, a.shape[0] - k0)
        for i in range(panels.shape[0]):
            p, m0, m1 = panels[i, 0], panels[i, 1], panels[i, 2]
            for r in range(m0, m1, MR):
                _tiles(min(MR, m1 - r), ADD if k0 > 0 else STORE, n_k, a, k0 * lda + r, 1, lda,
                       b, k0 * ldb + p * nr, ldb, c, r * ldc + p * nr, ldc)


@kernel
def pack(b, data, pk):
    """Lay out the logical right operand `b` (K x N) in panels (module docstring)."""
    nr = NV * VECTOR_BYTES // data.itemsize
    n = b.shape[1]
    for p in range(pk.shape[0]):
        off, k0, k1 = pk[p, 0], pk[p, 1], pk[p, 2]
        for k in range(k0, k1):
            row = off + (k - k0) * nr
            width = min(nr, n - p * nr)
            for j in range(width):
                data[row + j] = b[k, p * nr + j]
            data[row + width:row + nr] = 0


def panel_table(k_ranges, nr: int, acts=None) -> tuple[np.ndarray, int]:
    """(pk, length of data) for panels of `nr` columns whose rows are k_ranges[p] = (k0, k1)
    and (given `acts`) whose results `mm` stores through activation acts[p] (a `_tile`
    mode: STORE, SIGMOID or TANH)."""
    pk = np.zeros((len(k_ranges), 3 if acts is None else 4), np.int64)
    off = 0
    for p, (k0, k1) in enumerate(k_ranges):
        pk[p, :3] = off, k0, k1
        if acts is not None:
            pk[p, 3] = acts[p]
        off += (k1 - k0) * nr
    return pk, off


# numba's helper around scipy's ?gemm: column-major, pointers for every operand and scalar.
_xxgemm = types.ExternalFunction("numba_xxgemm", types.intc(
    types.char, types.char, types.char, types.intp, types.intp, types.intp,
    types.voidptr, types.voidptr, types.intp, types.voidptr, types.intp,
    types.voidptr, types.voidptr, types.intp))


@kernel
def gemm(trans_a, a, b, beta, c):
    """C = op(A) @ B + beta * C with scipy's BLAS; op(A) = A.T if trans_a else A.

    Row-major 2-D arrays (views allowed) with unit column stride. Called only outside
    the parallel regions, so OpenBLAS threads never nest inside Numba's.
    """
    m, n = c.shape
    k = b.shape[0]
    scalars = np.empty(2, c.dtype)
    scalars[0] = 1
    scalars[1] = beta
    # Row-major C = op(A) B is column-major C^T = B^T op(A)^T: swap the operands.
    status = _xxgemm(ord("s") if c.itemsize == 4 else ord("d"),
                     ord("n"), ord("t") if trans_a else ord("n"), n, m, k,
                     scalars.ctypes, b.ctypes, b.strides[0] // b.itemsize,
                     a.ctypes, a.strides[0] // a.itemsize,
                     scalars[1:].ctypes, c.ctypes, c.strides[0] // c.itemsize)
    if status != 0:
        raise RuntimeError("BLAS gemm failed")
