"""`sequence_model`: a recurrent core followed by a dense readout at every step;
`step_model`: the same model one step at a time, as a `Cell`, for decoding."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from rnnscan.cell import Cell, as_cell, same_for_same_arguments, split_step
from rnnscan.layers import Layer, layer
from rnnscan.validation import check_positive_int


@same_for_same_arguments
def sequence_model(core: Cell | Layer, input_size: int, output_size: int) -> Layer:
    """`xs (batch, time, input_size) -> core -> ys (batch, time, output_size)`.

    Args:
      core: a `Cell` (run as `rnnscan.layer(core)`, i.e. `rnnscan.unroll`) or a
        `Layer` (`rnnscan.stack(...)`, `rnnscan.bidirectional(...)`, ...) that
        reads `input_size` features.
      input_size: features of `xs`.
      output_size: features of the readout, `ys = core_outputs @ w + b`.

    Returns:
      A `Layer` with params `{"core": ..., "readout": {"w": (core_size,
      output_size), "b": (output_size,)}}` and the core's state. `lengths`,
      `resets`, `initial_state` and `key` go to the core; past a row's length the core's
      outputs are zero, so `ys` there is `b`: mask the loss there.
    """
    check_positive_int("input_size", input_size)
    check_positive_int("output_size", output_size)
    if not isinstance(core, Layer):
        what = "a Cell without init or initial_state" if isinstance(core, Cell) else "a bare step function"
        core = as_cell(core, "core")
        if core.init is None or core.initial_state is None:  # else `.init` would fail, not this call
            raise TypeError("sequence_model: core must be a Layer or a Cell with init and initial_state "
                            "(rnnscan.lstm(...), rnnscan.Cell(init, initial_state, step)), since the "
                            f"model makes its params; got {what}")
        core = layer(core)

    def core_size(core_params):
        xs = jax.ShapeDtypeStruct((1, 1, input_size), jnp.float32)
        return jax.eval_shape(lambda p, x: core.apply(p, x)[0], core_params, xs).shape[-1]

    def apply(params, xs, *, lengths=None, resets=None, initial_state=None, key=None):
        hs, state = core.apply(params["core"], xs, lengths=lengths, resets=resets,
                               initial_state=initial_state, key=key)
        return _readout(params["readout"], hs), state

    return Layer(lambda key: _init(key, core.init, core_size, output_size), apply)


@same_for_same_arguments
def step_model(core, input_size: int, output_size: int) -> Cell:
    """`sequence_model` one step at a time: `core`'s step, then the readout, as a `Cell`.

    `step(params, h, x (*batch, input_size)) -> (h, y (*batch, output_size))`
    with `y = core_y @ w + b`. Its params and state are those of
    `sequence_model(core_layer, input_size, output_size)` wherever `core_layer`
    has `core`'s: `rnnscan.stack(cells)` for `rnnscan.multi_cell(cells)` (the
    same cells), `rnnscan.layer(cell)` or the cell itself for `cell`; and `init(key)`
    gives the params `sequence_model(...).init(key)` gives. So a model trained
    as a sequence decodes token by token (`rnnscan.sample`) with its params as
    they are. `core`'s input projection stays hoisted when it has one.
    """
    check_positive_int("input_size", input_size)
    check_positive_int("output_size", output_size)
    core = as_cell(core, "core")

    def core_size(core_params):
        h = core.initial_state(core_params, (1,))
        x = jax.ShapeDtypeStruct((1, input_size), jnp.float32)
        return jax.eval_shape(core.step, core_params, h, x)[1].shape[-1]

    def step(params, h, x):
        h, y = core.step(params["core"], h, x)
        return h, _readout(params["readout"], y)

    split = split_step(core)

    init = initial_state = None
    if core.initial_state is not None:
        initial_state = lambda params, batch_shape=(): core.initial_state(params["core"], batch_shape)
        if core.init is not None:
            init = lambda key: _init(key, core.init, core_size, output_size)
    if split is None:
        return Cell(init, initial_state, step)

    def recurrent_step(params, h, xp):
        h, y = split.recurrent_step(params["core"], h, xp)
        return h, _readout(params["readout"], y)

    project_inputs = lambda params, xs: split.project_inputs(params["core"], xs)
    return Cell.split(init, initial_state, project_inputs, recurrent_step, rowwise=split.rowwise)


def _init(key, init_core, core_size, output_size: int):
    """`{"core": init_core(k), "readout": {"w": glorot (core_size, output_size), "b": 0}}`."""
    k_core, k_out = jax.random.split(key)
    core_params = init_core(k_core)
    shape = (core_size(core_params), output_size)
    w = jax.nn.initializers.glorot_uniform()(k_out, shape, jnp.float32)
    return {"core": core_params, "readout": {"w": w, "b": jnp.zeros((output_size,), jnp.float32)}}


def _readout(readout, hs):
    return hs @ readout["w"] + readout["b"]
