"""Any recurrent cell parallel over time: Newton's method on the associative scan.

The states solve T equations at once, `h_t = f(h_{t-1}, x_t)`; a Newton step
corrects a guess by the linear recurrence `δ_t = J_t δ_{t-1} + r_t` (`J_t` the
step's Jacobian in the state, `r_t = f(h_{t-1}, x_t) - h_t`), O(log T) deep on
`jax.lax.associative_scan`: DEER (Lim et al. 2024), quasi-DEER with a diagonal
Jacobian (Gonzalez et al. 2024). Use it on a device with parallelism to spend,
for small states or Jacobians diagonal by construction (`rs.paragru`,
`rs.paralstm`) and dynamics that forget; on a CPU the sequential scan stays
faster (`benchmarks/results/newton_cpu.md`).

Convergence: each iteration makes at least one more step exact, whatever the
Jacobian approximation: at most T iterations. Full Jacobian: quadratic near the
solution, a handful of iterations on contractive cells; the diagonal of a dense
Jacobian: quasi-Newton, linear. Per batch row the step uses `J_t / (1 + λ)`; a
step that is not finite or grows the largest residual is replaced by the
fixed-point step `h_t ← f(h_{t-1}, x_t)` and raises `λ` (accepted steps lower it
to `Newton.damping`), so iterations cannot diverge; a solve that misses the
tolerance within `max_iterations` is redone by the sequential scan. (ELK solves
the Levenberg-Marquardt step with a Kalman smoother; this is a cheaper guard.)

Cost per iteration (T steps, B rows, n state numbers a row): full, n
Jacobian-vector products per step, O(T B n^3) work, O(T B n^2) memory; declared
per-unit blocks, one product per state leaf, O(T B n); the diagonal of a dense
Jacobian, n products (in chunks), O(T B n) scan work and memory.

Gradients (reverse mode only), by the implicit function theorem at the solution:
the adjoints `λ_t = g_t + J_{t+1}^T λ_{t+1}`, exact, on the reversed associative
scan with the full or declared-block Jacobian (for `jacobian="diagonal"` on a
dense state above `AUTO_FULL_MAX`: a sequential `lax.scan` of VJPs, O(T) deep);
then one time-parallel VJP of the step for params, inputs, initial and reset
state.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from rnnscan import shards, tree
from rnnscan.cell import split_step
from rnnscan.newton_options import (AUTO_FULL_MAX, DEFAULT_MAX_ITERATIONS, Newton, NewtonInfo,
                                    newton_options)
from rnnscan.plan import Operands, Plan

# Elements of one chunk of Jacobian-vector products: bounds the memory of forming
# a Jacobian to a few of these per chunk.
_CHUNK_ELEMENTS = 1 << 24


def run(plan: Plan, params, ops: Operands):
    """The `"newton"` strategy: `(final_state, outputs)` as `rnnscan.scan.run`
    returns them, and a `NewtonInfo` with `Newton.return_info`."""
    split = split_step(plan.cell)
    step, xs = ((split.recurrent_step, split.project_inputs(params, ops.xs)) if split
                else (plan.cell.step, ops.xs))
    reset_state = ops.h0 if ops.reset_state is None else ops.reset_state  # unused without resets
    return newton_scan(step, params, xs, ops.h0, ops.valid, ops.resets, reset_state,
                       reverse=plan.reverse, return_all_states=plan.return_all_states,
                       options=plan.newton, diagonal_jacobian=bool(split and split.diagonal_jacobian),
                       axis=plan.axis_name and shards.Axis(plan.axis_name, plan.reverse))


def newton_scan(step, params, xs, h0, valid, resets, reset_state, *, reverse: bool,
                return_all_states: bool, options: Newton = Newton(),
                diagonal_jacobian: bool = False, axis: shards.Axis | None = None):
    """Runs `step` over time-major `xs` by Newton iterations; `lax.scan`'s results.

    Args:
      step: `step(params, h, x) -> (h, y)` for one time step, any state pytree.
      xs: a pytree of leaves `(time, batch, ...)`.
      h0, reset_state: state pytrees, leaves `(batch, ...)`: the state before the
        first step read, and the one a reset sets.
      valid: bool `(time, batch)` or None: where false the state is carried
        unchanged and the output is zero.
      resets: bool `(time, batch)` or None: where true the state is set to
        `reset_state` before reading that step (not on a non-valid step).
      reverse: run from the last step to the first; outputs stay aligned.
      options: `Newton` (checked by `newton_options`).
      diagonal_jacobian: the step's Jacobian is diagonal per unit: with the
        state's L leaves all of size n, unit u of each leaf depends only on unit
        u of every leaf (L x L blocks, exact): `SplitStep.diagonal_jacobian`.
      axis: inside `shard_map`, the mesh axis (and direction) the time axis is
        sharded over (`rnnscan.shards`): every linear recurrence runs on the
        sharded associative scan, the sequential fallback as a relay, and the
        convergence test reads every shard; `h_final` is the global one.

    Returns:
      `(h_final, ys)` or `(h_final, (ys, states))`, time-major, as `lax.scan`
      of the masked step returns them; then a `NewtonInfo` with `return_info`.
    """
    options = newton_options(options)
    time, batch = jax.tree_util.tree_leaves(xs)[0].shape[:2]
    flat, unflat = _flattener(h0)
    n = flat(h0).shape[-1]
    valid = jnp.ones((time, batch), bool) if valid is None else valid
    resets = jnp.zeros((time, batch), bool) if resets is None else resets

    def masked_step(params, v, x, reset_v, ok, reset):
        """One step on the flat state `v` `(batch, n)`, masks applied."""
        h, y = step(params, unflat(tree.where(reset, reset_v, v)), x)
        zeros = jax.tree_util.tree_map(jnp.zeros_like, y)
        return tree.where(ok, flat(h), v), tree.where(ok, y, zeros)

    flip = lambda t: jax.tree_util.tree_map(lambda a: jnp.flip(a, 0), t) if reverse else t
    xs, valid, resets = flip((xs, valid, resets))
    steps = jax.vmap(masked_step, in_axes=(None, 0, 0, None, 0, 0))
    layout = _layout(options.jacobian, diagonal_jacobian, h0, n)
    backward_layout = layout if layout[2] else (1, n, True) if n <= AUTO_FULL_MAX else None
    tol = options.tolerance or 8 * float(jnp.finfo(flat(h0).dtype).eps)
    whole_time = time if axis is None else time * jax.lax.axis_size(axis.name)
    cap = min(whole_time, options.max_iterations or DEFAULT_MAX_ITERATIONS)
    if axis is not None and backward_layout is None:
        raise ValueError(f"jacobian={options.jacobian!r} on a dense state of {n} > {AUTO_FULL_MAX} "
                         "numbers has a sequential adjoint, which has no sequence-parallel form: "
                         "use jacobian='full', or a cell with a diagonal Jacobian")

    def states_map(params, h_prev, xs, reset_v, valid, resets):
        return steps(params, h_prev, xs, reset_v, valid, resets)[0]

    # Masks are arguments, not closed over: custom_vjp refuses closed-over tracers.
    @jax.custom_vjp
    def solve(params, xs, h0_v, reset_v, valid, resets):
        f = functools.partial(states_map, params, xs=xs, reset_v=reset_v, valid=valid,
                              resets=resets)

        def sequential():
            one = lambda v, inputs: (masked_step(params, v, inputs[0], reset_v, *inputs[1:])[0],) * 2
            run = lambda h: jax.lax.scan(one, h, (xs, valid, resets))
            return (run(h0_v) if axis is None else shards.pipeline(axis, run, h0_v))[1]

        return _solve(f, sequential, h0_v, time, layout, options.damping, tol, cap, axis)

    def solve_fwd(*args):
        out = solve(*args)
        return out, (*args, out[0])

    def solve_bwd(res, cotangents):
        params, xs, h0_v, reset_v, valid, resets, hs = res
        g, h_prev = cotangents[0], shards.shift(axis, h0_v, hs)
        if backward_layout is None:
            adjoint = _sequential_adjoint(
                lambda v, x, ok, reset: masked_step(params, v, x, reset_v, ok, reset)[0],
                h_prev, xs, valid, resets, g)
        else:
            lin = jax.linearize(lambda v: states_map(params, v, xs, reset_v, valid, resets),
                                h_prev)[1]
            jac = _jacobian(lin, h_prev, backward_layout)
            # λ_t = g_t + J_{t+1}^T λ_{t+1}: the transposed blocks, one step later.
            after = jnp.zeros_like(jac[0]) if axis is None else shards.from_after(axis, jac[0])
            a = jnp.swapaxes(jnp.concatenate([jac[1:], after[None]]), -1, -2)
            adjoint = _from_blocks(_linear_recurrence(a, _to_blocks(g, backward_layout),
                                                      reverse=True, axis=axis), backward_layout)
        _, vjp = jax.vjp(lambda p, v, x, r: states_map(p, v, x, r, valid, resets),
                         params, h_prev, xs, reset_v)
        d_params, d_h_prev, d_xs, d_reset = vjp(adjoint)
        d_h0 = d_h_prev[0]
        if axis is not None:  # the other shards' first steps read the shard before
            d_h0 = jnp.where(shards.position(axis)[0] == shards.position(axis)[2], d_h0, 0)
        return d_params, d_xs, d_h0, d_reset, None, None

    solve.defvjp(solve_fwd, solve_bwd)
    h0_v, reset_v = flat(h0), flat(reset_state)
    if axis is not None:
        # Typed as differing per shard: solve's cotangents for them are per
        # shard, and JAX sums them over the shards.
        params, h0_v, reset_v = shards.varying(axis, (params, h0_v, reset_v))
    if time:
        hs, info = solve(params, xs, h0_v, reset_v, valid, resets)
        info = jax.tree_util.tree_map(jax.lax.stop_gradient, info)
        h_prev, h_final = shards.shift(axis, h0_v, hs), unflat(hs[-1])
        h_final = h_final if axis is None else shards.from_last(axis, h_final)
    else:
        hs = h_prev = jnp.zeros((0,) + h0_v.shape, h0_v.dtype)
        info, h_final = NewtonInfo(jnp.int32(0), jnp.zeros((), h0_v.dtype), jnp.bool_(True)), h0
    ys, hs = flip((steps(params, h_prev, xs, reset_v, valid, resets)[1], hs))
    out = (ys, jax.vmap(unflat)(hs)) if return_all_states else ys
    return (h_final, out, info) if options.return_info else (h_final, out)


def _flattener(h0):
    """`flat(state) -> (batch, n)` (each row's leaves raveled and joined, in leaf
    order) and its inverse `unflat`, for states of `h0`'s structure."""
    row = jax.tree_util.tree_map(lambda a: jnp.zeros(np.shape(a)[1:], jnp.result_type(a)), h0)
    return jax.vmap(lambda state: ravel_pytree(state)[0]), jax.vmap(ravel_pytree(row)[1])


