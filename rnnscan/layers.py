"""Sequence-level composition: a cell over a sequence (`layer`), both directions
(`bidirectional`), layers on top of each other (`stack`), with dropout and
residual connections; and `multi_cell`, a per-step stack of cells (TF1's
`MultiRNNCell`) for step-by-step decoding.

A `Layer` is a NamedTuple of pure functions like a `Cell`: hashable, static under
`jax.jit`, no arrays. Its params and state are plain pytrees: a tuple with one
entry per layer for a stack, a `(fw, bw)` pair for a bidirectional layer.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, NamedTuple, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np

from rnnscan.cell import Cell, Params, PRNGKey, as_cell
from rnnscan.cells import LSTMState
from rnnscan.unroll import _check_xs, _initial_state
from rnnscan.unroll import unroll as unroll_cell


class Layer(NamedTuple):
    """A whole-sequence model: one layer, a bidirectional pair, a stack.

    Attributes:
      init: `init(key) -> params`, a pytree of arrays.
      apply: `apply(params, xs, *, lengths=None, initial_state=None, key=None)
        -> (ys, final_state)`. `xs` is `(batch, time, features)`
        (`(time, batch, features)` for a layer built with `time_major=True`);
        `lengths` int `(batch,)` as in `rnnscan.unroll`: `ys` is zero past each
        row's length and `final_state` is the state after its last valid step.
        `key` (a `jax.random` key) turns dropout on; without it there is none
        (evaluation).
    """

    init: Callable[[PRNGKey], Params]
    apply: Callable[..., tuple]


class _Masks(NamedTuple):
    """Variational dropout masks, one per sequence, `(batch, size)`; None where off."""

    input: Any
    state: Any
    output: Any


# unroll's own options that a layer passes through (unroll, remat, ...); the rest
# it sets itself, or would break the layer's `(ys, final_state)`.
_UNROLL_OPTIONS = frozenset(inspect.signature(unroll_cell).parameters) - {
    "cell", "params", "xs", "initial_state", "lengths", "resets", "reverse", "time_major",
    "return_all_states",
}


def layer(
    cell,
    *,
    reverse: bool = False,
    time_major: bool = False,
    input_dropout: float = 0.0,
    state_dropout: float = 0.0,
    output_dropout: float = 0.0,
    **unroll_options,
) -> Layer:
    """One cell over a sequence: `rnnscan.unroll` as a `Layer`, with variational dropout.

    Variational dropout (Gal & Ghahramani, 2016; TF1's
    `DropoutWrapper(variational_recurrent=True)`, Keras's `dropout` and
    `recurrent_dropout`) draws one mask per sequence from `apply`'s `key`, outside
    the scan, and reuses it at every step: on the input `x`, on the state the step
    reads (its `h`; an LSTM's memory cell `c` is left alone, as in Keras and TF1)
    and on the output `y`. Kept units are scaled by `1 / (1 - rate)`, so the
    expectation is unchanged. Without a key there is no dropout.

    Args:
      cell: a `Cell`, or a bare function `(params, h, x) -> (h, y)` (then `apply`
        needs `initial_state`, and `init` is unavailable).
      reverse: run from each row's last valid step back to its first.
      time_major: `xs` and `ys` are `(time, batch, ...)`.
      input_dropout, state_dropout, output_dropout: drop rates in `[0, 1)`.
      **unroll_options: passed to `rnnscan.unroll` (`unroll`, `remat`, ...).

    Returns:
      A `Layer` with the cell's params and state.
    """
    cell = as_cell(cell)
    rates = _Masks(
        _check_rate("input_dropout", input_dropout),
        _check_rate("state_dropout", state_dropout),
        _check_rate("output_dropout", output_dropout),
    )
    unknown = set(unroll_options) - _UNROLL_OPTIONS
    if unknown:
        raise TypeError(
            f"layer() got unexpected keyword arguments {sorted(unknown)}; it takes "
            f"reverse, time_major, the dropout rates and {sorted(_UNROLL_OPTIONS)}"
        )
    # Built once: a new Cell per call would make unroll's jit trace again.
    dropped = _variational_dropout(cell)

    def init(key):
        if cell.init is None:
            raise TypeError(
                "cell is a bare step function and has no init; build its params yourself"
            )
        return cell.init(key)

    def apply(params, xs, *, lengths=None, initial_state=None, key=None):
        run = lambda c, p: unroll_cell(
            c, p, xs, initial_state=initial_state, lengths=lengths, reverse=reverse,
            time_major=time_major, **unroll_options,
        )
        if key is None or not any(rates):
            return run(cell, params)
        masks = _draw_masks(key, rates, cell, params, xs, initial_state, time_major)
        return run(dropped, (params, masks))

    return Layer(init, apply)


def bidirectional(cell_fw, cell_bw, *, merge: str = "concat", time_major: bool = False,
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
        axis), `"sum"`, `"mean"`, or `"pair"` (the tuple `(ys_fw, ys_bw)`).
      time_major: `xs` and `ys` are `(time, batch, ...)`.
      **layer_options: passed to `layer` for each `Cell` (dropout rates, `unroll`,
        `remat`, ...).

    Returns:
      A `Layer` with params `(params_fw, params_bw)` and state `(state_fw,
      state_bw)` (also the structure of `initial_state`).
    """
    if merge not in _MERGES:
        raise ValueError(f"merge must be one of {sorted(_MERGES)}; got {merge!r}")
    fw = _as_layer(cell_fw, "cell_fw", time_major=time_major, **layer_options)
    if isinstance(cell_bw, Layer):
        bw = _time_reversed(cell_bw, time_major)
    else:
        bw = layer(as_cell(cell_bw, "cell_bw"), reverse=True, time_major=time_major,
                   **layer_options)
    merge_fn = _MERGES[merge]

    def init(key):
        key_fw, key_bw = jax.random.split(key)
        return fw.init(key_fw), bw.init(key_bw)

    def apply(params, xs, *, lengths=None, initial_state=None, key=None):
        params_fw, params_bw = _pair("params", params)
        state_fw, state_bw = (None, None) if initial_state is None else _pair(
            "initial_state", initial_state
        )
        key_fw, key_bw = (None, None) if key is None else jax.random.split(key)
        ys_fw, final_fw = fw.apply(params_fw, xs, lengths=lengths, initial_state=state_fw,
                                   key=key_fw)
        ys_bw, final_bw = bw.apply(params_bw, xs, lengths=lengths, initial_state=state_bw,
                                   key=key_bw)
        return merge_fn(ys_fw, ys_bw), (final_fw, final_bw)

    return Layer(init, apply)


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
    if isinstance(residual, bool):
        residual_at = (residual,) * n
        strict = False
    elif isinstance(residual, Sequence) and len(residual) == n:
        residual_at = tuple(bool(r) for r in residual)
        strict = True
    else:
        raise ValueError(f"residual must be a bool or a sequence of {n} bools; got {residual!r}")
    dropout = _check_rate("dropout", dropout)

    def init(key):
        return tuple(lay.init(k) for lay, k in zip(layers, jax.random.split(key, n)))

    def apply(params, xs, *, lengths=None, initial_state=None, key=None):
        params = _per_layer("params", params, n)
        states = (None,) * n if initial_state is None else _per_layer(
            "initial_state", initial_state, n
        )
        keys = (None,) * (2 * n) if key is None else tuple(jax.random.split(key, 2 * n))
        finals = []
        for i, lay in enumerate(layers):
            ys, final = lay.apply(params[i], xs, lengths=lengths, initial_state=states[i],
                                  key=keys[2 * i])
            if dropout and key is not None and i < n - 1:
                ys = jax.tree_util.tree_map(
                    lambda a: a * _keep_mask(keys[2 * i + 1], dropout, a.shape, a.dtype), ys
                )
            if residual_at[i] and _same_shapes(ys, xs, strict, f"layer {i}"):
                # Padding stays zero, as in every layer's ys.
                ys = jax.tree_util.tree_map(
                    lambda y, x: y + _valid_mask(lengths, x, time_major) * x, ys, xs
                )
            xs = ys
            finals.append(final)
        return xs, tuple(finals)

    return Layer(init, apply)


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
    first = cells[0]

    def init(key):
        return tuple(c.init(k) for c, k in zip(cells, jax.random.split(key, n)))

    def initial_state(params, batch_shape=()):
        return tuple(c.initial_state(p, batch_shape) for c, p in zip(cells, params))

    def run_from(i, params, state, h_first, y):
        new = [h_first]
        for c, p, h in zip(cells[i:], params[i:], state[i:]):
            h, y = c.step(p, h, y)
            new.append(h)
        return tuple(new), y

    def step(params, state, x):
        h, y = first.step(params[0], state[0], x)
        return run_from(1, params, state, h, y)

    def project_inputs(params, xs):
        return first.project_inputs(params[0], xs)

    def recurrent_step(params, state, xp):
        h, y = first.recurrent_step(params[0], state[0], xp)
        return run_from(1, params, state, h, y)

    has_all = lambda attr: all(getattr(c, attr) is not None for c in cells)
    return Cell(
        init if has_all("init") else None,
        initial_state if has_all("initial_state") else None,
        step,
        project_inputs if first.has_fast_path else None,
        recurrent_step if first.has_fast_path else None,
        rowwise=all(c.rowwise for c in cells),
    )


# -- variational dropout -----------------------------------------------------------


def _variational_dropout(cell: Cell) -> Cell:
    """`cell` with variational dropout; its params are `(params, _Masks)`."""

    def on(a, mask):
        return a if mask is None else jax.tree_util.tree_map(jnp.multiply, a, mask)

    def on_state(h, mask):
        if isinstance(h, LSTMState):
            return h._replace(h=on(h.h, mask))
        return on(h, mask)

    def step(params, h, x):
        params, masks = params
        h, y = cell.step(params, on_state(h, masks.state), on(x, masks.input))
        return h, on(y, masks.output)

    def project_inputs(params, xs):
        # The (batch, in) mask broadcasts over the leading time axis of xs.
        params, masks = params
        return cell.project_inputs(params, on(xs, masks.input))

    def recurrent_step(params, h, xp):
        params, masks = params
        h, y = cell.recurrent_step(params, on_state(h, masks.state), xp)
        return h, on(y, masks.output)

    initial_state = None
    if cell.initial_state is not None:
        initial_state = lambda params, batch_shape=(): cell.initial_state(params[0], batch_shape)
    fast = cell.has_fast_path
    return Cell(None, initial_state, step, project_inputs if fast else None,
                recurrent_step if fast else None)


def _draw_masks(key, rates: _Masks, cell: Cell, params, xs, initial_state, time_major) -> _Masks:
    """One mask per row for each rate that is on, shaped like a step's x, h, y."""
    batch, _ = _check_xs("xs", xs, time_major)
    x = jax.tree_util.tree_map(
        lambda a: jax.ShapeDtypeStruct((batch,) + np.shape(a)[2:], jnp.result_type(a)), xs
    )
    h = jax.eval_shape(lambda p, s: _initial_state(cell, p, s, batch), params, initial_state)
    y = jax.eval_shape(cell.step, params, h, x)[1]
    # An LSTM's memory cell c is not dropped (Keras, TF1): it is not what the
    # recurrent matmul reads.
    shapes = _Masks(x, h.h if isinstance(h, LSTMState) else h, y)

    def draw(k, rate, tree):
        if not rate:
            return None
        leaves, treedef = jax.tree_util.tree_flatten(tree)
        ks = jax.random.split(k, len(leaves))
        return treedef.unflatten(
            [_keep_mask(k, rate, a.shape, a.dtype) for k, a in zip(ks, leaves)]
        )

    return _Masks(*(draw(k, r, s) for k, r, s in zip(jax.random.split(key, 3), rates, shapes)))


def _keep_mask(key, rate: float, shape, dtype):
    """Inverted dropout: 0 with probability `rate`, else `1 / (1 - rate)`."""
    keep = 1.0 - rate
    return jax.random.bernoulli(key, keep, shape).astype(dtype) / jnp.asarray(keep, dtype)


def _check_rate(name: str, rate) -> float:
    if isinstance(rate, bool) or not isinstance(rate, (int, float, np.floating)):
        raise TypeError(f"{name} must be a float in [0, 1); got {rate!r}")
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"{name} must lie in [0, 1); got {rate}")
    return float(rate)


