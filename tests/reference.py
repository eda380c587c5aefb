"""Independent references for the tests: the cells' published equations in numpy,
and a plain Python loop over time with the semantics of DESIGN.md.

Nothing here imports rnnscan: these are what rnnscan is compared against.
"""

from __future__ import annotations

import json
import pathlib

import numpy as np


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


ACT = {"tanh": np.tanh, "relu": lambda x: np.maximum(x, 0.0), "sigmoid": sigmoid,
       # Keras 3's hard_sigmoid: 0 below -3, 1 above 3, x / 6 + 1/2 between.
       "hard_sigmoid": lambda x: np.clip(x / 6.0 + 0.5, 0.0, 1.0),
       "linear": lambda x: x}


def lstm_step(p, state, x, *, forget_bias=1.0, cell_clip=None, proj_clip=None, act="tanh",
              gate="sigmoid"):
    """One LSTM step on numpy arrays, gate by gate (rnnscan's i, f, g, o columns)."""
    h, c = state
    f_act, sigmoid = ACT[act], ACT[gate]
    H = p["w_ih"].shape[1] // 4
    z = x @ p["w_ih"] + h @ p["w_hh"] + p.get("b", 0.0)
    zi, zf, zg, zo = (z[..., k * H : (k + 1) * H] for k in range(4))
    if "w_peep" in p:
        zi = zi + p["w_peep"][0] * c
        zf = zf + p["w_peep"][1] * c
    c_new = sigmoid(zf + forget_bias) * c + sigmoid(zi) * f_act(zg)
    if cell_clip is not None:
        c_new = np.clip(c_new, -cell_clip, cell_clip)
    if "w_peep" in p:
        zo = zo + p["w_peep"][2] * c_new
    h_new = sigmoid(zo) * f_act(c_new)
    if "w_proj" in p:
        h_new = h_new @ p["w_proj"]
        if proj_clip is not None:
            h_new = np.clip(h_new, -proj_clip, proj_clip)
    return (h_new, c_new), h_new


def gru_step(p, h, x, *, reset_after=True, act="tanh", gate="sigmoid"):
    """One GRU step: torch's `nn.GRU` (reset_after) or TF1's `GRUCell` equations."""
    sigmoid = ACT[gate]
    H = p["w_hh"].shape[0]
    gx = x @ p["w_ih"] + p.get("b", 0.0)
    w_r, w_z, w_n = (p["w_hh"][:, k * H : (k + 1) * H] for k in range(3))
    r = sigmoid(gx[..., :H] + h @ w_r)
    z = sigmoid(gx[..., H : 2 * H] + h @ w_z)
    if reset_after:
        n = ACT[act](gx[..., 2 * H :] + r * (h @ w_n + p.get("b_hn", 0.0)))
    else:
        n = ACT[act](gx[..., 2 * H :] + (r * h) @ w_n)
    h_new = (1.0 - z) * n + z * h
    return h_new, h_new


def layer_norm(v, gain, bias, eps=1e-5):
    """Ba et al. 2016, eq. (4): `v` normalised over its last axis, then `gain * . + bias`."""
    mean = v.mean(-1, keepdims=True)
    std = np.sqrt(((v - mean) ** 2).mean(-1, keepdims=True) + eps)
    return (v - mean) / std * gain + bias


def layer_norm_lstm_step(p, state, x, *, forget_bias=1.0, cell_clip=None, proj_clip=None,
                         act="tanh"):
    """The LayerNorm-LSTM of Ba et al. 2016 (supplementary material; haste's
    LayerNormLSTM): separately normalised input and recurrent pre-activations, and
    the cell normalised before the output tanh; gates in rnnscan's i, f, g, o order."""
    h, c = state
    ln = lambda v, k: layer_norm(v, p[f"ln_{k}_gain"], p[f"ln_{k}_bias"])
    z = ln(x @ p["w_ih"], "ih") + ln(h @ p["w_hh"], "hh") + p.get("b", 0.0)
    zi, zf, zg, zo = np.split(z, 4, axis=-1)
    c_new = sigmoid(zf + forget_bias) * c + sigmoid(zi) * ACT[act](zg)
    if cell_clip is not None:
        c_new = np.clip(c_new, -cell_clip, cell_clip)
    h_new = sigmoid(zo) * ACT[act](ln(c_new, "c"))
    if "w_proj" in p:
        h_new = h_new @ p["w_proj"]
        if proj_clip is not None:
            h_new = np.clip(h_new, -proj_clip, proj_clip)
    return (h_new, c_new), h_new


