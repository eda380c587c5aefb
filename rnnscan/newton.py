"""Any recurrent cell parallel over time: Newton's method on the associative scan.

The states of a sequence solve T equations at once, `h_t = f(h_{t-1}, x_t)`.
Each Newton iteration linearises them around the current guess: the correction
is the linear recurrence `δ_t = J_t δ_{t-1} + r_t` (`J_t` the step's Jacobian in
the state, `r_t = f(h_{t-1}, x_t) - h_t` the residual), which
`jax.lax.associative_scan` evaluates in O(log T) depth. This is DEER (Lim et al.,
ICLR 2024); the diagonal Jacobian is quasi-DEER (Gonzalez et al., NeurIPS 2024).

When to use it: long sequences on a device with parallelism to spend (a GPU or
TPU), a cell whose state is small or whose Jacobian is diagonal by construction
(`rs.paragru`, `rs.paralstm`), dynamics that forget (contractive steps converge
in a few iterations). On a CPU the sequential scan stays faster
(`benchmarks/results/newton_cpu.md`).

Convergence: every iteration makes at least one more step exact (any Jacobian
approximation does: step `t` is exact once steps before it are), so it ends in
at most T iterations. With the full Jacobian the convergence is quadratic near
the solution: a handful of iterations. The diagonal of a dense cell's Jacobian is
quasi-Newton: linear convergence, more iterations. Each iteration is safeguarded
per batch row: the Newton step uses `J_t / (1 + λ)`, and a step that makes the
largest residual grow, or is not finite, is replaced by the fixed-point step
`h_t ← f(h_{t-1}, x_t)` (itself exact one step further), raising `λ`; accepted
steps lower it towards `Newton.damping`. (ELK proper solves the
Levenberg-Marquardt step with a Kalman smoother; this is its cheaper cousin.)

Cost per iteration, for T steps, B rows, state size n: the full Jacobian takes n
Jacobian-vector products of the step per time step and O(T B n^3) work in the
scan, O(T B n^2) memory, O(log T) depth; a declared diagonal (or per-unit block)
Jacobian takes one product per state leaf and O(T B n) work; the diagonal of a
dense Jacobian still takes n products (in chunks, O(T B n) memory) and O(T B n)
scan work.

Gradients (reverse mode; forward mode is not defined): the implicit function
theorem at the solution, no differentiation through the iterations. The
adjoints solve `λ_t = g_t + J_{t+1}^T λ_{t+1}` with the exact Jacobian: on the
reversed associative scan with the full (or declared block) Jacobian; for
`jacobian="diagonal"` on a dense state larger than `AUTO_FULL_MAX`, with a
sequential `lax.scan` of vector-Jacobian products (O(T) depth). Then one
time-parallel VJP of the step gives the cotangents of params, inputs, the
initial state and the reset state. Memory O(T x state) beyond the Jacobians.
"""

from __future__ import annotations

import functools
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from rnnscan.cells.diagonal import has_diagonal_jacobian

JACOBIANS = ("auto", "full", "diagonal")

# The largest flattened state for which `jacobian="auto"` forms the full Jacobian
# (and `"diagonal"` forms it for the exact adjoint): T * B * n^2 numbers, 2 GiB
# in float32 at T = 16384, B = 8, n = 64.
AUTO_FULL_MAX = 64

DEFAULT_MAX_ITERATIONS = 100

# Elements of one chunk of Jacobian-vector products: bounds the memory of forming
# a Jacobian to a few of these per chunk.
_CHUNK_ELEMENTS = 1 << 24


class Newton(NamedTuple):
    """The options of `method="newton"` (`rs.Newton()` are its defaults).

    Attributes:
      jacobian: `"full"`: the exact `n x n` Jacobian (quadratic convergence;
        small states). `"diagonal"`: its diagonal (quasi-Newton), or the exact
        per-unit blocks of a cell that declares them (`rs.paragru`,
        `rs.paralstm`). `"auto"`: the declared structure where there is one,
        else full up to `AUTO_FULL_MAX` state numbers per row, else diagonal.
      damping: `λ_min >= 0`, the least damping of the Newton step, which uses
        `J_t / (1 + λ)`; `λ` adapts per row above it (see the module doc). 0:
        plain Newton while it makes progress.
      max_iterations: a cap, at most T (more are never needed); default
        `min(T, DEFAULT_MAX_ITERATIONS)`. Hitting it leaves the residual above
        `tolerance`: `return_info` reports it.
      tolerance: stop once `max |h_t - f(h_{t-1}, x_t)|` over every step and
        row is at most `tolerance * max(1, max |h_t|)` (relative to the states'
        scale, so that rounding cannot keep it above); default `8 * eps` of
        the state dtype (9.5e-7 in float32).
      return_info: also return a `NewtonInfo`.
    """

    jacobian: str = "auto"
    damping: float = 0.0
    max_iterations: Optional[int] = None
    tolerance: Optional[float] = None
    return_info: bool = False