def _layout(jacobian, diagonal_jacobian, h0, n):
    """The Jacobian's blocks `(units, k, exact)`: `(1, n)` full, `(n, 1)` diagonal,
    `(size, L)` the L x L blocks of a declared per-unit state of L leaves; `exact`:
    the blocks are the whole Jacobian, so k products (one per column) form them."""
    if jacobian == "full" or (jacobian == "auto" and not diagonal_jacobian and n <= AUTO_FULL_MAX):
        return (1, n, True)
    if not diagonal_jacobian:
        return (n, 1, False)
    leaves = jax.tree_util.tree_leaves(h0)
    sizes = sorted({int(np.prod(np.shape(a)[1:])) for a in leaves})
    if len(sizes) != 1:
        raise ValueError("diagonal_jacobian=True needs state leaves of one size (unit u of "
                         f"each leaf depends on unit u of every leaf); got sizes {sizes}")
    return (sizes[0], len(leaves), True)


def _to_blocks(v, layout):
    """`(..., n)` flat vectors as `(..., units, k)`: unit u's k numbers."""
    units, k, _ = layout
    return v.reshape(v.shape[:-1] + (k, units)).swapaxes(-1, -2)


def _from_blocks(b, layout):
    return b.swapaxes(-1, -2).reshape(b.shape[:-2] + (-1,))


