"""`TrainState`: everything a training run carries from one step to the next."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from rnnscan.validation import check_key


class TrainState(NamedTuple):
    """A pytree, so it goes through `jax.jit`, `jax.device_put` and orbax as is.

    Attributes:
      params: the model's params pytree.
      opt_state: the optax optimizer's state for `params`.
      step: int32 scalar, the number of updates applied so far. It is also the
        data position: batch `s` of a run is a pure function of `(seed, s)`, so
        a restored `step` continues the same stream of batches.
      key: the PRNG key (a raw `uint32[2]` key) that the next step splits.
    """

    params: Any
    opt_state: Any
    step: jax.Array
    key: jax.Array


def init_state(params, optimizer: optax.GradientTransformation, key: jax.Array) -> TrainState:
    """The state before the first step: `optimizer.init(params)`, step 0.

    `key` may be a raw key (`jax.random.PRNGKey`) or a typed one
    (`jax.random.key`); it is stored raw, which every checkpoint format holds.
    """
    check_optimizer(optimizer)
    check_key("key", key)
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.key_data(key)
    if not (isinstance(key, jax.Array) and key.dtype == jnp.uint32 and key.ndim == 1):
        raise TypeError(
            "init_state: key must be one PRNG key, jax.random.key(seed) or jax.random.PRNGKey(seed); got "
            + (f"an array of {key.dtype}{list(key.shape)}" if isinstance(key, jax.Array) else repr(key))
        )
    return TrainState(params, optimizer.init(params), jnp.zeros((), jnp.int32), key)


def check_optimizer(optimizer) -> None:
    if not isinstance(optimizer, optax.GradientTransformation):
        raise TypeError(f"optimizer must be an optax.GradientTransformation (e.g. "
                        f"optax.adam(1e-3)); got {type(optimizer).__name__}")
