"""Sequence-level composition: a cell over a sequence (`layer`), both directions
(`bidirectional`), layers on top of each other (`stack`), with dropout and
residual connections.

A `Layer` is a NamedTuple of pure functions like a `Cell`: hashable, static under
`jax.jit`, no arrays. Its params and state are plain pytrees: a tuple with one
entry per layer for a stack, a `(fw, bw)` pair for a bidirectional layer.
"""

from __future__ import annotations

import inspect
from typing import Callable, NamedTuple, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np

from rnnscan import batch, masks, tree
from rnnscan.dropout import Masks, check_rate, check_zoneout, keep_mask, regularized, variational
from rnnscan.cell import Cell, Params, PRNGKey, as_cell, same_for_same_arguments
from rnnscan.unroll import check_method, unroll as unroll_cell
from rnnscan.validation import (
    check_bool, check_key, check_remat, check_unroll, context,
)


class Layer(NamedTuple):
    """A whole-sequence model: one layer, a bidirectional pair, a stack.

    Attributes:
      init: `init(key) -> params`, a pytree of arrays.
      apply: `apply(params, xs, *, lengths=None, resets=None, mask=None,
        initial_state=None, key=None) -> (ys, final_state)`. `xs` is `(*batch,
        time, features)` (`(time, *batch, features)` for a layer built with
        `time_major=True`); `lengths` int `(*batch,)`, `resets` and `mask` bool
        `(*batch, time)`, states `(*batch, size)` as in `rnnscan.unroll`: `ys` is zero on the steps that do
        not run (past each row's length, where `mask` is false) and
        `final_state` is the state after the last step that ran. `key` (a `jax.random` key) turns
        dropout on; without it there is none (evaluation).
    """

    init: Callable[[PRNGKey], Params]
    apply: Callable[..., tuple]


# unroll's own options that a layer passes through (unroll, remat, ...); the rest
# it sets itself, or would break the layer's `(ys, final_state)`.
_UNROLL_OPTIONS = frozenset(inspect.signature(unroll_cell).parameters) - {
    "cell", "params", "xs", "initial_state", "lengths", "resets", "reset_state", "mask", "reverse",
    "time_major", "return_all_states",
}


