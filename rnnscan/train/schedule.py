"""`learning_rate`: the learning-rate schedule of `rnnscan train`, a pure function of the step.

Being a function of the optimizer's step count alone (which the checkpoint
holds), the schedule resumes exactly: a run interrupted and resumed follows
the curve of one that never stopped.
"""

from __future__ import annotations

import jax.numpy as jnp
import optax

from rnnscan.validation import check_number, check_positive_int

DECAYS = ("constant", "cosine", "linear")


def learning_rate(lr: float, *, warmup: int, decay: str = "constant", decay_steps: int | None = None,
                  final_lr: float = 0.0) -> optax.Schedule:
    """A decay from `lr` to `final_lr`, times a linear warmup from 0 to 1.

    `rate(step) = min(1, step / warmup) * (final_lr + (lr - final_lr) * f(min(step, decay_steps) / decay_steps))`,
    where `f(u)` is 1 (`"constant"`), `(1 + cos(pi u)) / 2` (`"cosine"`) or `1 - u`
    (`"linear"`). Both run from step 0, so any `warmup` goes with any
    `decay_steps` (a run shorter than its warmup just never reaches `lr`).

    Args:
      lr: the peak learning rate, a positive number.
      warmup: steps of the warmup, an int of at least 0 (0: none).
      decay: `"constant"` (`final_lr` and `decay_steps` unused), `"cosine"` or `"linear"`.
      decay_steps: the step where the decay reaches `final_lr`, then stays;
        needed unless `decay` is `"constant"`.
      final_lr: the rate at and after `decay_steps`, in `[0, lr]`.

    Returns:
      `schedule(step) -> rate`, an `optax.Schedule`.
    """
    check_number("lr", lr, positive=True)
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"warmup must be an int of at least 0; got {warmup!r}")
    if decay not in DECAYS:
        raise ValueError(f"decay must be one of {list(DECAYS)}; got {decay!r}")
    if decay != "constant":
        check_positive_int("decay_steps", decay_steps)
        check_number("final_lr", final_lr)
        if not 0 <= final_lr <= lr:
            raise ValueError(f"final_lr must be in [0, lr] = [0, {lr}]; got {final_lr}")

    def schedule(count):
        step = jnp.asarray(count, jnp.float32)
        ramp = jnp.minimum(1.0, step / warmup) if warmup else 1.0
        if decay == "constant":
            return ramp * lr
        done = jnp.minimum(step, decay_steps) / decay_steps
        shape = 0.5 * (1 + jnp.cos(jnp.pi * done)) if decay == "cosine" else 1 - done
        return ramp * (final_lr + (lr - final_lr) * shape)

    return schedule
