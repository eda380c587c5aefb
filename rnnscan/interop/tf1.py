"""Weight import from TensorFlow 1's `LSTMCell`, `GRUCell` and `BasicRNNCell`.

TF1 keeps one kernel `(input + state, gates)` over the concatenation `[x, h]`;
rnnscan splits it into `w_ih` and `w_hh`. TF1's LSTM gate columns are ordered
i, j, f, o; rnnscan's i, f, j, o.
"""

from __future__ import annotations

from typing import Mapping, Optional

import numpy as np

from rnnscan.cells import gru, lstm, rnn
from rnnscan.validation import check_choice, check_shape

_KINDS = ("lstm", "gru", "rnn")
_VARIABLES = {
    "lstm": ({"kernel", "bias"}, {"w_i_diag", "w_f_diag", "w_o_diag", "projection/kernel"}),
    "gru": ({"gates/kernel", "gates/bias", "candidate/kernel", "candidate/bias"}, set()),
    "rnn": ({"kernel", "bias"}, set()),
}


def from_tf1(
    kind: str,
    variables: Mapping[str, np.ndarray],
    *,
    forget_bias: float = 1.0,
    cell_clip: Optional[float] = None,
    proj_clip: Optional[float] = None,
    activation="tanh",
):
    """Builds the rnnscan cell that computes what a TF1 cell with these variables computes.

    Args:
      kind: `"lstm"` (`tf.compat.v1.nn.rnn_cell.LSTMCell`), `"gru"` (`GRUCell`) or
        `"rnn"` (`BasicRNNCell`).
      variables: the cell's variables by their names inside the cell's scope
        (a `:0` suffix is ignored): LSTM `kernel` `(in + P, 4H)`, `bias`, optional
        `w_i_diag`, `w_f_diag`, `w_o_diag` (peepholes) and `projection/kernel`
        `(H, P)`; GRU `gates/kernel`, `gates/bias`, `candidate/kernel`,
        `candidate/bias`; RNN `kernel`, `bias`.
      forget_bias, cell_clip, proj_clip: as given to TF1's `LSTMCell` (LSTM only).
      activation: the cell's activation (TF1's `activation=`), default tanh.

    Returns:
      `(cell, params)`; `rs.dynamic_rnn(cell, params, ...)` gives TF1's numbers. An
      LSTM's state is `LSTMState(h, c)` where TF1 has `LSTMStateTuple(c, h)`.
    """
    check_choice("kind", kind, _KINDS)
    if not isinstance(variables, Mapping):
        raise TypeError(f"variables must be a mapping of TF1 names to arrays; got "
                        f"{type(variables).__name__}")
    variables = {name.removesuffix(":0"): np.asarray(v) for name, v in variables.items()}
    required, optional = _VARIABLES[kind]
    missing, unknown = required - set(variables), set(variables) - required - optional
    if missing or unknown:
        raise ValueError(
            f"variables for a TF1 {kind} cell must be {sorted(required)} (optional: "
            f"{sorted(optional)}); missing {sorted(missing)}, unexpected {sorted(unknown)}"
        )
    dtype = np.result_type(*[v.dtype for v in variables.values()])
    if kind == "lstm":
        return _lstm(variables, dtype, forget_bias=forget_bias, cell_clip=cell_clip,
                     proj_clip=proj_clip, activation=activation)
    if kind == "gru":
        return _gru(variables, dtype, activation)
    kernel = _matrix("kernel", variables["kernel"])
    hidden = kernel.shape[1]
    input_size = _input_size("kernel", kernel, hidden)
    check_shape("bias", variables["bias"].shape, (hidden,))
    cell = rnn(input_size, hidden, activation=activation, param_dtype=dtype)
    return cell, {"w_ih": kernel[:input_size], "w_hh": kernel[input_size:], "b": variables["bias"]}