@same_for_same_arguments
def layer(
    cell,
    *,
    reverse: bool = False,
    time_major: bool = False,
    input_dropout: float = 0.0,
    state_dropout: float = 0.0,
    output_dropout: float = 0.0,
    zoneout=0.0,
    **unroll_options,
) -> Layer:
    """One cell over a sequence: `rnnscan.unroll` as a `Layer`, with variational
    dropout and zoneout.

    Variational dropout (Gal & Ghahramani, 2016) draws one mask per row of the
    batch from `apply`'s `key`, outside the scan, and reuses it at every step: on
    the input `x`, on the state the step reads (the leaves its cell declares: an
    LSTM's `h`, not its memory cell `c`) and on the output `y`. Kept units are
    scaled by `1 / (1 - rate)`, so the expectation is unchanged. Without a key
    there is no dropout. `state_dropout` is Keras's `recurrent_dropout` (the
    initial state dropped as read, the returned state not), not TF1's
    `DropoutWrapper(variational_recurrent=True)`: see `rnnscan.dropout`.

    Zoneout (Krueger et al., 2017; `rnnscan.dropout.zoneout`): with a `key`, each
    unit of the state keeps its previous value with probability `rate`, drawn per
    step and unit; without, the state is the expectation. `ys` are the cell's
    outputs before the zoneout; the carried and final states are zoned out.

    Args:
      cell: a `Cell`, or a bare function `(params, h, x) -> (h, y)` (then `apply`
        needs `initial_state`, and `init` is unavailable).
      reverse: run from each row's last valid step back to its first.
      time_major: `xs` and `ys` are `(time, batch, ...)`.
      input_dropout, state_dropout, output_dropout: drop rates in `[0, 1)`.
      zoneout: a rate in `[0, 1)` for every leaf of the state (an LSTM's `h` and
        `c`, as in the paper), or a tuple with one rate per leaf (`(0.05, 0.5)`;
        `(rate, 0.0)` zones out `h` alone, as haste's LSTM does).
      **unroll_options: passed to `rnnscan.unroll` (`unroll`, `remat`, ...).

    Returns:
      A `Layer` with the cell's params and state.
    """
    cell = as_cell(cell)
    check_bool("reverse", reverse)
    check_bool("time_major", time_major)
    rates = Masks(check_rate("input_dropout", input_dropout),
                  check_rate("state_dropout", state_dropout),
                  check_rate("output_dropout", output_dropout))
    zone = check_zoneout(zoneout)  # its number of rates is checked against the state in apply
    zone = zone if (any(zone) if isinstance(zone, tuple) else zone > 0) else None
    unknown = set(unroll_options) - _UNROLL_OPTIONS
    if unknown:
        raise TypeError(
            f"layer() got unexpected keyword arguments {sorted(unknown)}; it takes "
            f"reverse, time_major, the dropout rates and {sorted(_UNROLL_OPTIONS)}"
        )
    check_unroll(unroll_options.get("unroll"))
    check_remat(unroll_options.get("remat", False))
    check_method(unroll_options.get("method", "auto"))
    dropped = variational(cell)

    def init(key):
        if cell.init is None:
            raise TypeError(
                "cell is a bare step function and has no init; build its params yourself"
            )
        return cell.init(key)

    def apply(params, xs, *, lengths=None, resets=None, mask=None, initial_state=None, key=None):
        run = lambda c, p, inputs: unroll_cell(
            c, p, inputs, initial_state=initial_state, lengths=lengths, resets=resets, mask=mask,
            reverse=reverse, time_major=time_major, **unroll_options,
        )
        if key is not None:
            check_key("key", key)
        return run(*regularized(cell, dropped, rates, zone, params, xs, initial_state,
                                time_major, key))

    return Layer(init, batch.batched(apply, time_major))


@same_for_same_arguments
def bidirectional(cell_fw, cell_bw, *, merge="concat", time_major: bool = False,
                  **layer_options) -> Layer:
    """Both directions over a sequence: TF1's `bidirectional_dynamic_rnn`, torch's
    `bidirectional=True`.

    The backward direction reads each row from its own last valid step back to
    its first (padding never enters it), and its outputs stay aligned with their
    inputs. A `Cell` runs as `layer(cell, reverse=...)`; a `Layer` given as
    `cell_bw` (a stack, say) runs on each row reversed within its length, as TF1
    does, and its outputs are reversed back.

    Args:
      cell_fw, cell_bw: `Cell`s (or bare step functions) or `Layer`s.
      merge: how `ys` combines the directions: `"concat"` (fw then bw on the last
        axis), `"sum"`, `"mean"`, `"mul"` (elementwise product, Keras's
        `merge_mode="mul"`), `"pair"` (the tuple `(ys_fw, ys_bw)`), or a function
        `merge(ys_fw, ys_bw) -> ys`.
      time_major: `xs` and `ys` are `(time, batch, ...)`.
      **layer_options: passed to `layer` for each `Cell` (dropout rates, `unroll`,
        `remat`, ...).

    Returns:
      A `Layer` with params `(params_fw, params_bw)` and state `(state_fw,
      state_bw)` (also the structure of `initial_state`).
    """
    if not callable(merge) and not (isinstance(merge, str) and merge in _MERGES):
        raise ValueError(f"merge must be one of {sorted(_MERGES)} or a function "
                         f"merge(ys_fw, ys_bw) -> ys; got {merge!r}")
    check_bool("time_major", time_major)
    fw = _as_layer(cell_fw, "cell_fw", time_major=time_major, **layer_options)
    if isinstance(cell_bw, Layer):
        bw = _time_reversed(cell_bw, time_major)
    else:
        bw = layer(as_cell(cell_bw, "cell_bw"), reverse=True, time_major=time_major,
                   **layer_options)
    merge_fn = merge if callable(merge) else _MERGES[merge]

    def init(key):
        key_fw, key_bw = jax.random.split(key)
        return fw.init(key_fw), bw.init(key_bw)

    def apply(params, xs, *, lengths=None, resets=None, mask=None, initial_state=None, key=None):
        params_fw, params_bw = _pair("params", params)
        state_fw, state_bw = (None, None) if initial_state is None else _pair(
            "initial_state", initial_state
        )
        if key is not None:
            check_key("key", key)
        key_fw, key_bw = (None, None) if key is None else jax.random.split(key)
        with context("the forward direction"):
            ys_fw, final_fw = fw.apply(params_fw, xs, lengths=lengths, resets=resets,
                                       initial_state=state_fw, key=key_fw, **_masked(mask))
        with context("the backward direction"):
            ys_bw, final_bw = bw.apply(params_bw, xs, lengths=lengths, resets=resets,
                                       initial_state=state_bw, key=key_bw, **_masked(mask))
        shapes = [jax.tree_util.tree_map(np.shape, ys) for ys in (ys_fw, ys_bw)]
        if merge in ("sum", "mean") and shapes[0] != shapes[1]:
            raise ValueError(f"merge={merge!r} needs outputs of the same shape from both "
                             f"directions; the forward gives {shapes[0]}, the backward {shapes[1]}")
        return merge_fn(ys_fw, ys_bw), (final_fw, final_bw)

    return Layer(init, batch.batched(apply, time_major))