def _jacobian(lin, v, layout):
    """The blocks `(time, batch, units, k, k)` of the Jacobian whose product is `lin`."""
    units, k, exact = layout
    n = v.shape[-1]
    chunk = max(1, _CHUNK_ELEMENTS // v.size)
    if not exact:
        # The diagonal of a dense Jacobian: entry j of the product with e_j.
        entry = lambda j: lin(shards.varying_like(
            jnp.broadcast_to(jax.nn.one_hot(j, n, dtype=v.dtype), v.shape), v))[..., j]
        return jnp.moveaxis(_map(entry, n, chunk), 0, -1)[..., None, None]
    # Column j of every block at once: the product with e_j in every unit.
    column = lambda j: _to_blocks(lin(shards.varying_like(jnp.broadcast_to(
        _from_blocks(jnp.broadcast_to(jax.nn.one_hot(j, k, dtype=v.dtype), (units, k)), layout),
        v.shape), v)), layout)
    return jnp.moveaxis(_map(column, k, chunk), 0, -1)


def _map(f, count, chunk):
    """`[f(j) for j in range(count)]` stacked, `chunk` of them at a time."""
    if chunk >= count:
        return jax.vmap(f)(jnp.arange(count))
    return jax.lax.map(f, jnp.arange(count), batch_size=chunk)


def _linear_recurrence(a, b, reverse=False, axis=None):
    """`x_t = a_t x_{t-1} + b_t` from `x = 0`, blocks `a` `(T, ..., k, k)`, `b`
    `(T, ..., k)`, on `lax.associative_scan`; sharded over `axis` (in the scan's
    order; `reverse` runs against it) with each shard's summary (`shards.carry`)."""
    if a.shape[-1] == 1:
        a = a[..., 0]
        apply = compose_a = jnp.multiply
    else:
        apply = lambda m, x: jnp.einsum("...ij,...j->...i", m, x)
        compose_a = jnp.matmul

    def compose(earlier, later):
        (a1, b1), (a2, b2) = earlier, later
        return compose_a(a2, a1), apply(a2, b1) + b2

    a, b = jax.lax.associative_scan(compose, (a, b), reverse=reverse)
    if axis is None:
        return b
    end = 0 if reverse else -1
    x_in = shards.carry(axis.flipped() if reverse else axis, (a[end], b[end]),
                        jnp.zeros_like(b[0]), apply)
    return apply(a, x_in[None]) + b


def _solve(states_map, sequential, h0_v, time, layout, damping, tol, cap, axis):
    """The states `(time, batch, n)` that `states_map(h_prev) = h` solves, and info;
    from `sequential()` where the iterations did not converge within `cap`."""

    residual = lambda h: states_map(shards.shift(axis, h0_v, h)) - h
    largest = lambda v, **where: shards.global_max(axis, jnp.max(jnp.abs(v), **where))
    worst = lambda r: largest(r, axis=(0, 2))  # per row

    def body(carry):
        it, h, r, lam = carry
        fh, lin = jax.linearize(states_map, shards.shift(axis, h0_v, h))
        jac = _jacobian(lin, h, layout) / (1 + lam)[:, None, None, None]
        h_new = h + _from_blocks(_linear_recurrence(jac, _to_blocks(r, layout), axis=axis), layout)
        r_new = residual(h_new)
        ok = jnp.isfinite(worst(r_new)) & (worst(r_new) <= worst(r))
        # A rejected row takes the fixed-point step h_t = f(h_{t-1}) instead.
        h_next = jnp.where(ok[:, None], h_new, fh)
        r_next = jax.lax.cond(jnp.all(ok), lambda: r_new,
                              lambda: jnp.where(ok[:, None], r_new, residual(fh)))
        lam = jnp.where(ok, jnp.maximum(lam / 4, damping), jnp.maximum(4 * lam, 1.0))
        return it + 1, h_next, r_next, lam

    converged = lambda h, r: largest(r) <= tol * jnp.maximum(1, largest(h))

    def cond(carry):
        it, h, r, _ = carry
        return (it < cap) & ~converged(h, r)

    h = jnp.broadcast_to(h0_v, (time,) + h0_v.shape)
    lam = jnp.full(h0_v.shape[:1], damping, h0_v.dtype)
    it, h, r, _ = jax.lax.while_loop(cond, body, (jnp.int32(0), h, residual(h), lam))
    done = converged(h, r)
    return jax.lax.cond(done, lambda: h, sequential), NewtonInfo(it, largest(r), done)


def _sequential_adjoint(one_step, h_prev, xs, valid, resets, g):
    """`λ_t = g_t + J_{t+1}^T λ_{t+1}` by a reversed `lax.scan` of VJPs of `one_step`."""

    def body(mu, inputs):  # mu = J_{t+1}^T λ_{t+1}
        v, x, ok, reset, g_t = inputs
        lam = g_t + mu  # λ_t
        return jax.vjp(lambda v: one_step(v, x, ok, reset), v)[1](lam)[0], lam

    return jax.lax.scan(body, jnp.zeros_like(g[0]), (h_prev, xs, valid, resets, g),
                        reverse=True)[1]
