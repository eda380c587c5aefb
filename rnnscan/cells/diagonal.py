"""GRU and LSTM cells with element-wise (diagonal) recurrent weights, whose
Jacobian in the state is diagonal by construction: ParaRNN's ParaGRU and
ParaLSTM idea (Danieli et al. 2025), in rnnscan's gate conventions.

Unit u of the next state depends only on unit u of the state, so Newton's
method (`rnnscan.newton`) takes the exact Jacobian from one Jacobian-vector
product per state leaf and solves on an elementwise scan: O(T n) work per
iteration. The LSTM's state `(h, c)` couples `h_u` and `c_u`: its Jacobian is
2 x 2 per unit, which Newton also handles exactly. Each cell's `SplitStep`
declares this (`diagonal_jacobian=True`); a cell rebuilt with another `step`
(`_replace`) does not carry it. Both cells run with every method of `unroll`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from rnnscan.cell import Cell, same_for_same_arguments
from rnnscan.cells._common import (
    Precision,
    check_sizes,
    default_kernel_init,
    split_keys,
)
from rnnscan.cells.lstm import LSTMState
from rnnscan.validation import check_features

def _diagonal_cell(input_size, hidden_size, gates, *, use_bias, param_dtype, compute_dtype,
                   kernel_init, recurrent_scale):
    """The parts both cells share: `w_ih` `(input_size, gates*H)`, the diagonal
    recurrent weights `a` `(gates, H)` drawn from U(-recurrent_scale, scale), `b`."""
    check_sizes(input_size=input_size, hidden_size=hidden_size)
    if not (isinstance(recurrent_scale, (int, float)) and recurrent_scale >= 0):
        raise ValueError(f"recurrent_scale must be a number >= 0; got {recurrent_scale!r}")
    prec = Precision(param_dtype, compute_dtype)
    kernel_init = kernel_init or default_kernel_init()
    H = hidden_size

    def init(key):
        k_ih, k_a = split_keys(key, 2)
        params = {
            "w_ih": prec.initialize(kernel_init, k_ih, (input_size, gates * H)),
            "a": jax.random.uniform(k_a, (gates, H), prec.param_dtype, -recurrent_scale,
                                    recurrent_scale),
        }
        if use_bias:
            params["b"] = prec.zeros((gates * H,))
        return params

    def project_inputs(params, x):
        check_features(x, input_size)
        xp = prec.matmul(x, params["w_ih"])
        if use_bias:
            xp = xp + params["b"]
        return tuple(jnp.split(xp, gates, axis=-1))

    return prec, init, project_inputs


@same_for_same_arguments
def paragru(input_size: int, hidden_size: int, *, use_bias: bool = True,
            param_dtype=jnp.float32, compute_dtype=None, kernel_init=None,
            recurrent_scale: float = 1.0) -> Cell:
    """A GRU whose recurrent weights are vectors (torch gate order, reset after):

        r = σ(x_r + a_r * h),  z = σ(x_z + a_z * h)
        n = tanh(x_n + r * (a_n * h + b_hn)),  h' = (1 - z) * n + z * h

    with `x_* = x @ w_ih + b` split in three. The Jacobian `∂h'/∂h` is diagonal.

    Args:
      input_size, hidden_size, use_bias, param_dtype, compute_dtype, kernel_init:
        as in `rnnscan.gru`.
      recurrent_scale: `a` is drawn from `U(-recurrent_scale, recurrent_scale)`.

    Returns:
      A `Cell` with state and output `h` `(*batch, H)`, params `{"w_ih":
      (input_size, 3H), "a": (3, H), "b": (3H,), "b_hn": (H,)}` (biases with
      `use_bias`).
    """
    prec, init_common, project_inputs = _diagonal_cell(
        input_size, hidden_size, 3, use_bias=use_bias, param_dtype=param_dtype,
        compute_dtype=compute_dtype, kernel_init=kernel_init, recurrent_scale=recurrent_scale)

    def init(key):
        params = init_common(key)
        if use_bias:
            params["b_hn"] = prec.zeros((hidden_size,))
        return params

    def initial_state(params, batch_shape=()):
        del params
        return prec.zeros(tuple(batch_shape) + (hidden_size,))

    def recurrent_step(params, h, xp):
        x_r, x_z, x_n = xp
        a_r, a_z, a_n = params["a"]
        r = jax.nn.sigmoid(x_r + a_r * h)
        z = jax.nn.sigmoid(x_z + a_z * h)
        n = jnp.tanh(x_n + r * (a_n * h + (params["b_hn"] if use_bias else 0)))
        h = n + z * (h - n)
        return h, h

    return Cell.split(init, initial_state, project_inputs, recurrent_step, rowwise=True,
                      diagonal_jacobian=True)


@same_for_same_arguments
def paralstm(input_size: int, hidden_size: int, *, forget_bias: float = 1.0,
             use_bias: bool = True, param_dtype=jnp.float32, compute_dtype=None,
             kernel_init=None, recurrent_scale: float = 1.0) -> Cell:
    """An LSTM whose recurrent weights are vectors (torch gate order i, f, j, o):

        g = x @ w_ih + b + a * h  (a broadcast per gate), split into i, f, j, o
        c' = σ(f + forget_bias) * c + σ(i) * tanh(j),  h' = σ(o) * tanh(c')

    The Jacobian of `(h', c')` in `(h, c)` is 2 x 2 per unit (h_u, c_u).

    Args:
      forget_bias: constant added to the forget gate's pre-activation.
      The others: as in `paragru`.

    Returns:
      A `Cell` with state `rs.LSTMState(h, c)` (both `(*batch, H)`), output `h`,
      params `{"w_ih": (input_size, 4H), "a": (4, H), "b": (4H,)}`.
    """
    prec, init, project_inputs = _diagonal_cell(
        input_size, hidden_size, 4, use_bias=use_bias, param_dtype=param_dtype,
        compute_dtype=compute_dtype, kernel_init=kernel_init, recurrent_scale=recurrent_scale)
    forget_bias = float(np.asarray(forget_bias))

    def initial_state(params, batch_shape=()):
        del params
        zeros = prec.zeros(tuple(batch_shape) + (hidden_size,))
        return LSTMState(zeros, zeros)

    def recurrent_step(params, state, xp):
        h, c = state
        i, f, j, o = (x + a * h for x, a in zip(xp, params["a"]))
        c = jax.nn.sigmoid(f + forget_bias) * c + jax.nn.sigmoid(i) * jnp.tanh(j)
        h = jax.nn.sigmoid(o) * jnp.tanh(c)
        return LSTMState(h, c), h

    return Cell.split(init, initial_state, project_inputs, recurrent_step, rowwise=True,
                      diagonal_jacobian=True, state_dropout=(True, False))
