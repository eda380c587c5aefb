"""Gated recurrent unit: torch/cuDNN/Keras (`reset_after=True`) and TF1 `GRUCell`
(`reset_after=False`) variants, and haste's `LayerNormGRU`."""

from __future__ import annotations

import jax
import jax.numpy as jnp

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
from rnnscan.kernels import gru as gru_kernel
from rnnscan.validation import check_bool, check_features


@same_for_same_arguments
def gru(
    input_size: int,
    hidden_size: int,
    *,
    reset_after: bool = True,
    activation="tanh",
    gate_activation: str = "sigmoid",
    use_bias: bool = True,
    param_dtype=jnp.float32,
    compute_dtype=None,
    kernel_init=None,
    recurrent_init=None,
    layer_norm: bool = False,
) -> Cell:
    """A GRU cell with gates in torch's order (reset, update, new).

    With `x @ w_ih + b` split into `x_r, x_z, x_n` and `w_hh` into `w_r, w_z, w_n`:

        r = σ(x_r + h @ w_r),  z = σ(x_z + h @ w_z)
        n = act(x_n + r * (h @ w_n + b_hn))     reset_after=True  (torch, cuDNN, Keras)
        n = act(x_n + (r * h) @ w_n)            reset_after=False (TF1 GRUCell)
        h' = (1 - z) * n + z * h

    With `layer_norm` (haste's `LayerNormGRU`, after Ba et al. 2016;
    `rnnscan.cells.layer_norm`), `x @ w_ih` and `h @ w_hh` are each normalised
    over their `3H` features, times a gain plus a bias, before they are split
    and the biases `b` and `b_hn` added: `LN_ih(x @ w_ih) + b` and
    `LN_hh(h @ w_hh)` in place of `x @ w_ih + b` and `h @ w_hh` above.

    Args:
      input_size: features of `x`, `(*batch, input_size)`.
      hidden_size: size of the state `h`.
      reset_after: where the reset gate applies (see above).
      activation: name or function for the candidate (default tanh).
      gate_activation: name of σ, the gates' activation (as in `rnnscan.lstm`;
        Keras's `recurrent_activation`, flax's `gate_fn`).
      use_bias: whether the cell has biases `b` (and `b_hn`).
      param_dtype, compute_dtype, kernel_init, recurrent_init: as in `rnnscan.lstm`.
      layer_norm: the LayerNorm-GRU (above); needs `reset_after=True`.

    Returns:
      A `Cell` with state `h` `(*batch, hidden_size)`, output `h`, and params
      `{"w_ih": (input_size, 3H), "w_hh": (H, 3H), "b": (3H,), "b_hn": (H,)}`
      (`b_hn`, the recurrent bias inside the reset, only with `reset_after`),
      with `layer_norm` also `ln_ih_gain`, `ln_ih_bias`, `ln_hh_gain`,
      `ln_hh_bias` `(3H,)` (gains 1, biases 0).
    """
    check_sizes(input_size=input_size, hidden_size=hidden_size)
    check_flags(reset_after=reset_after, use_bias=use_bias)
    check_initializers(kernel_init=kernel_init, recurrent_init=recurrent_init)
    if check_bool("layer_norm", layer_norm) and not reset_after:
        # The reset gate would apply inside the normalised product (r * h) @ w_n.
        raise refusal("reset_after", reset_after)
    act = resolve_activation(activation)
    gate = resolve_gate_activation(gate_activation)
    prec = Precision(param_dtype, compute_dtype)
    kernel_init = kernel_init or default_kernel_init()
    recurrent_init = recurrent_init or default_recurrent_init()
    H = hidden_size

    def init(key):
        k_ih, k_hh = split_keys(key, 2)
        params = {
            "w_ih": prec.initialize(kernel_init, k_ih, (input_size, 3 * H)),
            "w_hh": prec.initialize(recurrent_init, k_hh, (H, 3 * H)),
        }
        if use_bias:
            params["b"] = prec.zeros((3 * H,))
            if reset_after:
                params["b_hn"] = prec.zeros((H,))
        if layer_norm:
            params.update(init_layer_norm(prec.param_dtype, ih=3 * H, hh=3 * H))
        return params

    def initial_state(params, batch_shape=()):
        del params
        return prec.zeros(tuple(batch_shape) + (H,))

    # The fused update, and so the kernel (kernel_fits), compute sigmoid gates only.
    fused = reset_after and act is jnp.tanh and gate_activation == "sigmoid" and not layer_norm
    fused_update = _fused_update(prec) if fused else None

    def project_inputs(params, x):
        # One array per gate: a step then reads each at a single offset, which
        # XLA:CPU needs to vectorize the loop that reads it (see lstm's
        # `_fused_update`). The bias is added as the product is split, in one pass.
        check_features(x, input_size)
        xp = prec.matmul(x, params["w_ih"])
        if layer_norm:
            xp = normalize(xp, params, "ih")
        if use_bias:
            xp = xp + params["b"]
        return tuple(jnp.split(xp, 3, axis=-1))

    def recurrent_step(params, h, xp):
        x_r, x_z, x_n = xp
        w_hh = params["w_hh"]
        b_hn = params["b_hn"] if use_bias and reset_after else jnp.zeros((H,), prec.param_dtype)
        if fused_update is not None:
            h = fused_update(w_hh, b_hn, h, x_r, x_z, x_n)
            return h, h
        if reset_after:
            hp = prec.matmul(h, w_hh)
            h_r, h_z, h_n = jnp.split(normalize(hp, params, "hh") if layer_norm else hp, 3,
                                      axis=-1)
            r = gate(x_r + h_r)
            z = gate(x_z + h_z)
            n = act(x_n + r * (h_n + b_hn))
        else:
            h_r, h_z = jnp.split(prec.matmul(h, w_hh[:, : 2 * H]), 2, axis=-1)
            r = gate(x_r + h_r)
            z = gate(x_z + h_z)
            n = act(x_n + prec.matmul(r * h, w_hh[:, 2 * H :]))
        h = n + z * (h - n)
        return h, h

    # The kernel runs the plain float32 reset_after GRU only.
    kernel_fits = fused and prec.param_dtype == jnp.float32 and (
        prec.compute_dtype in (None, prec.param_dtype))
    return Cell.split(init, initial_state, project_inputs, recurrent_step, rowwise=True,
                      kernel=gru_kernel.sequence_kernel(use_bias) if kernel_fits else None)


