"""The Elman RNN: `h' = act(x @ w_ih + h @ w_hh + b)` (torch `nn.RNN`, TF1 `BasicRNNCell`)."""

from __future__ import annotations

import jax.numpy as jnp

from rnnscan.cell import Cell, same_for_same_arguments
from rnnscan.cells._common import (
    Precision,
    check_flags,
    check_initializers,
    check_sizes,
    default_kernel_init,
    default_recurrent_init,
    resolve_activation,
    split_keys,
)
from rnnscan.validation import check_features


@same_for_same_arguments
def rnn(
    input_size: int,
    hidden_size: int,
    *,
    activation="tanh",
    use_bias: bool = True,
    param_dtype=jnp.float32,
    compute_dtype=None,
    kernel_init=None,
    recurrent_init=None,
) -> Cell:
    """An Elman cell, `h' = act(x @ w_ih + h @ w_hh + b)`; the output is `h'`.

    Args:
      input_size: features of `x`, `(*batch, input_size)`.
      hidden_size: size of the state `h`, `(*batch, hidden_size)`.
      activation: `"tanh"` (default), `"relu"`, another name known to rnnscan, or
        a function.
      use_bias: whether the cell has the bias `b`.
      param_dtype, compute_dtype, kernel_init, recurrent_init: as in `rnnscan.lstm`.

    Returns:
      A `Cell` with params `{"w_ih": (input_size, H), "w_hh": (H, H), "b": (H,)}`.
    """
    check_sizes(input_size=input_size, hidden_size=hidden_size)
    check_flags(use_bias=use_bias)
    check_initializers(kernel_init=kernel_init, recurrent_init=recurrent_init)
    act = resolve_activation(activation)
    prec = Precision(param_dtype, compute_dtype)
    kernel_init = kernel_init or default_kernel_init()
    recurrent_init = recurrent_init or default_recurrent_init()

    def init(key):
        k_ih, k_hh = split_keys(key, 2)
        params = {
            "w_ih": prec.initialize(kernel_init, k_ih, (input_size, hidden_size)),
            "w_hh": prec.initialize(recurrent_init, k_hh, (hidden_size, hidden_size)),
        }
        if use_bias:
            params["b"] = prec.zeros((hidden_size,))
        return params

    def initial_state(params, batch_shape=()):
        del params
        return prec.zeros(tuple(batch_shape) + (hidden_size,))

    def project_inputs(params, x):
        check_features(x, input_size)
        xp = prec.matmul(x, params["w_ih"])
        return xp + params["b"] if use_bias else xp

    def recurrent_step(params, h, xp):
        h = act(xp + prec.matmul(h, params["w_hh"]))
        return h, h

    return Cell.split(init, initial_state, project_inputs, recurrent_step,
                      recurrent_kernel="w_hh", rowwise=True)