@same_for_same_arguments
def stack(
    layers_or_cells: Sequence,
    *,
    residual: Union[bool, Sequence[bool]] = False,
    dropout: float = 0.0,
    time_major: bool = False,
    **layer_options,
) -> Layer:
    """Layers on top of each other: layer `i + 1` reads the outputs of layer `i`.

    Each layer runs as its own scan over the whole sequence, with its own input
    projection hoisted out of the loop (torch's `num_layers`; for a per-step
    stack, see `multi_cell`).

    Args:
      layers_or_cells: `Layer`s, `Cell`s (run as `layer(cell, ...)`) or bare step
        functions, bottom first.
      residual: `True` adds each layer's input to its output wherever the two
        have the same shape (GNMT; TF1's `ResidualWrapper`); a sequence of bools
        chooses per layer and raises where the shapes differ.
      dropout: the rate of (ordinary) dropout on the outputs of every layer but
        the last, as torch's `dropout=`; only when `apply` gets a `key`.
      time_major: `xs` and `ys` are `(time, batch, ...)`; used to run `Cell`s.
      **layer_options: passed to `layer` for each `Cell`.

    Returns:
      A `Layer` whose params, state and `initial_state` are tuples with one entry
      per layer (`initial_state` entries may be None: the layer's zeros).
    """
    if isinstance(layers_or_cells, (Layer, Cell)) or not isinstance(layers_or_cells, Sequence):
        raise TypeError(
            "layers_or_cells must be a list or tuple of Layers or Cells; got "
            f"{type(layers_or_cells).__name__}"
        )
    if not layers_or_cells:
        raise ValueError("layers_or_cells must hold at least one Layer or Cell; got none")
    layers = tuple(
        _as_layer(item, f"layers_or_cells[{i}]", time_major=time_major, **layer_options)
        for i, item in enumerate(layers_or_cells)
    )
    n = len(layers)
    check_bool("time_major", time_major)
    if isinstance(residual, bool):
        residual_at = (residual,) * n
        strict = False
    elif isinstance(residual, Sequence) and len(residual) == n:
        residual_at = tuple(bool(r) for r in residual)
        strict = True
    else:
        raise ValueError(f"residual must be a bool or a sequence of {n} bools; got {residual!r}")
    rate = check_rate("dropout", dropout)

    def init(key):
        return tuple(lay.init(k) for lay, k in zip(layers, jax.random.split(key, n)))

    def apply(params, xs, *, lengths=None, resets=None, mask=None, initial_state=None, key=None):
        params = _per_layer("params", params, n)
        states = (None,) * n if initial_state is None else _per_layer(
            "initial_state", initial_state, n
        )
        if key is not None:
            check_key("key", key)
        keys = (None,) * (2 * n) if key is None else tuple(jax.random.split(key, 2 * n))
        finals = []
        for i, lay in enumerate(layers):
            with context(f"layer {i} of the stack"):
                ys, final = lay.apply(params[i], xs, lengths=lengths, resets=resets,
                                      initial_state=states[i], key=keys[2 * i], **_masked(mask))
            if rate and key is not None and i < n - 1:
                ys = jax.tree_util.tree_map(
                    lambda a: a * keep_mask(keys[2 * i + 1], rate, a.shape, a.dtype), ys
                )
            if residual_at[i] and _same_shapes(ys, xs, strict, f"layer {i}"):
                # Steps that do not run stay zero, as in every layer's ys.
                ys = jax.tree_util.tree_map(
                    lambda y, x: y + masks.valid_multiplier(lengths, x, time_major, mask) * x,
                    ys, xs)
            xs = ys
            finals.append(final)
        return xs, tuple(finals)

    return Layer(init, batch.batched(apply, time_major))


