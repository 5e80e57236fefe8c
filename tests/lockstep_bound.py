"""A float64 training step of the lockstep models (LSTM, GRU, tanh RNN; head on the last or
every step; MSE or masked cross-entropy) that carries, beside every value, a bound on how
far a float32 evaluation of the same formulas can be from it: a running error analysis
(Wilkinson; Higham, Accuracy and Stability of Numerical Algorithms, 2nd ed., ch. 3).

The model of float32 arithmetic (u = 2^-24): every +, -, *, / and square root is exact
times (1 + d), |d| <= u, with or without fused multiply-adds; a sum of n products, in any
order, is within gamma_n = n u / (1 - n u) times the sum of their magnitudes (Higham
eq. 3.5). Errors already in the inputs propagate through the exact formulas' first and
second order terms (`prod` bounds a product of inexact factors exactly:
prod(|x_i| + e_i) - prod |x_i|). Activations are 1-Lipschitz in their argument (tanh;
sigmoid is 1/4-Lipschitz), so an argument error passes through unamplified, plus E_ACT
for the activation itself: both backends evaluate the same rational approximation R of
tanh (optbench.nn._act), |R(x) - tanh(x)| < 3e-7 there, and R's float32 evaluation (two
Horner schemes of 7 and 4 coefficients whose terms barely cancel, a product and a
quotient) rounds about 13 times on a result of magnitude <= 1, within 13 u = 7.7e-7 of R:
E_ACT = 2^-19 (1.9e-6) covers both. exp and log (cross-entropy) are within 2 ulp (CUDA's
libdevice expf, logf; the CPU's float64 libm does better).

Two float32 evaluations of the formulas, one on each backend, are then each within the
bound of this float64 step (whose own rounding, at 2^-53, is far below it), so within
twice the bound of each other. Nothing in the bound is tuned to what a test measured.
"""

from __future__ import annotations

import numpy as np

U = 2.0 ** -24
E_ACT = 2.0 ** -19
E_EXP = 4 * U  # 2 ulp, relative


def gamma(n):
    return n * U / (1 - n * U)


def add(a, ea, b, eb, sub=False):
    v = a - b if sub else a + b
    return v, ea + eb + U * np.abs(v)


def prod(*factors):
    """(value, bound) of a product of (value, bound) factors, rounded after each product."""
    v = np.ones_like(np.asarray(factors[0][0], np.float64))
    hi = np.ones_like(v)
    for x, e in factors:
        v = v * x
        hi = hi * (np.abs(x) + e)
    return v, hi - np.abs(v) + gamma(len(factors) - 1) * hi


def dot_parts(a, ea, w, ew):
    """(a @ w, the error propagated from a's and w's errors, the magnitude that rounding
    scales with): the parts of a sum's bound, which `dot` (or a caller adding several
    sums into one) completes with gamma of the number of terms."""
    hi = (np.abs(a) + ea) @ (np.abs(w) + ew)
    return a @ w, hi - np.abs(a) @ np.abs(w), hi


def dot(a, ea, w, ew, n):
    """(a @ w, bound) for a sum of n products per output (n counts the terms summed)."""
    v, prop, hi = dot_parts(a, ea, w, ew)
    return v, prop + gamma(n) * hi


def tanh(x, e):
    return np.tanh(x), e + E_ACT


def sigmoid(x, e):
    return 1 / (1 + np.exp(-x)), e / 4 + E_ACT


def one_minus_square(x, e):
    """1 - x^2 for |x| <= 1."""
    return 1 - x * x, 2 * np.abs(x) * e + e * e + 2 * U


def minus_square(x, e):
    """x - x^2 for 0 <= x <= 1 (the derivative 1 - 2x is within [-1, 1])."""
    return x - x * x, e + e * e + 2 * U


# Block layout of the gate pre-activations and the torch gates that feed each block, as in
# optbench.lockstep.cuda_kernels (GATE_I / GATE_H) and optbench.nn._bptt.
GATES = {"lstm": 4, "gru": 3, "rnn": 1}
GATE_I = {"lstm": (0, 1, 3, 2), "gru": (0, 1, -1, 2), "rnn": (0,)}
GATE_H = {"lstm": (0, 1, 3, 2), "gru": (0, 1, 2, -1), "rnn": (0,)}


