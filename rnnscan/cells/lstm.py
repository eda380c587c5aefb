"""Long short-term memory: torch/cuDNN and TF1 `LSTMCell` semantics, peepholes,
cell clipping, an output projection (LSTMP) and layer normalisation."""

from __future__ import annotations

from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from rnnscan import tree
from rnnscan.cell import Cell, same_for_same_arguments
from rnnscan.cells._common import (
    Precision,
    check_flags,
    check_initializers,
    check_sizes,
    default_kernel_init,
    default_recurrent_init,
    resolve_activation,
    resolve_gate_activation,
    split_keys,
)
from rnnscan.cells.layer_norm import init_layer_norm, layer_norm as normalize, refusal
from rnnscan.kernels import lstm as lstm_kernel
from rnnscan.validation import check_bool, check_features, check_number


class LSTMState(NamedTuple):
    """LSTM state. `h`: `(*batch, proj_size or hidden_size)`, the output (projected
    when the cell has a projection); `c`: `(*batch, hidden_size)`, the memory cell."""

    h: jax.Array
    c: jax.Array


@same_for_same_arguments
def lstm(
    input_size: int,
    hidden_size: int,
    *,
    proj_size: Optional[int] = None,
    peephole: bool = False,
    cell_clip: Optional[float] = None,
    proj_clip: Optional[float] = None,
    forget_bias: float = 1.0,
    activation="tanh",
    gate_activation: str = "sigmoid",
    use_bias: bool = True,
    param_dtype=jnp.float32,
    compute_dtype=None,
    kernel_init=None,
    recurrent_init=None,
    layer_norm: bool = False,
) -> Cell:
    """An LSTM cell with gates in torch's order (input, forget, cell, output).

    Per step, with `g = x @ w_ih + h @ w_hh + b` split into `i, f, j, o`:

        c' = σ(f + forget_bias [+ w_peep[1] * c]) * c + σ(i [+ w_peep[0] * c]) * act(j)
        c' = clip(c', -cell_clip, cell_clip)                    if cell_clip
        h' = σ(o [+ w_peep[2] * c']) * act(c')  [@ w_proj, clipped to proj_clip]

    which is TF1's `LSTMCell` (`use_peepholes`, `cell_clip`, `num_proj`,
    `proj_clip`, `forget_bias`) and, with `forget_bias=0`, torch's `nn.LSTM`
    (`proj_size`). With `layer_norm`, the LayerNorm-LSTM of Ba et al. (2016;
    haste's `LayerNormLSTM`; `rnnscan.cells.layer_norm`), `LN_k(v)` being `v`
    normalised over its features, times the gain `ln_k_gain`, plus `ln_k_bias`:

        g  = LN_ih(x @ w_ih) + LN_hh(h @ w_hh) + b
        h' = σ(o) * act(LN_c(c'))  [@ w_proj, clipped]    (c' as above, not normalised)

    Args:
      input_size: features of `x`, `(*batch, input_size)`.
      hidden_size: size of the memory cell `c`.
      proj_size: if set, `h` is projected to this size (LSTMP).
      peephole: diagonal peephole connections from `c` to the gates.
      cell_clip, proj_clip: clip `c` / the projected `h` to `[-clip, clip]` (0
        included, as in TF1: all zeros).
      forget_bias: constant added to the forget gate's pre-activation. The default
        1.0 is TF1's and Keras's; torch's `nn.LSTM` and flax's `LSTMCell` have
        none, so a cell given their weights needs `forget_bias=0.0`
        (`rs.interop.from_torch` sets it).
      activation: name or function for the cell input and output (default tanh).
      gate_activation: name of σ, the gates' activation: `"sigmoid"` (default),
        `"hard_sigmoid"` (`relu6(x + 3) / 6`, Keras 3's), or another activation
        name; a name, not a function. Only sigmoid gates run on the native kernel.
      use_bias: whether the cell has the bias `b`.
      param_dtype: dtype of the params and the carried state.
      compute_dtype: dtype of the matmul operands (e.g. `jnp.bfloat16`); the
        products accumulate in `param_dtype`. Default: `param_dtype`.
      kernel_init, recurrent_init: `jax.nn.initializers` for `w_ih` (default
        Glorot uniform) and `w_hh` (default orthogonal).
      layer_norm: the LayerNorm-LSTM (above). Combines with every option but
        `peephole`; it runs on the scan (no compiled kernel).

    Returns:
      A `Cell` with state `LSTMState(h, c)`, output `h`, and params
      `{"w_ih": (input_size, 4H), "w_hh": (P, 4H), "b": (4H,), "w_peep": (3, H),
      "w_proj": (H, P)}` (`P = proj_size or H`; the last two only when used),
      with `layer_norm` also `ln_ih_gain`, `ln_ih_bias`, `ln_hh_gain`,
      `ln_hh_bias` `(4H,)` and `ln_c_gain`, `ln_c_bias` `(H,)` (gains 1, biases 0).
    """
    check_sizes(input_size=input_size, hidden_size=hidden_size)
    if proj_size is not None:
        check_sizes(proj_size=proj_size)
    check_flags(peephole=peephole, use_bias=use_bias)
    # 0 is a clip too (to [0, 0]), as in TF1, whose testCellClipping expects zeros.
    check_number("cell_clip", cell_clip, non_negative=True, optional=True)
    check_number("proj_clip", proj_clip, non_negative=True, optional=True)
    if proj_clip is not None and proj_size is None:
        raise ValueError(f"proj_clip clips the projection: it needs proj_size; got "
                         f"proj_clip={proj_clip!r} and proj_size=None")
    check_number("forget_bias", forget_bias)
    check_initializers(kernel_init=kernel_init, recurrent_init=recurrent_init)
    if check_bool("layer_norm", layer_norm) and peephole:
        raise refusal("peephole", peephole)
    act = resolve_activation(activation)
    gate = resolve_gate_activation(gate_activation)
    prec = Precision(param_dtype, compute_dtype)
    kernel_init = kernel_init or default_kernel_init()
    recurrent_init = recurrent_init or default_recurrent_init()
    H = hidden_size
    out_size = proj_size or hidden_size

    def init(key):
        k_ih, k_hh, k_peep, k_proj = split_keys(key, 4)
        params = {
            "w_ih": prec.initialize(kernel_init, k_ih, (input_size, 4 * H)),
            "w_hh": prec.initialize(recurrent_init, k_hh, (out_size, 4 * H)),
        }
        if use_bias:
            params["b"] = prec.zeros((4 * H,))
        if peephole:
            params["w_peep"] = jax.random.uniform(k_peep, (3, H), prec.param_dtype, -0.1, 0.1)
        if proj_size:
            params["w_proj"] = prec.initialize(kernel_init, k_proj, (H, proj_size))
        if layer_norm:
            params.update(init_layer_norm(prec.param_dtype, ih=4 * H, hh=4 * H, c=H))
        return params

    def initial_state(params, batch_shape=()):
        del params
        batch_shape = tuple(batch_shape)
        return LSTMState(prec.zeros(batch_shape + (out_size,)), prec.zeros(batch_shape + (H,)))

    # The biases (and the forget bias) are added inside the step, where they fuse
    # into the gate math, rather than in a separate pass over the projected inputs.
    forget_offset = np.zeros((4 * H,))
    forget_offset[H : 2 * H] = forget_bias
    # The fused update, and so the kernel (kernel_fits), compute sigmoid gates only.
    plain = (act is jnp.tanh and gate_activation == "sigmoid" and not peephole
             and cell_clip is None and not layer_norm)
    fused_update = _fused_update(prec) if plain else None

    def project_inputs(params, x):
        check_features(x, input_size)
        xp = prec.matmul(x, params["w_ih"])
        return normalize(xp, params, "ih") if layer_norm else xp

    def recurrent_step(params, state, xp):
        h, c = state
        if use_bias:
            xp = xp + params["b"]
        if forget_bias:
            xp = xp + forget_offset.astype(xp.dtype)
        if fused_update is not None:
            h, c = fused_update(params["w_hh"], h, c, xp)
        else:
            hp = prec.matmul(h, params["w_hh"])
            i, f, j, o = jnp.split(xp + (normalize(hp, params, "hh") if layer_norm else hp), 4,
                                   axis=-1)
            if peephole:
                w_i, w_f, w_o = params["w_peep"]
                i = i + w_i * c
                f = f + w_f * c
            c = gate(f) * c + gate(i) * act(j)
            if cell_clip is not None:
                c = jnp.clip(c, -cell_clip, cell_clip)
            if peephole:
                o = o + w_o * c
            h = gate(o) * act(normalize(c, params, "c") if layer_norm else c)
        if proj_size:
            h = prec.matmul(h, params["w_proj"])
            if proj_clip is not None:
                h = jnp.clip(h, -proj_clip, proj_clip)
        return LSTMState(h, c), h

    # The kernel runs the plain float32 LSTM only.
    kernel_fits = plain and not proj_size and prec.param_dtype == jnp.float32 and (
        prec.compute_dtype in (None, prec.param_dtype))
    # Normalised, h @ w_hh is no longer a term added to xp: no hoisted gradient.
    return Cell.split(init, initial_state, project_inputs, recurrent_step,
                      recurrent_kernel=None if layer_norm else "w_hh", rowwise=True,
                      state_dropout=(True, False),
                      kernel=lstm_kernel.sequence_kernel(forget_bias, use_bias) if kernel_fits
                      else None)


