"""Linear recurrences, `h_t = a_t * h_{t-1} + b_t`, on `jax.lax.associative_scan`.

When `a_t` and `b_t` come from the inputs alone, step s followed by step t is again
an affine map of the state, `(a_s, b_s) • (a_t, b_t) = (a_s a_t, a_t b_s + b_t)`,
and that composition is associative: all T states come out of a parallel prefix
scan in O(log T) depth instead of T dependent steps.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp

from rnnscan.cell import Cell, check_same_structure

METHODS = ("auto", "sequential", "associative")

# The shortest sequence from which `method="auto"` takes the associative scan, per
# backend; None: never.
# CPU: measured by benchmarks/linear_scan.py (results/linear_scan_cpu.md): with no
# parallelism to spend, its ~2x work made it slower than the sequential scan at
# every T from 256 to 16384, forward and backward (minGRU, in log space, 2-4x;
# the LRU 1.05-1.8x).
# GPU/TPU: an estimate, not yet measured. A sequential step there is latency-bound,
# ~10 µs per loop iteration (8 unrolled steps), and an associative level costs a
# few fused kernel launches, ~15 µs, for 2 log2(T) levels: they meet near
# T = 128-256. 256 errs towards the sequential scan, which also holds less memory.
AUTO_MIN_TIME = {"cpu": None, "gpu": 256, "tpu": 256}


class LinearRecurrence(NamedTuple):
    """A recurrence linear in its state: `h_t = a_t * h_{t-1} + b_t`, elementwise.

    Attributes:
      coefficients: `coefficients(params, xs) -> (a, b)` for every step at once:
        `xs` `(*lead, input_size)` for any leading shape (`(time, batch)` in
        `unroll`); `a` and `b` have the state's structure, leaves `(*lead, size)`.
      readout: `readout(params, hs, xs) -> ys`, the outputs from the states after
        each step and the inputs that produced them, for any leading shape;
        `None`: the output is the state.
      log_space: `coefficients` returns `(log a, log b)`, real, for recurrences
        with `a, b > 0` (minGRU, minLSTM): the scan composes in log space, where
        products over thousands of steps neither underflow nor lose precision.
        The state itself stays in linear space and may take any sign.
    """

    coefficients: Callable[[Any, Any], tuple]
    readout: Optional[Callable[[Any, Any, Any], Any]] = None
    log_space: bool = False


def linear_cell(init, initial_state, recurrence: LinearRecurrence) -> Cell:
    """The `Cell` of `recurrence`: its step, the fast path, and `linear=recurrence`.

    `step(p, h, x)` computes `a * h + b` and the readout for one step, so the cell
    also runs through the sequential scan and anywhere else a `Cell` goes.
    """
    to_linear = _to_linear(recurrence.log_space)

    def project_inputs(params, x):
        # Exponentiated here, time-parallel, to keep it off the sequential path.
        a, b = recurrence.coefficients(params, x)
        return jax.tree_util.tree_map(to_linear, a), jax.tree_util.tree_map(to_linear, b), x

    def recurrent_step(params, h, xp):
        a, b, x = xp
        h = jax.tree_util.tree_map(lambda h, a, b: a * h + b, h, a, b)
        return h, (h if recurrence.readout is None else recurrence.readout(params, h, x))

    def step(params, h, x):
        return recurrent_step(params, h, project_inputs(params, x))

    return Cell(init, initial_state, step, project_inputs, recurrent_step, linear=recurrence,
                rowwise=True)


def resolve_method(method, cell: Cell, time: int, *, remat=False,
                   backend: Optional[str] = None) -> str:
    """`unroll`'s `method` made concrete: `"sequential"` or `"associative"`.

    `"auto"` takes the associative scan for a linear cell from `AUTO_MIN_TIME`
    steps on, unless `remat` asks for the sequential scan's memory schedule.
    """
    if not (isinstance(method, str) and method in METHODS):
        raise ValueError(f"method must be one of {METHODS}; got {method!r}")
    if method == "associative" and remat is not False:
        raise ValueError(
            f"remat={remat!r} checkpoints the sequential scan; method='associative' has "
            "no steps to checkpoint: pass remat=False, or method='sequential'"
        )
    if cell.linear is None:
        if method == "associative":
            raise ValueError(
                "method='associative' needs a cell that is linear in its state, one with "
                "cell.linear set (rs.mingru, rs.minlstm, rs.lru, or "
                "rnnscan.parallel.linear_cell); this cell has none: use "
                "method='sequential' or 'auto'"
            )
        return "sequential"
    if method == "auto":
        if remat is not False:
            return "sequential"
        threshold = AUTO_MIN_TIME.get(backend or jax.default_backend(), AUTO_MIN_TIME["gpu"])
        return "associative" if threshold is not None and time >= threshold else "sequential"
    return method


def associative_scan(recurrence: LinearRecurrence, params, xs, h0, valid=None, resets=None,
                     *, reverse: bool = False, return_all_states: bool = False):
    """Runs `recurrence` over time-major `xs` with `jax.lax.associative_scan`.

    Same semantics as `unroll`'s sequential scan: `resets` (bool `(time, batch)`)
    puts the state back to `h0` (leaves `(batch, size)`) before reading a step,
    and a step where `valid` (bool `(time, batch)`) is false leaves the state
    alone and outputs zero.

    Returns:
      What `lax.scan` returns for the sequential loop: `(final_state, ys)`, or
      `(final_state, (ys, states))` with `return_all_states`; time-major.
    """
    from rnnscan.unroll import tree_where  # unroll imports this module for its dispatch

    log = recurrence.log_space
    time = jax.tree_util.tree_leaves(xs)[0].shape[0]
    a, b = recurrence.coefficients(params, xs)
    expected = jax.tree_util.tree_map(
        lambda h: jax.ShapeDtypeStruct((time,) + h.shape, h.dtype), h0
    )
    for name, coef in zip(("log a", "log b") if log else ("a", "b"), (a, b)):
        check_same_structure(
            f"{name} from cell.linear.coefficients", coef, expected,
            "the state with a leading time axis",
        )

    # (×, +) in linear space is (+, logaddexp) in log space.
    mul, add = (jnp.add, _logaddexp) if log else (jnp.multiply, jnp.add)
    one, zero = (0.0, -jnp.inf) if log else (1.0, 0.0)

    offsets = [b]
    if resets is not None:
        # A reset step computes a_t * h0 + b_t. Its a_t goes to a second offset,
        # carried like b, whose sum is the coefficient of h0: folding a_t * h0
        # into b_t would need log(h0), and h0 may be zero or negative.
        offsets.append(tree_where(resets, a, _fill(a, zero)))
        a = tree_where(~resets, a, _fill(a, zero))
    if valid is not None:
        # Padding is the identity map: the state passes through unchanged.
        a = tree_where(valid, a, _fill(a, one))
        offsets = [tree_where(valid, o, _fill(o, zero)) for o in offsets]

    def compose(earlier, later):
        (a1, *o1), (a2, *o2) = earlier, later
        return (
            jax.tree_util.tree_map(mul, a1, a2),
            *[jax.tree_util.tree_map(lambda a, x, y: add(mul(a, x), y), a2, x, y)
              for x, y in zip(o1, o2)],
        )

    a, b, *c = jax.lax.associative_scan(compose, (a, *offsets), reverse=reverse)
    # h_t = A_t * h0 + B_t, where A_t (the coefficient of h0) restarts at each reset.
    a = jax.tree_util.tree_map(add, a, c[0]) if c else a
    to_linear = _to_linear(log)
    hs = jax.tree_util.tree_map(lambda a, b, h: to_linear(a) * h + to_linear(b), a, b, h0)

    ys = hs if recurrence.readout is None else recurrence.readout(params, hs, xs)
    if valid is not None:
        ys = tree_where(valid, ys, _fill(ys, 0))
    # The final state is the last in scan order; h0 if there are no steps.
    last = (lambda h: h[0]) if reverse else (lambda h: h[-1])
    h_final = h0 if time == 0 else jax.tree_util.tree_map(last, hs)
    return h_final, ((ys, hs) if return_all_states else ys)


def _to_linear(log_space: bool) -> Callable:
    return jnp.exp if log_space else (lambda v: v)


def _fill(tree, value):
    """`value` in place of every leaf of `tree`: the other branch of a `tree_where`."""
    return jax.tree_util.tree_map(lambda _: value, tree)


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
