"""The checks of every entry point: each raises a `TypeError` or `ValueError` that
names the argument, says what was expected and shows what came, at trace time.

Shapes are shown as the caller passed them (in the caller's layout).
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np

REMAT_POLICIES = ("carry", "dots")


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


def check_features(x, expected: int) -> None:
    """Raises unless the last axis of the cell's input `x` has `expected` features."""
    shape = np.shape(x)
    if len(shape) == 0 or shape[-1] != expected:
        got = f"{shape[-1]} features" if shape else "a scalar"
        raise ValueError(
            f"the cell's input (xs, or x for a single step) must have {expected} features "
            f"on its last axis (input_size={expected}); got {got}, shape {shape}"
        )


def _shape(a) -> tuple:
    return tuple(getattr(a, "shape", np.shape(a)))


def _dtype(a):
    return jnp.dtype(getattr(a, "dtype", None) or jnp.result_type(a))


def describe(tree) -> str:
    """`tree` with each leaf shown as its dtype and shape, e.g. `float32[2, 4]`."""
    return str(jax.tree_util.tree_map(lambda a: f"{_dtype(a).name}{list(_shape(a))}", tree))


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
        if _shape(g) != _shape(e):
            raise ValueError(
                f"{name} must match {expected_from}: expected {describe(expected)}, "
                f"got {describe(got)}"
            )
        if _dtype(g) != _dtype(e):
            raise TypeError(
                f"{name} must match the dtypes of {expected_from}: expected "
                f"{describe(expected)}, got {describe(got)}"
            )


def check_xs(name: str, xs, time_major: bool) -> tuple[int, int]:
    """`(batch, time)` of a sequence `xs`: an array, or a pytree of arrays sharing them."""
    leaves = jax.tree_util.tree_leaves(xs)
    if not leaves:
        raise ValueError(f"{name} must hold at least one array; got {xs!r}")
    layout = "(time, batch, ...)" if time_major else "(batch, time, ...)"
    dims = None
    for leaf in leaves:
        if not hasattr(leaf, "shape") and not isinstance(leaf, (list, tuple, float, int)):
            raise TypeError(f"{name} must be an array or a pytree of arrays; got {type(leaf).__name__}")
        shape = np.shape(leaf)
        if len(shape) < 2:
            raise ValueError(f"{name} must have shape {layout}; got shape {shape}")
        leaf_dims = (shape[1], shape[0]) if time_major else (shape[0], shape[1])
        if dims is not None and leaf_dims != dims:
            raise ValueError(
                f"every array in {name} must share (batch, time) = {dims}; got {leaf_dims}"
            )
        dims = leaf_dims
    return dims


def check_lengths(name: str, lengths, batch: int, time: int):
    """`lengths` as an int array `(batch,)`, its concrete values in `[0, time]`."""
    if lengths is None:
        return None
    shape = np.shape(lengths)
    if shape != (batch,):
        raise ValueError(f"{name} must have shape (batch,) = ({batch},); got shape {shape}")
    dtype = jnp.result_type(lengths)
    if not jnp.issubdtype(dtype, jnp.integer):
        raise TypeError(f"{name} must have an integer dtype; got {dtype}")
    if not isinstance(lengths, jax.core.Tracer):
        values = np.asarray(lengths)
        bad = (values < 0) | (values > time)
        if bad.any():
            raise ValueError(
                f"{name} must lie in [0, time] = [0, {time}]; got {values[bad].tolist()} "
                f"at rows {np.flatnonzero(bad).tolist()}"
            )
    return jnp.asarray(lengths)


def check_step_mask(name: str, value, batch: int, time: int, time_major: bool):
    """A bool mask over the steps (`resets`, `mask`) as an array `(batch, time)`
    (`(time, batch)` with `time_major`)."""
    if value is None:
        return None
    expected = (time, batch) if time_major else (batch, time)
    shape = np.shape(value)
    if shape != expected:
        layout = "(time, batch)" if time_major else "(batch, time)"
        raise ValueError(f"{name} must have shape {layout} = {expected}; got shape {shape}")
    dtype = jnp.result_type(value)
    if dtype != jnp.bool_:
        raise TypeError(f"{name} must be a bool mask; got dtype {dtype} (use {name}.astype(bool))")
    return jnp.asarray(value)


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
