"""Leading batch axes: a call on `xs` `(*batch, time, ...)` (`(time, *batch, ...)`
time-major) run on one batch axis, its results given back with the caller's.

The strategies, the kernels and the masks read one batch axis; `rs.unroll` and
the layers take any number (cells work on any leading batch shape). The
arguments that carry the batch axes are checked as the caller passed them,
then joined into one axis (row-major, so row `b` of the joined call is row
`unravel_index(b, batch)` of the caller's).
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from rnnscan.validation import check_bool, context, describe
from rnnscan.sequence_args import check_lengths, check_step_mask, sequence_axes


class Names(NamedTuple):
    """The names of the arguments that carry the batch axes, for messages."""

    xs: str = "xs"
    lengths: str = "lengths"
    resets: str = "resets"
    mask: str = "mask"


class Batch(NamedTuple):
    """The leading batch axes of a call, as passed, and the call's layout."""

    shape: tuple
    time_major: bool

    def join(self, tree, timed: bool = False):
        """`tree`'s leaves `(*batch, ...)` (`timed`: with the time axis, in the
        call's layout) with the batch axes joined into one."""
        return self._reshape(tree, timed, len(self.shape), (math.prod(self.shape),))

    def split(self, tree, timed: bool = False):
        """`join` undone: leaves `(batch, ...)` back to `(*batch, ...)`."""
        return self._reshape(tree, timed, 1, self.shape)

    def _reshape(self, tree, timed: bool, axes: int, batch: tuple):
        at = 1 if timed and self.time_major else 0
        return jax.tree_util.tree_map(
            lambda a: jnp.reshape(a, np.shape(a)[:at] + batch + np.shape(a)[at + axes:]), tree)


def over_batch(run: Callable, xs, time_major, *, lengths=None, resets=None, mask=None,
               states: dict, timed: tuple, names: Names = Names(), check=None):
    """`run(xs, lengths, resets, mask, states)` on one batch axis, for `xs` with any.

    With one batch axis, `run` gets the arguments as they came (and checks
    them). With several, they are checked here, shapes as passed: `lengths`
    `(*batch,)`, `resets` and `mask` `(*batch, time)`, each leaf of each of
    `states` (a dict, name to pytree) `(*batch, ...)`, and `check(batch_shape)`
    if given; then joined. `run` returns a tuple whose entry `i` has its batch
    axes restored, with time axis if `timed[i]`; entries past `timed` stay as
    they are.
    """
    time_major = check_bool("time_major", time_major)
    shape, time = sequence_axes(names.xs, xs, time_major)
    if len(shape) == 1:
        return run(xs, lengths, resets, mask, states)
    lengths = check_lengths(names.lengths, lengths, shape, time)
    resets = check_step_mask(names.resets, resets, shape, time, time_major)
    mask = check_step_mask(names.mask, mask, shape, time, time_major)
    for name, state in states.items():
        for leaf in jax.tree_util.tree_leaves(state):
            if np.shape(leaf)[:len(shape)] != shape:
                raise ValueError(f"{name} must have leaves (*batch, ...) with the batch axes "
                                 f"{shape} of {names.xs}; got {describe(state)}")
    if check is not None:
        check(shape)
    batch = Batch(shape, time_major)
    with context(f"{names.xs}'s batch axes {shape}, run as one of {math.prod(shape)}"):
        out = run(batch.join(xs, True), batch.join(lengths), batch.join(resets, True),
                  batch.join(mask, True), {k: batch.join(v) for k, v in states.items()})
    return (*(batch.split(o, t) for o, t in zip(out, timed)), *out[len(timed):])


def batched(apply: Callable, time_major: bool) -> Callable:
    """A `Layer.apply` that takes any leading batch axes, running `apply` on one."""

    def over(params, xs, *, lengths=None, resets=None, mask=None, initial_state=None, key=None):
        run = lambda xs, lengths, resets, mask, states: apply(
            params, xs, lengths=lengths, resets=resets, mask=mask,
            initial_state=states["initial_state"], key=key)
        return over_batch(run, xs, time_major, lengths=lengths, resets=resets, mask=mask,
                          states=dict(initial_state=initial_state), timed=(True, False))

    return over
