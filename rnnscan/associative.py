"""The associative scan: linear recurrences, `h_t = a_t * h_{t-1} + b_t`, every step at once.

Chosen for cells whose step is linear in the state (`SplitStep.linear`: minGRU,
minLSTM, the LRU) with `method="associative"`, and by `method="auto"` on
backends and lengths where it was measured faster (`rnnscan.tuning`).

When `a_t` and `b_t` come from the inputs alone, step s followed by step t is again
an affine map of the state, `(a_s, b_s) • (a_t, b_t) = (a_s a_t, a_t b_s + b_t)`,
and that composition is associative: all T states come out of a parallel prefix
scan in O(log T) depth instead of T dependent steps.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from rnnscan import shards, tree
from rnnscan.cell import LinearRecurrence, split_step
from rnnscan.plan import Operands, Plan
from rnnscan.validation import check_same_structure


def run(plan: Plan, params, ops: Operands):
    """The `"associative"` strategy: `(final_state, outputs)` as `rnnscan.scan.run`
    returns them, for a cell whose `SplitStep.linear` is set."""
    return associative_scan(split_step(plan.cell).linear, params, ops, reverse=plan.reverse,
                            return_all_states=plan.return_all_states, axis_name=plan.axis_name)


def associative_scan(recurrence: LinearRecurrence, params, ops: Operands, *,
                     reverse: bool = False, return_all_states: bool = False,
                     axis_name=None):
    """Runs `recurrence` over `ops` with `jax.lax.associative_scan`.

    The semantics of the sequential scan: where `ops.resets` is true the state is
    `ops.reset_state` before the step is read, and a step where `ops.valid` is
    false leaves the state alone and outputs zero.

    With `axis_name` (inside `shard_map`), `ops` is this shard's slice of the
    time axis sharded over that mesh axis (`rnnscan.shards`): each shard scans
    its slice, the shards' composed maps are exchanged, and each shard applies
    the state entering it; the final state is the global one.

    Returns:
      What `lax.scan` returns for the sequential loop: `(final_state, ys)`, or
      `(final_state, (ys, states))` with `return_all_states`; time-major.
    """
    xs, h0, valid, resets = ops.xs, ops.h0, ops.valid, ops.resets
    log = recurrence.log_space
    time = jax.tree_util.tree_leaves(xs)[0].shape[0]
    a, b = recurrence.coefficients(params, xs)
    expected = jax.tree_util.tree_map(
        lambda h: jax.ShapeDtypeStruct((time,) + h.shape, h.dtype), h0
    )
    for name, coef in zip(("log a", "log b") if log else ("a", "b"), (a, b)):
        check_same_structure(
            f"{name} from cell.step.linear.coefficients", coef, expected,
            "the state with a leading time axis",
        )

    # (×, +) in linear space is (+, logaddexp) in log space.
    mul, add = (jnp.add, _logaddexp) if log else (jnp.multiply, jnp.add)
    one, zero = (0.0, -jnp.inf) if log else (1.0, 0.0)

    offsets = [b]
    if resets is not None:
        # A reset step computes a_t * r + b_t (r: the reset state). Its a_t goes
        # to a second offset, carried like b, whose sum is the coefficient of r:
        # folding a_t * r into b_t would need log(r), and r may be zero or negative.
        offsets.append(tree.where(resets, a, tree.fill(a, zero)))
        a = tree.where(~resets, a, tree.fill(a, zero))
    if valid is not None:
        # Padding is the identity map: the state passes through unchanged.
        a = tree.where(valid, a, tree.fill(a, one))
        offsets = [tree.where(valid, o, tree.fill(o, zero)) for o in offsets]

    def compose(earlier, later):
        (a1, *o1), (a2, *o2) = earlier, later
        return (
            jax.tree_util.tree_map(mul, a1, a2),
            *[jax.tree_util.tree_map(lambda a, x, y: add(mul(a, x), y), a2, x, y)
              for x, y in zip(o1, o2)],
        )

    a, b, *c = jax.lax.associative_scan(compose, (a, *offsets), reverse=reverse)
    # h_t = A_t * h0 + C_t * r + B_t: A_t, the coefficient of h0, is zero from
    # the first reset on, and C_t, that of r, restarts at each reset.
    linear = to_linear(log)

    def states(h):
        """Every step's state from the state `h` before the first."""
        hs = jax.tree_util.tree_map(lambda a, b, h: linear(a) * h + linear(b), a, b, h)
        return hs if not c else jax.tree_util.tree_map(lambda h, c, r: h + linear(c) * r,
                                                       hs, c[0], ops.reset_state)

    axis = None if axis_name is None else shards.Axis(axis_name, reverse)
    if axis is not None:
        # This shard's steps composed, h_out = A h_in + B: A where its scan
        # ends, and B the state there from h_in = 0.
        end = (lambda v: v[0]) if reverse else (lambda v: v[-1])
        summary = (jax.tree_util.tree_map(lambda a: linear(end(a)), a),
                   jax.tree_util.tree_map(end, states(tree.fill(h0, 0.0))))
        h0 = shards.carry(axis, summary, h0, jnp.multiply)
    hs = states(h0)

    ys = hs if recurrence.readout is None else recurrence.readout(params, hs, xs)
    if valid is not None:
        ys = tree.zero_where_not(valid, ys)
    # The final state is the last in scan order; h0 if there are no steps.
    last = (lambda h: h[0]) if reverse else (lambda h: h[-1])
    h_final = h0 if time == 0 else jax.tree_util.tree_map(last, hs)
    if axis is not None:
        h_final = shards.from_last(axis, h_final)
    return h_final, ((ys, hs) if return_all_states else ys)


def to_linear(log_space: bool) -> Callable:
    """`exp` for a recurrence in log space, else the identity."""
    return jnp.exp if log_space else (lambda v: v)


@jax.custom_jvp
def _logaddexp(x, y):
    """`log(e^x + e^y)` whose gradients are zero, not NaN (as `jnp.logaddexp`'s),
    where both are -inf, i.e. log 0: padding and steps before any reset."""
    hi, lo = jnp.maximum(x, y), jnp.minimum(x, y)
    return hi + jnp.log1p(jnp.exp(lo - jnp.where(jnp.isfinite(hi), hi, 0.0)))


@_logaddexp.defjvp
def _logaddexp_jvp(primals, tangents):
    x, y = primals
    out = _logaddexp(x, y)
    safe_out = jnp.where(jnp.isfinite(out), out, 0.0)
    return out, tangents[0] * jnp.exp(x - safe_out) + tangents[1] * jnp.exp(y - safe_out)
