"""The jit-compiled train and eval steps, and the masked mean their losses use.

A loss function has the signature `loss_fn(params, batch, key) -> loss`, a float
scalar; `key` is a PRNG key in training (for dropout and the like) and `None`
in evaluation. Under data parallelism `batch` is the global batch sharded over
devices, so a mean over it is the global mean: the gradients need no
hand-written all-reduce.
"""

from __future__ import annotations

import math
import numbers
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import optax

from rnnscan.train.state import TrainState, check_optimizer
from rnnscan.validation import check_callable

LossFn = Callable[..., jax.Array]


def masked_mean(values: jax.Array, mask: jax.Array) -> jax.Array:
    """Mean of `values` over the entries where `mask` is nonzero.

    Args:
      values: per-token losses, e.g. `(batch, time)`.
      mask: same shape, 1 where a token counts and 0 on padding. Values under
        a 0 never reach the result, even when they are inf or NaN.

    Returns:
      A scalar: `sum(values[mask]) / max(count(mask), 1)`.
    """
    mask = mask.astype(bool)
    return jnp.sum(jnp.where(mask, values, 0)) / jnp.maximum(jnp.sum(mask), 1)


def make_train_step(
    loss_fn: LossFn,
    optimizer: optax.GradientTransformation,
    *,
    clip_norm: Optional[float] = 1.0,
) -> Callable[[TrainState, object], tuple[TrainState, dict]]:
    """A jit-compiled `train_step(state, batch) -> (state, metrics)`.

    One update: the gradient of `loss_fn(state.params, batch, key)`, clipped to a
    global norm of at most `clip_norm` (`optax.clip_by_global_norm`; default
    1.0, `None` turns clipping off), then `optimizer`. `state` is donated: its
    buffers are reused for the new state, so the caller must not use the old
    one again.

    Returns metrics `{"loss", "grad_norm", "finite"}`: the loss and the global
    gradient norm before the update (before clipping), and whether both and
    every updated param are finite.
    """
    check_callable("loss_fn", loss_fn)
    check_optimizer(optimizer)
    if clip_norm is not None and (isinstance(clip_norm, bool) or not isinstance(clip_norm, numbers.Real)
                                  or not 0 < clip_norm < math.inf):
        raise ValueError(f"make_train_step: clip_norm must be a positive finite number or None; got {clip_norm!r}")
    clip = None if clip_norm is None else optax.clip_by_global_norm(clip_norm)

    def train_step(state: TrainState, batch):
        key, step_key = jax.random.split(state.key)
        loss, grads = jax.value_and_grad(loss_fn)(state.params, batch, step_key)
        grad_norm = optax.tree.norm(grads)
        if clip is not None:
            grads, _ = clip.update(grads, clip.init(state.params))
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {
            "loss": loss,
            "grad_norm": grad_norm,
            "finite": jnp.isfinite(loss) & jnp.isfinite(grad_norm) & _all_finite(params),
        }
        return TrainState(params, opt_state, state.step + 1, key), metrics

    return jax.jit(train_step, donate_argnums=0)


def _all_finite(tree) -> jax.Array:
    return jnp.all(jnp.array([jnp.isfinite(leaf).all() for leaf in jax.tree_util.tree_leaves(tree)
                              if jnp.issubdtype(leaf.dtype, jnp.inexact)], dtype=bool))


def make_eval_step(loss_fn: LossFn) -> Callable[[object, object], jax.Array]:
    """A jit-compiled `eval_step(params, batch) -> loss`, with `key=None`."""
    check_callable("loss_fn", loss_fn)
    return jax.jit(lambda params, batch: loss_fn(params, batch, None))
