"""The checks of every entry point: each raises a `TypeError` or `ValueError` that
names the argument, says what was expected and shows what came, at trace time.

Shapes are shown as the caller passed them (in the caller's layout).
"""

from __future__ import annotations

import contextlib
import functools
import math
import numbers
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np

# remat's per-step policies by name: what the scan keeps of each step.
REMAT_POLICIES = {
    "carry": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


def check_positive_int(name: str, value) -> int:
    """`value` as an int; raises unless it is a positive Python or numpy integer."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be a positive int; got {value!r} of type {type(value).__name__}")
    if value <= 0:
        raise ValueError(f"{name} must be a positive int; got {value}")
    return int(value)


def check_bool(name: str, value) -> bool:
    """Raises unless `value` is a Python or numpy bool (not a string, None or an int)."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool (True or False); got {value!r} of type {type(value).__name__}")
    return bool(value)


def check_number(name: str, value, *, positive: bool = False, non_negative: bool = False,
                 optional: bool = False) -> None:
    """Raises unless `value` is a finite real number (positive if `positive`, at least
    0 if `non_negative`; None too if `optional`)."""
    if optional and value is None:
        return
    what = ("a positive number" if positive else "a non-negative number" if non_negative
            else "a finite number") + (" or None" if optional else "")
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be {what}; got {value!r} of type {type(value).__name__}")
    if not math.isfinite(value) or (positive and value <= 0) or (non_negative and value < 0):
        raise ValueError(f"{name} must be {what}; got {value!r}")


def check_callable(name: str, value, what: str = "callable", optional: bool = False) -> None:
    """Raises unless `value` is callable (or None, if `optional`)."""
    if not (callable(value) or (optional and value is None)):
        raise TypeError(f"{name} must be {what}{' or None' if optional else ''}; "
                        f"got {type(value).__name__}")


def check_choice(name: str, value, choices) -> str:
    """Raises unless `value` is one of the strings `choices`."""
    if not (isinstance(value, str) and value in choices):
        raise ValueError(f"{name} must be one of {list(choices)}; got {value!r}")
    return value


def check_key(name: str, key) -> None:
    """Raises unless `key` is a `jax.random` key: typed (`jax.random.key`) or raw
    (`jax.random.PRNGKey`, `uint32[2]`)."""
    dtype = getattr(key, "dtype", None)
    if not isinstance(key, jax.Array) or not (
            jnp.issubdtype(dtype, jax.dtypes.prng_key) or dtype == jnp.uint32):
        got = f"{type(key).__name__} {dtype}" if dtype is not None else type(key).__name__
        raise TypeError(f"{name} must be a jax.random key; got {got} (make one with "
                        f"jax.random.key(seed) or jax.random.PRNGKey(seed))")


def check_shape(name: str, shape: tuple, expected: tuple) -> None:
    """Raises unless the shape of `name`, `shape`, is `expected`."""
    shape = tuple(shape)
    if shape != tuple(expected):
        raise ValueError(f"{name} must have shape {tuple(expected)}; got shape {shape}")


def check_features(x, expected: int) -> None:
    """Raises unless the cell's input `x` is one real array with `expected` features
    on its last axis. (No shape is shown: under `unroll`, `x` is one step's.)"""
    what = "the cell's input (xs, or x for a single step)"
    if not hasattr(x, "shape"):
        n = len(jax.tree_util.tree_leaves(x))
        got = f"a {type(x).__name__} of {n} arrays" if n > 1 else type(x).__name__
        raise TypeError(f"{what} must be one array (*batch, {expected}) for this cell; got {got}")
    if jnp.issubdtype(x.dtype, jnp.complexfloating):
        raise TypeError(f"{what} must be real for this cell (its params are real, and the "
                        f"imaginary part would be lost); got dtype {x.dtype}")
    shape = shape_of(x)
    if len(shape) == 0 or shape[-1] != expected:
        got = shape[-1] if shape else "a scalar"
        raise ValueError(f"{what} must have {expected} features on its last axis "
                         f"(input_size={expected}); got {got}")


def shape_of(a) -> tuple:
    """The shape of an array, a `ShapeDtypeStruct` or a Python number."""
    return tuple(getattr(a, "shape", np.shape(a)))


def dtype_of(a):
    """The dtype of an array, a `ShapeDtypeStruct` or a Python number."""
    return jnp.dtype(getattr(a, "dtype", None) or jnp.result_type(a))


def describe(tree) -> str:
    """`tree` with each leaf shown as its dtype and shape, e.g. `float32[2, 4]`."""
    return str(jax.tree_util.tree_map(lambda a: f"{dtype_of(a).name}{list(shape_of(a))}", tree))


