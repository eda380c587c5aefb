"""Weight import from PyTorch's `nn.LSTM`/`nn.GRU`/`nn.RNN` and their `*Cell`s.

torch keeps `weight_ih` as `(gates, in)` and two biases; rnnscan keeps `w_ih` as
`(in, gates)` (so `x @ w_ih`, no transpose per step) and folds the biases
together where the math allows. The gate orders agree (LSTM i, f, g, o; GRU r, z, n).
"""

from __future__ import annotations

from typing import Mapping

import jax.numpy as jnp
import numpy as np

from rnnscan import tree
from rnnscan.cell import Cell
from rnnscan.cells import LSTMState, gru, lstm, rnn
from rnnscan.dropout import check_rate
from rnnscan.layers import bidirectional as bidirectional_layer
from rnnscan.layers import layer, stack
from rnnscan.validation import check_bool, check_choice, check_positive_int, check_shape

_MODES = ("LSTM", "GRU", "RNN_TANH", "RNN_RELU")
_CELL_MODES = {"LSTMCell": "LSTM", "GRUCell": "GRU"}
_GATES = {"LSTM": 4, "GRU": 3, "RNN_TANH": 1, "RNN_RELU": 1}


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

      Otherwise (`num_layers > 1` or `bidirectional`), `(layer, params)`:
      `layer.apply(params, x, lengths=...)` equals `module(x)` in the module's
      layout (`batch_first`), a `rs.stack` with one entry per layer in params and
      state, each a `(fw, bw)` pair for a bidirectional module; torch's `dropout`
      between layers applies when `apply` gets a `key`. `torch_state` and
      `to_torch_state` convert torch's `(h0, c0)` and `(h_n, c_n)`.
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
            batch_first=module.batch_first, dropout=module.dropout,
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
    batch_first: bool = False,
    dropout: float = 0.0,
    cell_module: bool = False,
):
    """`from_torch` without torch: from a module's `state_dict` as numpy arrays.

    Args:
      mode: torch's `module.mode`: `"LSTM"`, `"GRU"`, `"RNN_TANH"` or `"RNN_RELU"`.
      state_dict: torch's parameter names (`weight_ih_l0`, `bias_hh_l1_reverse`,
        `weight_hr_l0`, ...; `weight_ih`, ... for a `*Cell` module) to arrays.
      input_size, hidden_size, num_layers, bias, bidirectional, proj_size,
        batch_first, dropout: the module's constructor arguments.
      cell_module: the weights come from an `LSTMCell`/`GRUCell`/`RNNCell`.

    Returns:
      `(cell, params)` for one layer in one direction, else `(layer, params)`
      (see `from_torch`).
    """
    check_choice("mode", mode, _MODES)
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"state_dict must be a mapping of torch's names to arrays; got "
                        f"{type(state_dict).__name__}")
    for name, value in (("input_size", input_size), ("hidden_size", hidden_size),
                        ("num_layers", num_layers)):
        check_positive_int(name, value)
    for name, value in (("bias", bias), ("bidirectional", bidirectional),
                        ("batch_first", batch_first), ("cell_module", cell_module)):
        check_bool(name, value)
    check_rate("dropout", dropout)
    _check_proj_size(mode, proj_size)
    _check_state_dict(state_dict, _expected_shapes(
        mode, input_size, hidden_size, 1 if cell_module else num_layers, bias,
        bidirectional and not cell_module, proj_size, "" if cell_module else None))
    dtype = _dtype(state_dict)
    if cell_module or (num_layers == 1 and not bidirectional):
        cell = torch_cell(mode, input_size, hidden_size, bias=bias, proj_size=proj_size,
                          dtype=dtype)
        suffix = "" if cell_module else "_l0"
        return cell, torch_params(mode, state_dict, suffix, bias=bias, proj_size=proj_size)

    directions = ("", "_reverse") if bidirectional else ("",)
    out_size = proj_size or hidden_size
    layers, params = [], []
    for i in range(num_layers):
        # Above the first layer, the input is every direction's output, concatenated.
        cell = torch_cell(mode, input_size if i == 0 else len(directions) * out_size,
                          hidden_size, bias=bias, proj_size=proj_size, dtype=dtype)
        per_direction = tuple(
            torch_params(mode, state_dict, f"_l{i}{d}", bias=bias, proj_size=proj_size)
            for d in directions
        )
        if bidirectional:
            layers.append(bidirectional_layer(cell, cell, time_major=not batch_first))
            params.append(per_direction)
        else:
            layers.append(layer(cell, time_major=not batch_first))
            params.append(per_direction[0])
    return stack(layers, dropout=dropout, time_major=not batch_first), tuple(params)