class NewtonInfo(NamedTuple):
    """How the solve went, scalars over the batch: `iterations` (int32), the final
    `residual` `max |h_t - f(h_{t-1}, x_t)|`, and whether it `converged` (met
    `Newton.tolerance`)."""

    iterations: jax.Array
    residual: jax.Array
    converged: jax.Array


def newton_options(method) -> Newton:
    """`"newton"` or a `Newton` as checked options; errors name the bad field."""
    if isinstance(method, str) and method == "newton":
        return Newton()
    if not isinstance(method, Newton):
        raise TypeError(f"method must be 'newton' or an rnnscan.Newton; got {method!r}")
    if method.jacobian not in JACOBIANS:
        raise ValueError(f"Newton.jacobian must be one of {JACOBIANS}; got {method.jacobian!r}")
    _check_number("damping", method.damping, allow_zero=True)
    if method.max_iterations is not None:
        if isinstance(method.max_iterations, bool) or not isinstance(
                method.max_iterations, (int, np.integer)):
            raise TypeError("Newton.max_iterations must be a positive int or None; got "
                            f"{method.max_iterations!r}")
        if method.max_iterations <= 0:
            raise ValueError("Newton.max_iterations must be a positive int or None; got "
                             f"{method.max_iterations}")
    if method.tolerance is not None:
        _check_number("tolerance", method.tolerance, allow_zero=False)
    if not isinstance(method.return_info, (bool, np.bool_)):
        raise TypeError(f"Newton.return_info must be a bool; got {method.return_info!r}")
    return method


def _check_number(name, value, *, allow_zero):
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"Newton.{name} must be a real number; got {value!r}")
    if not (value >= 0 if allow_zero else value > 0) or not np.isfinite(value):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"Newton.{name} must be finite and {bound}; got {value}")


