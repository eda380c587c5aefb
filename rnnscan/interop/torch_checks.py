"""What a torch `nn.LSTM`/`GRU`/`RNN` state dict must hold for given arguments, checked."""

from __future__ import annotations

import numpy as np

from rnnscan.validation import check_shape

_GATES = {"LSTM": 4, "GRU": 3, "RNN_TANH": 1, "RNN_RELU": 1}


def check_proj_size(mode: str, proj_size) -> None:
    if isinstance(proj_size, bool) or not isinstance(proj_size, (int, np.integer)):
        raise TypeError(f"proj_size must be a non-negative int; got {proj_size!r}")
    if proj_size < 0:
        raise ValueError(f"proj_size must be a non-negative int; got {proj_size}")
    if proj_size and mode != "LSTM":
        raise ValueError(f"proj_size must be 0 for mode {mode!r} (torch projects LSTM outputs "
                         f"only); got {proj_size}")


def expected_shapes(mode, input_size, hidden_size, num_layers, bias, bidirectional, proj_size,
                     suffix=None) -> dict:
    """The state_dict's names and shapes for a torch module of these arguments (`suffix`
    `""`: a `*Cell` module's names)."""
    gates, out_size = _GATES[mode] * hidden_size, proj_size or hidden_size
    directions = ("", "_reverse") if bidirectional else ("",)
    shapes = {}
    for i in range(num_layers):
        width = input_size if i == 0 else len(directions) * out_size
        for d in directions:
            tag = f"_l{i}{d}" if suffix is None else suffix
            shapes[f"weight_ih{tag}"] = (gates, width)
            shapes[f"weight_hh{tag}"] = (gates, out_size)
            if bias:
                shapes[f"bias_ih{tag}"] = shapes[f"bias_hh{tag}"] = (gates,)
            if proj_size:
                shapes[f"weight_hr{tag}"] = (proj_size, hidden_size)
    return shapes


def check_state_dict(state_dict, expected: dict) -> None:
    """Raises unless `state_dict` holds exactly the names of `expected`, in its shapes."""
    missing = [k for k in expected if k not in state_dict]
    if missing:
        raise ValueError(f"state_dict has no {missing[0]!r}; it has {sorted(state_dict)}")
    unexpected = sorted(set(state_dict) - set(expected))
    if unexpected:
        raise ValueError(f"state_dict has entries that a module of these arguments (mode, "
                         f"num_layers, bias, bidirectional, proj_size) does not have: {unexpected}")
    for name, shape in expected.items():
        check_shape(f"state_dict[{name!r}]", np.shape(state_dict[name]), shape)