_MERGES = {
    "concat": lambda fw, bw: jax.tree_util.tree_map(
        lambda a, b: jnp.concatenate([a, b], axis=-1), fw, bw
    ),
    "sum": lambda fw, bw: jax.tree_util.tree_map(jnp.add, fw, bw),
    "mean": lambda fw, bw: jax.tree_util.tree_map(lambda a, b: (a + b) / 2, fw, bw),
    "mul": lambda fw, bw: jax.tree_util.tree_map(jnp.multiply, fw, bw),
    "pair": lambda fw, bw: (fw, bw),
}


def _as_layer(item, name: str, **layer_options) -> Layer:
    if isinstance(item, Layer):
        return item
    return layer(as_cell(item, name), **layer_options)


def _time_reversed(inner: Layer, time_major: bool) -> Layer:
    """`inner` run on each row reversed within its length, outputs reversed back."""

    def apply(params, xs, *, lengths=None, resets=None, mask=None, initial_state=None, key=None):
        flip = lambda tree: masks.reverse_within_lengths(tree, lengths, time_major)
        # A reset before reading step t in reverse is one before its flipped
        # step; a skipped step is skipped in the flipped sequence too.
        resets = None if resets is None else flip(resets)
        mask = None if mask is None else flip(mask)
        ys, final = inner.apply(params, flip(xs), lengths=lengths, resets=resets,
                                initial_state=initial_state, key=key, **_masked(mask))
        return flip(ys), final

    return Layer(inner.init, apply)


def _masked(mask) -> dict:
    """`mask=` for an inner `Layer.apply`, only when given: a user's Layer may lack it."""
    return {} if mask is None else {"mask": mask}


def _same_shapes(ys, xs, strict: bool, where: str) -> bool:
    shape = lambda tree: jax.tree_util.tree_map(np.shape, tree)
    if jax.tree_util.tree_structure(ys) == jax.tree_util.tree_structure(xs) and shape(ys) == shape(xs):
        return True
    if strict:
        raise ValueError(
            f"residual: {where}'s output {shape(ys)} must have the shape of its input "
            f"{shape(xs)} for a residual connection"
        )
    return False


def _pair(name: str, value):
    if not (tree.is_plain_sequence(value) and len(value) == 2):
        raise TypeError(
            f"{name} of a bidirectional layer must be a pair (fw, bw); got {type(value).__name__}"
        )
    return value


def _per_layer(name: str, value, n: int):
    if not tree.is_plain_sequence(value) or len(value) != n:
        got = f"{len(value)} entries" if isinstance(value, (tuple, list)) else type(value).__name__
        raise ValueError(f"{name} of a stack of {n} layers must be a tuple of {n} entries; got {got}")
    return tuple(value)