# -- helpers -----------------------------------------------------------------------

_MERGES = {
    "concat": lambda fw, bw: jax.tree_util.tree_map(
        lambda a, b: jnp.concatenate([a, b], axis=-1), fw, bw
    ),
    "sum": lambda fw, bw: jax.tree_util.tree_map(jnp.add, fw, bw),
    "mean": lambda fw, bw: jax.tree_util.tree_map(lambda a, b: (a + b) / 2, fw, bw),
    "pair": lambda fw, bw: (fw, bw),
}


def _as_layer(item, name: str, **layer_options) -> Layer:
    if isinstance(item, Layer):
        return item
    return layer(as_cell(item, name), **layer_options)


def _time_reversed(inner: Layer, time_major: bool) -> Layer:
    """`inner` run on each row reversed within its length, outputs reversed back."""

    def apply(params, xs, *, lengths=None, initial_state=None, key=None):
        flip = lambda tree: _reverse_sequence(tree, lengths, time_major)
        ys, final = inner.apply(params, flip(xs), lengths=lengths,
                                initial_state=initial_state, key=key)
        return flip(ys), final

    return Layer(inner.init, apply)


def _reverse_sequence(tree, lengths, time_major: bool):
    """TF's `reverse_sequence`: each row's first `lengths[b]` steps reversed in time."""
    axis = 0 if time_major else 1
    if lengths is None:
        return jax.tree_util.tree_map(lambda a: jnp.flip(a, axis), tree)

    def rev(a):
        time = a.shape[axis]
        t = jnp.arange(time)[None, :]
        n = jnp.asarray(lengths)[:, None]
        index = jnp.where(t < n, n - 1 - t, t)  # (batch, time); padding stays put
        index = index.T if time_major else index
        return jnp.take_along_axis(a, index.reshape(index.shape + (1,) * (a.ndim - 2)), axis)

    return jax.tree_util.tree_map(rev, tree)


def _valid_mask(lengths, a, time_major: bool):
    """1 where a step is within its row's length, 0 past it; broadcasts against `a`."""
    if lengths is None:
        return jnp.ones((), a.dtype)
    t, lengths = jnp.arange(a.shape[0 if time_major else 1]), jnp.asarray(lengths)
    valid = t[:, None] < lengths[None, :] if time_major else t[None, :] < lengths[:, None]
    return valid.reshape(valid.shape + (1,) * (a.ndim - 2)).astype(a.dtype)


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
    if not (isinstance(value, (tuple, list)) and len(value) == 2) or isinstance(value, LSTMState):
        raise TypeError(
            f"{name} of a bidirectional layer must be a pair (fw, bw); got {type(value).__name__}"
        )
    return value


def _per_layer(name: str, value, n: int):
    if not isinstance(value, (tuple, list)) or isinstance(value, LSTMState) or len(value) != n:
        got = f"{len(value)} entries" if isinstance(value, (tuple, list)) else type(value).__name__
        raise ValueError(f"{name} of a stack of {n} layers must be a tuple of {n} entries; got {got}")
    return tuple(value)
