"""`train.learning_rate`, the schedule of `rnnscan train`, against its formula written out."""

import math

import numpy as np
import pytest

from rnnscan import train


def expected(step, lr, warmup, decay, decay_steps, final_lr):
    """The documented schedule, in plain Python."""
    ramp = min(1, step / warmup) if warmup else 1
    if decay == "constant":
        return ramp * lr
    done = min(step, decay_steps) / decay_steps
    shape = 0.5 * (1 + math.cos(math.pi * done)) if decay == "cosine" else 1 - done
    return ramp * (final_lr + (lr - final_lr) * shape)


@pytest.mark.parametrize("decay", train.DECAYS)
@pytest.mark.parametrize("warmup, final_lr", [(0, 0.0), (7, 0.0), (7, 2e-4), (40, 1e-4)])
def test_learning_rate_is_the_warmup_then_the_decay_then_final_lr(decay, warmup, final_lr):
    lr, decay_steps = 3e-3, 30
    schedule = train.learning_rate(lr, warmup=warmup, decay=decay, decay_steps=decay_steps, final_lr=final_lr)
    steps = np.arange(45)
    got = [float(schedule(step)) for step in steps]
    want = [expected(step, lr, warmup, decay, decay_steps, final_lr) for step in steps]
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-9)
    if decay != "constant":
        assert got[40:] == pytest.approx([final_lr] * 5, abs=1e-9)  # past decay_steps and warmup


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(warmup=-1), ValueError, r"warmup must be an int of at least 0; got -1"),
    (dict(warmup=2.0), ValueError, r"warmup must be an int of at least 0; got 2.0"),
    (dict(decay="step"), ValueError, r"decay must be one of \['constant', 'cosine', 'linear'\]; got 'step'"),
    (dict(decay="cosine"), TypeError, r"decay_steps must be a positive int; got None"),
    (dict(decay="linear", decay_steps=20, final_lr=1.0), ValueError, r"final_lr must be in \[0, lr\] = \[0, 0.1\]; got 1.0"),
    (dict(decay="linear", decay_steps=20, final_lr=-0.1), ValueError, r"final_lr must be in \[0, lr\]"),
])
def test_bad_schedule_arguments_are_named(kwargs, error, message):
    with pytest.raises(error, match=message):
        train.learning_rate(0.1, **({"warmup": 10} | kwargs))


def test_lr_must_be_positive():
    with pytest.raises(ValueError, match="lr must be a positive number; got 0"):
        train.learning_rate(0, warmup=1)
