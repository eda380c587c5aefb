"""What the flax and equinox modules (`rnnscan.flax`, `rnnscan.equinox`) share: an
rnnscan model checked once, and run over a sequence the same way in each."""

from __future__ import annotations

from rnnscan.cell import Cell
from rnnscan.layers import Layer
from rnnscan.unroll import unroll


def check_model(model):
    """Returns `model` if it is a `Cell` or `Layer` that can make its own params."""
    if not isinstance(model, (Cell, Layer)):
        raise TypeError(f"model must be an rnnscan Cell or Layer; got {type(model).__name__}")
    if model.init is None:
        raise TypeError("model has no init (a bare step function): build it with rs.lstm, "
                        "rs.gru, ... or give the Cell an init")
    return model


def run(model, params, xs, *, lengths=None, resets=None, initial_state=None, key=None):
    """`rs.unroll` for a `Cell`, `model.apply` for a `Layer`: `(ys, final_state)`.

    `key` turns a Layer's dropout on; a Cell has no dropout and refuses it.
    """
    if isinstance(model, Layer):
        # resets only when given: a Layer's apply need not take them.
        more = {} if resets is None else {"resets": resets}
        return model.apply(params, xs, lengths=lengths, initial_state=initial_state, key=key,
                           **more)
    if key is not None:
        raise TypeError("key turns dropout on, and model is a Cell, which has none: wrap it "
                        "in rs.layer(cell, input_dropout=...) for dropout")
    return unroll(model, params, xs, lengths=lengths, resets=resets, initial_state=initial_state)