def torch_state(h0, c0=None, *, num_layers: int = 1, bidirectional: bool = False):
    """torch's initial state as the state of what `from_torch` returns for the module.

    Args:
      h0: `(num_layers * num_directions, batch, proj_size or hidden_size)`, torch's
        `h_0` (index `layer * num_directions + direction`).
      c0: `(num_layers * num_directions, batch, hidden_size)`, an LSTM's `c_0`;
        None for GRU and RNN.
      num_layers, bidirectional: the module's.

    Returns:
      For one layer in one direction, the cell's state (`LSTMState(h, c)` or
      `h`); else a tuple with one entry per layer, a `(fw, bw)` pair of states
      per layer when bidirectional.
    """
    check_positive_int("num_layers", num_layers)
    check_bool("bidirectional", bidirectional)
    directions = 2 if bidirectional else 1
    for name, a in (("h0", h0), ("c0", c0)):
        if a is not None and (np.ndim(a) != 3 or np.shape(a)[0] != num_layers * directions):
            raise ValueError(
                f"{name} must have shape (num_layers * num_directions, batch, size) with "
                f"num_layers * num_directions = {num_layers * directions}; got {np.shape(a)}"
            )
    if c0 is not None and np.shape(c0)[1] != np.shape(h0)[1]:
        n, batch = np.shape(h0)[:2]
        raise ValueError(f"c0 must have shape ({n}, {batch}, hidden_size), h0's batch; got "
                         f"{np.shape(c0)}")
    flat = [h0[i] if c0 is None else LSTMState(h0[i], c0[i]) for i in range(len(h0))]
    if num_layers == 1 and not bidirectional:
        return flat[0]
    per_layer = [flat[i : i + directions] for i in range(0, len(flat), directions)]
    return tuple(tuple(d) if bidirectional else d[0] for d in per_layer)


def to_torch_state(state, *, num_layers: int = 1, bidirectional: bool = False):
    """The inverse of `torch_state`: a final state as torch's `h_n` (and `c_n`).

    Returns:
      `(h_n, c_n)` for an LSTM state, else `h_n`; each `(num_layers *
      num_directions, batch, size)`.
    """
    check_positive_int("num_layers", num_layers)
    check_bool("bidirectional", bidirectional)
    if num_layers == 1 and not bidirectional:
        flat = [state]
    else:
        if not (tree.is_plain_sequence(state) and len(state) == num_layers):
            raise ValueError(f"state must be a tuple of {num_layers} entries (one per layer) "
                             f"for num_layers={num_layers}; got {type(state).__name__}")
        if bidirectional and not all(tree.is_plain_sequence(e) and len(e) == 2 for e in state):
            raise ValueError("state must be a (fw, bw) pair of states per layer for "
                             "bidirectional=True; got " + ", ".join(type(e).__name__ for e in state))
        flat = [s for entry in state for s in (entry if bidirectional else (entry,))]
    if isinstance(flat[0], LSTMState):
        return jnp.stack([s.h for s in flat]), jnp.stack([s.c for s in flat])
    return jnp.stack(flat)


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


def _check_proj_size(mode: str, proj_size) -> None:
    if isinstance(proj_size, bool) or not isinstance(proj_size, (int, np.integer)):
        raise TypeError(f"proj_size must be a non-negative int; got {proj_size!r}")
    if proj_size < 0:
        raise ValueError(f"proj_size must be a non-negative int; got {proj_size}")
    if proj_size and mode != "LSTM":
        raise ValueError(f"proj_size must be 0 for mode {mode!r} (torch projects LSTM outputs "
                         f"only); got {proj_size}")


def _expected_shapes(mode, input_size, hidden_size, num_layers, bias, bidirectional, proj_size,
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


def _check_state_dict(state_dict, expected: dict) -> None:
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
