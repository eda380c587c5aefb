"""Weight import from PyTorch's `nn.LSTM`/`nn.GRU`/`nn.RNN` and their `*Cell`s.

torch keeps `weight_ih` as `(gates, in)` and two biases; rnnscan keeps `w_ih` as
`(in, gates)` (so `x @ w_ih`, no transpose per step) and folds the biases
together where the math allows. The gate orders agree (LSTM i, f, g, o; GRU r, z, n).
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from rnnscan.cell import Cell
from rnnscan.cells import gru, lstm, rnn

_MODES = ("LSTM", "GRU", "RNN_TANH", "RNN_RELU")
_CELL_MODES = {"LSTMCell": "LSTM", "GRUCell": "GRU"}


def from_torch(module):
    """Converts a torch recurrent module to rnnscan: `(cell, params)` or `(layer, params)`.

    Args:
      module: a `torch.nn.LSTM`, `GRU` or `RNN` (incl. `proj_size`, `bias=False`,
        `nonlinearity="relu"`), or an `LSTMCell`, `GRUCell` or `RNNCell`.

    Returns:
      For one layer in one direction (and for the `*Cell` modules), `(cell,
      params)`: `rs.unroll(cell, params, x)` equals `module(x)` (use
      `time_major=not module.batch_first`), with torch's packed sequences as
      `lengths`. The cell's state is `LSTMState(h, c)` or `h`, without torch's
      leading `(num_layers * num_directions)` axis.
    """
    import torch  # only needed here

    if not isinstance(module, torch.nn.Module):
        raise TypeError(f"module must be a torch.nn.Module; got {type(module).__name__}")
    state_dict = {k: v.detach().cpu().numpy() for k, v in module.state_dict().items()}
    kind = type(module).__name__
    if isinstance(module, torch.nn.RNNCellBase):
        mode = _CELL_MODES.get(kind) or ("RNN_RELU" if module.nonlinearity == "relu" else "RNN_TANH")
        return from_torch_state_dict(
            mode, state_dict, input_size=module.input_size, hidden_size=module.hidden_size,
            bias=module.bias, cell_module=True,
        )
    if isinstance(module, torch.nn.RNNBase):
        return from_torch_state_dict(
            module.mode, state_dict, input_size=module.input_size,
            hidden_size=module.hidden_size, num_layers=module.num_layers, bias=module.bias,
            bidirectional=module.bidirectional, proj_size=module.proj_size,
        )
    raise TypeError(
        f"module must be torch.nn.LSTM, GRU, RNN or their *Cell variants; got {kind}"
    )


def from_torch_state_dict(
    mode: str,
    state_dict: Mapping[str, np.ndarray],
    *,
    input_size: int,
    hidden_size: int,
    num_layers: int = 1,
    bias: bool = True,
    bidirectional: bool = False,
    proj_size: int = 0,
    cell_module: bool = False,
):
    """`from_torch` without torch: from a module's `state_dict` as numpy arrays.

    Args:
      mode: torch's `module.mode`: `"LSTM"`, `"GRU"`, `"RNN_TANH"` or `"RNN_RELU"`.
      state_dict: torch's parameter names (`weight_ih_l0`, `bias_hh_l1_reverse`,
        `weight_hr_l0`, ...; `weight_ih`, ... for a `*Cell` module) to arrays.
      input_size, hidden_size, num_layers, bias, bidirectional, proj_size: the
        module's constructor arguments.
      cell_module: the weights come from an `LSTMCell`/`GRUCell`/`RNNCell`.

    Returns:
      `(cell, params)` for one layer in one direction, else `(layer, params)`.
    """
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {_MODES}; got {mode!r}")
    if num_layers != 1 or bidirectional:
        raise NotImplementedError(
            "multi-layer and bidirectional torch modules need rnnscan.layers"
        )
    cell = torch_cell(mode, input_size, hidden_size, bias=bias, proj_size=proj_size,
                      dtype=_dtype(state_dict))
    suffix = "" if cell_module else "_l0"
    return cell, torch_params(mode, state_dict, suffix, bias=bias, proj_size=proj_size)


def torch_cell(mode: str, input_size: int, hidden_size: int, *, bias: bool, proj_size: int, dtype) -> Cell:
    """The rnnscan cell that computes what one torch layer of `mode` computes."""
    if mode == "LSTM":
        return lstm(input_size, hidden_size, proj_size=proj_size or None, forget_bias=0.0,
                    use_bias=bias, param_dtype=dtype)
    if mode == "GRU":
        return gru(input_size, hidden_size, reset_after=True, use_bias=bias, param_dtype=dtype)
    activation = "relu" if mode == "RNN_RELU" else "tanh"
    return rnn(input_size, hidden_size, activation=activation, use_bias=bias, param_dtype=dtype)


def torch_params(mode: str, state_dict: Mapping[str, np.ndarray], suffix: str, *, bias: bool,
                 proj_size: int = 0) -> dict:
    """The params of `torch_cell` from the torch weights named `weight_ih{suffix}`, ...

    `suffix` is torch's layer and direction tag, e.g. `"_l1_reverse"` (`""` for a
    `*Cell` module).
    """

    def get(name):
        key = name + suffix
        if key not in state_dict:
            raise ValueError(
                f"state_dict has no {key!r}; it has {sorted(state_dict)}"
            )
        return np.asarray(state_dict[key])

    params = {"w_ih": get("weight_ih").T, "w_hh": get("weight_hh").T}
    if bias:
        b_ih, b_hh = get("bias_ih"), get("bias_hh")
        if mode == "GRU":
            # The new gate's recurrent bias sits inside r * (h @ w_n + b_hn): it
            # cannot fold into the input bias.
            hidden = b_hh.shape[0] // 3
            params["b"] = b_ih + np.concatenate([b_hh[: 2 * hidden], np.zeros_like(b_hh[:hidden])])
            params["b_hn"] = b_hh[2 * hidden :]
        else:
            params["b"] = b_ih + b_hh
    if mode == "LSTM" and proj_size:
        params["w_proj"] = get("weight_hr").T
    return params


def _dtype(state_dict):
    return np.result_type(*[np.asarray(v).dtype for v in state_dict.values()])