def _lstm(variables, dtype, *, forget_bias, cell_clip, proj_clip, activation):
    kernel, bias = _matrix("kernel", variables["kernel"]), variables["bias"]
    if kernel.shape[1] % 4:
        raise ValueError(f"kernel must have 4 * hidden_size columns (gates i, j, f, o); got "
                         f"shape {kernel.shape}")
    hidden = kernel.shape[1] // 4
    check_shape("bias", bias.shape, (4 * hidden,))
    proj = variables.get("projection/kernel")
    if proj is not None:
        check_shape("projection/kernel", _matrix("projection/kernel", proj).shape,
                    (hidden, proj.shape[1]))
    out_size = hidden if proj is None else proj.shape[1]
    input_size = _input_size("kernel", kernel, out_size)
    diagonals = [f"w_{g}_diag" for g in "ifo"]
    peephole = any(name in variables for name in diagonals)
    if peephole:
        if not all(name in variables for name in diagonals):
            raise ValueError(f"variables must hold all the peepholes {diagonals} or none; got "
                             f"only {[name for name in diagonals if name in variables]}")
        for name in diagonals:
            check_shape(name, variables[name].shape, (hidden,))
    order = _lstm_column_order(hidden)
    params = {
        "w_ih": kernel[:input_size, order],
        "w_hh": kernel[input_size:, order],
        "b": bias[order],
    }
    if peephole:
        params["w_peep"] = np.stack([variables[f"w_{g}_diag"] for g in "ifo"])
    if proj is not None:
        params["w_proj"] = proj
    cell = lstm(
        input_size, hidden, proj_size=None if proj is None else out_size, peephole=peephole,
        cell_clip=cell_clip, proj_clip=proj_clip, forget_bias=forget_bias,
        activation=activation, param_dtype=dtype,
    )
    return cell, params


def _lstm_column_order(hidden: int) -> np.ndarray:
    """Column indices taking TF1's (i, j, f, o) gate blocks to rnnscan's (i, f, j, o)."""
    blocks = np.arange(4 * hidden).reshape(4, hidden)
    return blocks[[0, 2, 1, 3]].reshape(-1)


def _gru(variables, dtype, activation):
    gates_kernel = _matrix("gates/kernel", variables["gates/kernel"])
    candidate_kernel = _matrix("candidate/kernel", variables["candidate/kernel"])
    if gates_kernel.shape[1] % 2:
        raise ValueError(f"gates/kernel must have 2 * hidden_size columns (gates r, u); got "
                         f"shape {gates_kernel.shape}")
    hidden = gates_kernel.shape[1] // 2
    input_size = _input_size("gates/kernel", gates_kernel, hidden)
    check_shape("candidate/kernel", candidate_kernel.shape, (input_size + hidden, hidden))
    check_shape("gates/bias", variables["gates/bias"].shape, (2 * hidden,))
    check_shape("candidate/bias", variables["candidate/bias"].shape, (hidden,))
    params = {
        "w_ih": np.concatenate([gates_kernel[:input_size], candidate_kernel[:input_size]], axis=1),
        "w_hh": np.concatenate([gates_kernel[input_size:], candidate_kernel[input_size:]], axis=1),
        "b": np.concatenate([variables["gates/bias"], variables["candidate/bias"]]),
    }
    cell = gru(input_size, hidden, reset_after=False, activation=activation, param_dtype=dtype)
    return cell, params


def _matrix(name: str, kernel: np.ndarray) -> np.ndarray:
    if kernel.ndim != 2:
        raise ValueError(f"{name} must be a matrix; got shape {kernel.shape}")
    return kernel


def _input_size(name: str, kernel: np.ndarray, state_size: int) -> int:
    """The input size of a kernel over `[x, h]`, `(input_size + state_size, ...)`."""
    if kernel.shape[0] <= state_size:
        raise ValueError(f"{name} must have input_size + {state_size} rows (at least "
                         f"{state_size + 1}); got shape {kernel.shape}")
    return kernel.shape[0] - state_size
