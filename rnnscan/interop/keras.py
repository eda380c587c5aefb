"""Weight import from Keras 3's `LSTM`, `GRU` and `SimpleRNN` (and their `*Cell`s).

Keras keeps `kernel` `(in, gates)` and `recurrent_kernel` `(units, gates)`, as
rnnscan's `w_ih` and `w_hh`. Its LSTM gates are i, f, c, o (rnnscan's order); its
GRU's are z, r, h, where rnnscan has r, z, n, and with `reset_after=True` its bias
is `(2, 3 * units)`: the input bias, then the recurrent one. The gates'
activation (`recurrent_activation`) and the activation are honoured by name.
"""

from __future__ import annotations

import numpy as np

from rnnscan.cells import gru, lstm, rnn
from rnnscan.cells._common import ACTIVATIONS
from rnnscan.interop.jax_frameworks import dtype_option
from rnnscan.layers import layer as sequence_layer

_KINDS = {"LSTM": "LSTM", "LSTMCell": "LSTM", "GRU": "GRU", "GRUCell": "GRU",
          "SimpleRNN": "SimpleRNN", "SimpleRNNCell": "SimpleRNN"}
_NAMES = {"linear": "identity"}  # Keras's name -> rnnscan's, where they differ


def from_keras(layer):
    """Converts a Keras 3 recurrent layer to rnnscan: `(cell, params)`.

    Args:
      layer: a built `keras.layers.LSTM`, `GRU` (`reset_after` True or False) or
        `SimpleRNN`, or their `LSTMCell`, `GRUCell`, `SimpleRNNCell`, with any
        `activation` and `recurrent_activation` that rnnscan knows by name
        (`tanh`, `sigmoid`, `hard_sigmoid`, `relu`, `linear`, ...).

    Returns:
      `(cell, params)` with `rs.unroll(cell, params, x)` equal to Keras's
      `layer(x, training=False)` (`return_sequences=True` gives `ys`, the last
      output and `return_state` the final state; an LSTM's state is
      `LSTMState(h, c)` where Keras returns `[h, c]`). A layer with
      `go_backwards=True` gives `(rs.layer(cell, reverse=True), params)`, whose
      `ys` stay aligned with their inputs: Keras's sequence is `ys[:, ::-1]`.
      Keras's `dropout` and `recurrent_dropout` are not imported: Keras's LSTM
      and GRU draw one recurrent mask per gate, `rs.layer`'s `state_dropout` one
      for all gates (see `rnnscan.layer`).
    """
    kind = _KINDS.get(type(layer).__name__) if hasattr(layer, "get_config") else None
    if kind is None:
        raise TypeError(f"layer must be a keras.layers.LSTM, GRU or SimpleRNN or their *Cell "
                        f"variants; got {type(layer).__name__}")
    cell = getattr(layer, "cell", layer)
    if not cell.built:
        raise ValueError(f"layer ({type(layer).__name__}) has no weights yet: call it on an "
                         "input (or build it) first")
    go_backwards = getattr(layer, "go_backwards", False)
    w_ih, w_hh = _numpy(cell.kernel), _numpy(cell.recurrent_kernel)
    bias = _numpy(cell.bias) if cell.use_bias else None
    input_size, units = w_ih.shape[0], cell.units
    options = dict(activation=_activation("activation", cell.activation),
                   use_bias=bool(cell.use_bias), **dtype_option(w_ih.dtype))
    if kind == "SimpleRNN":
        params = {"w_ih": w_ih, "w_hh": w_hh}
        model = rnn(input_size, units, **options)
    else:
        options["gate_activation"] = _activation("recurrent_activation",
                                                 cell.recurrent_activation)
        if kind == "LSTM":
            params = {"w_ih": w_ih, "w_hh": w_hh}
            model = lstm(input_size, units, forget_bias=0.0, **options)
        else:
            params, reset_after = _gru_params(w_ih, w_hh, bias, units, cell.reset_after)
            model = gru(input_size, units, reset_after=reset_after, **options)
            bias = None
    if bias is not None:
        params["b"] = bias
    if go_backwards:
        return sequence_layer(model, reverse=True), params
    return model, params


def _gru_params(w_ih, w_hh, bias, units, reset_after):
    """Keras's GRU weights (gates z, r, h) as `rs.gru`'s params (r, z, n)."""
    order = np.concatenate([np.arange(units, 2 * units), np.arange(units),
                            np.arange(2 * units, 3 * units)])
    params = {"w_ih": w_ih[:, order], "w_hh": w_hh[:, order]}
    if bias is not None:
        if reset_after:
            # rnnscan folds the r and z parts of the recurrent bias into b; the
            # new gate's stays apart (b_hn), inside r * (h @ w_n + b_hn).
            b_in, b_rec = bias[0][order], bias[1][order]
            params["b"] = np.concatenate([b_in[: 2 * units] + b_rec[: 2 * units],
                                          b_in[2 * units :]])
            params["b_hn"] = b_rec[2 * units :]
        else:
            params["b"] = bias[order]
    return params, bool(reset_after)


def _activation(name: str, function) -> str:
    """The rnnscan name of a Keras activation function, or a ValueError naming `name`."""
    keras_name = getattr(function, "__name__", repr(function))
    ours = _NAMES.get(keras_name, keras_name)
    if ours not in ACTIVATIONS:
        raise ValueError(f"{name}={keras_name!r}: rnnscan knows the activations "
                         f"{sorted(set(ACTIVATIONS) - set(_NAMES.values()) | set(_NAMES))} by name")
    return ours


def _numpy(variable) -> np.ndarray:
    return np.array(variable.numpy() if hasattr(variable, "numpy") else variable)
