"""Weight import from the JAX frameworks' own cells: haiku's `hk.LSTM`/`hk.GRU`,
flax linen's `LSTMCell`/`OptimizedLSTMCell`/`GRUCell` and equinox's
`eqx.nn.LSTMCell`/`GRUCell`, each as `(cell, params)` computing what it computes.

(`rnnscan.flax` and `rnnscan.equinox` go the other way: an rnnscan model as a
module of those frameworks.)
"""

from __future__ import annotations

from typing import Mapping

import jax
import numpy as np

from rnnscan.cells import gru, lstm
from rnnscan.validation import check_shape

_FLAX_LSTM = {"ii", "if", "ig", "io", "hi", "hf", "hg", "ho"}
_FLAX_GRU = {"ir", "iz", "in", "hr", "hz", "hn"}


def from_haiku(params: Mapping):
    """haiku's core params as an rnnscan cell and its params: `(cell, params)`.

    Args:
      params: `hk.LSTM`'s Linear over `[x, h]`, `{"w": (F + H, 4H), "b": (4H,)}`
        (`hk_params["lstm/linear"]`), gates i, g, f, o; or `hk.GRU`'s
        `{"w_i": (F, 3H), "w_h": (H, 3H), "b": (3H,)}` (`hk_params["gru"]`), gates z, r, a.

    Returns:
      `(cell, params)`. The LSTM keeps haiku's forget bias of 1 (`forget_bias=1.0`).
      haiku's GRU is `h' = (1 - z) h + z a` with the reset before the recurrent
      product, where `rs.gru(reset_after=False)` has `h' = (1 - z) n + z h`: the
      update gate is negated on import (its weights and bias; `σ(-v) = 1 - σ(v)`).
    """
    keys = set(params) if isinstance(params, Mapping) else None
    if keys == {"w", "b"}:
        w, b = np.asarray(params["w"]), np.asarray(params["b"])
        H = _gate_width("params['w']", w.shape, 4)
        F = w.shape[0] - H
        check_shape("params['b']", b.shape, (4 * H,))
        order = np.arange(4 * H).reshape(4, H)[[0, 2, 1, 3]].reshape(-1)  # i, g, f, o -> i, f, g, o
        cell = lstm(F, H, forget_bias=1.0, **dtype_option(w.dtype))
        return cell, {"w_ih": w[:F, order], "w_hh": w[F:, order], "b": b[order]}
    if keys == {"w_i", "w_h", "b"}:
        w_i, w_h, b = (np.asarray(params[k]) for k in ("w_i", "w_h", "b"))
        H = _gate_width("params['w_h']", w_h.shape, 3)
        check_shape("params['w_h']", w_h.shape, (H, 3 * H))
        check_shape("params['b']", b.shape, (3 * H,))
        # z, r, a -> r, z, n with z negated (haiku's z is rnnscan's 1 - z).
        order = np.concatenate([np.arange(H, 2 * H), np.arange(H), np.arange(2 * H, 3 * H)])
        sign = np.concatenate([np.ones(H), -np.ones(H), np.ones(H)]).astype(w_i.dtype)
        cell = gru(w_i.shape[0], H, reset_after=False, **dtype_option(w_i.dtype))
        return cell, {"w_ih": w_i[:, order] * sign, "w_hh": w_h[:, order] * sign,
                      "b": b[order] * sign}
    raise ValueError(f"params must be hk.LSTM's linear {{'w', 'b'}} or hk.GRU's {{'w_i', 'w_h', "
                     f"'b'}}; got {sorted(keys) if keys is not None else type(params).__name__}")


