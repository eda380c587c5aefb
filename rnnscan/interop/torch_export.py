"""Weight export to PyTorch: an rnnscan model and its params as a ready `nn.LSTM`/`GRU`/`RNN`.

A model that `from_torch` built remembers its torch configuration. Any other LSTM,
GRU or Elman cell is read off its params' shapes and the options it was built
with, and the export is checked to compute what the cell computes.
"""

from __future__ import annotations

import inspect
from typing import Mapping, Optional

import jax
import jax.numpy as jnp
import numpy as np

from rnnscan.cell import Cell
from rnnscan.validation import check_same_structure
from rnnscan.cells import gru, lstm, rnn
from rnnscan.interop.torch import (
    TorchConfig,
    from_torch_state_dict,
    layer_suffixes,
    recorded_config,
    torch_weights,
)
from rnnscan.layers import Layer
from rnnscan.unroll import unroll

# The options of rs.lstm / rs.gru / rs.rnn that change what a cell computes and that
# its params do not show, at the constructors' defaults.
_OPTIONS = {
    mode: {name: inspect.signature(make).parameters[name].default for name in names}
    for mode, make, names in (
        ("LSTM", lstm, ("forget_bias", "activation", "gate_activation", "cell_clip",
                        "proj_clip")),
        ("GRU", gru, ("reset_after", "activation", "gate_activation")),
        ("RNN", rnn, ("activation",)),
    )
}
# What the cells `from_torch` builds are: torch's own computation.
_TORCH = {"forget_bias": 0.0, "activation": "tanh", "gate_activation": "sigmoid",
          "cell_clip": None, "proj_clip": None, "reset_after": True}


def to_torch(model, params, *, batch_first: Optional[bool] = None, **cell_options):
    """An rnnscan model and its params as a torch module with the weights loaded.

    Args:
      model: a `Cell` or `Layer` from `from_torch`/`from_torch_state_dict`, or a
        cell from `rs.lstm` (with `proj_size`), `rs.gru` (`reset_after=True`) or
        `rs.rnn` (`"tanh"`/`"relu"`), with or without biases.
      params: its params.
      batch_first: the module's layout. A `Layer`'s own (its `time_major`) by
        default; torch's default `False` for a `Cell`.
      **cell_options: for a cell that `from_torch` did not build, the options it
        was built with that its params do not show (`forget_bias`, `activation`,
        `gate_activation`, `reset_after`, `cell_clip`, `proj_clip`); the constructor's defaults
        otherwise. rs.lstm's `forget_bias` (default 1.0; torch has none) is added
        to the forget slice of `bias_ih`.

    Returns:
      A `torch.nn.LSTM`, `GRU` or `RNN` (one layer, one direction for a `Cell`) in
      the params' dtype: its forward equals `rs.unroll(model, params, ...)` (or
      `model.apply`) to rounding, and `from_torch` of it gives back a
      torch-built model's params bit for bit.

    Raises:
      ValueError: for what torch cannot compute: peepholes, `cell_clip`,
        `proj_clip`, TF1's GRU (`reset_after=False`), another activation, a
        `forget_bias` without biases, a `Layer` that `from_torch` did not build;
        or a cell that does not compute what its params and options describe.
    """
    import torch  # only needed here

    mode, state_dict, options = to_torch_state_dict(model, params, batch_first=batch_first,
                                                    **cell_options)
    dtype = next(iter(state_dict.values())).dtype
    if dtype not in (np.float16, np.float32, np.float64, jnp.bfloat16):
        raise TypeError(f"params must be bfloat16, float16, float32 or float64 for torch; got "
                        f"{dtype}")
    if mode == "LSTM":
        module_type = torch.nn.LSTM
    else:
        module_type = torch.nn.GRU if mode == "GRU" else torch.nn.RNN
        options.pop("proj_size")
        if mode != "GRU":
            options["nonlinearity"] = "relu" if mode == "RNN_RELU" else "tanh"
    if dtype == jnp.bfloat16:  # numpy has no bfloat16 for torch: through float32, exactly
        to_tensor = lambda a: torch.from_numpy(a.astype(np.float32)).to(torch.bfloat16)
    else:
        to_tensor = torch.from_numpy
    module = module_type(**options, dtype=to_tensor(np.zeros(0, dtype)).dtype)
    module.load_state_dict({k: to_tensor(v) for k, v in state_dict.items()})
    return module


def to_torch_state_dict(model, params, *, batch_first: Optional[bool] = None, **cell_options):
    """`to_torch` without torch: the module's mode, state dict and constructor arguments.

    Returns:
      `(mode, state_dict, options)`: torch's `module.mode`, its parameter names
      (`weight_ih_l0`, ...) to numpy arrays, and its constructor arguments
      (`input_size`, `hidden_size`, `num_layers`, `bias`, `bidirectional`,
      `proj_size`, `batch_first`, `dropout`); `from_torch_state_dict(mode,
      state_dict, **options)` inverts it.
    """
    if not isinstance(model, (Cell, Layer)):
        raise TypeError(f"model must be an rnnscan Cell or Layer; got {type(model).__name__}")
    config = recorded_config(model)
    described = config is None
    if described:
        if isinstance(model, Layer):
            raise ValueError(
                "model is a Layer that from_torch did not build: to_torch cannot see how a "
                "hand-built stack or bidirectional layer composes its cells; export each "
                "cell with to_torch, or a model from from_torch"
            )
        config, options = _describe(params, cell_options)
    else:
        options = _options(config.mode, cell_options, recorded=True)
    if batch_first is not None:
        if isinstance(model, Layer) and batch_first != config.batch_first:
            raise ValueError(
                f"batch_first={batch_first}: model is a Layer with batch_first="
                f"{config.batch_first} (time_major={not config.batch_first}); leave it unset"
            )
        config = config._replace(batch_first=batch_first)
    if model.init is not None:
        check_same_structure("params", params, jax.eval_shape(model.init, jax.random.key(0)),
                             "model.init's params")
    c = config
    weights = dict(bias=c.bias, proj_size=c.proj_size, forget_bias=options.get("forget_bias", 0.0))
    if isinstance(model, Cell):
        state_dict = torch_weights(c.mode, params, "_l0", **weights)
    else:
        state_dict = {}
        for suffix, i, j in layer_suffixes(c):
            entry = params[i][j] if c.bidirectional else params[i]
            state_dict |= torch_weights(c.mode, entry, suffix, **weights)
    kwargs = c._asdict()
    mode = kwargs.pop("mode")
    if described:
        _check_computes(model, params, mode, state_dict, kwargs, options)
    return mode, state_dict, kwargs


