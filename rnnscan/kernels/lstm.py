"""The adapter `unroll` calls for `rs.lstm`'s plain float32 cell, as its
`SequenceKernel` (`sequence_kernel`): whether the CPU kernel can run these
operands here (`why_not`), whether it was measured faster than the scan for this
CPU and shape (`speed.kernel_is_faster`), and the whole sequence through it
(`sequence`)."""

from __future__ import annotations

import functools
from typing import Optional

import jax.numpy as jnp
import numpy as np

from rnnscan.cell import SequenceKernel
from rnnscan.kernels import loader, speed
from rnnscan.kernels.lstm_primitives import last_step, recurrence, valid_steps


def sequence_kernel(forget_bias: float, use_bias: bool) -> SequenceKernel:
    """`rs.lstm`'s `SequenceKernel`: `sequence` on its params and `LSTMState`."""

    def unsupported(params, state, xs, *, lengths, resets):
        return why_not(params, state, xs, lengths=lengths, resets=resets, use_bias=use_bias)

    def faster(params, state, xs, *, time_major, derivatives):
        time, batch = xs.shape[:2] if time_major else xs.shape[1::-1]
        lib = loader.load("lstm_cpu")
        return speed.kernel_is_faster(lib.variant, batch, time, xs.shape[-1], state.h.shape[-1],
                                      derivatives=derivatives)

    def run(params, state, xs, **options):
        return sequence(params, state, xs, forget_bias=forget_bias, use_bias=use_bias,
                        force=True, **options)

    return SequenceKernel(run, unsupported, faster)


def why_not(params, state, xs, *, lengths=None, resets=None, reset_state=None,
            use_bias=True) -> Optional[str]:
    """Why the kernel cannot run these operands here, or None when it can.

    It runs on a CPU with a built variant, everything in float32, `xs` of rank 3
    and not empty, `state` `(batch, H)` with `H` a multiple of the variant's
    lanes (16 on avx512, 8 on avx2, 4 on baseline)."""
    lib = loader.load("lstm_cpu")
    if lib is None:
        return "the kernel is unavailable here: " + loader.info()["why"]
    weights = [params["w_ih"], params["w_hh"]] + ([params["b"]] if use_bias else [])
    arrays = [xs, state.h, state.c, *weights, *(reset_state or ())]
    if not hasattr(xs, "shape"):
        return f"the kernel needs xs, one array; got {type(xs).__name__}"
    if any(jnp.dtype(a.dtype) != jnp.float32 for a in arrays):
        return ("the kernel runs float32 alone; got "
                f"{sorted({str(jnp.dtype(a.dtype)) for a in arrays})}")
    if len(xs.shape) != 3 or 0 in xs.shape:
        return f"the kernel needs xs of rank 3, not empty; got shape {tuple(xs.shape)}"
    if len(state.h.shape) != 2 or state.h.shape[-1] % lib.lanes:
        return (f"the {lib.variant} kernel needs a multiple of {lib.lanes} units in a state "
                f"(batch, units); got state.h of shape {tuple(state.h.shape)}")
    if lengths is not None and not jnp.issubdtype(jnp.result_type(lengths), jnp.integer):
        return f"lengths must be integers; got {jnp.result_type(lengths)}"
    return None


def supports(params, state, xs, **options) -> bool:
    """Whether `sequence(..., force=True)` runs the kernel on these operands."""
    return why_not(params, state, xs, **options) is None


def sequence(params, state, xs, *, lengths=None, resets=None, reset_state=None, reverse=False,
             time_major=False, all_states=False, forget_bias=1.0, use_bias=True, force=False):
    """`rs.lstm`'s plain float32 cell over a whole sequence in the kernel, as
    `Cell.sequence_kernel` returns it: `(final_state, ys, states)` (`states`
    every step's `LSTMState`, with `all_states`, else None); or None when the
    kernel cannot run these operands here (`why_not`), or, unless `force`, is
    not measured faster than the scan for this CPU and shape.

    Args:
      params: `{"w_ih": (I, 4H), "w_hh": (H, 4H), "b": (4H,)}` (no "b" without
        `use_bias`).
      state: `LSTMState(h, c)`, each `(batch, H)`: the state before the first step.
      xs: `(batch, time, I)`, `(time, batch, I)` with `time_major`.
      lengths: int `(batch,)` in `[0, time]`, or None (every step of every row).
      resets: bool `(batch, time)` (`(time, batch)` with `time_major`), or None.
      reset_state: `LSTMState` of `(batch, H)` a reset sets; default zeros.
      forget_bias: added to the f gate's slice of the bias.
      The rest as in `rs.unroll`.
    """
    options = dict(lengths=lengths, resets=resets, reset_state=reset_state, use_bias=use_bias)
    if why_not(params, state, xs, **options) is not None:
        return None
    lib = loader.load("lstm_cpu")
    batch_major = not time_major
    time, batch = jnp.shape(xs)[:2][::-1] if batch_major else jnp.shape(xs)[:2]
    hidden = state.h.shape[-1]
    if not force and not speed.kernel_is_faster(lib.variant, batch, time, xs.shape[-1], hidden):
        return None
    bias = np.zeros(4 * hidden, np.float32)
    bias[hidden:2 * hidden] = forget_bias
    if use_bias:
        bias = params["b"] + bias
    per_step = (batch, time) if batch_major else (time, batch)
    full = lengths is None
    lengths = jnp.full(batch, time, jnp.int32) if full else jnp.asarray(lengths, jnp.int32)
    valid = valid_steps(lengths, time, batch_major)
    # A reset past a row's length changes nothing.
    resets = jnp.zeros(per_step, bool) if resets is None else jnp.asarray(resets, bool) & valid
    h_r, c_r = reset_state if reset_state is not None else (jnp.zeros_like(state.h),) * 2
    hs, c = recurrence(xs, params["w_ih"], params["w_hh"], bias, state.h, state.c, lengths,
                       resets, h_r, c_r, reverse, batch_major, all_states, lib)
    # Past a row's length the kernel carries the state: there the output is zero.
    ys = hs if full else jnp.where(valid[..., None], hs, 0.0)
    last = functools.partial(last_step, reverse=reverse, batch_major=batch_major)
    state_type = type(state)  # rs.LSTMState (whose module imports this one)
    if all_states:
        return state_type(last(hs), last(c)), ys, state_type(hs, c)
    return state_type(last(hs), c), ys, None
