"""The time axis split over a mesh axis, inside `shard_map`: the collectives a
strategy needs to run one sequence whose consecutive slices live on different
devices (`rnnscan.sequence_parallel` is the entry point).

Shard `k` of `K` holds steps `[k T/K, (k+1) T/K)`. A scan visits the shards in
order (from the last to the first with `Axis.reverse`); the carry into a shard
is the state after every shard before it. Linear recurrences get it from the
shards' summaries (`carry`: each shard's composed map, all-gathered, composed
in order), as Griffin's sharded linear scan does; anything else from a relay
of the carry from shard to shard (`pipeline`).
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from rnnscan import tree


class Axis(NamedTuple):
    """The mesh axis the time axis is sharded over, and the scan's direction.

    Attributes:
      name: the axis name, as `shard_map`'s mesh calls it.
      reverse: the scan visits the shards from the last to the first.
    """

    name: str
    reverse: bool = False

    def flipped(self) -> "Axis":
        return self._replace(reverse=not self.reverse)


def position(axis: Axis):
    """`(index, count, first, last)`: this shard's index, the number of shards,
    and the indices of the shards the scan visits first and last."""
    count = jax.lax.axis_size(axis.name)
    first, last = (count - 1, 0) if axis.reverse else (0, count - 1)
    return jax.lax.axis_index(axis.name), count, first, last


def varying(axis: Axis, x):
    """`x` typed as differing from shard to shard (a no-op where it already
    does), so that its cotangent is summed over the shards."""
    def one(a):
        if axis.name in jax.typeof(a).mat.varying:
            return a
        return jax.lax.pcast(a, axis.name, to="varying")

    return jax.tree_util.tree_map(one, x)


def varying_like(x, like):
    """`x` typed as differing over the mesh axes that `like` differs over (the
    tangents a linearized function of `like` is given); `x` outside `shard_map`."""
    axes = tuple(sorted(jax.typeof(like).mat.varying - jax.typeof(x).mat.varying))
    return jax.lax.pcast(x, axes, to="varying") if axes else x


def from_before(axis: Axis, x):
    """`x` of the shard before, in the scan's order (zeros on the first)."""
    _, count, _, _ = position(axis)
    step = -1 if axis.reverse else 1
    perm = [(k, k + step) for k in range(count) if 0 <= k + step < count]
    return jax.tree_util.tree_map(lambda a: jax.lax.ppermute(a, axis.name, perm), x)


def from_after(axis: Axis, x):
    """`x` of the shard after, in the scan's order (zeros on the last)."""
    return from_before(axis.flipped(), x)


def from_last(axis: Axis, x):
    """`x` of the shard the scan visits last, on every shard (the final state)."""
    index, _, _, last = position(axis)
    return jax.tree_util.tree_map(
        lambda a: jax.lax.psum(jnp.where(index == last, a, jnp.zeros_like(a)), axis.name), x)


def global_max(axis: Axis | None, x):
    """`x` (a per-shard maximum) maximised over the shards."""
    return x if axis is None else jax.lax.pmax(x, axis.name)


def carry(axis: Axis, maps, h0, apply: Callable):
    """The state entering this shard and the one leaving the last, from every
    shard's summary.

    Args:
      maps: `(a, b)`, this shard's steps composed into one affine map of the
        state, `h_out = apply(a, h_in) + b` (pytrees of `h0`'s structure).
      h0: the state before the first shard.
      apply: `apply(a, h)` for one leaf.

    Returns:
      The state before this shard's first step.
    """
    index = jax.lax.axis_index(axis.name)
    every = jax.lax.all_gather(maps, axis.name)  # leaves (shards, ...): tiny, one map a shard

    _, count, _, _ = position(axis)
    # K maps in sequence (K, the shards, is static and small): O(K) on every
    # shard, negligible beside a shard's scan.
    h, h_ins = varying(axis, h0), [None] * count
    for k in reversed(range(count)) if axis.reverse else range(count):
        h_ins[k] = h
        a, b = jax.tree_util.tree_map(lambda m: m[k], every)
        h = jax.tree_util.tree_map(lambda a, b, h: apply(a, h) + b, a, b, h)
    return jax.tree_util.tree_map(lambda *hs: jnp.stack(hs)[index], *h_ins)


def shift(axis: Axis | None, h0, hs):
    """The state each step reads, `(h0, hs[0], ..., hs[-2])` along the scan's
    local order, where the first comes from the shard before (h0 on the first)."""
    if axis is None:
        before = h0
    else:
        index, _, first, _ = position(axis)
        before = jnp.where(index == first, h0, from_before(axis, hs[-1]))
    return jnp.concatenate([before[None], hs[:-1]])


def pipeline(axis: Axis, segment: Callable, h0):
    """`segment` run on every shard from the state the shards before leave: a relay.

    `segment(h_in) -> (h_out, outputs)` runs this shard's steps. The carry passes
    from shard to shard (`ppermute`) in K - 1 hops, each as long as one
    segment, and then every shard runs its segment for its outputs: about the
    time of one device on the whole sequence, never less (every shard computes
    in every hop, one result kept, and the hops' final states are
    recomputed for the gradient). What it buys is memory: each device holds
    one slice of the sequence and its activations, and one carry per hop.

    Returns:
      `(h_final, outputs)`: the state after the last shard (on every shard) and
      this shard's outputs.
    """
    index, count, _, _ = position(axis)
    order = (lambda s: count - 1 - s) if axis.reverse else (lambda s: s)
    final_state = jax.checkpoint(lambda h: segment(h)[0])  # the relay keeps one carry a hop

    def hop(h, s):
        # Every shard runs its segment, the one whose turn it is for real: a
        # `lax.cond` idling the others takes no less time, and on XLA:CPU's
        # virtual devices, whose waiting shards hold the shared threads, it hangs.
        out = tree.where(index == order(s), final_state(h), h)
        return tree.where(index == order(s + 1), from_before(axis, out), h), None

    h_in, _ = jax.lax.scan(hop, varying(axis, h0), jnp.arange(count - 1))
    h_out, outputs = segment(h_in)
    return from_last(axis, h_out), outputs