def _fused_update(prec: Precision):
    """The torch/cuDNN GRU update `(w_hh, b_hn, h, x_r, x_z, x_n) -> h'` (tanh, reset
    after the recurrent product; `x_*` hold the projected input and its biases).

    Reverse mode transposes the custom JVP, written so that the backward step
    reads three saved arrays besides `h` (`q`, `(batch, 3H)`; `r` and `z`), once
    each, and its recurrent product is the plain `du @ w_hh.T` (as in lstm's
    `_fused_update`).
    """

    def forward(w_hh, b_hn, h, x_r, x_z, x_n):
        h_r, h_z, h_n = jnp.split(prec.matmul(h, w_hh), 3, axis=-1)
        r = jax.nn.sigmoid(x_r + h_r)
        z = jax.nn.sigmoid(x_z + h_z)
        h_n = h_n + b_hn
        n = jnp.tanh(x_n + r * h_n)
        return r, z, h_n, n, n + z * (h - n)

    @jax.custom_jvp
    def update(w_hh, b_hn, h, x_r, x_z, x_n):
        return forward(w_hh, b_hn, h, x_r, x_z, x_n)[-1]

    def update_jvp(primals, tangents):
        w_hh, b_hn, h, x_r, x_z, x_n = primals
        dw, db_hn, dh, dx_r, dx_z, dx_n = tangents
        r, z, h_n, n, h_new = forward(*primals)
        # With u the changes of r's and z's pre-activations and of x_n + r h_n at
        # fixed r, dh' = (sum of the three blocks of u q) + z dh.
        s_n = (1 - z) * (1 - n * n)
        q = jnp.concatenate([s_n * h_n * r * (1 - r), (h - n) * z * (1 - z), s_n], axis=-1)
        dhh = jnp.zeros(h_new.shape[:-1] + (3 * h_new.shape[-1],), h_new.dtype)
        if not tree.is_symbolic_zero(dh):
            dhh = dhh + prec.matmul_transposed(dh, w_hh.T)
        if not tree.is_symbolic_zero(dw):
            dhh = dhh + prec.matmul(h, dw)
        dh_r, dh_z, dh_n = jnp.split(dhh, 3, axis=-1)
        if not tree.is_symbolic_zero(db_hn):
            dh_n = dh_n + db_hn
        u = [dh_r, dh_z, r * dh_n]
        for i, dx in enumerate((dx_r, dx_z, dx_n)):
            if not tree.is_symbolic_zero(dx):
                u[i] = u[i] + dx
        u_r, u_z, u_n = jnp.split(jnp.concatenate(u, axis=-1) * q, 3, axis=-1)
        dh_new = u_r + u_z + u_n
        if not tree.is_symbolic_zero(dh):
            dh_new = dh_new + z * dh
        return h_new, dh_new

    update.defjvp(update_jvp, symbolic_zeros=True)
    return update
