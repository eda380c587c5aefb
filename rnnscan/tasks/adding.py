"""The adding problem (Hochreiter & Schmidhuber 1997): add the two marked numbers.

Each step reads a pair (value uniform in [0, 1], marker in {0, 1}); exactly two
steps are marked, one in each half of the sequence. After the last step the
model outputs the sum of the two marked values; the loss is the squared error
there. The chance level is `1/6`, the error of always answering the mean, 1.
"""

from __future__ import annotations

import numpy as np

from rnnscan.tasks.base import Batch, Task, check_size, rng


def batch(seed: int, step: int, batch_size: int, seq_len: int, split: str = "train") -> Batch:
    check_size("seq_len", seq_len, 2)
    check_size("batch_size", batch_size, 1)
    r = rng(seed, step, split)
    values = r.random((batch_size, seq_len), dtype=np.float32)
    half = seq_len // 2
    rows = np.arange(batch_size)
    first, second = r.integers(0, half, batch_size), r.integers(half, seq_len, batch_size)
    markers = np.zeros((batch_size, seq_len), np.float32)
    markers[rows, first] = markers[rows, second] = 1
    targets = np.zeros((batch_size, seq_len), np.float32)
    targets[:, -1] = values[rows, first] + values[rows, second]
    mask = np.zeros((batch_size, seq_len), np.float32)
    mask[:, -1] = 1
    return Batch(
        inputs=np.stack([values, markers], axis=-1),
        targets=targets,
        mask=mask,
        lengths=np.full((batch_size,), seq_len, np.int32),
    )


def task() -> Task:
    return Task(
        name="adding",
        input_size=2,
        output_size=1,
        chance=1 / 6,
        unit="squared error",
        batch=batch,
        encode=lambda inputs: inputs,
        token_loss=lambda ys, targets: (ys[..., 0] - targets) ** 2,
        defaults=dict(cell="lstm", hidden=128, layers=1, seq_len=50, batch_size=64, steps=1000, lr=3e-3,
                      warmup=100, decay="constant", final_lr=0.0),
    )
