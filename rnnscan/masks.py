"""The one encoding of "row `b` is valid up to `lengths[b]`", and what derives from it."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def valid_steps(lengths, time: int, time_major: bool = True) -> jax.Array:
    """Bool `(time, batch)` (`(batch, time)` unless `time_major`): true where step
    `t` of row `b` is within its length, `t < lengths[b]`."""
    valid = jnp.arange(time)[:, None] < jnp.asarray(lengths)[None, :]
    return valid if time_major else valid.T


def valid_multiplier(lengths, a: jax.Array, time_major: bool) -> jax.Array:
    """1 where a step of `a` (`(batch, time, ...)` or time-major) is within its
    row's length, 0 past it, in `a`'s dtype; broadcasts against `a`."""
    if lengths is None:
        return jnp.ones((), a.dtype)
    valid = valid_steps(lengths, a.shape[0 if time_major else 1], time_major)
    return valid.reshape(valid.shape + (1,) * (a.ndim - 2)).astype(a.dtype)


def reverse_within_lengths(tree, lengths, time_major: bool):
    """TF's `reverse_sequence`: each row's first `lengths[b]` steps reversed in
    time, the padding after them left in place (all steps when `lengths` is None)."""
    axis = 0 if time_major else 1
    if lengths is None:
        return jax.tree_util.tree_map(lambda a: jnp.flip(a, axis), tree)

    def reverse(a):
        t = jnp.arange(a.shape[axis])[None, :]
        n = jnp.asarray(lengths)[:, None]
        index = jnp.where(t < n, n - 1 - t, t)  # (batch, time)
        index = index.T if time_major else index
        return jnp.take_along_axis(a, index.reshape(index.shape + (1,) * (a.ndim - 2)), axis)

    return jax.tree_util.tree_map(reverse, tree)
