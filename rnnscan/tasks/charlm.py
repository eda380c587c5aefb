"""Character-level language modelling on Jane Austen, with sampling.

The text, `data/austen.txt.gz` (1.15 MB of ASCII), is *Pride and Prejudice*
(1813) followed by *Persuasion* (1818), both in the public domain: the Project
Gutenberg transcriptions without their license headers, as distributed in the
MIT-licensed `janeaustenr` R package (Debian: `r-cran-janeaustenr`), with runs
of more than two blank lines shortened. The last 5% is held out for evaluation.

A batch holds `batch_size` windows of `seq_len + 1` characters at random
offsets; the model reads the first `seq_len` and predicts each next one. The
chance level is `log(vocab_size)`.
"""

from __future__ import annotations

import functools
import gzip
import math
from importlib import resources
from typing import Optional

import jax
import numpy as np
import optax

from rnnscan import sampling
from rnnscan.tasks.base import Batch, Task, check_size, rng

EVAL_FRACTION = 0.05


@functools.cache
def text() -> str:
    """The whole corpus, read from the package's data."""
    with resources.files("rnnscan.tasks").joinpath("data/austen.txt.gz").open("rb") as f:
        return gzip.decompress(f.read()).decode("ascii")


@functools.cache
def vocab() -> str:
    """Every character of the corpus, sorted; a character's id is its index."""
    return "".join(sorted(set(text())))


@functools.cache
def _ids() -> np.ndarray:
    lookup = np.zeros(128, np.int32)
    lookup[[ord(c) for c in vocab()]] = np.arange(len(vocab()))
    return lookup[np.frombuffer(text().encode("ascii"), np.uint8)]


def encode(string: str) -> np.ndarray:
    """Character ids `(len(string),)` int32; raises on characters outside the vocabulary."""
    unknown = sorted(set(string) - set(vocab()))
    if unknown:
        raise ValueError(f"string has characters not in the charlm vocabulary: {unknown!r}")
    return np.array([vocab().index(c) for c in string], np.int32)


def decode(ids) -> str:
    return "".join(vocab()[i] for i in np.asarray(ids))


def one_hot(ids: jax.Array) -> jax.Array:
    """Character ids `(*s)` as the model's inputs, float32 one-hots `(*s, len(vocab()))`."""
    return jax.nn.one_hot(ids, len(vocab()))


def batch(seed: int, step: int, batch_size: int, seq_len: int, split: str = "train") -> Batch:
    check_size("seq_len", seq_len, 1)
    check_size("batch_size", batch_size, 1)
    r = rng(seed, step, split)
    ids = _ids()
    cut = int(len(ids) * (1 - EVAL_FRACTION))
    part = ids[:cut] if split == "train" else ids[cut:]
    if seq_len >= len(part):
        raise ValueError(f"seq_len must be below {len(part)} for the {split} text; got {seq_len}")
    starts = r.integers(0, len(part) - seq_len, size=(batch_size, 1))
    windows = part[starts + np.arange(seq_len + 1)]
    return Batch(
        inputs=windows[:, :-1],
        targets=windows[:, 1:],
        mask=np.ones((batch_size, seq_len), np.float32),
        lengths=np.full((batch_size,), seq_len, np.int32),
    )


def task() -> Task:
    size = len(vocab())
    return Task(
        name="charlm",
        input_size=size,
        output_size=size,
        chance=math.log(size),
        unit="nats/char",
        batch=batch,
        encode=one_hot,
        token_loss=optax.softmax_cross_entropy_with_integer_labels,
        # The first run's: about 2.5 minutes on 2 idle AVX2 cores, eval about 1.25
        # nats/char, a sample that reads as English (benchmarks/results/
        # charlm-default-epyc-zen3.txt). Per step a GRU learns faster than an LSTM
        # of its size, and its kernel runs faster; a peak rate of 1e-2 decayed
        # along a cosine beat 3e-3 (and 2e-2) by far; batch 64 beat 32 and 128.
        defaults=dict(cell="gru", hidden=256, layers=1, seq_len=64, batch_size=64, steps=1500, lr=1e-2,
                      warmup=100, decay="cosine", final_lr=0.0),
    )


def sample(cell, params, prompt: str, length: int, key: jax.Array, temperature: float = 0.8,
           top_k: Optional[int] = None) -> str:
    """`prompt` followed by `length` characters drawn from a model, one at a time.

    Args:
      cell: a trained model one step at a time, a `Cell` whose outputs are
        logits over `vocab()` (`rnnscan.train.load_run(...).cell`, or
        `rnnscan.train.step_model(core, len(vocab()), len(vocab()))`).
      params: its params.
      prompt: the text to start from (at least one character of `vocab()`).
      length: characters to generate.
      key: the PRNG key of the draws.
      temperature, top_k: as in `rnnscan.sample` (temperature 0 is greedy).
    """
    if not prompt:
        raise ValueError("prompt must hold at least one character")
    tokens, _ = sampling.sample(cell, params, encode(prompt)[None], length, key, embed=one_hot,
                                temperature=temperature, top_k=top_k)
    return prompt + decode(tokens[0])
