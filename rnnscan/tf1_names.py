"""TF1's `tf.nn.dynamic_rnn` under its own argument names: `rnnscan.unroll` with
`lengths=sequence_length`, and TF1's other arguments accepted as TF1 users pass them."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from rnnscan.cell import as_cell, initial_state_of
from rnnscan.batch import Names
from rnnscan.unroll import _run
from rnnscan.validation import check_bool, check_positive_int
from rnnscan.sequence_args import sequence_axes

_TF_NAMES = Names("inputs", "sequence_length")


def dynamic_rnn(cell, params, inputs, sequence_length=None, initial_state=None,
                time_major=False, *, dtype=None, parallel_iterations=None, swap_memory=False,
                scope=None):
    """TF1's `tf.nn.dynamic_rnn(cell, inputs, sequence_length, initial_state, dtype,
    parallel_iterations, swap_memory, time_major, scope)`, with the cell's params.

    Returns `(outputs, state)`: outputs `(*batch, time, output_size)` (time-major
    with `time_major`), zero past each row's `sequence_length`, and the state after
    each row's last valid step.

    `dtype`, as in TF1, is the dtype of the zero initial state when no
    `initial_state` is given (ignored when one is): it must be the cell's state
    dtype (its `param_dtype`), else a ValueError. `parallel_iterations` and
    `swap_memory` tune TF1's `while_loop` and change no number: they are accepted
    and ignored (rnnscan's steps run in one compiled scan; to trade memory for
    compute, `rs.unroll(..., remat=...)`). `scope` names TF1's variable scope;
    rnnscan's variables are the explicit `params`, so it is accepted and ignored.
    """
    if parallel_iterations is not None:
        check_positive_int("parallel_iterations", parallel_iterations)
    check_bool("swap_memory", swap_memory)
    if scope is not None and not isinstance(scope, str):
        raise TypeError(f"scope must be a str or None (TF1's variable scope, ignored); got "
                        f"{type(scope).__name__}")
    if dtype is not None and initial_state is None:
        _check_state_dtype(as_cell(cell), params, inputs, time_major, jnp.dtype(dtype))
    return _run(_TF_NAMES, cell, params, inputs, initial_state, sequence_length, None, None,
                dict(time_major=time_major))


def _check_state_dtype(cell, params, inputs, time_major, dtype):
    batch, _ = sequence_axes("inputs", inputs, time_major)
    state = jax.eval_shape(lambda p: initial_state_of(cell, p, None, batch), params)
    got = {leaf.dtype for leaf in jax.tree_util.tree_leaves(state)}
    if got != {dtype}:
        raise ValueError(
            f"dtype={dtype.name}: the cell's zero state is "
            f"{', '.join(sorted(d.name for d in got))} "
            "(its param_dtype); leave dtype out, pass an initial_state, or build the cell with "
            f"param_dtype={dtype.name}"
        )
