"""The three cells, the head and the losses in plain numpy, float64: the math of optbench.nn
written to be read, and the oracle the compiled kernels are tested against.

    from optbench.nn import reference
    loss, grads, norms = reference.loss_and_grad("lstm", model.views, x, y, head="last")
    grads["weight_hh_l0"]       # dL/dW_hh, torch's name and shape
    norms                       # mean_b ||dL/dh_t[b]||, t < T (optbench.nn.Diag)

Each cell is two short functions side by side: `<cell>_forward` runs one time step and
returns the new state and a cache of what the backward step needs; `<cell>_backward` takes
dL/d(new state) and the cache, adds this step's share to the weight gradients and returns
dL/d(previous state). `loss_and_grad` runs the forward steps for t = 0 .. T-1, the head and
the loss, then walks the steps backwards, t = T-1 .. 0. Shapes: B sequences, T steps,
I inputs, H hidden units, O outputs; a row of a matrix is one sequence, so `x @ W.T` is
torch's W x. Weights are torch's (`optbench.nn.Model.views` or torch's state dict): gate
rows stacked in torch's order, W_ih (G*H, I), W_hh (G*H, H), b_ih and b_hh (G*H,).

Nothing here is fast, and nothing is shared with the compiled kernels: a bug in one is not
a bug in the other.
"""

from __future__ import annotations

import numpy as np

from optbench.errors import UsageError

GATES = {"lstm": 4, "gru": 3, "rnn": 1}
HEADS = ("last", "every")
LOSSES = ("mse", "xent")
NAMES = ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0", "head.weight", "head.bias")


def sigmoid(a):
    return 1.0 / (1.0 + np.exp(-a))


# -- LSTM (torch.nn.LSTM; gates i, f, g, o) ---------------------------------------------------
def lstm_forward(p, x, state):
    h, c = state
    a = x @ p["weight_ih_l0"].T + p["bias_ih_l0"] + h @ p["weight_hh_l0"].T + p["bias_hh_l0"]
    a_i, a_f, a_g, a_o = np.split(a, 4, axis=1)
    i = sigmoid(a_i)                      # i = sigmoid(W_ii x + b_ii + W_hi h + b_hi)
    f = sigmoid(a_f)                      # f = sigmoid(W_if x + b_if + W_hf h + b_hf)
    g = np.tanh(a_g)                      # g = tanh(W_ig x + b_ig + W_hg h + b_hg)
    o = sigmoid(a_o)                      # o = sigmoid(W_io x + b_io + W_ho h + b_ho)
    c_new = f * c + i * g                 # c_t = f * c_{t-1} + i * g
    tanh_c = np.tanh(c_new)
    h_new = o * tanh_c                    # h_t = o * tanh(c_t)
    return (h_new, c_new), (x, h, c, i, f, g, o, tanh_c)


def lstm_backward(p, grads, dstate, cache):
    dh, dc = dstate                       # dL/dh_t (total), dL/dc_t through c_{t+1}
    x, h, c, i, f, g, o, tanh_c = cache
    dc = dc + dh * o * (1 - tanh_c**2)    # + the path through h_t = o * tanh(c_t)
    da_i = dc * g * i * (1 - i)           # sigmoid' = s (1 - s)
    da_f = dc * c * f * (1 - f)
    da_g = dc * i * (1 - g**2)            # tanh' = 1 - tanh^2
    da_o = dh * tanh_c * o * (1 - o)
    da = np.concatenate([da_i, da_f, da_g, da_o], axis=1)
    _gate_grads(grads, da, da, x, h)
    return da @ p["weight_hh_l0"], dc * f  # dL/dh_{t-1} (through the gates), dL/dc_{t-1}


