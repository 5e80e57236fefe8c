"""Matrix products of the recurrent models: a register-tiled kernel for the per-step
products and scipy's BLAS for the big weight-gradient products.

Why not BLAS every time step? A time step multiplies a few batch rows by a fixed weight
matrix, e.g. (16 x 128) @ (128 x 512) per thread at the seed's configuration. OpenBLAS
packs the weight matrix again on every call and reaches 40-70 GFLOP/s on such shapes
(measured here on an AMD EPYC, single thread, ~100 GFLOP/s peak). The weights do not
change during a pass, so `pack` lays them out once per call in panels of NR columns, and
`mm` runs an MR x NR register tile over them (`_tile`, written in LLVM vector IR so
that the accumulators stay in registers): 93-107 GFLOP/s on the same shapes.

Packed layout. A packed right operand is a flat array `data` plus an int table `pk`
with one row (offset, k0, k1) per panel p: for k0 <= k < k1 and 0 <= j < NR,
``data[offset + (k - k0) * NR + j] = B[k, p * NR + j]`` (0 past the last column of B).
Rows of B outside [k0, k1) are zero for that panel and are skipped, which is how a
GRU's candidate gate leaves out the input (or the hidden) part of its product.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic
from numba.np.linalg import ensure_blas

from optbench.nn._jit import MR, NV, VECTOR_BYTES, kernel

ensure_blas()  # numba's BLAS entry points come from scipy.linalg.cython_blas


@intrinsic(prefer_literal=True)
def _tile(typingctx, mr, nv, acc, n_k, a, a_off, a_rs, a_ks, b, b_off, ldb, c, c_off, ldc):
    """C[r, j] (+)= sum_k A[r, k] * B[k, j] for r < mr, j < nv * VL, k < n_k.

    A[r, k] = a.data[a_off + r * a_rs + k * a_ks]; B[k, j] = b.data[b_off + k * ldb + j];
    C[r, j] = c.data[c_off + r * ldc + j]; VL = VECTOR_BYTES / itemsize lanes. `acc`
    False overwrites C, True adds to it. The mr * nv accumulators are vector registers;
    every k broadcasts mr values of A and fuses them with nv vectors of B (llvm.fma).
    """
    literal = (types.IntegerLiteral, types.BooleanLiteral)
    if not all(isinstance(t, literal) for t in (mr, nv, acc)):
        return None
    m_r, n_v, accumulate = mr.literal_value, nv.literal_value, acc.literal_value
    dtype = a.dtype
    sig = types.void(mr, nv, acc, types.intp, a, types.intp, types.intp, types.intp,
                     b, types.intp, types.intp, c, types.intp, types.intp)

    def codegen(context, builder, signature, args):
        _, _, _, n_k, a_arr, a_off, a_rs, a_ks, b_arr, b_off, ldb, c_arr, c_off, ldc = args
        ety = context.get_value_type(dtype)
        lanes = VECTOR_BYTES // context.get_abi_sizeof(ety)
        vty = ir.VectorType(ety, lanes)
        fma = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(vty, [vty] * 3),
            f"llvm.fma.v{lanes}{'f32' if dtype == types.float32 else 'f64'}")
        ap = builder.gep(context.make_array(signature.args[4])(context, builder, a_arr).data,
                         [a_off])
        bp = builder.gep(context.make_array(signature.args[8])(context, builder, b_arr).data,
                         [b_off])
        cp = builder.gep(context.make_array(signature.args[11])(context, builder, c_arr).data,
                         [c_off])
        intp = a_off.type

        def c_vec_ptr(r, v):
            at = builder.gep(cp, [builder.add(builder.mul(ldc, intp(r)), intp(v * lanes))])
            return builder.bitcast(at, vty.as_pointer())

        accs = [[cgutils.alloca_once(builder, vty) for _ in range(n_v)] for _ in range(m_r)]
        for r in range(m_r):
            for v in range(n_v):
                init = (builder.load(c_vec_ptr(r, v), align=1) if accumulate
                        else ir.Constant(vty, None))
                builder.store(init, accs[r][v])
        splat_mask = ir.Constant(ir.VectorType(ir.IntType(32), lanes), [0] * lanes)
        with cgutils.for_range(builder, n_k) as loop:
            k = loop.index
            bk = builder.gep(bp, [builder.mul(k, ldb)])
            ak = builder.gep(ap, [builder.mul(k, a_ks)])
            bv = [builder.load(builder.bitcast(builder.gep(bk, [intp(v * lanes)]),
                                               vty.as_pointer()), align=1)
                  for v in range(n_v)]
            for r in range(m_r):
                x = builder.load(builder.gep(ak, [builder.mul(a_rs, intp(r))]))
                x = builder.insert_element(ir.Constant(vty, ir.Undefined), x, ir.IntType(32)(0))
                x = builder.shuffle_vector(x, ir.Constant(vty, ir.Undefined), splat_mask)
                for v in range(n_v):
                    builder.store(builder.call(fma, [x, bv[v], builder.load(accs[r][v])]),
                                  accs[r][v])
        for r in range(m_r):
            for v in range(n_v):
                builder.store(builder.load(accs[r][v]), c_vec_ptr(r, v), align=1)
        return context.get_dummy_value()

    return sig, codegen


@kernel
def _tiles(rows, acc, n_k, a, a_off, a_rs, a_ks, b, b_off, ldb, c, c_off, ldc):
    """One literal instantiation of `_tile` per (rows, acc): rows < MR only at a chunk's end."""
    if rows == MR:
        if acc:
            _tile(MR, NV, True, n_k, a, a_off, a_rs, a_ks, b, b_off, ldb, c, c_off, ldc)
        else:
            _tile(MR, NV, False, n_k, a, a_off, a_rs, a_ks, b, b_off, ldb, c, c_off, ldc)
    elif rows == 3:
        if acc:
            _tile(3, NV, True, n_k, a, a_off, a_rs, a_ks, b, b_off, ldb, c, c_off, ldc)
        else:
            _tile(3, NV, False, n_k, a, a_off, a_rs, a_ks, b, b_off, ldb, c, c_off, ldc)
    elif rows == 2:
        if acc:
            _tile(2, NV, True, n_k, a, a_off, a_rs, a_ks, b, b_off, ldb, c, c_off, ldc)
        else:
            _tile(2, NV, False, n_k, a, a_off, a_rs, a_ks, b, b_off, ldb, c, c_off, ldc)
    elif acc:
        _tile(1, NV, True, n_k, a, a_off, a_rs, a_ks, b, b_off, ldb, c, c_off, ldc)
    else:
        _tile(1, NV, False, n_k, a, a_off, a_rs, a_ks, b, b_off, ldb, c, c_off, ldc)


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
        for r in range(lo, hi, MR):
            _tiles(min(MR, hi - r), acc, k1 - k0, a, r * lda + a_col + k0, lda, 1,
                   data, off, nr, c, r * ldc + c_col + p * nr, ldc)


@kernel
def mm_tn(a, b, c, panels, kc):
    """C[m0:m1, p*NR : (p+1)*NR] = A[:, m0:m1]^T @ B[:, p*NR : (p+1)*NR] for each row
    (p, m0, m1) of `panels`: sums over all rows k of A (K x M) and B (K x N), both
    row-major, the weight-gradient form. K runs in blocks of `kc` rows, outer, so that
    a block of A is read from memory once and stays in L2 across the panels, and a
    panel's block of B (kc x NR) stays in L1 across the row tiles. That needs B's row
    stride to be an odd number of cache lines (see model._row_stride): at 2 KiB, say,
    all rows would fall into two of L1's 64 sets and evict each other.
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
                _tiles(min(MR, m1 - r), k0 > 0, n_k, a, k0 * lda + r, 1, lda,
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


def panel_table(k_ranges, nr: int) -> tuple[np.ndarray, int]:
    """(pk, length of data) for panels of `nr` columns whose rows are k_ranges[p] = (k0, k1)."""
    pk = np.zeros((len(k_ranges), 3), np.int64)
    off = 0
    for p, (k0, k1) in enumerate(k_ranges):
        pk[p] = off, k0, k1
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