def newton_scan(step, params, xs, h0, valid, resets, reset_state, *, reverse: bool,
                return_all_states: bool, options: Newton = Newton(),
                diagonal_jacobian: Optional[bool] = None):
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
        u of every leaf (L x L blocks, exact). Default: whether `step` declares
        it (`rnnscan.cells.diagonal.has_diagonal_jacobian`).

    Returns:
      `(h_final, ys)` or `(h_final, (ys, states))`, time-major, as `lax.scan`
      of the masked step returns them; then a `NewtonInfo` with `return_info`.
    """
    from rnnscan.unroll import tree_where  # unroll will import this module for its dispatch

    options = newton_options(options)
    if diagonal_jacobian is None:
        diagonal_jacobian = has_diagonal_jacobian(step)
    time, batch = jax.tree_util.tree_leaves(xs)[0].shape[:2]
    flat, unflat = _flattener(h0)
    n = flat(h0).shape[-1]
    valid = jnp.ones((time, batch), bool) if valid is None else valid
    resets = jnp.zeros((time, batch), bool) if resets is None else resets

    def masked_step(params, v, x, reset_v, ok, reset):
        """One step on the flat state `v` `(batch, n)`, masks applied."""
        h, y = step(params, unflat(tree_where(reset, reset_v, v)), x)
        zeros = jax.tree_util.tree_map(jnp.zeros_like, y)
        return tree_where(ok, flat(h), v), tree_where(ok, y, zeros)

    if time == 0:
        def body(v, inputs):
            v, y = masked_step(params, v, inputs[0], flat(reset_state), *inputs[1:])
            return v, (y, v)

        h_final, out = jax.lax.scan(body, flat(h0), (xs, valid, resets))
        info = NewtonInfo(jnp.int32(0), jnp.zeros((), flat(h0).dtype), jnp.bool_(True))
        return _results(unflat(h_final), out, unflat, return_all_states, options, info)

    flip = (lambda t: jax.tree_util.tree_map(lambda a: jnp.flip(a, 0), t)) if reverse else (
        lambda t: t)
    xs, valid, resets = flip((xs, valid, resets))
    steps = jax.vmap(masked_step, in_axes=(None, 0, 0, None, 0, 0))
    layout = _layout(options.jacobian, diagonal_jacobian, h0, n)
    backward_layout = layout if layout != (n, 1) or diagonal_jacobian else (
        (1, n) if n <= AUTO_FULL_MAX else None)
    dtype = flat(h0).dtype
    tol = options.tolerance or 8 * float(jnp.finfo(dtype).eps)
    cap = min(time, options.max_iterations or DEFAULT_MAX_ITERATIONS)

    def states_map(params, h_prev, xs, reset_v, valid, resets):
        return steps(params, h_prev, xs, reset_v, valid, resets)[0]

    # Masks are arguments, not closed over: custom_vjp refuses closed-over tracers.
    @jax.custom_vjp
    def solve(params, xs, h0_v, reset_v, valid, resets):
        f = functools.partial(states_map, params, xs=xs, reset_v=reset_v, valid=valid,
                              resets=resets)
        return _solve(f, h0_v, time, layout, options.damping, tol, cap)

    def solve_fwd(*args):
        hs, info = solve(*args)
        return (hs, info), (*args, hs)

    def solve_bwd(res, cotangents):
        params, xs, h0_v, reset_v, valid, resets, hs = res
        g = cotangents[0]
        h_prev = _shift(h0_v, hs)
        if backward_layout is None:
            adjoint = _sequential_adjoint(
                lambda v, x, ok, reset: masked_step(params, v, x, reset_v, ok, reset)[0],
                h_prev, xs, valid, resets, g)
        else:
            lin = jax.linearize(lambda v: states_map(params, v, xs, reset_v, valid, resets),
                                h_prev)[1]
            jac = _jacobian(lin, h_prev, backward_layout)
            # λ_t = g_t + J_{t+1}^T λ_{t+1}: the transposed blocks, one step later.
            a = jnp.concatenate([jnp.swapaxes(jac[1:], -1, -2), jnp.zeros_like(jac[:1])])
            adjoint = _from_blocks(_linear_recurrence(a, _to_blocks(g, backward_layout),
                                                      reverse=True), backward_layout)
        _, vjp = jax.vjp(lambda p, v, x, r: states_map(p, v, x, r, valid, resets),
                         params, h_prev, xs, reset_v)
        d_params, d_h_prev, d_xs, d_reset = vjp(adjoint)
        return d_params, d_xs, d_h_prev[0], d_reset, None, None

    solve.defvjp(solve_fwd, solve_bwd)
    h0_v, reset_v = flat(h0), flat(reset_state)
    hs, info = solve(params, xs, h0_v, reset_v, valid, resets)
    info = jax.tree_util.tree_map(jax.lax.stop_gradient, info)
    _, ys = steps(params, _shift(h0_v, hs), xs, reset_v, valid, resets)
    h_final = unflat(hs[-1])
    ys, hs = flip((ys, hs))
    return _results(h_final, (ys, hs), unflat, return_all_states, options, info)


def _results(h_final, out, unflat, return_all_states, options, info):
    ys, hs = out
    out = (ys, jax.vmap(unflat)(hs)) if return_all_states else ys
    return (h_final, out, info) if options.return_info else (h_final, out)


def _flattener(h0):
    """`flat(state) -> (batch, n)` (leaves raveled after the batch axis, joined)
    and its inverse `unflat`, for states of `h0`'s structure."""
    leaves, treedef = jax.tree_util.tree_flatten(h0)
    shapes = [np.shape(a)[1:] for a in leaves]
    dtypes = [jnp.result_type(a) for a in leaves]
    cuts = np.cumsum([int(np.prod(s)) for s in shapes])[:-1]

    def flat(state):
        parts = [a.reshape(a.shape[:1] + (-1,)) for a in jax.tree_util.tree_leaves(state)]
        return jnp.concatenate(parts, axis=-1) if len(parts) > 1 else parts[0]

    def unflat(v):
        parts = jnp.split(v, cuts, axis=-1)
        return jax.tree_util.tree_unflatten(treedef, [
            p.reshape(p.shape[:1] + s).astype(d) for p, s, d in zip(parts, shapes, dtypes)])

    return flat, unflat


def _layout(jacobian, diagonal_jacobian, h0, n):
    """The Jacobian's blocks, `(units, k)`: `(1, n)` full, `(n, 1)` diagonal,
    `(size, L)` the L x L blocks of a per-unit-diagonal state of L leaves."""
    if jacobian == "full" or (jacobian == "auto" and not diagonal_jacobian and n <= AUTO_FULL_MAX):
        return (1, n)
    if not diagonal_jacobian:
        return (n, 1)
    sizes = {int(np.prod(np.shape(a)[1:])) for a in jax.tree_util.tree_leaves(h0)}
    if len(sizes) != 1:
        raise ValueError(
            "diagonal_jacobian=True needs state leaves of one size (unit u of each leaf "
            f"depends on unit u of every leaf); got sizes {sorted(sizes)}")
    return (sizes.pop(), len(jax.tree_util.tree_leaves(h0)))


def _to_blocks(v, layout):
    """`(..., n)` flat vectors as `(..., units, k)`: unit u's k numbers."""
    units, k = layout
    return v.reshape(v.shape[:-1] + (k, units)).swapaxes(-1, -2)


