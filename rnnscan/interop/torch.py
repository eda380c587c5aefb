"""Weight import from PyTorch's `nn.LSTM`/`nn.GRU`/`nn.RNN` and their `*Cell`s.

torch keeps `weight_ih` as `(gates, in)` and two biases; rnnscan keeps `w_ih` as
`(in, gates)` (so `x @ w_ih`, no transpose per step) and folds the biases
together where the math allows. The gate orders agree (LSTM i, f, g, o; GRU r, z, n).
`torch_params` and `torch_weights` are that layout, one way and back; the export
itself (`to_torch`) is in `rnnscan.interop.torch_export`.

The models built here are cached by configuration (the same object for the same
module shape, so `jit` caches hit) and remember it: `recorded_config(model)`.
"""

from __future__ import annotations

import functools
import re
from typing import Mapping, NamedTuple, Optional

import jax.numpy as jnp
import numpy as np

from rnnscan.cell import Cell
from rnnscan.cells import gru, lstm, rnn
from rnnscan.dropout import check_rate
from rnnscan.layers import bidirectional as bidirectional_layer
from rnnscan.layers import layer, stack
from rnnscan.interop.torch_checks import check_proj_size, check_state_dict, expected_shapes
from rnnscan.validation import check_bool, check_choice, check_positive_int

_MODES = ("LSTM", "GRU", "RNN_TANH", "RNN_RELU")
_CELL_MODES = {"LSTMCell": "LSTM", "GRUCell": "GRU"}
# torch's parameter names inside an RNN module: weight_ih_l0, bias_hh_l1_reverse, weight_hr_l0, ...
_PARAM_NAME = re.compile(r"(.*?)((?:weight|bias)_(?:ih|hh|hr)(?:_l\d+(?:_reverse)?)?)")


class TorchConfig(NamedTuple):
    """A torch `nn.LSTM`/`GRU`/`RNN`'s `mode` and constructor arguments."""

    mode: str
    input_size: int
    hidden_size: int
    num_layers: int = 1
    bias: bool = True
    bidirectional: bool = False
    proj_size: int = 0
    batch_first: bool = False
    dropout: float = 0.0


# The configuration of every model built here, by model (bounded: the builders are cached).
_RECORDED: dict = {}


def recorded_config(model) -> Optional[TorchConfig]:
    """The `TorchConfig` of a model that `from_torch`/`from_torch_state_dict` built, else None.

    A `Cell` records one layer in one direction (`batch_first` is not its own).
    """
    try:
        return _RECORDED.get(model)
    except TypeError:  # unhashable: not one of ours
        return None