def layer_norm_gru_step(p, h, x, *, act="tanh"):
    """haste's LayerNormGRU: torch's GRU equations with `x @ w_ih` and `h @ w_hh`
    each layer-normalised (Ba et al. 2016) before the biases are added."""
    ln = lambda v, k: layer_norm(v, p[f"ln_{k}_gain"], p[f"ln_{k}_bias"])
    x_r, x_z, x_n = np.split(ln(x @ p["w_ih"], "ih") + p.get("b", 0.0), 3, axis=-1)
    h_r, h_z, h_n = np.split(ln(h @ p["w_hh"], "hh"), 3, axis=-1)
    r = sigmoid(x_r + h_r)
    z = sigmoid(x_z + h_z)
    n = ACT[act](x_n + r * (h_n + p.get("b_hn", 0.0)))
    h_new = (1.0 - z) * n + z * h
    return h_new, h_new


def rnn_step(p, h, x, *, act="tanh"):
    h_new = ACT[act](x @ p["w_ih"] + h @ p["w_hh"] + p.get("b", 0.0))
    return h_new, h_new


def loop_unroll(step, xs, h0, *, lengths=None, resets=None, mask=None, reverse=False,
                reset_state=None):
    """A plain Python loop over rows and time, batch-major `xs` `(B, T, F)`.

    Each row is read from step 0 to `lengths[b] - 1` (from `lengths[b] - 1` down
    to 0 with `reverse`); outputs elsewhere are zero and the state is untouched.
    `resets[b, t]` puts the row's state to `reset_state` (default zeros shaped
    like `h0`) before step t.
    Where `mask[b, t]` is false, step t is skipped: not read, output zero, the
    state (and any reset on it) untouched.
    `step(h, x) -> (h, y)` works on one row; `h0` is a tuple of per-row-batched
    arrays (a pytree of `(B, size)` given as a tuple or a single array).
    Returns `(ys (B, T, out), final_state, states (B, T, ...))`.
    """
    xs = np.asarray(xs)
    B, T = xs.shape[:2]
    single = not isinstance(h0, tuple)
    h0 = (h0,) if single else h0
    if reset_state is None:
        reset_state = tuple(np.zeros_like(np.asarray(a)) for a in h0)
    reset_state = (reset_state,) if single and not isinstance(reset_state, tuple) else tuple(reset_state)
    ys, finals, all_states = [], [], []
    for b in range(B):
        n = T if lengths is None else int(lengths[b])
        order = range(n - 1, -1, -1) if reverse else range(n)
        init = tuple(np.asarray(a[b]) for a in h0)
        fresh = tuple(np.asarray(a[b]) for a in reset_state)
        h = init
        row_y = [None] * T
        row_states = [None] * T
        for t in order:
            if mask is not None and not mask[b][t]:
                continue
            if resets is not None and resets[b][t]:
                h = fresh
            h_out, y = step(h[0] if single else h, xs[b, t])
            h = (h_out,) if single else tuple(h_out)
            row_y[t] = np.asarray(y)
            row_states[t] = h
        # Steps never read (past the length, masked out) output zero and hold the state of
        # the nearest step read before them in scan order.
        scan_order = range(T - 1, -1, -1) if reverse else range(T)
        carried = init
        for t in scan_order:
            if row_states[t] is None:
                row_states[t] = carried
            carried = row_states[t]
        ys.append(row_y)
        finals.append(h)
        all_states.append(row_states)
    out_shape = next(y.shape for row in ys for y in row if y is not None)
    ys = np.array([[np.zeros(out_shape) if y is None else y for y in row] for row in ys])
    final = tuple(np.stack([f[k] for f in finals]) for k in range(len(h0)))
    states = tuple(
        np.stack([np.stack([s[k] for s in row]) for row in all_states]) for k in range(len(h0))
    )
    return ys, (final[0] if single else final), (states[0] if single else states)


GOLDEN_DIR = pathlib.Path(__file__).parent / "golden"


def golden(name: str):
    """Loads `tests/golden/<name>.npz`: `(meta dict, {key: array})` (see its README)."""
    with np.load(GOLDEN_DIR / f"{name}.npz") as data:
        arrays = {k: data[k] for k in data.files if k != "meta_json"}
        return json.loads(str(data["meta_json"])), arrays


def prefixed(arrays, prefix: str):
    """The arrays under `prefix` (e.g. `"param/"`), with the prefix removed."""
    return {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}
