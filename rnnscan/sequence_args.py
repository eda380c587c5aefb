"""The checks of the arguments laid out over batch and time (`xs`, `lengths`,
`resets`, `mask`): their batch axes and time read as the caller passed them, and
a `TypeError` or `ValueError` naming the argument where they do not fit.
"""

from __future__ import annotations

import numbers

import jax
import jax.numpy as jnp
import numpy as np

from rnnscan.validation import dtype_of, shape_of

def sequence_axes(name: str, xs, time_major: bool) -> tuple[tuple[int, ...], int]:
    """`(batch_shape, time)` of a sequence `xs` (time first with `time_major`): a
    floating array `(*batch, time, features)` (a `(batch, time)` one would be read
    as a batch of steps; integers are token ids to encode first), or a pytree of
    arrays `(*batch, time, ...)` sharing them, of any dtype (for a cell of the
    user's own), whose batch axes are those of its leaf with the fewest axes read
    as `(*batch, time, features)` (one, if that leaf is a per-step scalar)."""
    leaves = jax.tree_util.tree_flatten_with_path(xs)[0]
    if not leaves:
        raise ValueError(f"{name} must hold at least one array; got {xs!r}")
    axes = "(time, *batch)" if time_major else "(*batch, time)"
    layout = axes[:-1] + ", ...)"
    where = lambda path: name + jax.tree_util.keystr(path)
    for path, leaf in leaves:
        if not hasattr(leaf, "shape"):
            got = type(leaf).__name__
            if isinstance(leaf, numbers.Number):
                got = (f"Python numbers ({where(path)} is a {got}): convert it with np.asarray({name})"
                       if path else f"a Python {got}")
            raise TypeError(f"{name} must be an array or a pytree of arrays; got {got}")
        shape = shape_of(leaf)
        if len(shape) < (2 if path else 3):
            need = "2 axes, " + axes if path else f"3 axes, {axes[:-1]}, features)"
            raise ValueError(f"{where(path)} must have shape {layout}; got shape {shape}: "
                             f"{'a leaf of a sequence' if path else 'a sequence'} has at least {need}")
    if not leaves[0][0]:
        dtype = dtype_of(xs)
        if jnp.issubdtype(dtype, jnp.integer) or dtype == jnp.bool_:
            raise TypeError(f"{name} must have a floating dtype (float32, bfloat16, ...); got "
                            f"{dtype}: encode token ids first (jax.nn.one_hot, an embedding)")
    n = max(1, min(len(shape_of(leaf)) for _, leaf in leaves) - 2)  # batch axes
    shape = shape_of(leaves[0][1])
    for path, leaf in leaves[1:]:
        if shape_of(leaf)[:n + 1] != shape[:n + 1]:
            raise ValueError(f"every array in {name} must share its {axes} axes; "
                             f"{where(leaves[0][0])} has shape {shape}, {where(path)} has shape "
                             f"{shape_of(leaf)}")
    return (shape[1:n + 1], shape[0]) if time_major else (shape[:n], shape[n])


def check_xs(name: str, xs, time_major: bool) -> tuple[int, int]:
    """`(batch, time)` of `xs` with one batch axis (`sequence_axes`; `rnnscan.batch` joins several)."""
    batch, time = sequence_axes(name, xs, time_major)
    if len(batch) != 1:
        raise ValueError(f"{name} must have one batch axis here (rs.unroll and the layers "
                         f"take several); got batch axes {batch}")
    return batch[0], time


def as_index_array(name: str, value, what: str):
    """`value` as an array (a list or tuple through `np.asarray`); raises for a
    string or a ragged list. Arrays, tracers and `ShapeDtypeStruct`s pass as they are."""
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        return value
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple, numbers.Number)):
        raise TypeError(f"{name} must be {what}; got {type(value).__name__}")
    try:
        return np.asarray(value)
    except ValueError:
        raise ValueError(f"{name} must be {what}; got a ragged {type(value).__name__}") from None


def check_lengths(name: str, lengths, batch, time: int):
    """`lengths` as an int array `(batch,)` (`batch`: an int, or a shape), its
    concrete values in `[0, time]`."""
    if lengths is None:
        return None
    batch, what = _batch_axes(batch)
    lengths = as_index_array(name, lengths, f"an int array of shape ({what},)")
    shape = shape_of(lengths)
    if shape != batch:
        raise ValueError(f"{name} must have shape ({what},) = {batch}; got shape {shape}")
    dtype = jnp.dtype(lengths.dtype)
    if not jnp.issubdtype(dtype, jnp.integer):
        raise TypeError(f"{name} must have an integer dtype; got {dtype}")
    if isinstance(lengths, (np.ndarray, jax.Array)) and not isinstance(lengths, jax.core.Tracer):
        values = np.asarray(lengths)
        bad = (values < 0) | (values > time)
        if bad.any():
            raise ValueError(
                f"{name} must lie in [0, time] = [0, {time}]; got {values[bad].tolist()} "
                f"at rows {np.argwhere(bad).tolist() if bad.ndim > 1 else np.flatnonzero(bad).tolist()}"
            )
    return jnp.asarray(lengths)


def check_step_mask(name: str, value, batch, time: int, time_major: bool):
    """A bool mask over the steps (`resets`, `mask`) as an array `(batch, time)`
    (`(time, batch)` with `time_major`; `batch`: an int, or a shape)."""
    if value is None:
        return None
    batch, what = _batch_axes(batch)
    expected = (time, *batch) if time_major else (*batch, time)
    layout = f"(time, {what})" if time_major else f"({what}, time)"
    value = as_index_array(name, value, f"a bool array of shape {layout}")
    shape = shape_of(value)
    if shape != expected:
        raise ValueError(f"{name} must have shape {layout} = {expected}; got shape {shape}")
    dtype = jnp.dtype(value.dtype)
    if dtype != jnp.bool_:
        raise TypeError(f"{name} must be a bool mask; got dtype {dtype} (use {name}.astype(bool))")
    return jnp.asarray(value)


def _batch_axes(batch) -> tuple[tuple, str]:
    """An int batch or a batch shape as a shape, and its name in a message."""
    batch = tuple(batch) if isinstance(batch, tuple) else (batch,)
    return batch, "batch" if len(batch) == 1 else "*batch"
