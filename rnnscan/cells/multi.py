"""Cells on top of each other within one step, as one cell: TF1's `MultiRNNCell`."""

from __future__ import annotations

from typing import Sequence

import jax

from rnnscan.cell import Cell, as_cell, same_for_same_arguments, split_step
from rnnscan.validation import context


@same_for_same_arguments
def multi_cell(cells: Sequence) -> Cell:
    """Cells on top of each other within one step, as one `Cell`: TF1's `MultiRNNCell`.

    `step(params, state, x)` runs cell 0 on `x`, cell 1 on its output, and so on,
    and returns the last cell's output: for step-by-step decoding and sampling.
    Over a whole sequence `rnnscan.stack` computes the same, faster (each layer's
    projection hoisted). Here only the first cell's projection is hoisted.

    Args:
      cells: `Cell`s (or bare step functions), bottom first.

    Returns:
      A `Cell` whose params and state are tuples with one entry per cell (`init`
      and `initial_state` are None if any cell lacks them).
    """
    if isinstance(cells, Cell) or not isinstance(cells, Sequence):
        raise TypeError(f"cells must be a list or tuple of Cells; got {type(cells).__name__}")
    if not cells:
        raise ValueError("cells must hold at least one Cell; got none")
    cells = tuple(as_cell(c, f"cells[{i}]") for i, c in enumerate(cells))
    n = len(cells)

    def init(key):
        return tuple(c.init(k) for c, k in zip(cells, jax.random.split(key, n)))

    def initial_state(params, batch_shape=()):
        return tuple(c.initial_state(p, batch_shape) for c, p in zip(cells, params))

    def run_from(i, params, state, h_first, y):
        new = [h_first]
        for j, (c, p, h) in enumerate(zip(cells[i:], params[i:], state[i:]), start=i):
            with context(f"cells[{j}] of the multi_cell"):
                h, y = c.step(p, h, y)
            new.append(h)
        return tuple(new), y

    def step(params, state, x):
        with context("cells[0] of the multi_cell"):
            h, y = cells[0].step(params[0], state[0], x)
        return run_from(1, params, state, h, y)

    has_all = lambda attr: all(getattr(c, attr) is not None for c in cells)
    init = init if has_all("init") else None
    initial_state = initial_state if has_all("initial_state") else None
    first = split_step(cells[0])
    if first is None:
        return Cell(init, initial_state, step)

    def project_inputs(params, xs):
        with context("cells[0] of the multi_cell"):
            return first.project_inputs(params[0], xs)

    def recurrent_step(params, state, xp):
        with context("cells[0] of the multi_cell"):
            h, y = first.recurrent_step(params[0], state[0], xp)
        return run_from(1, params, state, h, y)

    rowwise = all(split_step(c) is not None and split_step(c).rowwise for c in cells)
    return Cell.split(init, initial_state, project_inputs, recurrent_step, rowwise=rowwise)
