"""The chunked scan: checkpointed chunks of steps, for `remat=k` and `truncated_unroll`.

An outer scan runs over chunks of `plan.chunk` steps, each chunk checkpointed,
so reverse mode keeps one carry per chunk and recomputes a chunk's input
projection and steps when its gradient is needed (`k` near `sqrt(time)` holds
the least). With `plan.truncate` (TBPTT) no gradient crosses from a chunk into
the one before it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from rnnscan import tree
from rnnscan.plan import Operands, Plan
from rnnscan.scan import halves, scan_steps


def run(plan: Plan, params, ops: Operands):
    """The `"chunked"` strategy: `(final_state, outputs)` as `rnnscan.scan.run` returns them."""
    project, advance = halves(plan.cell)
    time, batch = tree.first_leaf(ops.xs).shape[:2]
    chunk = plan.chunk
    n_chunks = -(-time // chunk)
    pad = n_chunks * chunk - time
    xs, valid, resets = ops.xs, ops.valid, ops.resets
    if pad:
        # Steps past the end behave like steps past a row's length: no-ops.
        valid = jnp.ones((time, batch), bool) if valid is None else valid
        xs, valid, resets = jax.tree_util.tree_map(
            lambda a: jnp.pad(a, [(0, pad)] + [(0, 0)] * (a.ndim - 1)), (xs, valid, resets)
        )
    first = n_chunks - 1 if plan.reverse else 0

    def chunk_body(h, inputs):
        index, (x, valid_c, resets_c) = inputs
        if plan.truncate:
            # No gradient into the previous chunk; the first chunk's still
            # reaches the initial state.
            h = jax.tree_util.tree_map(
                lambda a: jnp.where(index == first, a, jax.lax.stop_gradient(a)), h
            )
        chunk_ops = Operands(project(params, x), h, valid_c, resets_c, ops.reset_state)
        return scan_steps(plan, advance, params, chunk_ops)

    split = lambda a: a.reshape((n_chunks, chunk) + a.shape[1:])
    h_final, out = jax.lax.scan(
        jax.checkpoint(chunk_body, prevent_cse=False), ops.h0,
        (jnp.arange(n_chunks), jax.tree_util.tree_map(split, (xs, valid, resets))),
        reverse=plan.reverse,
    )
    # The steps' count, not -1: an empty batch leaves -1 undetermined.
    return h_final, jax.tree_util.tree_map(
        lambda a: a.reshape((n_chunks * chunk,) + a.shape[2:])[:time], out)
