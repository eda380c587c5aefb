"""`sample`: tokens drawn one at a time from a recurrent model, in one compiled program.

The model is a `Cell` whose output is logits over a vocabulary: a language
model's per-step form, such as `rnnscan.train.step_model(rnnscan.multi_cell(cells),
...)` for a model trained as `rnnscan.train.sequence_model(rnnscan.stack(cells),
...)`. The prompt primes the state (`rnnscan.unroll` over it); then a
`jax.lax.scan` draws a token from the logits, feeds it back in, and carries the
state to the next step.
"""

from __future__ import annotations

import functools
import math
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from rnnscan.cell import Cell, as_cell
from rnnscan.unroll import unroll
from rnnscan.validation import check_positive_int


def sample(
    cell,
    params,
    prompt,
    length: int,
    key: jax.Array,
    *,
    embed: Callable[[jax.Array], jax.Array],
    temperature: float = 1.0,
    top_k: Optional[int] = None,
    initial_state=None,
) -> tuple[jax.Array, object]:
    """`length` tokens after `prompt`, each drawn from the logits of the step before.

    Args:
      cell: a `Cell` (or a bare step function, with `initial_state`) whose
        `step(params, h, x (batch, features)) -> (h, logits (batch, vocab))`.
      params: its params.
      prompt: int `(batch, prompt_len)` token ids, `prompt_len >= 1`.
      length: how many tokens to generate, a positive int.
      key: a `jax.random` key. Step `t` draws with `jax.random.split(key,
        length)[t]`, one draw per row.
      embed: `embed(tokens) -> xs`, token ids of any shape `(*s)` to the cell's
        inputs `(*s, features)`, e.g. `lambda t: jax.nn.one_hot(t, vocab)`; it
        owns the token range (`jax.nn.one_hot` gives zeros outside it).
      temperature: a number `>= 0`. Each token is
        `jax.random.categorical(key_t, logits / temperature)`; `0` is greedy,
        `argmax(logits)` (and `key` is unused).
      top_k: None, or an int in `[1, vocab]`: all but the `k` largest logits of
        each row are set to `-inf` before the draw (logits tied with the k-th
        largest are kept). `top_k=1` is greedy.
      initial_state: the state before the prompt; default the cell's zeros.

    Returns:
      `(tokens, state)`: int32 `(batch, length)`, the generated tokens without
      the prompt; and the state after reading the prompt and every generated
      token, to continue from (as `initial_state` with the next prompt).

    Jit-compiled once per cell, `embed`, `length`, `top_k`, whether greedy, and
    shapes; `temperature` and the values of everything else are not static.
    """
    cell = as_cell(cell)
    if not callable(embed):
        raise TypeError(f"embed must be a function from token ids to the cell's inputs; got {embed!r}")
    check_positive_int("length", length)
    dtype, ndim = getattr(key, "dtype", None), getattr(key, "ndim", None)
    typed = dtype is not None and jnp.issubdtype(dtype, jax.dtypes.prng_key) and ndim == 0
    if not (typed or (dtype == np.uint32 and ndim == 1)):
        raise TypeError(f"key must be one jax.random key (jax.random.key or PRNGKey); got {key!r}")
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float, np.integer, np.floating)):
        raise TypeError(f"temperature must be a number >= 0; got {temperature!r}")
    if not (math.isfinite(temperature) and temperature >= 0):
        raise ValueError(f"temperature must be a finite number >= 0 (0 is greedy); got {temperature}")
    if top_k is not None:
        check_positive_int("top_k", top_k)
    shape, dtype = np.shape(prompt), jnp.result_type(prompt)
    if len(shape) != 2 or shape[1] < 1 or not jnp.issubdtype(dtype, jnp.integer):
        raise ValueError(
            f"prompt must be integer token ids of shape (batch, prompt_len) with prompt_len >= 1; "
            f"got {dtype.name}{list(shape)}"
        )
    return _sample(cell, embed, length, top_k, temperature == 0, params, prompt, key,
                   jnp.float32(temperature), initial_state)


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3, 4))
def _sample(cell: Cell, embed, length, top_k, greedy, params, prompt, key, temperature, initial_state):
    ys, state = unroll(cell, params, embed(prompt), initial_state=initial_state)
    if not isinstance(ys, jax.Array) or ys.ndim != 3:
        raise ValueError(
            "the cell's output must be logits of shape (batch, vocab); over the prompt it gave "
            f"{jax.tree_util.tree_map(jnp.shape, ys)}, not (batch, prompt_len, vocab)"
        )
    logits = ys[:, -1]
    if top_k is not None and top_k > logits.shape[-1]:
        raise ValueError(f"top_k must lie in [1, vocab] = [1, {logits.shape[-1]}]; got {top_k}")

    def draw(logits, key):
        if greedy:
            return jnp.argmax(logits, axis=-1).astype(jnp.int32)
        if top_k is not None:
            kth = jax.lax.top_k(logits, top_k)[0][:, -1:]
            logits = jnp.where(logits >= kth, logits, -jnp.inf)
        return jax.random.categorical(key, logits / temperature).astype(jnp.int32)

    def generate(carry, key):
        state, logits = carry
        token = draw(logits, key)
        state, logits = cell.step(params, state, embed(token))
        return (state, logits), token

    (state, _), tokens = jax.lax.scan(generate, (state, logits), jax.random.split(key, length))
    return tokens.T, state
