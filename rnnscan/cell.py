"""The `Cell` type and the checks that every cell and entry point shares.

A cell is a NamedTuple of pure functions closed over static configuration (the
shape of optax's `GradientTransformation` and stax's `(init_fun, apply_fun)`): it
is hashable, can be a static argument to `jax.jit`, and holds no arrays.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

Params = Any
State = Any
PRNGKey = jax.Array


class Cell(NamedTuple):
    """A recurrent cell: `step(params, h, x) -> (h, y)` and its companions.

    Attributes:
      init: `init(key) -> params`, a pytree of arrays.
      initial_state: `initial_state(params, batch_shape) -> state`, zeros whose
        leaves are `(*batch_shape, size)`.
      step: `step(params, h, x) -> (h, y)`: reads `x` of shape
        `(*batch, input_size)`, returns the next state (same structure, shapes and
        dtypes as `h`) and the output `y` of shape `(*batch, output_size)`.
      project_inputs: optional fast path, `project_inputs(params, xs) -> xps`:
        the part of `step` that depends on the input alone, applied to every time
        step at once (one large matmul), for any leading shape of `xs`.
      recurrent_step: optional fast path, `recurrent_step(params, h, xp) -> (h, y)`
        with `step(p, h, x) == recurrent_step(p, h, project_inputs(p, x))`.
      linear: optional, for recurrences linear in the state,
        `h_t = a_t * h_{t-1} + b_t`: a `rnnscan.parallel.LinearRecurrence` that
        lets `unroll` run the cell through `jax.lax.associative_scan`.
      recurrent_kernel: optional, with the fast path: the key `k` of a params
        mapping whose `W = params[k]` `recurrent_step` uses only in the term
        `h @ W` added to `xp`, `h` being the first leaf of the state it gets.
        `unroll` then sums `W`'s gradient in one matmul per scan after its loop
        (in float32 or the param dtype, whatever the cell's compute dtype)
        instead of one small update per step inside it. The price: the step
        inputs `h` are kept (in reverse mode beside the carries `remat=True`
        keeps), and forward mode runs a second, tangent loop after a primal
        one that saves every step. `remat=k` and `truncated_unroll` do not use
        it.
      rowwise: optional, `True` when row `b` of a step's outputs depends only on
        row `b` of its state and input (no statistics over the batch, no arrays
        with a batch axis closed over or in params): `unroll` may then step
        groups of rows separately (`rnnscan.unroll.batch_groups`). Every
        rnnscan cell sets it.
      sequence_kernel: optional: `sequence_kernel(params, h0, xs, *, reverse,
        time_major, all_states) -> (h_final, ys, states)`, every step of `step`
        at once (e.g. in a compiled kernel) over the inputs `xs`,
        `(batch, time, ...)` or with `time_major` `(time, batch, ...)`; `ys`
        and, with `all_states`, every step's state `states` (else `None`)
        stacked in the same layout. Or `None` when it cannot run these operands
        here. `unroll` calls it instead of scanning when there are no
        `lengths`, `resets` or `remat`. It must compute exactly `step`: a
        wrapper that changes `step` (`_replace(step=...)`) must drop it.
    """

    init: Optional[Callable[[PRNGKey], Params]]
    initial_state: Optional[Callable[[Params, tuple], State]]
    step: Callable[[Params, State, Any], tuple]
    project_inputs: Optional[Callable[[Params, Any], Any]] = None
    recurrent_step: Optional[Callable[[Params, State, Any], tuple]] = None
    linear: Any = None
    recurrent_kernel: Optional[str] = None
    rowwise: bool = False
    sequence_kernel: Optional[Callable] = None

    @property
    def has_fast_path(self) -> bool:
        return self.project_inputs is not None and self.recurrent_step is not None


def as_cell(cell, name: str = "cell") -> Cell:
    """Returns `cell` as a `Cell`; a bare `(params, h, x) -> (h, y)` function is wrapped."""
    if isinstance(cell, Cell):
        return cell
    if callable(cell):
        return Cell(init=None, initial_state=None, step=cell)
    raise TypeError(
        f"{name} must be an rnnscan.Cell or a function (params, h, x) -> (h, y); "
        f"got {type(cell).__name__}"
    )


def check_positive_int(name: str, value) -> int:
    """Raises unless `value` is a positive Python integer (a cell's size)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be a positive int; got {value!r} of type {type(value).__name__}")
    if value <= 0:
        raise ValueError(f"{name} must be a positive int; got {value}")
    return int(value)


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


def _describe(tree) -> str:
    return str(jax.tree_util.tree_map(lambda a: f"{_dtype(a).name}{list(_shape(a))}", tree))


def check_same_structure(name: str, got, expected, expected_from: str) -> None:
    """Raises unless `got` has the tree structure, leaf shapes and dtypes of `expected`.

    Works on arrays, tracers and `jax.ShapeDtypeStruct`s alike, so it runs at trace
    time on abstract values.
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
                f"{name} must match {expected_from}: expected {_describe(expected)}, "
                f"got {_describe(got)}"
            )
        if _dtype(g) != _dtype(e):
            raise TypeError(
                f"{name} must match the dtypes of {expected_from}: expected "
                f"{_describe(expected)}, got {_describe(got)}"
            )
