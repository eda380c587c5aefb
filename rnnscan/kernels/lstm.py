"""The adapter `unroll` calls for `rs.lstm`'s plain float32 cell, as its
`SequenceKernel` (`sequence_kernel`): whether the CPU kernel can run these
operands here (`why_not`), whether it was measured faster than the scan for this
CPU and shape (`speed.kernel_is_faster`), and the whole sequence through it
(`sequence`). `unroll`'s plan asks the first two once; `sequence` asks nothing."""

from __future__ import annotations

import functools
from typing import Optional

import jax.numpy as jnp
import numpy as np

from rnnscan.cell import SequenceKernel
from rnnscan.kernels import loader, primitives, speed
from rnnscan.kernels.lstm_primitives import recurrence


def sequence_kernel(forget_bias: float, use_bias: bool) -> SequenceKernel:
    """`rs.lstm`'s `SequenceKernel`: `sequence` on its params and `LSTMState`."""

    def unsupported(params, state, xs, *, lengths, resets):
        return why_not(params, state, xs, lengths=lengths, resets=resets, use_bias=use_bias)

    def faster(params, state, xs, *, time_major, derivatives):
        time, batch = xs.shape[:2] if time_major else xs.shape[1::-1]
        lib = loader.load("lstm_cpu")
        return speed.kernel_is_faster("lstm", lib.variant, batch, time, xs.shape[-1],
                                      state.h.shape[-1], derivatives=derivatives)

    def run(params, state, xs, **options):
        return sequence(params, state, xs, forget_bias=forget_bias, use_bias=use_bias,
                        **options)

    return SequenceKernel(run, unsupported, faster)


def why_not(params, state, xs, *, lengths=None, resets=None, reset_state=None,
            use_bias=True) -> Optional[str]:
    """Why the kernel cannot run these operands here, or None when it can.

    It runs on a CPU with a built variant, everything in float32, `xs` of rank 3
    and not empty, `state` `(batch, H)` with `H` a multiple of the variant's
    lanes (16 on avx512, 8 on avx2, 4 on baseline)."""
    weights = [params["w_ih"], params["w_hh"]] + ([params["b"]] if use_bias else [])
    arrays = [getattr(state, "c", None), *weights, *(reset_state or ())]
    if arrays[0] is None:
        return f"the kernel needs an LSTMState; got {type(state).__name__}"
    return (primitives.why_not("lstm_cpu", arrays, xs, state.h)
            or primitives.check_lengths(lengths))


def sequence(params, state, xs, *, lengths=None, resets=None, reset_state=None, reverse=False,
             time_major=False, all_states=False, forget_bias=1.0, use_bias=True):
    """`rs.lstm`'s plain float32 cell over a whole sequence in the kernel:
    `(final_state, ys, states)` (`states` every step's `LSTMState`, with
    `all_states`, else None). For operands `why_not` accepts (the caller asks
    it: `unroll`'s plan, once).

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
    lib = loader.load("lstm_cpu")
    batch_major = not time_major
    full = lengths is None
    lengths, valid, resets = primitives.padding(xs, lengths, resets, batch_major)
    hidden = state.h.shape[-1]
    bias = np.zeros(4 * hidden, np.float32)
    bias[hidden:2 * hidden] = forget_bias
    if use_bias:
        bias = params["b"] + bias
    h_r, c_r = reset_state if reset_state is not None else (jnp.zeros_like(state.h),) * 2
    hs, c = recurrence(xs, params["w_ih"], params["w_hh"], bias, state.h, state.c, lengths,
                       resets, h_r, c_r, reverse, batch_major, all_states, lib)
    # Past a row's length the kernel carries the state: there the output is zero.
    ys = hs if full else jnp.where(valid[..., None], hs, 0.0)
    last = functools.partial(primitives.last_step, reverse=reverse, batch_major=batch_major)
    state_type = type(state)  # rs.LSTMState (whose module imports this one)
    if all_states:
        return state_type(last(hs), last(c)), ys, state_type(hs, c)
    return state_type(last(hs), c), ys, None