def _fused_update(prec: Precision):
    """The plain LSTM update `(w_hh, h, c, xp) -> (h', c')` (tanh, no peepholes, no
    clipping; `xp` holds the projected input and the biases), tuned for XLA.

    Forward: the four gate activations are one elementwise op over the whole
    `(batch, 4H)` block, `tanh(k z) k + 1 - k` with `k = 1/2` on `i, f, o` (so
    `σ(z)`) and `k = 1` on `j` (`tanh(z)`). Split per gate, XLA:CPU fuses each
    activation with the step's read of `xp` into the loops that update `c` and `h`
    in place, and those loops do not vectorize.

    Reverse mode transposes the custom JVP below, written for that: the backward
    step reads three saved arrays (`q`, `(batch, 4H)`; `f` and `o (1 - tanh²c')`,
    `(batch, H)`) besides `h`, once each, and its recurrent product is the plain
    `dz @ w_hh.T` (the transpose is taken once, outside the loop).
    """

    def gates(z):
        k = _gate_scale(z)
        return jnp.tanh(z * k) * k + (1 - k)

    def forward(w_hh, h, c, xp):
        z = xp + prec.matmul(h, w_hh)
        a = gates(z)
        i, f, j, o = jnp.split(a, 4, axis=-1)
        c = f * c + i * j
        return z, a, c, jnp.tanh(c)

    @jax.custom_jvp
    def update(w_hh, h, c, xp):
        _, a, c, tc = forward(w_hh, h, c, xp)
        return jnp.split(a, 4, axis=-1)[3] * tc, c

    def update_jvp(primals, tangents):
        w_hh, h, c, xp = primals
        dw, dh, dc, dxp = tangents
        z, a, c_new, tc = forward(*primals)
        i, f, j, o = jnp.split(a, 4, axis=-1)
        # d(tanh(k z) k + 1 - k)/dz = k² - (a - 1 + k)²: σ' on i, f, o and tanh' on j;
        # q also holds the factor each gate's change is multiplied by in dc' or dh'.
        k = _gate_scale(z)
        q = (k * k - jnp.square(a - 1 + k)) * jnp.concatenate([j, c, i, tc], axis=-1)
        dz = jnp.zeros_like(z) if tree.is_symbolic_zero(dxp) else dxp
        if not tree.is_symbolic_zero(dh):
            dz = dz + prec.matmul_transposed(dh, w_hh.T)
        if not tree.is_symbolic_zero(dw):
            dz = dz + prec.matmul(h, dw)
        u_i, u_f, u_j, u_o = jnp.split(dz * q, 4, axis=-1)
        dc_new = u_i + u_f + u_j
        if not tree.is_symbolic_zero(dc):
            dc_new = dc_new + f * dc
        dh_new = u_o + o * (1 - tc * tc) * dc_new
        return (o * tc, c_new), (dh_new, dc_new)

    update.defjvp(update_jvp, symbolic_zeros=True)
    return update


def _gate_scale(z: jax.Array) -> jax.Array:
    """`k` of `_fused_update`: 1/2 on the i, f, o quarters of the last axis, 1 on j."""
    H = z.shape[-1] // 4
    return jnp.concatenate([jnp.full(2 * H, 0.5), jnp.ones(H), jnp.full(H, 0.5)]).astype(z.dtype)