def from_torch(module):
    """Converts a torch recurrent module to rnnscan: `(cell, params)` or `(layer, params)`.

    Args:
      module: a `torch.nn.LSTM`, `GRU` or `RNN` (incl. `proj_size`, `bias=False`,
        `nonlinearity="relu"`), or an `LSTMCell`, `GRUCell` or `RNNCell`. Its
        weights are read as it computes with them (under a parametrization such
        as `weight_norm`, the computed weight), in its dtype (a bfloat16 module
        gives bfloat16 params and a bfloat16 cell).

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
    kind = type(module).__name__
    if isinstance(module, torch.nn.RNNCellBase):
        # isinstance, not the class name: a parametrized module's class is a subclass
        # named e.g. ParametrizedGRUCell.
        mode = next((m for name, m in _CELL_MODES.items()
                     if isinstance(module, getattr(torch.nn, name))), None) or (
            "RNN_RELU" if module.nonlinearity == "relu" else "RNN_TANH")
        names = expected_shapes(mode, module.input_size, module.hidden_size, 1, module.bias,
                                False, 0, "")
        return from_torch_state_dict(
            mode, _weights(module, names), input_size=module.input_size,
            hidden_size=module.hidden_size, bias=module.bias, cell_module=True,
        )
    if isinstance(module, torch.nn.RNNBase):
        return from_torch_state_dict(
            module.mode, _weights(module, module._flat_weights_names),
            input_size=module.input_size,
            hidden_size=module.hidden_size, num_layers=module.num_layers, bias=module.bias,
            bidirectional=module.bidirectional, proj_size=module.proj_size,
            batch_first=module.batch_first, dropout=module.dropout,
        )
    raise TypeError(
        f"module must be torch.nn.LSTM, GRU, RNN or their *Cell variants; got {kind}"
    )


def _weights(module, names) -> dict:
    """The weights `module` computes with, by torch's names, as numpy arrays.

    `getattr` rather than `state_dict()`: under a parametrization (e.g.
    `torch.nn.utils.parametrizations.weight_norm`) the state dict holds the
    parametrization's inputs, and `getattr` the weight it computes. bfloat16,
    which numpy lacks, comes as `jnp.bfloat16` (ml_dtypes) with the same values.
    """
    import torch

    def to_numpy(w):
        w = w.detach().cpu()
        if w.dtype == torch.bfloat16:  # exact: float32 holds every bfloat16
            return w.float().numpy().astype(jnp.bfloat16)
        return w.numpy()

    return {name: to_numpy(getattr(module, name)) for name in names}


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
    prefix: Optional[str] = None,
):
    """`from_torch` without torch: from a module's `state_dict` as numpy arrays.

    Args:
      mode: torch's `module.mode`: `"LSTM"`, `"GRU"`, `"RNN_TANH"` or `"RNN_RELU"`.
      state_dict: torch's parameter names (`weight_ih_l0`, `bias_hh_l1_reverse`,
        `weight_hr_l0`, ...; `weight_ih`, ... for a `*Cell` module) to arrays; or
        a whole model's state dict, where they carry the module's name
        (`encoder.lstm.weight_ih_l0`). Other keys are ignored.
      input_size, hidden_size, num_layers, bias, bidirectional, proj_size,
        batch_first, dropout: the module's constructor arguments.
      cell_module: the weights come from an `LSTMCell`/`GRUCell`/`RNNCell`.
      prefix: the module's name in `state_dict`, e.g. `"encoder.lstm"` (the
        trailing dot optional; `""` for the module's own state dict). None (the
        default) finds it when the weights of exactly one such module are there.

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
    check_proj_size(mode, proj_size)
    single = cell_module or (num_layers == 1 and not bidirectional)
    suffix = "" if cell_module else "_l0"
    state_dict = _select(state_dict, prefix, "weight_ih" + suffix)
    check_state_dict(state_dict, expected_shapes(
        mode, input_size, hidden_size, 1 if cell_module else num_layers, bias,
        bidirectional and not cell_module, proj_size, "" if cell_module else None))
    dtype = _dtype(state_dict)
    if single:
        cell = torch_cell(mode, input_size, hidden_size, bias=bias, proj_size=proj_size,
                          dtype=dtype)
        return cell, torch_params(mode, state_dict, suffix, bias=bias, proj_size=proj_size)
    config = TorchConfig(mode, input_size, hidden_size, num_layers, bias, bidirectional,
                         proj_size, batch_first, dropout)
    params = [[None] * (2 if bidirectional else 1) for _ in range(num_layers)]
    for suffix, i, j in layer_suffixes(config):
        params[i][j] = torch_params(mode, state_dict, suffix, bias=bias, proj_size=proj_size)
    return _torch_stack(config, dtype), tuple(tuple(p) if bidirectional else p[0] for p in params)


def layer_suffixes(config: TorchConfig):
    """torch's `(suffix, layer, direction)` for each layer and direction of a stack,
    e.g. `("_l1_reverse", 1, 1)`: `params[layer][direction]` (`params[layer]` when
    one-directional) holds the rnnscan params of torch's weights `*{suffix}`."""
    directions = ("", "_reverse") if config.bidirectional else ("",)
    return [(f"_l{i}{d}", i, j) for i in range(config.num_layers) for j, d in enumerate(directions)]


def _select(state_dict: Mapping, prefix: Optional[str], first: str) -> dict:
    """The weights of one torch RNN in `state_dict`, by their names within the module.

    `first` is the name every such module has (`weight_ih_l0`, or `weight_ih` for
    a `*Cell`): the prefixes it appears under are the candidates.
    """
    by_prefix: dict = {}
    for key, value in state_dict.items():
        match = _PARAM_NAME.fullmatch(key)
        if match:
            by_prefix.setdefault(match[1], {})[match[2]] = value
    candidates = sorted(p for p, names in by_prefix.items() if first in names)
    if prefix is None:
        if len(candidates) != 1:
            raise ValueError(
                f"state_dict must hold the weights of one torch RNN (a key ending in "
                f"{first!r}) to find its prefix; got {len(candidates)}"
                + (f", under the prefixes {candidates}: pass prefix= one of them" if candidates
                   else f", keys {sorted(state_dict)[:8]}")
            )
        return by_prefix[candidates[0]]
    if prefix not in candidates and prefix + "." in candidates:
        prefix += "."
    if prefix not in candidates:
        raise ValueError(
            f"prefix={prefix!r} names none of the torch RNNs in state_dict (keys ending in "
            f"{first!r}); their prefixes are {candidates}"
        )
    return by_prefix[prefix]


