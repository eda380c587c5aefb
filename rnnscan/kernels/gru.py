"""The adapter `unroll` calls for `rs.gru`'s plain float32 cell (`reset_after`,
tanh, no layer norm), as its `SequenceKernel` (`sequence_kernel`): whether the
CPU kernel can run these operands here (`why_not`), whether it was measured
faster than the scan for this CPU and shape (`speed.kernel_is_faster`), and the
whole sequence through it (`sequence`). `unroll`'s plan asks the first two
once; `sequence` asks nothing."""

from __future__ import annotations

from typing import Optional

import jax.numpy as jnp

from rnnscan.cell import SequenceKernel
from rnnscan.kernels import loader, primitives, speed
from rnnscan.kernels.gru_primitives import recurrence


def sequence_kernel(use_bias: bool) -> SequenceKernel:
    """`rs.gru`'s `SequenceKernel`: `sequence` on its params and state `h`."""

    def unsupported(params, state, xs, *, lengths, resets):
        return why_not(params, state, xs, lengths=lengths, resets=resets, use_bias=use_bias)

    def faster(params, state, xs, *, time_major, derivatives):
        time, batch = xs.shape[:2] if time_major else xs.shape[1::-1]
        lib = loader.load("gru_cpu")
        return speed.kernel_is_faster("gru", lib.variant, batch, time, xs.shape[-1],
                                      state.shape[-1], derivatives=derivatives)

    def run(params, state, xs, **options):
        return sequence(params, state, xs, use_bias=use_bias, **options)

    return SequenceKernel(run, unsupported, faster)


def why_not(params, state, xs, *, lengths=None, resets=None, reset_state=None,
            use_bias=True) -> Optional[str]:
    """Why the kernel cannot run these operands here, or None when it can.

    It runs on a CPU with a built variant, everything in float32, `xs` of rank 3
    and not empty, `state` `(batch, H)` with `H` a multiple of the variant's
    lanes (16 on avx512, 8 on avx2, 4 on baseline)."""
    if not hasattr(state, "shape"):
        return f"the kernel needs a state h, one array; got {type(state).__name__}"
    weights = [params["w_ih"], params["w_hh"]] + (
        [params["b"], params["b_hn"]] if use_bias else [])
    arrays = [*weights, *([] if reset_state is None else [reset_state])]
    return primitives.why_not("gru_cpu", arrays, xs, state) or primitives.check_lengths(lengths)


def sequence(params, state, xs, *, lengths=None, resets=None, reset_state=None, reverse=False,
             time_major=False, all_states=False, use_bias=True):
    """`rs.gru`'s plain float32 `reset_after` cell over a whole sequence in the
    kernel: `(final_state, ys, states)` (`states` every step's `h`, with
    `all_states`, else None). For operands `why_not` accepts (the caller asks
    it: `unroll`'s plan, once).

    Args:
      params: `{"w_ih": (I, 3H), "w_hh": (H, 3H), "b": (3H,), "b_hn": (H,)}` (no
        biases without `use_bias`).
      state: `h` `(batch, H)`, the state before the first step.
      xs: `(batch, time, I)`, `(time, batch, I)` with `time_major`.
      lengths: int `(batch,)` in `[0, time]`, or None (every step of every row).
      resets: bool `(batch, time)` (`(time, batch)` with `time_major`), or None.
      reset_state: `(batch, H)`, the state a reset sets; default zeros.
      The rest as in `rs.unroll`.
    """
    lib = loader.load("gru_cpu")
    batch_major = not time_major
    full = lengths is None
    lengths, valid, resets = primitives.padding(xs, lengths, resets, batch_major)
    hidden = state.shape[-1]
    b, b_hn = ((params["b"], params["b_hn"]) if use_bias else
               (jnp.zeros(3 * hidden, jnp.float32), jnp.zeros(hidden, jnp.float32)))
    h_r = reset_state if reset_state is not None else jnp.zeros_like(state)
    hs = recurrence(xs, params["w_ih"], params["w_hh"], b, b_hn, state, lengths, resets, h_r,
                    reverse, batch_major, lib)
    # Past a row's length the kernel carries the state: there the output is zero.
    ys = hs if full else jnp.where(valid[..., None], hs, 0.0)
    final = primitives.last_step(hs, reverse, batch_major)
    return final, ys, hs if all_states else None
