"""Layer normalisation inside a cell (Ba, Kiros & Hinton 2016, "Layer Normalization"),
shared by `rs.lstm(layer_norm=True)` and `rs.gru(layer_norm=True)`.

The variant is the paper's LayerNorm-LSTM (its section 3.1 and the LSTM of its
supplementary material), as haste's `LayerNormLSTM` and `LayerNormGRU` implement
it: the input part `x @ w_ih` and the recurrent part `h @ w_hh` of the gate
pre-activations are normalised separately, each over all its gates at once
(`4H` or `3H` features) with its own gain and bias, and an LSTM's memory cell
is normalised before the output activation (the carried `c` is not). TF1's
`LayerNormBasicLSTMCell`, which normalises each gate's sum, is not this variant.

Statistics are over the features of one row, so the cells stay row-wise; they
are taken in at least float32 with `EPSILON` (haste's and torch's `LayerNorm`'s).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

EPSILON = 1e-5


def layer_norm(z: jax.Array, params, name: str) -> jax.Array:
    """`z` `(..., n)` normalised over its last axis, then scaled by
    `params["ln_<name>_gain"]` and shifted by `params["ln_<name>_bias"]` (`(n,)`)."""
    dtype = jnp.promote_types(z.dtype, jnp.float32)
    u = z.astype(dtype)
    mean = jnp.mean(u, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(u - mean), axis=-1, keepdims=True)
    u = (u - mean) * jax.lax.rsqrt(var + EPSILON)
    return (u * params[f"ln_{name}_gain"] + params[f"ln_{name}_bias"]).astype(z.dtype)


def init_layer_norm(dtype, **sizes: int) -> dict:
    """`{"ln_<name>_gain": ones((size,)), "ln_<name>_bias": zeros((size,))}` per `name=size`."""
    params = {}
    for name, size in sizes.items():
        params[f"ln_{name}_gain"] = jnp.ones((size,), dtype)
        params[f"ln_{name}_bias"] = jnp.zeros((size,), dtype)
    return params


def refusal(name: str, value) -> ValueError:
    """The error for an option `name=value` that has no layer-normalised variant."""
    return ValueError(
        f"layer_norm=True does not combine with {name}={value!r}: the published LayerNorm "
        f"cells (Ba et al. 2016; haste) have no such variant; pass layer_norm=False or "
        f"leave {name} at its default"
    )