def check_same_structure(name: str, got, expected, expected_from: str) -> None:
    """Raises unless `got` has the tree structure, leaf shapes and dtypes of `expected`.

    Works on arrays, tracers and `jax.ShapeDtypeStruct`s alike, so it runs at
    trace time on abstract values.
    """
    got_def = jax.tree_util.tree_structure(got)
    exp_def = jax.tree_util.tree_structure(expected)
    if got_def != exp_def:
        raise TypeError(
            f"{name} must have the structure of {expected_from}: expected "
            f"{exp_def}, got {got_def}"
        )
    for g, e in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(expected)):
        if shape_of(g) != shape_of(e):
            raise ValueError(
                f"{name} must match {expected_from}: expected {describe(expected)}, "
                f"got {describe(got)}"
            )
        if dtype_of(g) != dtype_of(e):
            raise TypeError(
                f"{name} must match the dtypes of {expected_from}: expected "
                f"{describe(expected)}, got {describe(got)}"
            )


def check_params(params, expected, name: str = "params") -> None:
    """Raises unless `params` has every leaf (by key path) of `expected` (the cell's
    `init`'s, abstract) in its shape, naming the leaf and both shapes. Leaves
    beside those (a user's own) pass."""
    paths = lambda tree: {jax.tree_util.keystr(p): shape_of(a)
                          for p, a in jax.tree_util.tree_flatten_with_path(tree)[0]}
    got, want = paths(params), paths(expected)
    if want and not set(got) & set(want):
        raise TypeError(f"{name} must have the structure of the cell's params (cell.init(key)): "
                        f"expected {describe(expected)}, got {type(params).__name__}")
    missing = sorted(set(want) - set(got))
    if missing:
        raise ValueError(f"{name} must hold every leaf of the cell's params (cell.init(key)): "
                         f"missing {', '.join(missing)}")
    for path, shape in want.items():
        check_shape(name + path, got[path], shape)


@contextlib.contextmanager
def context(prefix: str):
    """Puts `prefix: ` before the message of a `ValueError` or `TypeError` raised
    inside: which layer of a stack, which direction, which cell of a multi_cell."""
    try:
        yield
    except (ValueError, TypeError) as error:
        kind = TypeError if isinstance(error, TypeError) else ValueError
        raise kind(f"{prefix}: {error}") from error


def is_chunk_size(remat) -> bool:
    """Whether a `remat` option is an int `k` (checkpoint every `k` steps)."""
    return isinstance(remat, (int, np.integer)) and not isinstance(remat, bool)


def check_unroll(unroll) -> None:
    if unroll is not None and not (unroll is True or (
            isinstance(unroll, (int, np.integer)) and not isinstance(unroll, bool) and unroll >= 1)):
        raise ValueError(f"unroll must be a positive int, True or None; got {unroll!r}")


def check_remat(remat) -> None:
    if is_chunk_size(remat):
        check_positive_int("remat", remat)
    elif remat is not False and remat is not True and remat not in REMAT_POLICIES:
        raise ValueError(
            f"remat must be False, True, one of {sorted(REMAT_POLICIES)} or a positive int "
            f"(checkpoint every k steps); got {remat!r}"
        )


def check_step(step, params, h0, x) -> None:
    """Traces one step abstractly on `x` (one step's input, shapes or arrays): the
    state it returns must match the one it got."""
    out = jax.eval_shape(step, params, h0, x)
    if not (isinstance(out, tuple) and len(out) == 2):
        raise TypeError(
            f"cell.step must return a pair (state, output); got {type(out).__name__}"
        )
    check_same_structure(
        "the state returned by cell.step", out[0], h0, "the state it was given"
    )


def check_recurrent_kernel(key: str, params, h0, xp) -> None:
    """`key` must name a `(P, G)` matrix of a params dict that takes the state's
    first leaf `(..., P)` to the projected inputs `xp` `(..., G)`."""
    if not (isinstance(params, Mapping) and key in params):
        raise ValueError(
            f"cell.step.recurrent_kernel={key!r} needs a split step (project_inputs and "
            f"recurrent_step) and a params dict holding {key!r}; got params keys "
            f"{sorted(params) if isinstance(params, Mapping) else type(params).__name__}"
        )
    expected = (jax.tree_util.tree_leaves(h0)[0].shape[-1],
                jax.tree_util.tree_leaves(xp)[0].shape[-1])
    got = np.shape(params[key])
    if got != expected:
        raise ValueError(
            f"cell.step.recurrent_kernel={key!r} must name a matrix of shape (state, projected "
            f"inputs) = {expected}; params[{key!r}] has shape {got}"
        )


def check_cell_params(cell, params) -> None:
    """Raises unless `params` has the leaves and shapes of `cell.init`'s params
    (a cell without `init` is not checked)."""
    expected = _init_shapes(cell)
    if expected is not None:
        check_params(params, expected)


@functools.lru_cache(maxsize=256)
def _init_shapes(cell):
    if cell.init is None:
        return None
    # Typed keys, then the raw uint32 ones that older code indexes or reshapes.
    for key in (jax.random.key(0), jax.random.PRNGKey(0)):
        try:
            return jax.eval_shape(cell.init, key)
        except (TypeError, ValueError, IndexError):
            continue
    return None  # an init that takes neither kind of key: its params go unchecked