def views(p, kind, H, I, O):
    g = GATES[kind] * H
    sizes = [g * I, g * H, g, g, O * H, O]
    off = np.cumsum([0] + sizes)
    w = [p[off[i]:off[i + 1]] for i in range(6)]
    return (w[0].reshape(g, I), w[1].reshape(g, H), w[2], w[3], w[4].reshape(O, H), w[5])


def wcat(p, kind, H, I, O):
    """Wcat (ZW x NB*H) in float64 and the bound of its float32 packing (the bias row is
    b_hh + b_ih, one rounding)."""
    w_ih, w_hh, b_ih, b_hh, _, _ = views(p, kind, H, I, O)
    nb = len(GATE_I[kind])
    W = np.zeros((H + 1 + I, nb * H))
    both = np.zeros(nb * H, bool)
    for blk, (gi, gh) in enumerate(zip(GATE_I[kind], GATE_H[kind])):
        cols = slice(blk * H, (blk + 1) * H)
        if gh >= 0:
            W[:H, cols] = w_hh[gh * H:(gh + 1) * H].T
            W[H, cols] += b_hh[gh * H:(gh + 1) * H]
        if gi >= 0:
            W[H + 1:, cols] = w_ih[gi * H:(gi + 1) * H].T
            W[H, cols] += b_ih[gi * H:(gi + 1) * H]
        both[cols] = gh >= 0 and gi >= 0
    E = np.zeros_like(W)
    E[H] = np.where(both, U * np.abs(W[H]), 0)
    return W, E


