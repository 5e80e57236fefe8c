"""Write the Keras fixtures: tests/fixtures/keras_golden.npz and keras_golden.json.

    pip install keras torch                     # not dependencies of optbench, nor of its tests
    KERAS_BACKEND=torch python tools/make_golden_keras.py

What the seed's Keras program does, recorded from Keras 3 itself (torch backend, CPU),
for tests/test_keras_golden.py, which reads the files without keras or torch:

- adam/<case>/<dtype>: keras.optimizers.Adam trajectories on one variable of N elements
  with a fixed sequence of gradients (open loop: the gradients do not depend on the
  parameters, so rounding differences do not feed back). Gradients span 1e-9 to 10,
  with exact zeros, so that the epsilon convention shows. Cases: Keras's defaults with
  amsgrad off and on, and one with other betas, epsilon and learning rate. Each in
  float32 (Keras's dtype for the seed program) and float64 (floatx float64, so that the
  learning rate and the powers of beta are float64 too: the formula without float32
  rounding). Stored: theta_0, the gradients, theta after every step, and the end state
  (m, v, and v_hat with amsgrad) in Keras's names.
- rnn/<layer>/<head>: a Keras LSTM / GRU / SimpleRNN layer (units H) and a Dense(O) head,
  float32, weights drawn here and set in Keras's layout (kernel (I, G*H),
  recurrent_kernel (H, G*H), bias; Dense kernel (H, O), bias), head "last"
  (return_sequences=False) or "every" (True, the Dense applied at every step), loss
  keras.losses.MeanSquaredError. Stored: the weights as Keras holds them, x, y, the
  outputs, the loss and the gradient of every weight (torch autograd through Keras's
  ops, as Keras's torch trainer computes it), in Keras's layout. float32 because Keras
  on the torch (and jax) backend computes its ops in float32 even for float64 tensors:
  its type promotion maps float64 to float32 (BIT64_TO_BIT32_DTYPE in
  keras/src/backend/common/dtypes.py), so ops.matmul of two float64 tensors rounds to
  float32. Its torch Adam steps with torch._foreach ops in the variable's dtype, so the
  float64 Adam run above is float64 throughout (the tests' float64 bound checks that).
- init/<layer>/<seed>: the weights Keras's default initializers give an LSTM / GRU /
  SimpleRNN layer (kernel, recurrent_kernel, bias), to check the "keras" scheme's
  definition against Keras's draws (not their values: Keras draws from its own RNG).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import keras
import numpy as np
import torch

OUT = Path(__file__).resolve().parents[1] / "tests" / "fixtures"
FORMAT = 1  # bump when the layout of the files changes; the tests check it
SEED = 20250311

N, STEPS = 48, 60
KERAS_ADAM = {"learning_rate": 1e-3, "beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-7}
ADAM_CASES = {
    "keras-defaults": {**KERAS_ADAM, "amsgrad": False},
    "keras-defaults-amsgrad": {**KERAS_ADAM, "amsgrad": True},
    "other-betas-amsgrad": {"learning_rate": 1e-2, "beta_1": 0.8, "beta_2": 0.99,
                            "epsilon": 1e-5, "amsgrad": True},
}
LAYERS = {"lstm": keras.layers.LSTM, "gru": keras.layers.GRU, "rnn": keras.layers.SimpleRNN}
B, T, N_IN, H, N_OUT = 3, 5, 2, 4, 2  # batch, steps, inputs, units, outputs


def gradients(rng) -> np.ndarray:
    """(STEPS, N): magnitudes 10^U(-9, 1), random signs, about 3% exact zeros, and the
    magnitude of each element drifting down over time in half of them (so that amsgrad's
    max differs from v)."""
    g = rng.standard_normal((STEPS, N)) * 10.0 ** rng.uniform(-9, 1, (STEPS, N))
    g[:, ::2] *= np.geomspace(1.0, 1e-3, STEPS)[:, None]
    g[rng.random((STEPS, N)) < 0.03] = 0.0
    return g


def adam_run(hparams: dict, dtype: str, theta0: np.ndarray, grads: np.ndarray) -> dict:
    keras.config.set_floatx(dtype)  # the learning-rate variable takes floatx
    try:
        var = keras.Variable(theta0.astype(dtype), dtype=dtype, name="theta")
        opt = keras.optimizers.Adam(**hparams)
        path = []
        for g in grads:
            opt.apply([keras.ops.convert_to_tensor(g.astype(dtype))], [var])
            path.append(keras.ops.convert_to_numpy(var.value).copy())
        state = {}
        for v in opt.variables:
            name = v.path.split("/")[-1]
            if v.shape == var.shape:
                state[name] = keras.ops.convert_to_numpy(v.value).copy()
        assert int(keras.ops.convert_to_numpy(opt.iterations.value)) == len(grads)
    finally:
        keras.config.set_floatx("float32")
    return {"path": np.stack(path), **{f"state/{k}": v for k, v in state.items()}}


def rnn_case(kind: str, head: str, rng) -> dict:
    G = {"lstm": 4, "gru": 3, "rnn": 1}[kind]
    every = head == "every"
    layer = LAYERS[kind](H, return_sequences=every)
    dense = keras.layers.Dense(N_OUT)
    inputs = keras.Input((T, N_IN))
    model = keras.Model(inputs, dense(layer(inputs)))
    bound = 1 / np.sqrt(H)
    weights = {
        "kernel": rng.uniform(-bound, bound, (N_IN, G * H)),
        "recurrent_kernel": rng.uniform(-bound, bound, (H, G * H)),
        # GRU (reset_after=True): row 0 the input bias, row 1 the recurrent bias.
        "bias": rng.uniform(-bound, bound, (2, G * H) if kind == "gru" else (G * H,)),
        "dense/kernel": rng.uniform(-bound, bound, (H, N_OUT)),
        "dense/bias": rng.uniform(-bound, bound, (N_OUT,)),
    }
    layer.set_weights([weights["kernel"], weights["recurrent_kernel"], weights["bias"]])
    dense.set_weights([weights["dense/kernel"], weights["dense/bias"]])
    held = layer.get_weights() + dense.get_weights()  # rounded to float32
    weights = dict(zip(weights, held))
    x = rng.standard_normal((B, T, N_IN)).astype(np.float32)
    y = rng.standard_normal((B, T, N_OUT) if every else (B, N_OUT)).astype(np.float32)
    yhat = model(keras.ops.convert_to_tensor(x))
    loss = keras.losses.MeanSquaredError()(keras.ops.convert_to_tensor(y), yhat)
    variables = {"kernel": layer.cell.kernel, "recurrent_kernel": layer.cell.recurrent_kernel,
                 "bias": layer.cell.bias, "dense/kernel": dense.kernel, "dense/bias": dense.bias}
    for v in variables.values():
        v.value.grad = None
    loss.backward()
    assert all(w.dtype == np.float32 for w in held) and yhat.dtype == torch.float32
    out = {"x": x, "y": y, "yhat": yhat.detach().numpy(), "loss": np.float32(loss.item())}
    out.update({f"weight/{k}": v for k, v in weights.items()})
    out.update({f"grad/{k}": v.value.grad.numpy().copy() for k, v in variables.items()})
    return out


def init_case(kind: str, seed: int) -> dict:
    keras.utils.set_random_seed(seed)
    layer = LAYERS[kind](8)
    layer.build((None, 5, 3))
    kernel, recurrent, bias = (keras.ops.convert_to_numpy(w) for w in
                               (layer.cell.kernel, layer.cell.recurrent_kernel, layer.cell.bias))
    return {"kernel": kernel, "recurrent_kernel": recurrent, "bias": bias}


def main() -> int:
    if keras.backend.backend() != "torch":
        print(f"Keras runs on {keras.backend.backend()!r}; run this with KERAS_BACKEND=torch",
              file=sys.stderr)
        return 2
    rng = np.random.default_rng(SEED)
    arrays, index = {}, {"adam": [], "rnn": [], "init": []}
    for case, hparams in ADAM_CASES.items():
        theta0 = rng.standard_normal(N)
        grads = gradients(rng)
        arrays[f"adam/{case}/theta0"] = theta0
        arrays[f"adam/{case}/grads"] = grads
        for dtype in ("float32", "float64"):
            for key, value in adam_run(hparams, dtype, theta0, grads).items():
                arrays[f"adam/{case}/{dtype}/{key}"] = value
        index["adam"].append({"case": case, "hparams": hparams, "steps": STEPS, "n": N})
    for kind in LAYERS:
        for head in ("last", "every"):
            for key, value in rnn_case(kind, head, rng).items():
                arrays[f"rnn/{kind}/{head}/{key}"] = value
            index["rnn"].append({"case": f"{kind}/{head}", "kind": kind, "head": head,
                                 "B": B, "T": T, "I": N_IN, "H": H, "O": N_OUT})
    for kind in LAYERS:
        for seed in (0, 1, 2):
            for key, value in init_case(kind, seed).items():
                arrays[f"init/{kind}/{seed}/{key}"] = value
            index["init"].append({"case": f"{kind}/{seed}", "kind": kind, "units": 8,
                                  "input_dim": 3})
    OUT.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(OUT / "keras_golden.npz", **arrays)
    meta = {"format": FORMAT, "made_by": "KERAS_BACKEND=torch python tools/make_golden_keras.py",
            "keras": keras.__version__, "backend": keras.backend.backend(),
            "torch": torch.__version__, "numpy": np.__version__, "seed": SEED, **index}
    (OUT / "keras_golden.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(f"wrote {len(arrays)} arrays to {OUT / 'keras_golden.npz'} (keras {keras.__version__})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
