"""Recurrent models with hand-written BPTT in Numba: LSTM, tanh RNN and GRU, one layer with
a dense head on the last step or on every step, MSE or softmax cross-entropy.

    from optbench import nn
    model = nn.build("lstm", input_size=2, hidden_size=128, output_size=1, head="last", seed=0)
    loss, grads, diag = model.loss_and_grad(x, y, loss="mse")   # x: (B, T, I) float32
    diag.grad_norm_per_step                                      # mean_b ||dL/dh_t||, t < T
    model.predict(x)

All parameters live in `model.params`, one flat vector; `model.views` names its pieces
as torch does (weight_ih_l0, weight_hh_l0, bias_ih_l0, bias_hh_l0, head.weight,
head.bias), and the gradient has the same layout, so one optimizer step covers the model.
Outputs, losses and gradients match torch.nn.LSTM / GRU / RNN + nn.Linear with the same
weights (tests/fixtures/nn_golden.npz, made by tools/make_golden_nn.py).

`optbench.nn.reference` is the same model in plain numpy (float64), forward and backward
step by step with the equations beside the code: the place to read the math, and the
oracle the compiled kernels are tested against.
"""

from optbench.nn import reference
from optbench.nn.init import SCHEMES as INITS
from optbench.nn.losses import LOSSES
from optbench.nn.model import CELLS, HEADS, Diag, Model, build, names

__all__ = ["CELLS", "HEADS", "INITS", "LOSSES", "Diag", "Model", "build", "names", "reference"]
