"""Cells linear in their state, for the associative scan: minGRU and minLSTM
(Feng et al. 2024, "Were RNNs All We Needed?") and the LRU (Orvieto et al. 2023,
"Resurrecting Recurrent Neural Networks for Long Sequences").

Each is an ordinary `Cell` whose step's `linear` trait holds its
`rnnscan.cell.LinearRecurrence`, so `unroll` can run it either way.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from rnnscan.associative import to_linear
from rnnscan.cell import Cell, LinearRecurrence, same_for_same_arguments
from rnnscan.cells._common import (
    Precision, check_flags, check_initializers, check_sizes, default_kernel_init, split_keys,
)
from rnnscan.validation import check_features, check_number


def linear_cell(init, initial_state, recurrence: LinearRecurrence) -> Cell:
    """The `Cell` of `recurrence`: a `SplitStep` with `linear=recurrence`.

    `step(p, h, x)` computes `a * h + b` and the readout for one step, so the cell
    also runs through the sequential scan and anywhere else a `Cell` goes.
    """
    linear = to_linear(recurrence.log_space)

    def project_inputs(params, x):
        # Exponentiated here, time-parallel, to keep it off the sequential path.
        a, b = recurrence.coefficients(params, x)
        return jax.tree_util.tree_map(linear, a), jax.tree_util.tree_map(linear, b), x

    def recurrent_step(params, h, xp):
        a, b, x = xp
        h = jax.tree_util.tree_map(lambda h, a, b: a * h + b, h, a, b)
        return h, (h if recurrence.readout is None else recurrence.readout(params, h, x))

    return Cell.split(init, initial_state, project_inputs, recurrent_step, linear=recurrence,
                      rowwise=True)


def _log_g(x):
    """`log g(x)`, the paper's `g(x) = x + 1/2` for `x >= 0`, else `σ(x)`: positive,
    so the candidate state has a logarithm, and linear for large `x` like `x`."""
    return jnp.where(x >= 0, jnp.log(jax.nn.relu(x) + 0.5), jax.nn.log_sigmoid(x))


def _min_rnn(input_size, hidden_size, gates, log_coefficients, *, use_bias, param_dtype,
             compute_dtype, kernel_init):
    """minGRU and minLSTM: `gates` pre-activations `x @ w_ih + b`, split and
    turned into `(log a, log b)` by `log_coefficients`."""
    check_sizes(input_size=input_size, hidden_size=hidden_size)
    check_flags(use_bias=use_bias)
    check_initializers(kernel_init=kernel_init)
    prec = Precision(param_dtype, compute_dtype)
    kernel_init = kernel_init or default_kernel_init()
    H = hidden_size

    def init(key):
        (k_ih,) = split_keys(key, 1)
        params = {"w_ih": prec.initialize(kernel_init, k_ih, (input_size, gates * H))}
        if use_bias:
            params["b"] = prec.zeros((gates * H,))
        return params

    def initial_state(params, batch_shape=()):
        del params
        return prec.zeros(tuple(batch_shape) + (H,))

    def coefficients(params, x):
        check_features(x, input_size)
        k = prec.matmul(x, params["w_ih"])
        if use_bias:
            k = k + params["b"]
        return log_coefficients(*jnp.split(k, gates, axis=-1))

    return linear_cell(init, initial_state, LinearRecurrence(coefficients, log_space=True))


@same_for_same_arguments
def mingru(
    input_size: int,
    hidden_size: int,
    *,
    use_bias: bool = True,
    param_dtype=jnp.float32,
    compute_dtype=None,
    kernel_init=None,
) -> Cell:
    """A minGRU cell (Feng et al. 2024), in the paper's log-space form.

        z = σ(x @ w_z + b_z),  h̃ = g(x @ w_h + b_h)
        h' = (1 - z) * h + z * h̃

    with `g(x) = x + 1/2` for `x >= 0`, else `σ(x)`. The gates read only `x`, so
    `unroll(..., method="associative")` computes every step at once, in log space
    (`log(1 - z)`, `log z + log h̃`) for stability at long sequences.

    Args:
      input_size: features of `x`, `(*batch, input_size)`.
      hidden_size: size of the state `h`, `(*batch, hidden_size)`; the output is `h'`.
      use_bias: whether the cell has the bias `b`.
      param_dtype, compute_dtype, kernel_init: as in `rnnscan.lstm`.

    Returns:
      A `Cell` whose step has `linear` set and params `{"w_ih": (input_size, 2H), "b": (2H,)}`,
      columns `[z, h̃]`.
    """

    def log_coefficients(k_z, k_h):
        return jax.nn.log_sigmoid(-k_z), jax.nn.log_sigmoid(k_z) + _log_g(k_h)

    return _min_rnn(input_size, hidden_size, 2, log_coefficients, use_bias=use_bias,
                    param_dtype=param_dtype, compute_dtype=compute_dtype,
                    kernel_init=kernel_init)


@same_for_same_arguments
def minlstm(
    input_size: int,
    hidden_size: int,
    *,
    use_bias: bool = True,
    param_dtype=jnp.float32,
    compute_dtype=None,
    kernel_init=None,
) -> Cell:
    """A minLSTM cell (Feng et al. 2024), length-independent, in log space.

        f = σ(x @ w_f + b_f),  i = σ(x @ w_i + b_i),  h̃ = g(x @ w_h + b_h)
        h' = f / (f + i) * h + i / (f + i) * h̃

    with `g` as in `mingru`. In log space, with `d = log i - log f`:
    `log(f / (f + i)) = log σ(-d)` and `log(i / (f + i)) = log σ(d)`.

    Args:
      input_size: features of `x`, `(*batch, input_size)`.
      hidden_size: size of the state `h`, `(*batch, hidden_size)`; the output is `h'`.
      use_bias, param_dtype, compute_dtype, kernel_init: as in `mingru`.

    Returns:
      A `Cell` whose step has `linear` set and params `{"w_ih": (input_size, 3H), "b": (3H,)}`,
      columns `[f, i, h̃]`.
    """

    def log_coefficients(k_f, k_i, k_h):
        d = jax.nn.log_sigmoid(k_i) - jax.nn.log_sigmoid(k_f)
        return jax.nn.log_sigmoid(-d), jax.nn.log_sigmoid(d) + _log_g(k_h)

    return _min_rnn(input_size, hidden_size, 3, log_coefficients, use_bias=use_bias,
                    param_dtype=param_dtype, compute_dtype=compute_dtype,
                    kernel_init=kernel_init)


@same_for_same_arguments
def lru(
    input_size: int,
    hidden_size: int,
    *,
    r_min: float = 0.0,
    r_max: float = 1.0,
    max_phase: float = 2 * math.pi,
    param_dtype=jnp.float32,
    compute_dtype=None,
    kernel_init=None,
    output_init=None,
) -> Cell:
    """A linear recurrent unit (Orvieto et al. 2023): a complex diagonal recurrence.

        λ = exp(-exp(ν_log) + i exp(θ_log)),   γ = exp(γ_log)
        h' = λ * h + γ * (x @ B)               (complex, B = B_re + i B_im)
        y  = Re(h' @ C) + D * x                (real,    C = C_re + i C_im)

    The exponential parameterisation keeps `|λ| < 1` (stable) whatever the
    params. At init, λ is uniform on the part of the ring `r_min <= |λ| <= r_max`
    with `0 <= arg λ <= max_phase`, and `γ = sqrt(1 - |λ|²)` normalises the
    input so that `h` keeps unit variance for white-noise inputs; `γ_log` is
    trained, as in the paper's code.

    Args:
      input_size: features of `x`, `(*batch, input_size)`, and of the output `y`.
      hidden_size: size `N` of the complex state `h`, `(*batch, N)`.
      r_min, r_max: the ring of `|λ|` at init, `0 <= r_min < r_max <= 1`.
      max_phase: the largest `arg λ` at init, `> 0`.
      param_dtype, compute_dtype: as in `rnnscan.lstm`; the state is complex
        (complex64 unless `param_dtype` is float64).
      kernel_init: initializer for `B_re` and `B_im`; default normal with variance
        `1 / (2 input_size)`.
      output_init: initializer for `C_re` and `C_im`; default normal with variance
        `1 / N`.

    Returns:
      A `Cell` whose step has `linear` set and params `{"nu_log": (N,), "theta_log": (N,),
      "gamma_log": (N,), "B_re", "B_im": (input_size, N), "C_re", "C_im":
      (N, input_size), "D": (input_size,)}`.
    """
    check_sizes(input_size=input_size, hidden_size=hidden_size)
    for name, value in (("r_min", r_min), ("r_max", r_max), ("max_phase", max_phase)):
        check_number(name, value)
    check_initializers(kernel_init=kernel_init, output_init=output_init)
    if not 0.0 <= r_min < r_max <= 1.0:
        raise ValueError(f"r_min and r_max must satisfy 0 <= r_min < r_max <= 1; got "
                         f"r_min={r_min}, r_max={r_max}")
    if not max_phase > 0:
        raise ValueError(f"max_phase must be positive; got {max_phase}")
    prec = Precision(param_dtype, compute_dtype)
    kernel_init = kernel_init or jax.nn.initializers.variance_scaling(0.5, "fan_in", "normal")
    output_init = output_init or jax.nn.initializers.variance_scaling(1.0, "fan_in", "normal")
    state_dtype = jnp.result_type(prec.param_dtype, jnp.complex64)
    N = hidden_size

    def init(key):
        k_r, k_phase, k_bre, k_bim, k_cre, k_cim, k_d = split_keys(key, 7)
        # Open interval: log(0) at either end would give an infinite param.
        tiny = jnp.finfo(jnp.float32).tiny
        u_r = jax.random.uniform(k_r, (N,), minval=tiny)
        u_phase = jax.random.uniform(k_phase, (N,), minval=tiny)
        # |λ|² uniform on [r_min², r_max²]: uniform over the ring's area.
        nu_log = jnp.log(-0.5 * jnp.log(u_r * (r_max**2 - r_min**2) + r_min**2))
        theta_log = jnp.log(max_phase * u_phase)
        gamma_log = 0.5 * jnp.log1p(-jnp.exp(-2 * jnp.exp(nu_log)))  # log sqrt(1 - |λ|²)
        params = {"nu_log": nu_log, "theta_log": theta_log, "gamma_log": gamma_log}
        params = {k: v.astype(prec.param_dtype) for k, v in params.items()}
        params["B_re"] = prec.initialize(kernel_init, k_bre, (input_size, N))
        params["B_im"] = prec.initialize(kernel_init, k_bim, (input_size, N))
        params["C_re"] = prec.initialize(output_init, k_cre, (N, input_size))
        params["C_im"] = prec.initialize(output_init, k_cim, (N, input_size))
        params["D"] = prec.initialize(jax.nn.initializers.normal(1.0), k_d, (input_size,))
        return params

    def initial_state(params, batch_shape=()):
        del params
        return jnp.zeros(tuple(batch_shape) + (N,), state_dtype)

    def coefficients(params, x):
        check_features(x, input_size)
        lam = jnp.exp(-jnp.exp(params["nu_log"]) + 1j * jnp.exp(params["theta_log"]))
        bx = prec.matmul(x, params["B_re"]) + 1j * prec.matmul(x, params["B_im"])
        b = (jnp.exp(params["gamma_log"]) * bx).astype(state_dtype)
        return jnp.broadcast_to(lam.astype(state_dtype), b.shape), b

    def readout(params, h, x):
        y = prec.matmul(h.real, params["C_re"]) - prec.matmul(h.imag, params["C_im"])
        return y + params["D"] * x

    return linear_cell(init, initial_state, LinearRecurrence(coefficients, readout))