def _from_blocks(b, layout):
    return b.swapaxes(-1, -2).reshape(b.shape[:-2] + (-1,))


def _jacobian(lin, v, layout):
    """The blocks `(time, batch, units, k, k)` of the Jacobian whose product is `lin`."""
    units, k = layout
    n = v.shape[-1]
    chunk = max(1, _CHUNK_ELEMENTS // v.size)
    if k == 1 and units > 1:
        # The diagonal of a dense Jacobian: entry j of the product with e_j.
        entry = lambda j: lin(jnp.broadcast_to(jax.nn.one_hot(j, n, dtype=v.dtype), v.shape))[..., j]
        return jnp.moveaxis(_map(entry, n, chunk), 0, -1)[..., None, None]
    # Column j of every block at once: the product with e_j in every unit.
    column = lambda j: _to_blocks(lin(jnp.broadcast_to(
        _from_blocks(jnp.broadcast_to(jax.nn.one_hot(j, k, dtype=v.dtype), (units, k)), layout),
        v.shape)), layout)
    return jnp.moveaxis(_map(column, k, chunk), 0, -1)


def _map(f, count, chunk):
    """`[f(j) for j in range(count)]` stacked, `chunk` of them at a time."""
    if chunk >= count:
        return jax.vmap(f)(jnp.arange(count))
    return jax.lax.map(f, jnp.arange(count), batch_size=chunk)


def _linear_recurrence(a, b, reverse=False):
    """`x_t = a_t x_{t-1} + b_t` from `x = 0`, blocks `a` `(T, ..., k, k)`, `b`
    `(T, ..., k)`, on `lax.associative_scan`."""
    if a.shape[-1] == 1:
        a = a[..., 0]
        apply = compose_a = jnp.multiply
    else:
        apply = lambda m, x: jnp.einsum("...ij,...j->...i", m, x)
        compose_a = jnp.matmul

    def compose(earlier, later):
        (a1, b1), (a2, b2) = earlier, later
        return compose_a(a2, a1), apply(a2, b1) + b2

    return jax.lax.associative_scan(compose, (a, b), reverse=reverse)[1]


def _shift(h0_v, hs):
    """The state each step reads: `h0` then the states before the last."""
    return jnp.concatenate([h0_v[None], hs[:-1]])


def _solve(states_map, h0_v, time, layout, damping, tol, cap):
    """The states `(time, batch, n)` that `states_map(h_prev) = h` solves, and info."""

    def residual(h):
        return states_map(_shift(h0_v, h)) - h

    def worst(r):  # per row
        return jnp.max(jnp.abs(r), axis=(0, 2))

    def body(carry):
        it, h, r, lam = carry
        fh, lin = jax.linearize(states_map, _shift(h0_v, h))
        jac = _jacobian(lin, h, layout) / (1 + lam)[:, None, None, None]
        h_new = h + _from_blocks(_linear_recurrence(jac, _to_blocks(r, layout)), layout)
        r_new = residual(h_new)
        ok = jnp.isfinite(worst(r_new)) & (worst(r_new) <= worst(r))
        # A rejected row takes the fixed-point step h_t = f(h_{t-1}) instead.
        h_next = jnp.where(ok[:, None], h_new, fh)
        r_next = jax.lax.cond(jnp.all(ok), lambda: r_new,
                              lambda: jnp.where(ok[:, None], r_new, residual(fh)))
        lam = jnp.where(ok, jnp.maximum(lam / 4, damping), jnp.maximum(4 * lam, 1.0))
        return it + 1, h_next, r_next, lam

    def converged(h, r):
        return jnp.max(jnp.abs(r)) <= tol * jnp.maximum(1, jnp.max(jnp.abs(h)))

    def cond(carry):
        it, h, r, _ = carry
        return (it < cap) & ~converged(h, r)

    h = jnp.broadcast_to(h0_v, (time,) + h0_v.shape)
    lam = jnp.full(h0_v.shape[:1], damping, h0_v.dtype)
    it, h, r, _ = jax.lax.while_loop(cond, body, (jnp.int32(0), h, residual(h), lam))
    return h, NewtonInfo(it, jnp.max(jnp.abs(r)), converged(h, r))


def _sequential_adjoint(one_step, h_prev, xs, valid, resets, g):
    """`λ_t = g_t + J_{t+1}^T λ_{t+1}` by a reversed `lax.scan` of VJPs of `one_step`."""

    def body(mu, inputs):  # mu = J_{t+1}^T λ_{t+1}
        v, x, ok, reset, g_t = inputs
        lam = g_t + mu
        return jax.vjp(lambda v: one_step(v, x, ok, reset), v)[1](lam)[0], lam

    return jax.lax.scan(body, jnp.zeros_like(g[0]), (h_prev, xs, valid, resets, g),
                        reverse=True)[1]