# -- GRU (torch.nn.GRU; gates r, z, n; the reset gate multiplies W_hn h + b_hn) ---------------
def gru_forward(p, x, state):
    (h,) = state
    xi_r, xi_z, xi_n = np.split(x @ p["weight_ih_l0"].T + p["bias_ih_l0"], 3, axis=1)
    hh_r, hh_z, hh_n = np.split(h @ p["weight_hh_l0"].T + p["bias_hh_l0"], 3, axis=1)
    r = sigmoid(xi_r + hh_r)              # r = sigmoid(W_ir x + b_ir + W_hr h + b_hr)
    z = sigmoid(xi_z + hh_z)              # z = sigmoid(W_iz x + b_iz + W_hz h + b_hz)
    n = np.tanh(xi_n + r * hh_n)          # n = tanh(W_in x + b_in + r * (W_hn h + b_hn))
    h_new = (1 - z) * n + z * h           # h_t = (1 - z) * n + z * h_{t-1}
    return (h_new,), (x, h, r, z, n, hh_n)


def gru_backward(p, grads, dstate, cache):
    (dh,) = dstate
    x, h, r, z, n, hh_n = cache
    da_n = dh * (1 - z) * (1 - n**2)      # d(W_in x + b_in + r * hh_n)
    da_r = da_n * hh_n * r * (1 - r)
    da_z = dh * (h - n) * z * (1 - z)
    d_input = np.concatenate([da_r, da_z, da_n], axis=1)        # d(W_ih x + b_ih)
    d_hidden = np.concatenate([da_r, da_z, da_n * r], axis=1)   # d(W_hh h + b_hh)
    _gate_grads(grads, d_input, d_hidden, x, h)
    return (dh * z + d_hidden @ p["weight_hh_l0"],)  # dL/dh_{t-1}: direct + through W_hh


# -- tanh RNN (torch.nn.RNN, nonlinearity "tanh") ---------------------------------------------
def rnn_forward(p, x, state):
    (h,) = state
    a = x @ p["weight_ih_l0"].T + p["bias_ih_l0"] + h @ p["weight_hh_l0"].T + p["bias_hh_l0"]
    h_new = np.tanh(a)                    # h_t = tanh(W_ih x + b_ih + W_hh h_{t-1} + b_hh)
    return (h_new,), (x, h, h_new)


def rnn_backward(p, grads, dstate, cache):
    (dh,) = dstate
    x, h, h_new = cache
    da = dh * (1 - h_new**2)
    _gate_grads(grads, da, da, x, h)
    return (da @ p["weight_hh_l0"],)      # dL/dh_{t-1}


def _gate_grads(grads, d_input, d_hidden, x, h):
    """One step's share of the cell's weight gradients: W_ih x + b_ih and W_hh h + b_hh are
    linear, so dL/dW_ih += d_input^T x, dL/db_ih += sum_b d_input, and the same for hh."""
    grads["weight_ih_l0"] += d_input.T @ x
    grads["bias_ih_l0"] += d_input.sum(axis=0)
    grads["weight_hh_l0"] += d_hidden.T @ h
    grads["bias_hh_l0"] += d_hidden.sum(axis=0)


def _head_grads(grads, dyhat, read):
    """y = W_head h + b_head at each output step: dL/dW_head = sum_{b,s} dy^T h,
    dL/db_head = sum_{b,s} dy."""
    grads["head.weight"] += np.einsum("bso,bsh->oh", dyhat, read)
    grads["head.bias"] += dyhat.sum(axis=(0, 1))


CELLS = {"lstm": (lstm_forward, lstm_backward), "gru": (gru_forward, gru_backward),
         "rnn": (rnn_forward, rnn_backward)}


# -- losses on the head's outputs (torch's mean reductions) -----------------------------------
def mse(yhat, y, m):
    """sum_{b,s} m_bs sum_o (yhat - y)^2 / (O sum m): torch's MSELoss (mean) when m = 1.
    yhat, y (B, S, O), m (B, S). Returns the loss and dL/dyhat."""
    denom = yhat.shape[2] * m.sum()
    d = yhat - y
    return (m[..., None] * d**2).sum() / denom, 2 * m[..., None] * d / denom


