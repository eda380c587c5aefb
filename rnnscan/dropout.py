"""Variational dropout for a cell over a sequence (Gal & Ghahramani, 2016).

TF1's `DropoutWrapper(variational_recurrent=True)`, Keras's `dropout` and
`recurrent_dropout`: one mask per sequence, drawn outside the scan and reused at
every step, on the input `x`, on the state the step reads, and on the output
`y`. Which leaves of the state are dropped the cell declares
(`SplitStep.state_dropout`: an LSTM drops `h`, not its memory cell `c`).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from rnnscan.cell import Cell, same_for_same_arguments, split_step
from rnnscan.unroll import check_cell_params, initial_state_of
from rnnscan.validation import check_xs


class Masks(NamedTuple):
    """Dropout rates, or the masks drawn for them: one entry each for the input,
    the state and the output. A mask is `(batch, size)` per leaf, None where off;
    the state's is a tuple over the state's leaves."""

    input: Any
    state: Any
    output: Any


def check_rate(name: str, rate) -> float:
    """`rate` as a float; raises unless it is a number in `[0, 1)`."""
    if isinstance(rate, bool) or not isinstance(rate, (int, float, np.floating)):
        raise TypeError(f"{name} must be a float in [0, 1); got {rate!r}")
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"{name} must lie in [0, 1); got {rate}")
    return float(rate)


def keep_mask(key, rate: float, shape, dtype):
    """Inverted dropout: 0 with probability `rate`, else `1 / (1 - rate)`."""
    keep = 1.0 - rate
    return jax.random.bernoulli(key, keep, shape).astype(dtype) / jnp.asarray(keep, dtype)


@same_for_same_arguments
def variational(cell: Cell) -> Cell:
    """`cell` with variational dropout: its params are `(params, Masks)`, the
    masks drawn by `draw_masks`. It has no `init`."""

    def on(a, mask):
        return a if mask is None else jax.tree_util.tree_map(jnp.multiply, a, mask)

    def on_state(h, masks):
        leaves, treedef = jax.tree_util.tree_flatten(h)
        return treedef.unflatten([a if m is None else a * m for a, m in zip(leaves, masks)])

    def step(params, h, x):
        params, masks = params
        h = h if masks.state is None else on_state(h, masks.state)
        h, y = cell.step(params, h, on(x, masks.input))
        return h, on(y, masks.output)

    initial_state = None
    if cell.initial_state is not None:
        initial_state = lambda params, batch_shape=(): cell.initial_state(params[0], batch_shape)
    split = split_step(cell)
    if split is None:
        return Cell(None, initial_state, step)

    def project_inputs(params, xs):
        # The (batch, in) mask broadcasts over the leading time axis of xs.
        params, masks = params
        return split.project_inputs(params, on(xs, masks.input))

    def recurrent_step(params, h, xp):
        params, masks = params
        h = h if masks.state is None else on_state(h, masks.state)
        h, y = split.recurrent_step(params, h, xp)
        return h, on(y, masks.output)

    return Cell.split(None, initial_state, project_inputs, recurrent_step)


def draw_masks(key, rates: Masks, cell: Cell, params, xs, initial_state, time_major) -> Masks:
    """One mask per row for each rate that is on, shaped like a step's x, h, y."""
    batch, _ = check_xs("xs", xs, time_major)
    check_cell_params(cell, params)
    x = jax.tree_util.tree_map(
        lambda a: jax.ShapeDtypeStruct((batch,) + np.shape(a)[2:], jnp.result_type(a)), xs
    )
    h = jax.eval_shape(lambda p, s: initial_state_of(cell, p, s, batch), params, initial_state)
    y = jax.eval_shape(cell.step, params, h, x)[1]
    key_x, key_h, key_y = jax.random.split(key, 3)

    def draw(k, rate, tree):
        if not rate:
            return None
        leaves, treedef = jax.tree_util.tree_flatten(tree)
        ks = jax.random.split(k, len(leaves))
        return treedef.unflatten([keep_mask(k, rate, a.shape, a.dtype) for k, a in zip(ks, leaves)])

    state = None
    if rates.state:
        split = split_step(cell)
        leaves = jax.tree_util.tree_leaves(h)
        dropped = (split.state_dropout if split and split.state_dropout is not None
                   else (True,) * len(leaves))
        ks = iter(jax.random.split(key_h, sum(dropped)))
        state = tuple(keep_mask(next(ks), rates.state, a.shape, a.dtype) if drop else None
                      for a, drop in zip(leaves, dropped))
    return Masks(draw(key_x, rates.input, x), state, draw(key_y, rates.output, y))
