"""A plain LSTM over a whole sequence in one CPU kernel (`lstm_cpu.cc`), as JAX
primitives; `lstm.py` is the adapter `unroll` calls.

`recurrence` runs `z = x_t @ w_ih + h @ w_hh + b`, `c = σ(f) c + σ(i) tanh(j)`,
`h = σ(o) tanh(c)` for every step at once, in float32 (the input projection
inside the kernel, step by step: no `(time, batch, 4H)` array of projected
inputs is ever written), with padding (`lengths`) and resets. Its tangent is a
linear recurrence over what the saving forward kernel keeps (each step's gate
activations and `c`), with every term but `dh @ w_hh` taken out of the loop as
products over all steps at once (as `unroll` does for `Cell.recurrent_kernel`).
That tangent is a primitive whose transpose, reverse mode's backward loop, is
the backward kernel; forward mode runs it as a `lax.scan`. Every JAX
transformation composes: under `vmap` the kernels run once per mapped element,
one after another, and derivatives of the kernels themselves (second order) go
through plain-JAX copies.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.interpreters import ad

from rnnscan import masks
from rnnscan.kernels import loader
from rnnscan.kernels.primitives import (
    call,
    last_step,
    linear_pair,
    panels,
    panels_transposed,
    primitive,
    states as _states,
    step_inputs as _step_inputs,
    time_major as _time_major,
)
from rnnscan.tree import is_symbolic_zero


@functools.partial(jax.custom_jvp, nondiff_argnums=(10, 11, 12, 13))
def recurrence(xs, w_ih, w_hh, bias, h0, c0, lengths, resets, h_r, c_r, reverse: bool,
               batch_major: bool, all_states: bool, lib: loader.Kernel):
    """Every step's `h`, and every step's or the last `c`, of an LSTM (gates
    `i, f, j, o`, torch's order).

    Args:
      xs: `(time, batch, I)` float32, the inputs; `(batch, time, I)` with
        `batch_major`.
      w_ih: `(I, 4H)`; w_hh: `(H, 4H)`; bias: `(4H,)` added to every step's gates.
      h0, c0: `(batch, H)`, the state before the first step.
      lengths: int32 `(batch,)` in `[0, time]`: row `b` reads steps `t <
        lengths[b]` (from `lengths[b] - 1` down with `reverse`); past them its
        state is carried through unchanged.
      resets: bool, one per step and row (`(time, batch)`, or `(batch, time)`
        with `batch_major`): where true on a step read, the state is set to
        `(h_r, c_r)` before reading it.
      h_r, c_r: `(batch, H)`, the state a reset sets.
      reverse: run from the last step to the first.
      batch_major: the layout of `xs`, `resets` and of the results.
      all_states: return every step's `c`, not the last one's alone.
      lib: the variant to run (`lstm.kernel`).

    Returns:
      `(hs, cs)`, each `(time, batch, H)` (or batch-major), the state after each
      step (carried past a row's length); or `(hs, c)`, `c` `(batch, H)` after
      the last step.
    """
    masks = (lengths, resets, h_r, c_r)
    if all_states:
        return _forward_saving(xs, w_ih, w_hh, bias, h0, c0, *masks, reverse, batch_major,
                               lib)[:2]
    return tuple(_forward_p.bind(xs, w_ih, w_hh, bias, h0, c0, *masks, reverse=reverse,
                                 batch_major=batch_major, lib=lib))


def _forward_on_kernel(xs, w_ih, w_hh, bias, h0, c0, lengths, resets, h_r, c_r, *, reverse,
                       batch_major, lib):
    results = _states(xs, h0) + [jax.ShapeDtypeStruct(c0.shape, c0.dtype)]
    return call(lib, "rnnscan_lstm_forward", results, xs, *panels(lib, 4, w_ih, w_hh), bias, h0,
                c0, lengths, resets, h_r, c_r, hidden=h0.shape[-1], gates=4, reverse=reverse,
                batch_major=batch_major)


def _forward_in_jax(*operands, reverse, batch_major, lib):
    hs, cs, _ = _forward_saving_in_jax(*operands, reverse=reverse, batch_major=batch_major)
    return hs, last_step(cs, reverse, batch_major)


def _recurrence_jvp(reverse, batch_major, all_states, lib, primals, tangents):
    xs, w_ih, w_hh, bias, h0, c0, lengths, resets, h_r, c_r = primals
    d_xs, d_w_ih, d_w_hh, d_bias, d_h0, d_c0, _, _, d_hr, d_cr = tangents
    hs, cs, gates = _forward_saving(*primals, reverse, batch_major, lib)
    # dz_t = d_x_t @ w_ih + x_t @ d_w_ih + d_bias + h_{t-1} @ d_w_hh + dh_{t-1} @ w_hh:
    # every term but the last for all steps at once, off the loop.
    flat = lambda a, w: (a.reshape(-1, a.shape[-1]) @ w).reshape(gates.shape)
    d_z = jnp.zeros_like(gates)
    if not is_symbolic_zero(d_xs):
        d_z = d_z + flat(d_xs, w_ih)
    if not is_symbolic_zero(d_w_ih):
        d_z = d_z + flat(xs, d_w_ih)
    if not is_symbolic_zero(d_bias):
        d_z = d_z + d_bias
    if not is_symbolic_zero(d_w_hh):
        h_in = _step_inputs(hs, h0, h_r, resets, reverse, batch_major)
        d_z = d_z + flat(h_in, d_w_hh)
    zero = lambda d, like: jnp.zeros_like(like) if is_symbolic_zero(d) else d
    linear = zero(d_h0, h0), zero(d_c0, c0), zero(d_hr, h_r), zero(d_cr, c_r)
    d_hs, d_cs = tangent_p.bind(w_hh, c0, c_r, gates, cs, lengths, resets, d_z, *linear,
                                reverse=reverse, batch_major=batch_major, lib=lib)
    if all_states:
        return (hs, cs), (d_hs, d_cs)
    return (hs, last_step(cs, reverse, batch_major)), (d_hs, last_step(d_cs, reverse, batch_major))


recurrence.defjvp(_recurrence_jvp, symbolic_zeros=True)


def _tangent_in_jax(w_hh, c0, c_r, gates, cs, lengths, resets, d_z, d_h0, d_c0, d_hr, d_cr, *,
                    reverse, batch_major, lib):
    """`(d_hs, d_cs)`: the tangent of `lstm_cpu.cc`'s header as a `lax.scan`."""
    i, f, j, o = jnp.split(gates, 4, axis=-1)
    tc = jnp.tanh(cs)
    c_in = _step_inputs(cs, c0, c_r, resets, reverse, batch_major)
    # Each activation's derivative times the factor it meets in dc_t or dh_t.
    q = jnp.concatenate([i * (1 - i) * j, f * (1 - f) * c_in, (1 - j * j) * i,
                         o * (1 - o) * tc], axis=-1)
    w_t = w_hh.T  # so that reverse mode's step product is the plain `g @ w_t`
    valid = masks.valid_steps(lengths, cs.shape[int(batch_major)], time_major=not batch_major)

    def step(carry, inputs):
        dh, dc = carry
        d_z, q, f, g2, valid, reset = (a[..., None] if a.ndim == 1 else a for a in inputs)
        dh_in, dc_in = jnp.where(reset, d_hr, dh), jnp.where(reset, d_cr, dc)
        u = (d_z + jax.lax.dot_general(dh_in, w_t, (((1,), (1,)), ((), ())))) * q
        u_i, u_f, u_j, u_o = jnp.split(u, 4, axis=-1)
        dc_new = u_i + u_f + u_j + f * dc_in
        dh_new = u_o + g2 * dc_new
        carry = jnp.where(valid, dh_new, dh), jnp.where(valid, dc_new, dc)
        return carry, carry

    xs = _time_major(batch_major, (d_z, q, f, o * (1 - tc * tc), valid, resets))
    return _time_major(batch_major, jax.lax.scan(step, (d_h0, d_c0), xs, reverse=reverse)[1])


def _cotangent_in_jax(w_hh, c0, c_r, gates, cs, lengths, resets, g_hs, g_cs, *, zero_g_cs,
                      **layout):
    """`(g_z, g_h0, g_c0, g_hr, g_cr)`: the transpose of `_tangent_in_jax`, by JAX.
    With `zero_g_cs`, `g_cs` is a scalar placeholder for zeros."""
    residuals = (w_hh, c0, c_r, gates, cs, lengths, resets)
    linear = functools.partial(_tangent_in_jax, *residuals, **layout)
    g_cs = jnp.zeros_like(cs) if zero_g_cs else g_cs
    return jax.linear_transpose(linear, *_cotangent_shapes(*residuals))((g_hs, g_cs))


def _cotangent_on_kernel(w_hh, c0, c_r, gates, cs, lengths, resets, g_hs, g_cs, *, zero_g_cs,
                         lib, **layout):
    # The kernel overwrites the saved gates with g_z (operand 5 is result 0).
    return call(lib, "rnnscan_lstm_backward", _cotangent_shapes(w_hh, c0, c_r, gates, cs),
                panels_transposed(lib, w_hh), c0, cs, g_hs, g_cs, gates, lengths, resets, c_r,
                hidden=c0.shape[-1], gates=4, aliases={5: 0}, has_gcs=np.int32(not zero_g_cs),
                **layout)


def _tangent_shapes(w_hh, c0, c_r, gates, cs, *others, **layout):
    return [jax.core.ShapedArray(cs.shape, cs.dtype)] * 2


def _cotangent_shapes(w_hh, c0, c_r, gates, cs, *others, **params):
    state = jax.core.ShapedArray(c0.shape, c0.dtype)
    return [jax.core.ShapedArray(gates.shape, gates.dtype)] + [state] * 4


# Operands of the two primitives below: the residuals `(w_hh, c0, c_r, gates,
# cs, lengths, resets)`, then the linear ones.
_RESIDUALS = 7


def _prepare(cts, residuals):
    """The cotangent kernel's operands: most losses read the hs alone, and a zero
    cotangent of cs is not written out (a scalar placeholder, `zero_g_cs`)."""
    ct_hs, ct_cs = cts
    zero_g_cs = type(ct_cs) is ad.Zero
    ct_cs = jnp.zeros((), residuals[4].dtype) if zero_g_cs else ct_cs
    return [ad.instantiate_zeros(ct_hs), ct_cs], dict(zero_g_cs=zero_g_cs)


# The tangent map and its transpose, each the other's transpose: reverse mode
# runs the backward kernel, forward mode the scan.
tangent_p, cotangent_p = linear_pair("rnnscan_lstm", _RESIDUALS, _tangent_in_jax,
                                     _tangent_shapes, _cotangent_in_jax, _cotangent_shapes,
                                     _cotangent_on_kernel, prepare=_prepare)


@functools.partial(jax.custom_jvp, nondiff_argnums=(10, 11, 12))
def _forward_saving(xs, w_ih, w_hh, bias, h0, c0, lengths, resets, h_r, c_r, reverse,
                    batch_major, lib):
    """`(hs, cs, gates)`: the states and each step's gate activations (zero past
    a row's length)."""
    return tuple(_forward_saving_p.bind(xs, w_ih, w_hh, bias, h0, c0, lengths, resets, h_r,
                                        c_r, reverse=reverse, batch_major=batch_major, lib=lib))


def _forward_saving_on_kernel(xs, w_ih, w_hh, bias, h0, c0, lengths, resets, h_r, c_r, *,
                              reverse, batch_major, lib):
    gates = jax.ShapeDtypeStruct(xs.shape[:2] + bias.shape, jnp.float32)
    return call(lib, "rnnscan_lstm_forward_saving", _states(xs, h0) * 2 + [gates], xs,
                *panels(lib, 4, w_ih, w_hh), bias, h0, c0, lengths, resets, h_r, c_r,
                hidden=h0.shape[-1], gates=4, reverse=reverse, batch_major=batch_major)


@_forward_saving.defjvp
def _forward_saving_jvp(reverse, batch_major, lib, primals, tangents):
    # Only derivatives of second order reach here; they differentiate plain JAX.
    *floats, lengths, resets, h_r, c_r = primals
    in_jax = lambda *a: _forward_saving_in_jax(*a[:6], lengths, resets, *a[6:], reverse=reverse,
                                               batch_major=batch_major)
    return jax.jvp(in_jax, (*floats, h_r, c_r), (*tangents[:6], *tangents[8:]))


def _forward_saving_in_jax(xs, w_ih, w_hh, bias, h0, c0, lengths, resets, h_r, c_r, *,
                           reverse, batch_major):
    """What `_forward_saving` computes, as a `lax.scan`."""

    def step(carry, inputs):
        h, c = carry
        x_t, valid, reset = inputs
        h_in = jnp.where(reset[:, None], h_r, h)
        c_in = jnp.where(reset[:, None], c_r, c)
        i, f, j, o = jnp.split(x_t @ w_ih + h_in @ w_hh + bias, 4, axis=-1)
        i, f, j, o = jax.nn.sigmoid(i), jax.nn.sigmoid(f), jnp.tanh(j), jax.nn.sigmoid(o)
        c_new = f * c_in + i * j
        keep = lambda new, old: jnp.where(valid[:, None], new, old)
        h, c = keep(o * jnp.tanh(c_new), h), keep(c_new, c)
        return (h, c), (h, c, keep(jnp.concatenate([i, f, j, o], axis=-1), 0.0))

    valid = masks.valid_steps(lengths, xs.shape[int(batch_major)], time_major=not batch_major)
    inputs = _time_major(batch_major, (xs, valid, resets))
    outs = jax.lax.scan(step, (h0, c0), inputs, reverse=reverse)[1]
    return _time_major(batch_major, outs)




# The forward kernels as primitives: the FFI call on the CPU, the scan elsewhere.
_forward_p = primitive("rnnscan_lstm_forward", _forward_in_jax, run=_forward_on_kernel)
_forward_saving_p = primitive(
    "rnnscan_lstm_forward_saving",
    lambda *a, lib, **layout: _forward_saving_in_jax(*a, **layout),
    run=_forward_saving_on_kernel)
