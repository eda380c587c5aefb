"""The `Task` type shared by the shipped tasks, and the loss it defines for a model."""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import numpy as np

from rnnscan.train.step import masked_mean

SPLITS = {"train": 0, "eval": 1}


class Batch(NamedTuple):
    """A global batch of host arrays.

    Attributes:
      inputs: `(batch, time)` int32 token ids, or `(batch, time, features)` float32.
      targets: `(batch, time)`: int32 labels, or float32 values.
      mask: `(batch, time)` float32, 1 where the loss counts, 0 elsewhere (padding,
        and steps with nothing to predict).
      lengths: `(batch,)` int32, the valid steps of each row; the rest is padding.
    """

    inputs: np.ndarray
    targets: np.ndarray
    mask: np.ndarray
    lengths: np.ndarray


class Task(NamedTuple):
    """A task: its data, as a pure function of `(seed, step)`, and its loss.

    Attributes:
      name: the task's name on the command line.
      input_size: features the model reads per step (after `encode`).
      output_size: features the model writes per step (logits or values).
      chance: the loss of the best constant prediction, to judge learning by.
      batch: `batch(seed, step, batch_size, seq_len, split="train") -> Batch`,
        pure: the same arguments always give the same batch. `split` is
        `"train"` or `"eval"` (held-out data, or an independent random stream).
      encode: `encode(inputs) -> xs`, the inputs as `(batch, time, input_size)`
        floats (a one-hot of token ids), on the device.
      token_loss: `token_loss(ys, targets) -> (batch, time)` per-step losses.
      defaults: the command line's defaults for this task (hidden, steps, ...).
      unit: the loss's unit: `"nats/<token>"` for a cross-entropy (`rnnscan
        train` gives bits too), else the loss's name.
    """

    name: str
    input_size: int
    output_size: int
    chance: float
    batch: Callable[..., Batch]
    encode: Callable[[jax.Array], jax.Array]
    token_loss: Callable[[jax.Array, jax.Array], jax.Array]
    defaults: dict
    unit: str = "nats/token"


def loss_fn(task: Task, model) -> Callable:
    """`loss_fn(params, batch, key) -> loss`: the masked mean of the task's per-step
    losses of `model` (a `Layer`, e.g. from `rnnscan.train.sequence_model`) on a `Batch`."""

    def loss(params, batch: Batch, key):
        ys, _ = model.apply(params, task.encode(batch.inputs), lengths=batch.lengths, key=key)
        return masked_mean(task.token_loss(ys, batch.targets), batch.mask)

    return loss


def rng(seed: int, step: int, split: str) -> np.random.Generator:
    """The random stream of one batch: independent for every (seed, split, step)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {sorted(SPLITS)}; got {split!r}")
    check_size("seed", seed, 0)
    check_size("step", step, 0)
    return np.random.default_rng([seed, SPLITS[split], step])


def check_size(name: str, value: int, minimum: int) -> None:
    """Raises unless `value` is an int of at least `minimum`."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int of at least {minimum}; got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}; got {value}")
