"""Variational dropout and zoneout for a cell over a sequence.

Variational dropout (Gal & Ghahramani, 2016): one mask per row of the batch,
`(batch, size)`, drawn outside the scan and reused at every step, on the input
`x`, on the state the step reads, and on the output `y`. Which leaves of the
state are dropped the cell declares (`SplitStep.state_dropout`: an LSTM drops
`h`, not its memory cell `c`). The state dropout is Keras's `recurrent_dropout`:
the mask multiplies the state as the step reads it (the initial state too), one
mask for all gates, and the carried and returned states are not dropped. (Keras's
SimpleRNN is exactly this; its LSTM and GRU draw one mask per gate.) It is not
TF1's `DropoutWrapper(variational_recurrent=True)`, which drops the state a step
returns (never the initial state), returns it dropped, and draws one mask for
the whole batch.

Zoneout (Krueger et al., 2017; haste's `zoneout`): at every step each unit of
the state keeps its previous value with probability `rate`, a fresh draw per
step and unit. The masks for every step are drawn at once outside the scan and
ride along with the inputs, so the wrapped cell runs on every strategy.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from rnnscan.cell import Cell, initial_state_of, same_for_same_arguments, split_step
from rnnscan.validation import check_cell_params
from rnnscan.sequence_args import check_xs


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
def zoneout(cell: Cell, rates: tuple, training: bool) -> Cell:
    """`cell` with zoneout on its state: `rates`, one float in `[0, 1)` per state
    leaf (0: that leaf is left alone), e.g. `(0.05, 0.5)` for an LSTM's `(h, c)`.

    With `training`, the step reads `(x, keep)`: `keep` (from `draw_zoneout`)
    holds per leaf a bool `(*batch, size)` mask, or None at rate 0, and where it
    is true the unit keeps its previous value: `h = where(keep, h_prev, h_new)`,
    that is `keep * h_prev + (1 - keep) * h_new`. Without, the step reads `x` and
    the state is the expectation `rate * h_prev + (1 - rate) * h_new`. The
    output is the cell's own `y`, computed before the zoneout (for the library
    cells, the new `h`). The params are the cell's.
    """

    def zone(h_prev, h_new, keep):
        new, treedef = jax.tree_util.tree_flatten(h_new)
        prev = jax.tree_util.tree_leaves(h_prev)
        if training:
            out = [n if k is None else jnp.where(k, p, n) for p, n, k in zip(prev, new, keep)]
        else:
            out = [n + r * (p - n) if r else n for p, n, r in zip(prev, new, rates)]
        return treedef.unflatten(out)

    def zoned(step):
        def zoned_step(params, h, x):
            x, keep = x if training else (x, None)
            h_new, y = step(params, h, x)
            return zone(h, h_new, keep), y
        return zoned_step

    split = split_step(cell)
    if split is None:
        return Cell(cell.init, cell.initial_state, zoned(cell.step))

    def project_inputs(params, xs):
        if not training:
            return split.project_inputs(params, xs)
        xs, keep = xs
        return split.project_inputs(params, xs), keep

    return Cell.split(cell.init, cell.initial_state, project_inputs,
                      zoned(split.recurrent_step), rowwise=split.rowwise)


def check_zoneout(zoneout):
    """`zoneout` checked: a rate in `[0, 1)`, or a tuple of them (one per state leaf)."""
    if isinstance(zoneout, (tuple, list)):
        return tuple(check_rate(f"zoneout[{i}]", r) for i, r in enumerate(zoneout))
    return check_rate("zoneout", zoneout)


def zoneout_rates(zoneout, state) -> tuple:
    """`zoneout` (from `check_zoneout`) as one rate per leaf of `state`."""
    n = len(jax.tree_util.tree_leaves(state))
    if not isinstance(zoneout, tuple):
        return (zoneout,) * n
    if len(zoneout) != n:
        raise ValueError(f"zoneout must be one rate, or one rate per state leaf ({n} for this "
                         f"cell); got {len(zoneout)} rates: {zoneout!r}")
    return zoneout


def draw_zoneout(key, rates: tuple, state, time: int, time_major: bool) -> tuple:
    """The zoneout masks for every step: per leaf of `state` (leaves `(batch,
    size)`), `jax.random.bernoulli(k, rate, (batch, time, size))` (`(time,
    batch, size)` with `time_major`), `k` that leaf's entry of
    `jax.random.split(key, leaves)`; None where the rate is 0."""
    leaves = jax.tree_util.tree_leaves(state)
    keys = jax.random.split(key, len(leaves))
    lead = lambda a: (time, a.shape[0]) if time_major else (a.shape[0], time)
    return tuple(jax.random.bernoulli(k, r, lead(a) + a.shape[1:]) if r else None
                 for k, r, a in zip(keys, rates, leaves))


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


def step_shapes(cell: Cell, params, xs, initial_state, time_major):
    """`(time, x, h)`: the steps of `xs`, and the shapes of one step's input and
    of the state (`jax.ShapeDtypeStruct`s, leaves `(batch, ...)`)."""
    batch, time = check_xs("xs", xs, time_major)
    check_cell_params(cell, params)
    x = jax.tree_util.tree_map(
        lambda a: jax.ShapeDtypeStruct((batch,) + np.shape(a)[2:], jnp.result_type(a)), xs
    )
    h = jax.eval_shape(lambda p, s: initial_state_of(cell, p, s, batch), params, initial_state)
    return time, x, h


def draw_masks(key, rates: Masks, cell: Cell, params, xs, initial_state, time_major) -> Masks:
    """One mask per row for each rate that is on, shaped like a step's x, h, y."""
    _, x, h = step_shapes(cell, params, xs, initial_state, time_major)
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


def regularized(cell: Cell, dropped: Cell, rates: Masks, zone, params, xs, initial_state,
                time_major: bool, key):
    """`(cell, params, xs)` as `rs.layer` runs them: with variational dropout
    (`dropped`, `variational(cell)`, and masks drawn from `key`) where `rates`
    are on and there is a key, and with zoneout at `zone` (None: off), its
    per-step masks drawn from a key of its own riding along with `xs`."""
    run_cell, run_params, inputs = cell, params, xs
    if zone is not None and key is not None:
        key, zone_key = jax.random.split(key)
    if key is not None and any(rates):
        drawn = draw_masks(key, rates, cell, params, xs, initial_state, time_major)
        run_cell, run_params = dropped, (params, drawn)
    if zone is not None:
        time, _, state = step_shapes(cell, params, xs, initial_state, time_major)
        zone_rates = zoneout_rates(zone, state)
        run_cell = zoneout(run_cell, zone_rates, key is not None)
        if key is not None:
            inputs = (xs, draw_zoneout(zone_key, zone_rates, state, time, time_major))
    return run_cell, run_params, inputs