def step(p, x, y, mask, denom, kind, head, loss, H, O):
    """One model's loss sum, gradient (torch layout), ||dL/dh_t|| (B, T) and head outputs
    (B, S, O), each as (value, bound). p: float32 parameters; x (B, T, I); y: MSE targets
    (B, S, O) or class indices (B, S); mask (B, S); denom: the loss's denominator."""
    p = np.asarray(p, np.float64)
    B, T, I = x.shape
    x = np.asarray(x, np.float64)
    every = head == "every"
    W, EW = wcat(p, kind, H, I, O)
    _, w_hh, _, _, hw, hb = views(p, kind, H, I, O)
    zw = H + 1 + I
    h, eh = np.zeros((B, H)), np.zeros((B, H))
    c, ec = np.zeros((B, H)), np.zeros((B, H))
    hist = []  # per step: (z, ez, the forward values the backward needs)
    outs = []
    for t in range(T):
        z = np.concatenate([h, np.ones((B, 1)), x[:, t]], axis=1)
        ez = np.concatenate([eh, np.zeros((B, 1 + I))], axis=1)
        a, ea = dot(z, ez, W, EW, zw)
        blk = [(a[:, k * H:(k + 1) * H], ea[:, k * H:(k + 1) * H]) for k in range(W.shape[1] // H)]
        if kind == "lstm":
            i, f, o = (sigmoid(*blk[k]) for k in range(3))
            g = tanh(*blk[3])
            fc = prod(f, (c, ec))
            ig = prod(i, g)
            c_new = (fc[0] + ig[0], fc[1] + ig[1] + U * np.abs(fc[0] + ig[0]))
            tc = tanh(*c_new)
            h_new = prod(o, tc)
            saved = {"i": i, "f": f, "o": o, "g": g, "c_prev": (c, ec), "c": c_new}
            c, ec = c_new
        elif kind == "gru":
            r, zz = sigmoid(*blk[0]), sigmoid(*blk[1])
            hn = blk[2]
            rhn = prod(r, hn)
            n = tanh(*add(*blk[3], *rhn))
            d = add(h, eh, *n, sub=True)
            zd = prod(zz, d)
            h_new = add(*n, *zd)
            saved = {"r": r, "z": zz, "hn": hn, "n": n, "h_prev": (h, eh)}
        else:
            h_new = tanh(*blk[0])
            saved = {"h": h_new}
        h, eh = h_new
        saved["h"] = (h, eh)
        hist.append((z, ez, saved))
        if every or t == T - 1:
            hz = np.concatenate([h, np.ones((B, 1))], axis=1)
            ehz = np.concatenate([eh, np.zeros((B, 1))], axis=1)
            wt = np.concatenate([hw.T, hb[None]], axis=0)
            outs.append(dot(hz, ehz, wt, 0 * wt, H + 1))
    yv = np.stack([o[0] for o in outs], axis=1)  # (B, S, O)
    ye = np.stack([o[1] for o in outs], axis=1)
    m = np.asarray(mask, np.float64)
    if loss == "mse":
        d, ed = yv - y, ye + U * np.abs(yv - y)
        terms = m[..., None] * d * d
        prop = m[..., None] * (2 * np.abs(d) * ed + ed * ed)
        eterms = prop + gamma(2) * (terms + prop)
        scale = 2 / denom
        dy = scale * m[..., None] * d
        edy = scale * m[..., None] * ed
        edy = edy + gamma(3) * (np.abs(dy) + edy)
    else:
        top = yv.max(axis=-1, keepdims=True)
        etop = ye.max(axis=-1, keepdims=True)
        sh, esh = yv - top, ye + etop + U * np.abs(yv - top)
        ex = np.exp(sh)
        eex = ex * np.expm1(esh) + E_EXP * np.exp(sh + esh)
        s, es = ex.sum(-1, keepdims=True), eex.sum(-1, keepdims=True) + gamma(O) * ex.sum(-1, keepdims=True)
        lg = np.log(s)
        elg = -np.log1p(-es / s) + E_EXP * np.abs(lg) + U
        lse, else_ = top + lg, etop + elg + U * np.abs(top + lg)
        lab = np.asarray(y, np.int64)
        yl = np.take_along_axis(yv, lab[..., None], -1)[..., 0]
        eyl = np.take_along_axis(ye, lab[..., None], -1)[..., 0]
        t_ = lse[..., 0] - yl
        terms = (m * t_)[..., None]
        eterms = (m * (else_[..., 0] + eyl) + gamma(3) * np.abs(m * t_))[..., None]
        arg, earg = yv - lse, ye + else_ + U * np.abs(yv - lse)
        pr = np.exp(arg)
        epr = pr * np.expm1(earg) + E_EXP * np.exp(arg + earg)
        onehot = np.eye(O)[lab]
        scale = 1 / denom
        dy = m[..., None] * (pr - onehot) * scale
        edy = m[..., None] * scale * epr + gamma(4) * (np.abs(dy) + m[..., None] * scale * epr)
    n_terms = terms.size
    total = terms.sum()
    etotal = eterms.sum() + gamma(n_terms) * (np.abs(terms).sum() + eterms.sum())

    # Backward.
    nbh = {"lstm": 4, "gru": 3, "rnn": 1}[kind]
    whh_blocks = np.concatenate([w_hh[GATE_H[kind][k] * H:(GATE_H[kind][k] + 1) * H]
                                 for k in range(nbh)], axis=0)  # (nbh*H, H): dG @ it
    dg_next, edg_next = None, None
    carry, ecarry = np.zeros((B, H)), np.zeros((B, H))
    norms, enorms = np.zeros((B, T)), np.zeros((B, T))
    dG, edG = [None] * T, [None] * T
    dcarry, edcarry = np.zeros((B, H)), np.zeros((B, H))
    for t in range(T - 1, -1, -1):
        # dL/dh_t: one sum of the head's O products, the recurrent nbh*H products and (GRU)
        # the part through z_{t+1}, in whatever order a backend adds them.
        v, prop, mag = np.zeros((B, H)), np.zeros((B, H)), np.zeros((B, H))
        if every or t == T - 1:
            s_ = t if every else 0
            parts = dot_parts(dy[:, s_], edy[:, s_], hw, 0 * hw)
            v, prop, mag = v + parts[0], prop + parts[1], mag + parts[2]
        if t < T - 1:
            parts = dot_parts(dg_next[:, :nbh * H], edg_next[:, :nbh * H], whh_blocks,
                              0 * whh_blocks)
            v, prop, mag = v + parts[0], prop + parts[1], mag + parts[2]
            if kind == "gru":
                v, prop, mag = v + carry, prop + ecarry, mag + np.abs(carry) + ecarry
        d, ed = v, prop + gamma(O + nbh * H + 1) * mag
        nrm = np.sqrt((d * d).sum(1))
        norms[:, t] = nrm
        end = np.sqrt((ed * ed).sum(1))
        enorms[:, t] = end + gamma(H + 2) * (nrm + end)
        sv = hist[t][2]
        if kind == "lstm":
            o, tc = sv["o"], tanh(*sv["c"])
            a1 = prod((d, ed), o, one_minus_square(*tc))
            dcq = (a1[0] + dcarry, a1[1] + edcarry + U * np.abs(a1[0] + dcarry))
            gi = prod(dcq, sv["g"], minus_square(*sv["i"]))
            gf = prod(dcq, sv["c_prev"], minus_square(*sv["f"]))
            go = prod((d, ed), tc, minus_square(*o))
            gg = prod(dcq, sv["i"], one_minus_square(*sv["g"]))
            dcarry, edcarry = prod(dcq, sv["f"])
            blocks = [gi, gf, go, gg]
        elif kind == "gru":
            zz, n, hn, r = sv["z"], sv["n"], sv["hn"], sv["r"]
            gz = prod((d, ed), add(*sv["h_prev"], *n, sub=True), minus_square(*zz))
            gn = prod((d, ed), (1 - zz[0], zz[1] + U), one_minus_square(*n))
            gr = prod(gn, hn, minus_square(*r))
            ghn = prod(gn, r)
            carry, ecarry = prod((d, ed), zz)
            blocks = [gr, gz, ghn, gn]
        else:
            blocks = [prod((d, ed), one_minus_square(*sv["h"]))]
        dG[t] = np.concatenate([b_[0] for b_ in blocks], axis=1)
        edG[t] = np.concatenate([b_[1] for b_ in blocks], axis=1)
        dg_next, edg_next = dG[t], edG[t]

    # Gradients: dWcat = sum over (t, b) of z^T dG, and the head's.
    Z = np.concatenate([hz_[0] for hz_ in hist])  # (T*B, ZW), t-major
    EZ = np.concatenate([hz_[1] for hz_ in hist])
    G, EG = np.concatenate(dG), np.concatenate(edG)
    dW, edW = dot(Z.T, EZ.T, G, EG, T * B + B)
    grads, egrads = np.zeros_like(p), np.zeros_like(p)
    gv = views(grads, kind, H, I, O)
    ge = views(egrads, kind, H, I, O)
    for blk, (gi, gh) in enumerate(zip(GATE_I[kind], GATE_H[kind])):
        cols = slice(blk * H, (blk + 1) * H)
        if gh >= 0:
            gv[1][gh * H:(gh + 1) * H] = dW[:H, cols].T
            ge[1][gh * H:(gh + 1) * H] = edW[:H, cols].T
            gv[3][gh * H:(gh + 1) * H] = dW[H, cols]
            ge[3][gh * H:(gh + 1) * H] = edW[H, cols]
        if gi >= 0:
            gv[0][gi * H:(gi + 1) * H] = dW[H + 1:, cols].T
            ge[0][gi * H:(gi + 1) * H] = edW[H + 1:, cols].T
            gv[2][gi * H:(gi + 1) * H] = dW[H, cols]
            ge[2][gi * H:(gi + 1) * H] = edW[H, cols]
    steps = range(T) if every else [T - 1]
    hz = np.concatenate([np.concatenate([hist[t][2]["h"][0], np.ones((B, 1))], 1) for t in steps])
    ehz = np.concatenate([np.concatenate([hist[t][2]["h"][1], np.zeros((B, 1))], 1)
                          for t in steps])
    dys = np.concatenate([dy[:, s_] for s_ in range(dy.shape[1])])
    edys = np.concatenate([edy[:, s_] for s_ in range(dy.shape[1])])
    dh_, edh_ = dot(dys.T, edys.T, hz, ehz, hz.shape[0] + B)
    gv[4][:], ge[4][:] = dh_[:, :H], edh_[:, :H]
    gv[5][:], ge[5][:] = dh_[:, H], edh_[:, H]
    return {"loss": (total, etotal), "grads": (grads, egrads), "norms": (norms, enorms),
            "outputs": (yv, ye)}


def profile(norms, enorms):
    """grad_norm_per_step (the batch mean of the norms) and its bound."""
    B = norms.shape[0]
    v = norms.mean(0)
    return v, enorms.mean(0) + gamma(B + 1) * v


def assert_within(actual, value, bound, what, factor=1.0):
    """|actual - value| <= factor * bound, element-wise, naming the worst element."""
    actual = np.asarray(actual, np.float64)
    err = np.abs(actual - value)
    limit = factor * bound + np.finfo(np.float32).tiny
    worst = np.unravel_index(np.argmax(err - limit), err.shape) if err.ndim else ()
    assert (err <= limit).all(), (f"{what}: error {err[worst]:.3g} at {worst} above the bound "
                                  f"{limit[worst] if np.ndim(limit) else limit:.3g}")
