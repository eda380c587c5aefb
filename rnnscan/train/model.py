"""`sequence_model`: a recurrent core followed by a dense readout at every step."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from rnnscan.cell import Cell, as_cell
from rnnscan.validation import check_positive_int
from rnnscan.layers import Layer, layer


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
      `initial_state` and `key` go to the core; past a row's length the core's
      outputs are zero, so `ys` there is `b`: mask the loss there.
    """
    check_positive_int("input_size", input_size)
    check_positive_int("output_size", output_size)
    core = core if isinstance(core, Layer) else layer(as_cell(core, "core"))

    def init(key):
        k_core, k_out = jax.random.split(key)
        core_params = core.init(k_core)
        xs = jax.ShapeDtypeStruct((1, 1, input_size), jnp.float32)
        core_size = jax.eval_shape(lambda p, x: core.apply(p, x)[0], core_params, xs).shape[-1]
        w = jax.nn.initializers.glorot_uniform()(k_out, (core_size, output_size), jnp.float32)
        return {"core": core_params, "readout": {"w": w, "b": jnp.zeros((output_size,), jnp.float32)}}

    def apply(params, xs, *, lengths=None, initial_state=None, key=None):
        hs, state = core.apply(params["core"], xs, lengths=lengths, initial_state=initial_state, key=key)
        return hs @ params["readout"]["w"] + params["readout"]["b"], state

    return Layer(init, apply)