@functools.cache
def torch_cell(mode: str, input_size: int, hidden_size: int, *, bias: bool, proj_size: int, dtype) -> Cell:
    """The rnnscan cell that computes what one torch layer of `mode` computes."""
    if mode == "LSTM":
        cell = lstm(input_size, hidden_size, proj_size=proj_size or None, forget_bias=0.0,
                    use_bias=bias, param_dtype=dtype)
    elif mode == "GRU":
        cell = gru(input_size, hidden_size, reset_after=True, use_bias=bias, param_dtype=dtype)
    else:
        activation = "relu" if mode == "RNN_RELU" else "tanh"
        cell = rnn(input_size, hidden_size, activation=activation, use_bias=bias,
                   param_dtype=dtype)
    _RECORDED[cell] = TorchConfig(mode, input_size, hidden_size, bias=bias,
                                  proj_size=proj_size if mode == "LSTM" else 0)
    return cell


@functools.cache
def _torch_stack(config: TorchConfig, dtype):
    """The rnnscan `Layer` for a torch module with several layers or both directions."""
    c = config
    out_size = (c.proj_size or c.hidden_size) * (2 if c.bidirectional else 1)
    layers = []
    for i in range(c.num_layers):
        # Above the first layer, the input is every direction's output, concatenated.
        cell = torch_cell(c.mode, c.input_size if i == 0 else out_size, c.hidden_size,
                          bias=c.bias, proj_size=c.proj_size, dtype=dtype)
        if c.bidirectional:
            layers.append(bidirectional_layer(cell, cell, time_major=not c.batch_first))
        else:
            layers.append(layer(cell, time_major=not c.batch_first))
    model = stack(layers, dropout=c.dropout, time_major=not c.batch_first)
    _RECORDED[model] = config
    return model


def _transposed(mode: str, proj_size: int):
    """rnnscan's names of the weights that are torch's transposed, with torch's names."""
    names = [("w_ih", "weight_ih"), ("w_hh", "weight_hh")]
    return names + [("w_proj", "weight_hr")] if mode == "LSTM" and proj_size else names


def torch_params(mode: str, state_dict: Mapping[str, np.ndarray], suffix: str, *, bias: bool,
                 proj_size: int = 0) -> dict:
    """The params of `torch_cell` from the torch weights named `weight_ih{suffix}`, ...

    `suffix` is torch's layer and direction tag, e.g. `"_l1_reverse"` (`""` for a
    `*Cell` module). The inverse is `torch_weights`.
    """

    def get(name):
        key = name + suffix
        if key not in state_dict:
            raise ValueError(f"state_dict has no {key!r}; it has {sorted(state_dict)}")
        return np.asarray(state_dict[key])

    params = {ours: get(theirs).T for ours, theirs in _transposed(mode, proj_size)}
    if bias:
        b_ih, b_hh = get("bias_ih"), get("bias_hh")
        if mode == "GRU":
            # The new gate's recurrent bias sits inside r * (h @ w_n + b_hn): it
            # cannot fold into the input bias.
            n = 2 * (b_hh.shape[0] // 3)
            params["b"] = np.concatenate([b_ih[:n] + b_hh[:n], b_ih[n:]])
            params["b_hn"] = b_hh[n:]
        else:
            params["b"] = b_ih + b_hh
    return params


def torch_weights(mode: str, params: Mapping, suffix: str, *, bias: bool, proj_size: int = 0,
                  forget_bias: float = 0.0) -> dict:
    """The inverse of `torch_params`: torch's `weight_ih{suffix}`, ... from a cell's params.

    The folded bias `b` goes to `bias_ih` and `bias_hh` gets -0.0 (GRU: but its
    `b_hn`): -0.0 is the identity of float addition, signed zeros included, so
    `torch_params` gives `b` back bit for bit. An LSTM's `forget_bias` (torch has
    none) is added to the forget gate's slice of `bias_ih`.
    """
    if forget_bias and not bias:
        raise ValueError(
            f"forget_bias={forget_bias}: torch's module without biases (bias=False) has no "
            "bias to fold it into; only forget_bias=0.0 exports without biases"
        )
    weights = {theirs + suffix: np.ascontiguousarray(np.asarray(params[ours]).T)
               for ours, theirs in _transposed(mode, proj_size)}
    if bias:
        b_ih = np.array(params["b"])
        b_hh = np.full_like(b_ih, -0.0)
        if mode == "GRU":
            n = 2 * (b_ih.shape[0] // 3)
            b_hh[n:] = np.asarray(params["b_hn"])
        if forget_bias:
            hidden = b_ih.shape[0] // 4
            b_ih[hidden : 2 * hidden] += forget_bias
        weights["bias_ih" + suffix], weights["bias_hh" + suffix] = b_ih, b_hh
    return weights


def _dtype(state_dict):
    return np.result_type(*[np.asarray(v).dtype for v in state_dict.values()])
