"""Gated recurrent unit: torch/cuDNN/Keras (`reset_after=True`) and TF1 `GRUCell`
(`reset_after=False`) variants."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from rnnscan.cell import Cell, check_features
from rnnscan.cells._common import (
    Precision,
    check_sizes,
    default_kernel_init,
    default_recurrent_init,
    resolve_activation,
    split_keys,
)


def gru(
    input_size: int,
    hidden_size: int,
    *,
    reset_after: bool = True,
    activation="tanh",
    use_bias: bool = True,
    param_dtype=jnp.float32,
    compute_dtype=None,
    kernel_init=None,
    recurrent_init=None,
) -> Cell:
    """A GRU cell with gates in torch's order (reset, update, new).

    With `x @ w_ih + b` split into `x_r, x_z, x_n` and `w_hh` into `w_r, w_z, w_n`:

        r = σ(x_r + h @ w_r),  z = σ(x_z + h @ w_z)
        n = act(x_n + r * (h @ w_n + b_hn))     reset_after=True  (torch, cuDNN, Keras)
        n = act(x_n + (r * h) @ w_n)            reset_after=False (TF1 GRUCell)
        h' = (1 - z) * n + z * h

    Args:
      input_size: features of `x`, `(*batch, input_size)`.
      hidden_size: size of the state `h`.
      reset_after: where the reset gate applies (see above).
      activation: name or function for the candidate (default tanh).
      use_bias: whether the cell has biases `b` (and `b_hn`).
      param_dtype, compute_dtype, kernel_init, recurrent_init: as in `rnnscan.lstm`.

    Returns:
      A `Cell` with state `h` `(*batch, hidden_size)`, output `h`, and params
      `{"w_ih": (input_size, 3H), "w_hh": (H, 3H), "b": (3H,), "b_hn": (H,)}`
      (`b_hn`, the recurrent bias inside the reset, only with `reset_after`).
    """
    check_sizes(input_size=input_size, hidden_size=hidden_size)
    act = resolve_activation(activation)
    prec = Precision(param_dtype, compute_dtype)
    kernel_init = kernel_init or default_kernel_init()
    recurrent_init = recurrent_init or default_recurrent_init()
    H = hidden_size

    def init(key):
        k_ih, k_hh = split_keys(key, 2)
        params = {
            "w_ih": prec.initialize(kernel_init, k_ih, (input_size, 3 * H)),
            "w_hh": prec.initialize(recurrent_init, k_hh, (H, 3 * H)),
        }
        if use_bias:
            params["b"] = prec.zeros((3 * H,))
            if reset_after:
                params["b_hn"] = prec.zeros((H,))
        return params

    def initial_state(params, batch_shape=()):
        del params
        return prec.zeros(tuple(batch_shape) + (H,))

    def project_inputs(params, x):
        check_features(x, input_size)
        xp = prec.matmul(x, params["w_ih"])
        return xp + params["b"] if use_bias else xp

    def recurrent_step(params, h, xp):
        x_r, x_z, x_n = jnp.split(xp, 3, axis=-1)
        w_hh = params["w_hh"]
        if reset_after:
            h_r, h_z, h_n = jnp.split(prec.matmul(h, w_hh), 3, axis=-1)
            if use_bias:
                h_n = h_n + params["b_hn"]
            r = jax.nn.sigmoid(x_r + h_r)
            z = jax.nn.sigmoid(x_z + h_z)
            n = act(x_n + r * h_n)
        else:
            h_r, h_z = jnp.split(prec.matmul(h, w_hh[:, : 2 * H]), 2, axis=-1)
            r = jax.nn.sigmoid(x_r + h_r)
            z = jax.nn.sigmoid(x_z + h_z)
            n = act(x_n + prec.matmul(r * h, w_hh[:, 2 * H :]))
        h = n + z * (h - n)
        return h, h

    def step(params, h, x):
        return recurrent_step(params, h, project_inputs(params, x))

    return Cell(init, initial_state, step, project_inputs, recurrent_step)
