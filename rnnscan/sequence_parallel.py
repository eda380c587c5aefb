"""`unroll` over one sequence split across devices: the time axis sharded over
a mesh axis, called inside `jax.shard_map` like one of JAX's collectives.

    mesh = jax.make_mesh((8,), ("seq",))
    run = jax.shard_map(
        lambda p, xs, n: rnnscan.sequence_parallel.unroll(cell, p, xs, axis_name="seq", lengths=n),
        mesh=mesh, in_specs=(P(), P(None, "seq"), P()), out_specs=(P(None, "seq"), P()))

Three ways, by `method` (`rnnscan.shards` holds the collectives):

- `"associative"` (linear cells): each shard scans its slice, the shards'
  summaries (each slice composed into one affine map) are all-gathered and
  composed, and each shard corrects its states by the carry entering it.
  O(T/K + K) deep: faster with the devices, memory per device T/K.
- `"newton"` / `rs.Newton(...)` (any cell): Newton's iterations with every
  linear recurrence on the sharded associative scan; the convergence test and
  the damping read the residual over all shards.
- `"scan"` or `"sequential"`: a relay (`shards.pipeline`) of `lax.scan`s: the
  carry passes from shard to shard. No faster than one device, but memory
  per device T/K. (Not the CPU kernels: their custom calls' results are not
  typed per shard for `shard_map`'s `check_vma`.)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from rnnscan import shards
from rnnscan.cell import as_cell, split_step
from rnnscan.newton_options import Newton
from rnnscan.unroll import execute, initial_state_of, make_plan
from rnnscan.unroll import unroll as unroll_slice
from rnnscan.sequence_args import check_lengths, check_xs

_RELAYED = ("scan", "sequential")


def unroll(cell, params, xs, *, axis_name, initial_state=None, lengths=None, resets=None,
           reset_state=None, mask=None, reverse: bool = False, time_major: bool = False,
           return_all_states: bool = False, method="auto"):
    """`rnnscan.unroll` on this shard's slice of a sequence sharded over time.

    Call it inside `jax.shard_map`, with the time axis of `xs` (and of `resets`,
    `mask`) split over the mesh axis `axis_name`, in order: shard `k` of `K`
    holds steps `[k T/K, (k+1) T/K)`. The results are those of `rnnscan.unroll`
    on the whole sequence: `ys` (and `states`) this shard's slice, the final
    state the global one, the same on every shard.

    Args:
      axis_name: the mesh axis the time axis is sharded over.
      xs, resets, mask: this shard's slices, `(batch, T/K, ...)` (time-major
        with `time_major`).
      lengths: int `(batch,)` in `[0, T]`, the whole sequence's (replicated):
        each shard runs the part of every row within its length.
      initial_state: the state before the first step, entering on the first
        shard (the last with `reverse`); default the cell's zeros.
      reverse: the scan runs from the last step to the first; the carry flows
        from the last shard to the first.
      method: `"auto"` (default): `"associative"` for cells linear in their
        state, else `"sequential"`. `"associative"`: linear cells, parallel.
        `"newton"` or `rs.Newton(...)`: any cell, parallel (see
        `rnnscan.newton`). `"scan"` or `"sequential"`: `lax.scan` on each
        shard, the carry relayed from shard to shard: sequential, no faster
        than one device, memory-scalable. `"kernel"` is refused.
      The other arguments are `rnnscan.unroll`'s; `unroll` and `remat` are left
      to each shard's method.

    Returns:
      What `rnnscan.unroll` returns: `(ys, final_state)`, and `states` with
      `return_all_states`, and an `rs.NewtonInfo` (global) with
      `rs.Newton(return_info=True)`.
    """
    cell = as_cell(cell)
    if not isinstance(axis_name, str):
        raise TypeError(f"axis_name must be a str, a mesh axis of the enclosing shard_map; "
                        f"got {axis_name!r}")
    try:
        count = jax.lax.axis_size(axis_name)
    except NameError:
        raise ValueError(f"axis_name={axis_name!r} is not an axis of an enclosing shard_map: "
                         "call rnnscan.sequence_parallel.unroll inside jax.shard_map over a "
                         "mesh with that axis") from None
    batch, time = check_xs("xs", xs, time_major)
    check_lengths("lengths", lengths, batch, time * count)
    if lengths is not None:
        # A row's global length cut to this shard's slice is a length here.
        start = jax.lax.axis_index(axis_name) * time
        lengths = jnp.clip(jnp.asarray(lengths) - start, 0, time).astype(jnp.asarray(lengths).dtype)
    if method == "auto":
        split = split_step(cell)
        method = "associative" if split is not None and split.linear is not None else "sequential"
    arrays = dict(initial_state=initial_state, lengths=lengths, resets=resets,
                  reset_state=reset_state, mask=mask)
    options = dict(reverse=reverse, time_major=time_major, return_all_states=return_all_states)

    if isinstance(method, Newton) or method in ("associative", "newton"):
        plan = make_plan(cell, params, xs, method=method, **arrays, **options)
        as_array = lambda a: None if a is None else jnp.asarray(a)  # checked by make_plan
        return execute(plan._replace(axis_name=axis_name), params, xs, initial_state, lengths,
                       as_array(resets), reset_state, as_array(mask))
    if method == "kernel":
        raise ValueError("method='kernel' cannot run inside shard_map: the CPU kernels' custom "
                         "calls return values not typed per shard; use method='scan'")
    if method not in _RELAYED:
        raise ValueError(f"method must be 'auto', 'associative', 'newton', an rnnscan.Newton "
                         f"or one of {_RELAYED}; got {method!r}")

    def segment(h):
        ys, h_out, *states = unroll_slice(cell, params, xs, method="scan",
                                         **{**arrays, "initial_state": h}, **options)
        return h_out, (ys, *states)

    h0 = initial_state_of(cell, params, initial_state, batch)
    h_final, (ys, *states) = shards.pipeline(shards.Axis(axis_name, reverse), segment, h0)
    return (ys, h_final, *states)
