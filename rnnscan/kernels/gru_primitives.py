"""torch's and cuDNN's GRU (`reset_after`, tanh) over a whole sequence in one
CPU kernel (`gru_cpu.cc`), as JAX primitives; `gru.py` is the adapter `unroll`
calls.

`recurrence` runs `xp = x_t @ w_ih + b`, `hp = h @ w_hh`, `r = σ(xp_r + hp_r)`,
`z = σ(xp_z + hp_z)`, `n = tanh(xp_n + r (hp_n + b_hn))`, `h = n + z (h - n)`
for every step at once, in float32 (the input projection inside the kernel).
As in `lstm_primitives`, its tangent is a linear recurrence over what the
saving forward kernel keeps (each step's `r, z, hn = hp_n + b_hn, n`), with
every term but `dh @ w_hh` taken out of the loop as products over all steps at
once; that tangent is a primitive whose transpose is the backward kernel, and
forward mode, `vmap` and second order run as they do for the LSTM.

The tangent's per-step input `d_z` is `4H` wide, `[d_r d_z d_hn d_xn]`: the
changes of r's and z's pre-activations and of `hn` from everything but the
recurrence, and of `xp_n`. Its cotangent, what the backward kernel writes, is
then `[dr dz d(hn) dn]`: the first `3H` are `hp`'s cotangent (`w_hh`'s
gradient is `h_{t-1}.T` times them, `b_hn`'s the sum of the third) and
`[dr dz dn]` is `xp`'s (`w_ih`'s, `b`'s and the inputs' gradients); JAX
transposes the off-loop products into exactly those.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from rnnscan import masks
from rnnscan.kernels import loader
from rnnscan.kernels.primitives import (
    call,
    linear_pair,
    panels,
    panels_transposed,
    primitive,
    states,
    step_inputs,
    time_major,
)
from rnnscan.tree import is_symbolic_zero


@functools.partial(jax.custom_jvp, nondiff_argnums=(9, 10, 11))
def recurrence(xs, w_ih, w_hh, b, b_hn, h0, lengths, resets, h_r, reverse: bool,
               batch_major: bool, lib: loader.Kernel):
    """Every step's `h` of a GRU (gates `r, z, n`, torch's order, reset after
    the recurrent product).

    Args:
      xs: `(time, batch, I)` float32, the inputs; `(batch, time, I)` with
        `batch_major`.
      w_ih: `(I, 3H)`; w_hh: `(H, 3H)`; b: `(3H,)` added to `x @ w_ih`; b_hn:
        `(H,)` added to `h @ w_n` inside the reset.
      h0: `(batch, H)`, the state before the first step.
      lengths, resets, h_r, reverse, batch_major: as in `lstm_primitives.recurrence`
        (`h_r` the state a reset sets).
      lib: the variant to run (`gru.kernel`).

    Returns:
      `hs`, `(time, batch, H)` (or batch-major): the state after each step
      (carried past a row's length).
    """
    return _forward_p.bind(xs, w_ih, w_hh, b, b_hn, h0, lengths, resets, h_r, reverse=reverse,
                           batch_major=batch_major, lib=lib)[0]


def _forward_on_kernel(xs, w_ih, w_hh, b, b_hn, h0, lengths, resets, h_r, *, reverse,
                       batch_major, lib):
    return call(lib, "rnnscan_gru_forward", states(xs, h0), xs, *panels(lib, 3, w_ih, w_hh), b,
                b_hn, h0, lengths, resets, h_r, hidden=h0.shape[-1], gates=3, reverse=reverse,
                batch_major=batch_major)


def _recurrence_jvp(reverse, batch_major, lib, primals, tangents):
    xs, w_ih, w_hh, b, b_hn, h0, lengths, resets, h_r = primals
    d_xs, d_w_ih, d_w_hh, d_b, d_bhn, d_h0, _, _, d_hr = tangents
    hs, saved = _forward_saving(*primals, reverse, batch_major, lib)
    H = h0.shape[-1]
    flat = lambda a, w: (a.reshape(-1, a.shape[-1]) @ w).reshape(saved.shape[:2] + (3 * H,))
    # xp's change and hp's but for dh_{t-1} @ w_hh, off the loop.
    d_xp = [flat(d_xs, w_ih) if not is_symbolic_zero(d_xs) else None,
            flat(xs, d_w_ih) if not is_symbolic_zero(d_w_ih) else None,
            d_b if not is_symbolic_zero(d_b) else None]
    d_hp = [flat(step_inputs(hs, h0, h_r, resets, reverse, batch_major), d_w_hh)
            if not is_symbolic_zero(d_w_hh) else None]
    zero = jnp.zeros(saved.shape[:2] + (3 * H,), saved.dtype)
    total = lambda terms: sum((t for t in terms if t is not None), zero)
    d_xp, d_hp = total(d_xp), total(d_hp)
    d_hn = d_hp[..., 2 * H:]
    if not is_symbolic_zero(d_bhn):
        d_hn = d_hn + d_bhn
    d_z = jnp.concatenate([d_xp[..., :2 * H] + d_hp[..., :2 * H], d_hn, d_xp[..., 2 * H:]],
                          axis=-1)
    zeros = lambda d, like: jnp.zeros_like(like) if is_symbolic_zero(d) else d
    d_hs, = tangent_p.bind(w_hh, h0, h_r, saved, hs, lengths, resets, d_z, zeros(d_h0, h0),
                           zeros(d_hr, h_r), reverse=reverse, batch_major=batch_major, lib=lib)
    return hs, d_hs


recurrence.defjvp(_recurrence_jvp, symbolic_zeros=True)


def _tangent_in_jax(w_hh, h0, h_r, saved, hs, lengths, resets, d_z, d_h0, d_hr, *, reverse,
                    batch_major, lib):
    """`[d_hs]`: the tangent of `gru_cpu.cc`'s recurrence as a `lax.scan`."""
    r, z, hn, n = jnp.split(saved, 4, axis=-1)
    h_in = step_inputs(hs, h0, h_r, resets, reverse, batch_major)
    # dh' = (1-z)(1-n²) (d_xn + hn dr + r d_hn) + z(1-z)(h - n) u_z + z dh, with
    # dr = r(1-r) u_r: the factors each change meets.
    s_n = (1 - z) * (1 - n * n)
    q = (s_n * hn * r * (1 - r), z * (1 - z) * (h_in - n), s_n * r, s_n)
    w_t = w_hh.T  # so that reverse mode's step product is the plain `g @ w_t`
    valid = masks.valid_steps(lengths, hs.shape[int(batch_major)], time_major=not batch_major)
    hidden = h0.shape[-1]

    def step(dh, inputs):
        d_z, q_r, q_z, q_hn, q_n, z, valid, reset = (
            a[..., None] if a.ndim == 1 else a for a in inputs)
        dh_in = jnp.where(reset, d_hr, dh)
        d_hp = jax.lax.dot_general(dh_in, w_t, (((1,), (1,)), ((), ())))
        u = d_z[..., :3 * hidden] + d_hp
        dh_new = (q_r * u[..., :hidden] + q_z * u[..., hidden:2 * hidden]
                  + q_hn * u[..., 2 * hidden:] + q_n * d_z[..., 3 * hidden:] + z * dh_in)
        dh = jnp.where(valid, dh_new, dh)
        return dh, dh

    xs = time_major(batch_major, (d_z, *q, z, valid, resets))
    return [time_major(batch_major, jax.lax.scan(step, d_h0, xs, reverse=reverse)[1])]


def _cotangent_in_jax(w_hh, h0, h_r, saved, hs, lengths, resets, g_hs, **layout):
    """`(g_z, g_h0, g_hr)`: the transpose of `_tangent_in_jax`, by JAX."""
    residuals = (w_hh, h0, h_r, saved, hs, lengths, resets)
    linear = functools.partial(_tangent_in_jax, *residuals, **layout)
    return jax.linear_transpose(linear, *_cotangent_shapes(*residuals))([g_hs])


def _cotangent_on_kernel(w_hh, h0, h_r, saved, hs, lengths, resets, g_hs, *, lib, **layout):
    # The kernel overwrites the saved [r z hn n] with g_z (operand 4 is result 0).
    return call(lib, "rnnscan_gru_backward", _cotangent_shapes(w_hh, h0, h_r, saved),
                panels_transposed(lib, w_hh), h0, hs, g_hs, saved, lengths, resets, h_r,
                hidden=h0.shape[-1], gates=3, aliases={4: 0}, **layout)


def _tangent_shapes(w_hh, h0, h_r, saved, hs, *others, **layout):
    return [jax.core.ShapedArray(hs.shape, hs.dtype)]


def _cotangent_shapes(w_hh, h0, h_r, saved, *others, **params):
    state = jax.core.ShapedArray(h0.shape, h0.dtype)
    return [jax.core.ShapedArray(saved.shape, saved.dtype), state, state]


# The tangent map and its transpose (operands: the residuals `(w_hh, h0, h_r,
# saved, hs, lengths, resets)`, then the linear ones): reverse mode runs the
# backward kernel, forward mode the scan.
tangent_p, cotangent_p = linear_pair("rnnscan_gru", 7, _tangent_in_jax, _tangent_shapes,
                                     _cotangent_in_jax, _cotangent_shapes, _cotangent_on_kernel)


@functools.partial(jax.custom_jvp, nondiff_argnums=(9, 10, 11))
def _forward_saving(xs, w_ih, w_hh, b, b_hn, h0, lengths, resets, h_r, reverse, batch_major,
                    lib):
    """`(hs, saved)`: the states and each step's `[r z hn n]` (zero past a
    row's length)."""
    return tuple(_forward_saving_p.bind(xs, w_ih, w_hh, b, b_hn, h0, lengths, resets, h_r,
                                        reverse=reverse, batch_major=batch_major, lib=lib))


def _forward_saving_on_kernel(xs, w_ih, w_hh, b, b_hn, h0, lengths, resets, h_r, *, reverse,
                              batch_major, lib):
    saved = jax.ShapeDtypeStruct(xs.shape[:2] + (4 * h0.shape[-1],), jnp.float32)
    return call(lib, "rnnscan_gru_forward_saving", states(xs, h0) + [saved], xs,
                *panels(lib, 3, w_ih, w_hh), b, b_hn, h0, lengths, resets, h_r,
                hidden=h0.shape[-1], gates=3, reverse=reverse, batch_major=batch_major)


@_forward_saving.defjvp
def _forward_saving_jvp(reverse, batch_major, lib, primals, tangents):
    # Only derivatives of second order reach here; they differentiate plain JAX.
    *floats, lengths, resets, h_r = primals
    in_jax = lambda *a: _forward_saving_in_jax(*a[:6], lengths, resets, a[6], reverse=reverse,
                                               batch_major=batch_major)
    return jax.jvp(in_jax, (*floats, h_r), (*tangents[:6], tangents[8]))


def _forward_saving_in_jax(xs, w_ih, w_hh, b, b_hn, h0, lengths, resets, h_r, *, reverse,
                           batch_major):
    """What `_forward_saving` computes, as a `lax.scan`."""
    hidden = h0.shape[-1]

    def step(h, inputs):
        x_t, valid, reset = inputs
        h_in = jnp.where(reset[:, None], h_r, h)
        xp, hp = x_t @ w_ih + b, h_in @ w_hh
        r = jax.nn.sigmoid(xp[:, :hidden] + hp[:, :hidden])
        z = jax.nn.sigmoid(xp[:, hidden:2 * hidden] + hp[:, hidden:2 * hidden])
        hn = hp[:, 2 * hidden:] + b_hn
        n = jnp.tanh(xp[:, 2 * hidden:] + r * hn)
        keep = lambda new, old: jnp.where(valid[:, None], new, old)
        h = keep(n + z * (h_in - n), h)
        return h, (h, keep(jnp.concatenate([r, z, hn, n], axis=-1), 0.0))

    valid = masks.valid_steps(lengths, xs.shape[int(batch_major)], time_major=not batch_major)
    inputs = time_major(batch_major, (xs, valid, resets))
    outs = jax.lax.scan(step, h0, inputs, reverse=reverse)[1]
    return time_major(batch_major, outs)


# The forward kernels as primitives: the FFI call on the CPU, the scan elsewhere.
_forward_in_jax = lambda *a, lib, **layout: _forward_saving_in_jax(*a, **layout)
_forward_p = primitive("rnnscan_gru_forward", lambda *a, **p: _forward_in_jax(*a, **p)[:1],
                       run=_forward_on_kernel)
_forward_saving_p = primitive("rnnscan_gru_forward_saving", _forward_in_jax,
                              run=_forward_saving_on_kernel)
