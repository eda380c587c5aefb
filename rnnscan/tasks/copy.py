"""The copy task: read a sequence of symbols, then write it back after a go marker.

Each row holds `n` random symbols (`n` uniform in `[1, (seq_len - 1) // 2]`, so
rows differ in length and are padded), the go marker, and `n` blanks during
which the model must write the symbols back in order: symbol `i` is recalled
`n + 1` steps after it was read. Only the recall steps count in the loss; the
chance level is `log(8)`, guessing among the 8 symbols.
"""

from __future__ import annotations

import math

import jax
import numpy as np
import optax

from rnnscan.tasks.base import Batch, Task, check_size, rng

NUM_SYMBOLS = 8
BLANK, GO = 0, NUM_SYMBOLS + 1  # symbols are 1..NUM_SYMBOLS
VOCAB = NUM_SYMBOLS + 2


def batch(seed: int, step: int, batch_size: int, seq_len: int, split: str = "train") -> Batch:
    check_size("seq_len", seq_len, 3)
    check_size("batch_size", batch_size, 1)
    r = rng(seed, step, split)
    max_n = (seq_len - 1) // 2
    n = r.integers(1, max_n + 1, size=(batch_size, 1))
    symbols = r.integers(1, NUM_SYMBOLS + 1, size=(batch_size, max_n))
    t = np.arange(seq_len)
    read, recall = t < n, (t > n) & (t <= 2 * n)
    inputs = np.where(read, symbols[:, np.minimum(t, max_n - 1)], BLANK)
    inputs = np.where(t == n, GO, inputs)
    recalled = np.take_along_axis(symbols, np.clip(t - n - 1, 0, max_n - 1), axis=1)
    return Batch(
        inputs=inputs.astype(np.int32),
        targets=np.where(recall, recalled, BLANK).astype(np.int32),
        mask=recall.astype(np.float32),
        lengths=(2 * n[:, 0] + 1).astype(np.int32),
    )


def task() -> Task:
    return Task(
        name="copy",
        input_size=VOCAB,
        output_size=VOCAB,
        chance=math.log(NUM_SYMBOLS),
        batch=batch,
        encode=lambda inputs: jax.nn.one_hot(inputs, VOCAB),
        token_loss=optax.softmax_cross_entropy_with_integer_labels,
        defaults=dict(cell="lstm", hidden=128, layers=1, seq_len=21, batch_size=32, steps=1000, lr=3e-3,
                      warmup=100, decay="constant", final_lr=0.0),
    )
