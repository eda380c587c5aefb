"""Pytree helpers shared by the strategies, the kernels and the layers."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def where(mask: jax.Array, on_true, on_false):
    """`where(mask, a, b)` leafwise; `mask` `(batch,)` broadcasts over trailing axes."""
    return jax.tree_util.tree_map(lambda a, b: jnp.where(expand(mask, a), a, b), on_true, on_false)


def expand(mask: jax.Array, a) -> jax.Array:
    """`mask` with trailing unit axes, so that it broadcasts against `a` (`mask.shape + ...`)."""
    return mask.reshape(mask.shape + (1,) * (jnp.ndim(a) - mask.ndim))


def zero_where_not(mask: jax.Array, tree):
    """`tree` with the rows where `mask` (`(batch,)` or `(time, batch)`) is false set to 0."""
    return jax.tree_util.tree_map(lambda a: jnp.where(expand(mask, a), a, 0), tree)


def time_to_front(tree, time_major: bool):
    """Swaps axes 0 and 1 of every leaf unless `time_major`: batch-major `(batch,
    time, ...)` to time-major `(time, batch, ...)`, and back (a swap is its own inverse)."""
    return tree if time_major else jax.tree_util.tree_map(lambda a: jnp.swapaxes(a, 0, 1), tree)


def concatenate(trees, axis: int):
    """Pytrees of one structure joined leaf by leaf along `axis`."""
    return jax.tree_util.tree_map(lambda *pieces: jnp.concatenate(pieces, axis), *trees)


def rows(tree, begin: int, end: int):
    """`tree`'s leaves `(batch, ...)` cut to the rows `[begin, end)`."""
    return jax.tree_util.tree_map(lambda a: jax.lax.slice_in_dim(a, begin, end), tree)


def is_plain_sequence(value) -> bool:
    """A tuple or list of entries, not a state NamedTuple (an `LSTMState` is one state)."""
    return isinstance(value, (tuple, list)) and not hasattr(value, "_fields")


def first_leaf(tree):
    return jax.tree_util.tree_leaves(tree)[0]


def fill(tree, value):
    """`value` in place of every leaf of `tree`."""
    return jax.tree_util.tree_map(lambda _: value, tree)


def is_symbolic_zero(tangent) -> bool:
    """Whether a custom JVP rule's tangent (with `symbolic_zeros=True`) is a known zero."""
    return isinstance(tangent, jax.custom_derivatives.SymbolicZero)


def instantiate(tangent, primal):
    """A custom JVP rule's tangent as an array: zeros for a symbolic zero (float0
    zeros for an integer or bool primal, as JAX's tangents are)."""
    if not is_symbolic_zero(tangent):
        return tangent
    if not jnp.issubdtype(jnp.result_type(primal), jnp.inexact):
        return np.zeros(np.shape(primal), jax.dtypes.float0)
    return jnp.zeros_like(primal)


def abstract(tree):
    """`tree`'s shapes and dtypes, as `jax.ShapeDtypeStruct`s."""
    return jax.tree_util.tree_map(
        lambda a: jax.ShapeDtypeStruct(np.shape(a), jnp.result_type(a)), tree)


def one_step(xs, time_major: bool):
    """The shapes of one step's input of `xs` (leaves `(batch, time, ...)`, or
    time-major): leaves `(batch, ...)`."""
    return jax.tree_util.tree_map(
        lambda a: jax.ShapeDtypeStruct(np.shape(a)[1:] if time_major else
                                       np.shape(a)[:1] + np.shape(a)[2:], jnp.result_type(a)), xs)
