"""The one encoding of "row `b` is valid up to `lengths[b]`" (and, with a `mask`,
"step `t` of row `b` runs where `mask` is true"), and what derives from it."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def valid_steps(lengths, time: int, time_major: bool = True) -> jax.Array:
    """Bool `(time, batch)` (`(batch, time)` unless `time_major`): true where step
    `t` of row `b` is within its length, `t < lengths[b]`."""
    valid = jnp.arange(time)[:, None] < jnp.asarray(lengths)[None, :]
    return valid if time_major else valid.T


def step_validity(lengths, mask, time: int):
    """Bool `(time, batch)`: true where step `t` of row `b` runs, `t < lengths[b]`
    and `mask[t, b]` (`mask` bool `(time, batch)`); None when both are None."""
    if lengths is None:
        return mask
    valid = valid_steps(lengths, time)
    return valid if mask is None else valid & mask


def valid_multiplier(lengths, a: jax.Array, time_major: bool, mask=None) -> jax.Array:
    """1 where a step of `a` (`(batch, time, ...)` or time-major) runs (within
    its row's length and where `mask`, in `a`'s layout, is true), 0 elsewhere,
    in `a`'s dtype; broadcasts against `a`."""
    if mask is not None:
        mask = jnp.asarray(mask) if time_major else jnp.asarray(mask).T
    valid = step_validity(lengths, mask, a.shape[0 if time_major else 1])
    if valid is None:
        return jnp.ones((), a.dtype)
    valid = valid if time_major else valid.T
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