def from_flax(params: Mapping, *, gate_activation: str = "sigmoid", activation: str = "tanh"):
    """flax linen cell params as an rnnscan cell and its params: `(cell, params)`.

    Args:
      params: the params of an `nn.LSTMCell` or `nn.OptimizedLSTMCell` (`ii`, `if`,
        `ig`, `io` without bias, `hi`, ... with), or of an `nn.GRUCell` (`ir`,
        `iz`, `in` with bias, `hr`, `hz` without, `hn` with); e.g.
        `variables["params"]["cell"]` of an `nn.RNN`.
      gate_activation, activation: the names of the cell's `gate_fn` and
        `activation_fn` (flax's defaults: sigmoid, tanh).

    Returns:
      `(cell, params)`: `rs.lstm(..., forget_bias=0.0)` (flax has none) or
      `rs.gru(...)` (flax's GRU is torch's).
    """
    keys = set(params) if isinstance(params, Mapping) else None
    kernel = lambda k: np.asarray(params[k]["kernel"])
    leaves = jax.tree_util.tree_leaves(params) if keys else []
    dtype = np.asarray(leaves[0]).dtype if leaves else np.float32
    options = dict(gate_activation=gate_activation, activation=activation, **dtype_option(dtype))
    if keys == _FLAX_LSTM:
        cat = lambda side, part: np.concatenate(
            [np.asarray(params[side + g][part]) for g in "ifgo"], axis=-1)
        w_ih = cat("i", "kernel")
        cell = lstm(w_ih.shape[0], w_ih.shape[1] // 4, forget_bias=0.0, **options)
        return cell, {"w_ih": w_ih, "w_hh": cat("h", "kernel"), "b": cat("h", "bias")}
    if keys == _FLAX_GRU:
        w_ih = np.concatenate([kernel("i" + g) for g in "rzn"], axis=-1)
        b = np.concatenate([np.asarray(params["i" + g]["bias"]) for g in "rzn"])
        cell = gru(w_ih.shape[0], w_ih.shape[1] // 3, **options)
        return cell, {"w_ih": w_ih, "w_hh": np.concatenate([kernel("h" + g) for g in "rzn"], -1),
                      "b": b, "b_hn": np.asarray(params["hn"]["bias"])}
    raise ValueError(f"params must be a flax LSTMCell's {sorted(_FLAX_LSTM)} or GRUCell's "
                     f"{sorted(_FLAX_GRU)}; got "
                     f"{sorted(keys) if keys is not None else type(params).__name__}")


def from_equinox(module):
    """An `eqx.nn.LSTMCell` or `eqx.nn.GRUCell` as an rnnscan cell and its params.

    equinox's cells compute torch's equations with torch's layout (`weight_ih`
    `(gates, in)`; the GRU's `bias_n` is `b_hn`): `rs.lstm(..., forget_bias=0.0)`
    and `rs.gru(...)`. An LSTM's state `(h, c)` is `rs.LSTMState(h, c)`.
    """
    kind = type(module).__name__
    if kind not in ("LSTMCell", "GRUCell") or not hasattr(module, "weight_ih"):
        raise TypeError(f"module must be an eqx.nn.LSTMCell or eqx.nn.GRUCell; got {kind}")
    w_ih, w_hh = np.asarray(module.weight_ih).T, np.asarray(module.weight_hh).T
    options = dict(use_bias=bool(module.use_bias), **dtype_option(w_ih.dtype))
    params = {"w_ih": w_ih, "w_hh": w_hh}
    if module.use_bias:
        params["b"] = np.asarray(module.bias)
    if kind == "LSTMCell":
        return lstm(module.input_size, module.hidden_size, forget_bias=0.0, **options), params
    if module.use_bias:
        params["b_hn"] = np.asarray(module.bias_n)
    return gru(module.input_size, module.hidden_size, **options), params


def dtype_option(dtype) -> dict:
    """`param_dtype=dtype` for a cell constructor, left out for float32 (the default) so
    that an imported cell is the one `rs.lstm(F, H)` builds (`same_for_same_arguments`
    tells `jnp.float32` and `np.dtype("float32")` apart)."""
    return {} if np.dtype(dtype) == np.float32 else {"param_dtype": dtype}


def _gate_width(name: str, shape, gates: int) -> int:
    if len(shape) != 2 or shape[1] % gates:
        raise ValueError(f"{name} must be 2-D with {gates} gates' columns ({gates} * hidden); "
                         f"got shape {tuple(shape)}")
    return shape[1] // gates