def _describe(params, cell_options) -> tuple[TorchConfig, dict]:
    """The torch configuration of an rs.lstm/gru/rnn cell, from its params' shapes."""
    if not isinstance(params, Mapping) or not {"w_ih", "w_hh"} <= set(params):
        got = sorted(params) if isinstance(params, Mapping) else type(params).__name__
        raise ValueError(
            "params must be an rnnscan lstm, gru or rnn cell's: a mapping with 'w_ih' and "
            f"'w_hh' (and 'b', 'b_hn', 'w_proj'); got {got}"
        )
    if "w_peep" in params:
        raise ValueError("params has 'w_peep': torch's nn.LSTM has no peephole connections")
    (input_size, gates), (rows, _) = np.shape(params["w_ih"]), np.shape(params["w_hh"])
    bias, proj_size = "b" in params, 0
    if "w_proj" in params:
        (hidden, proj_size), kind = np.shape(params["w_proj"]), "LSTM"
    elif gates in (4 * rows, 3 * rows, rows):
        hidden, kind = rows, {4 * rows: "LSTM", 3 * rows: "GRU", rows: "RNN"}[gates]
    else:
        raise ValueError(
            f"params['w_hh'] must be (H, 4H) for an LSTM, (H, 3H) for a GRU or (H, H) for "
            f"an Elman RNN; got {np.shape(params['w_hh'])}"
        )
    if kind == "GRU" and bias and "b_hn" not in params:
        cell_options = {**cell_options, "reset_after": False}  # TF1's GRU: no b_hn
    options = _options(kind, cell_options, recorded=False)
    mode = kind if kind != "RNN" else f"RNN_{options['activation'].upper()}"
    return TorchConfig(mode, input_size, hidden, bias=bias, proj_size=proj_size), options


def _options(mode: str, cell_options: dict, *, recorded: bool) -> dict:
    """The cell options of a `mode` cell with `cell_options` given, checked against torch's.

    `recorded`: the cell is one `from_torch` built, so it has torch's options and
    those given must agree with them.
    """
    kind = mode[:3] if mode.startswith("RNN") else mode
    defaults = _OPTIONS[kind]
    unknown = set(cell_options) - set(defaults)
    if unknown:
        raise TypeError(
            f"cell_options {sorted(unknown)} do not apply to a {kind} cell; it takes "
            f"{sorted(defaults)}"
        )
    torch_options = {k: _TORCH[k] for k in defaults}
    if mode == "RNN_RELU":
        torch_options["activation"] = "relu"
    options = {**(torch_options if recorded else defaults), **cell_options}
    if recorded and options != torch_options:
        raise ValueError(
            f"model was built by from_torch with {torch_options}; got cell_options {cell_options}"
        )
    activations = ("tanh", "relu") if kind == "RNN" else ("tanh",)
    if options["activation"] not in activations:
        raise ValueError(
            f"activation={options['activation']!r}: torch's {kind} has {' or '.join(activations)}"
        )
    if options.get("gate_activation", "sigmoid") != "sigmoid":
        raise ValueError(f"gate_activation={options['gate_activation']!r}: torch's {kind} "
                         "has sigmoid gates")
    for name in ("cell_clip", "proj_clip"):
        if options.get(name) is not None:
            raise ValueError(f"{name}={options[name]}: torch's nn.LSTM does not clip")
    if options.get("reset_after") is False:
        raise ValueError(
            "reset_after=False (TF1's GRUCell) applies the reset gate before the recurrent "
            "product; torch's nn.GRU applies it after (reset_after=True): no torch GRU "
            "computes this cell"
        )
    return options


def _check_computes(model, params, mode, state_dict, kwargs, options) -> None:
    """Raises unless `model` computes what the exported torch module does, on a test input.

    The reference is `from_torch_state_dict`'s cell for the exported weights:
    torch's computation, checked against torch itself by the tests.
    """
    reference, reference_params = from_torch_state_dict(mode, state_dict, **kwargs)
    dtype = np.dtype(np.asarray(params["w_ih"]).dtype)
    xs = np.random.default_rng(0).standard_normal((2, 6, kwargs["input_size"])).astype(dtype)
    got = np.asarray(unroll(model, params, xs)[0], np.float64)
    want = np.asarray(unroll(reference, reference_params, xs)[0], np.float64)
    tolerance = float(jnp.finfo(dtype).eps) ** 0.5
    if not np.allclose(got, want, rtol=tolerance, atol=tolerance):
        raise ValueError(
            f"model does not compute what a torch {mode} with its params computes (largest "
            f"difference {np.max(np.abs(got - want)):.3g} on a test input), taking it for a "
            f"cell built with {options}: pass to_torch the options it was built with "
            "(forget_bias=, activation=, ...); a compute_dtype, a wrapped step, peepholes or "
            "clipping have no torch equivalent"
        )