def xent(yhat, y, m):
    """sum_{b,s} m_bs (logsumexp(yhat_bs) - yhat_bs[y_bs]) / sum m: torch's
    CrossEntropyLoss (mean; 0/1 weights act as ignore_index). yhat (B, S, O), y int (B, S)."""
    denom = m.sum()
    top = yhat.max(axis=2, keepdims=True)
    lse = top + np.log(np.exp(yhat - top).sum(axis=2, keepdims=True))
    onehot = np.eye(yhat.shape[2])[y]
    value = (m * (lse[..., 0] - (yhat * onehot).sum(axis=2))).sum() / denom
    return value, m[..., None] * (np.exp(yhat - lse) - onehot) / denom  # softmax - onehot


# -- the whole model --------------------------------------------------------------------------
def loss_and_grad(kind: str, views, x, y, head: str = "last", loss: str = "mse", mask=None):
    """(loss, grads, grad_norm_per_step) of one recurrent layer and a dense head, in float64.

    kind: "lstm", "gru" or "rnn"; views: torch name -> array (NAMES; a model's `views`).
    x: (B, T, I). head "last": the head reads h_T, y is (B, O) for "mse", int (B,) for
    "xent"; head "every": it reads every h_t, y is (B, T, O) / int (B, T), and mask
    (B, T, optional) weights each step's loss. Returns the loss (as optbench.nn.Model
    reduces it), a dict of float64 gradients by torch name, and mean_b ||dL/dh_t[b]|| for
    every t (dL/dh_t total: the head's part plus the part through h_{t+1}).
    """
    if kind not in CELLS or head not in HEADS or loss not in LOSSES:
        raise UsageError(f"reference.loss_and_grad: kind {kind!r}, head {head!r}, loss {loss!r}; "
                         f"allowed: kind {', '.join(CELLS)}; head {', '.join(HEADS)}; "
                         f"loss {', '.join(LOSSES)}")
    p = {name: np.asarray(views[name], np.float64) for name in NAMES}
    x = np.asarray(x, np.float64)
    B, T, _ = x.shape
    H = p["weight_hh_l0"].shape[1]
    forward, backward = CELLS[kind]
    every = head == "every"
    if mask is not None and not every:
        raise UsageError("reference.loss_and_grad: mask is only for head 'every'")

    # Forward through time: state_0 = 0; keep each step's cache and h_t.
    state = tuple(np.zeros((B, H)) for _ in range(2 if kind == "lstm" else 1))
    caches, hs = [], []
    for t in range(T):
        state, cache = forward(p, x[:, t], state)
        caches.append(cache)
        hs.append(state[0])
    read = np.stack(hs, axis=1) if every else hs[-1][:, None]      # (B, S, H), S = T or 1
    yhat = read @ p["head.weight"].T + p["head.bias"]               # y = W_head h + b_head
    if loss == "mse":
        y = np.asarray(y, np.float64).reshape(yhat.shape)
    else:
        y = np.asarray(y).reshape(yhat.shape[:2])                   # class indices
    m = np.ones(yhat.shape[:2]) if mask is None else np.asarray(mask, np.float64)
    value, dyhat = (mse if loss == "mse" else xent)(yhat, y, m)

    # Backward: the head, then t = T-1 .. 0, adding the head's dL/dh_t where it reads h_t.
    grads = {name: np.zeros_like(v) for name, v in p.items()}
    _head_grads(grads, dyhat, read)
    dread = dyhat @ p["head.weight"]                                # dL/dh from the head
    norms = np.zeros(T)
    dstate = tuple(np.zeros((B, H)) for _ in state)
    for t in reversed(range(T)):
        if every or t == T - 1:
            dstate = (dstate[0] + dread[:, t if every else 0],) + dstate[1:]
        norms[t] = np.linalg.norm(dstate[0], axis=1).mean()
        dstate = backward(p, grads, dstate, caches[t])
    return float(value), grads, norms
