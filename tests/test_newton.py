"""`rnnscan.newton.newton_scan` against a plain `lax.scan` of the masked step and
the Python loop of tests/reference.py: values, gradients, options, errors."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import rnnscan as rs
from rnnscan.newton import Newton, newton_options, newton_scan
from tests import reference as ref

B, T, F, H = 4, 9, 3, 4
LENGTHS = np.array([T, 0, 5, 2], np.int32)
RESETS = np.zeros((B, T), bool)
RESETS[0, [0, 4]] = True
RESETS[2, [3, 7]] = True  # step 7 is past row 2's length: changes nothing
RESETS[1, 2] = True  # a row of length 0: changes nothing


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def paragru_step(p, h, x):
    """The equations of `rs.paragru`'s docstring, in numpy."""
    x_r, x_z, x_n = np.split(x @ p["w_ih"] + p["b"], 3, axis=-1)
    r = sigmoid(x_r + p["a"][0] * h)
    z = sigmoid(x_z + p["a"][1] * h)
    n = np.tanh(x_n + r * (p["a"][2] * h + p["b_hn"]))
    h = (1 - z) * n + z * h
    return h, h


def paralstm_step(p, state, x):
    h, c = state
    i, f, j, o = (g + a * h for g, a in zip(np.split(x @ p["w_ih"] + p["b"], 4, axis=-1), p["a"]))
    c = sigmoid(f + 1.0) * c + sigmoid(i) * np.tanh(j)
    h = sigmoid(o) * np.tanh(c)
    return (h, c), h


def bare_step(params, h, x):
    """A user's cell with a tuple state of two sizes."""
    a, b = h
    a = jnp.tanh(x @ params["u"] + b @ params["w"] + 0.5 * a)
    b = 0.5 * b + 0.5 * jnp.tanh(a @ params["v"])
    return (a, b), a + jnp.sum(b, -1, keepdims=True)


def bare_step_np(p, h, x):
    a, b = h
    a = np.tanh(x @ p["u"] + b @ p["w"] + 0.5 * a)
    b = 0.5 * b + 0.5 * np.tanh(a @ p["v"])
    return (a, b), a + b.sum(-1, keepdims=True)


def bare_params(key):
    k = jax.random.split(key, 3)
    return {"u": jax.random.normal(k[0], (F, H)), "w": jax.random.normal(k[1], (2, H)),
            "v": jax.random.normal(k[2], (H, 2))}


# name -> (cell or bare step, params init, numpy step taking params)
CELLS = {
    "lstm": (rs.lstm(F, H), None, ref.lstm_step),
    "gru": (rs.gru(F, H), None, ref.gru_step),
    "rnn": (rs.rnn(F, H), None, ref.rnn_step),
    "paragru": (rs.paragru(F, H), None, paragru_step),
    "paralstm": (rs.paralstm(F, H), None, paralstm_step),
    "bare": (bare_step, bare_params, bare_step_np),
}


def randomize(tree, seed, scale=0.5):
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    return jax.tree_util.tree_unflatten(
        treedef, [scale * jax.random.normal(k, x.shape, x.dtype) for k, x in zip(keys, leaves)])


def setup(name, seed=0, dtype=jnp.float32):
    cell, init, np_step = CELLS[name]
    if init is None:
        params = randomize(cell.init(jax.random.key(seed)), seed)
        h0 = cell.initial_state(params, (B,))
    else:
        params = init(jax.random.key(seed))
        h0 = (jnp.zeros((B, H)), jnp.zeros((B, 2)))
    xs = np.random.default_rng(seed).normal(size=(B, T, F))
    cast = lambda t: jax.tree_util.tree_map(lambda a: jnp.asarray(a, dtype), t)
    return cell, cast(params), cast(xs), cast(h0), np_step


def masks(lengths, resets):
    valid = None if lengths is None else jnp.arange(T)[:, None] < jnp.asarray(lengths)[None]
    return valid, None if resets is None else jnp.asarray(resets).T


def run_newton(cell, params, xs, h0, reset_state, *, lengths=None, resets=None, reverse=False,
               return_all_states=False, options=Newton()):
    """`rs.unroll(method=options)`, its results in `lax.scan`'s form and layout
    (as `run_sequential`'s): `(h_final, ys or (ys, states))`, time-major."""
    out = rs.unroll(cell, params, xs, initial_state=h0, lengths=lengths, resets=resets,
                    reset_state=None if resets is None else reset_state, reverse=reverse,
                    return_all_states=return_all_states, method=options, time_major=False)
    swap = lambda t: jax.tree_util.tree_map(lambda a: jnp.swapaxes(a, 0, 1), t)
    ys, h_final, rest = out[0], out[1], out[2:]
    if return_all_states:
        return (h_final, (swap(ys), swap(rest[0])), *rest[1:])
    return (h_final, swap(ys), *rest)


def run_sequential(cell, params, xs, h0, reset_state, *, lengths=None, resets=None,
                   reverse=False, return_all_states=False):
    """The same masked step under a plain `lax.scan`, written out here."""
    step = cell.step if isinstance(cell, rs.Cell) else cell
    valid, resets = masks(lengths, resets)
    valid = jnp.ones((T, B), bool) if valid is None else valid
    resets = jnp.zeros((T, B), bool) if resets is None else resets
    where = lambda m, a, b: jax.tree_util.tree_map(
        lambda a, b: jnp.where(m.reshape(m.shape + (1,) * (a.ndim - 1)), a, b), a, b)

    def body(h, inputs):
        x, ok, reset = inputs
        h_new, y = step(params, where(reset, reset_state, h), x)
        h_new = where(ok, h_new, h)
        y = where(ok, y, jax.tree_util.tree_map(jnp.zeros_like, y))
        return h_new, ((y, h_new) if return_all_states else y)

    return jax.lax.scan(body, h0, (jnp.swapaxes(xs, 0, 1), valid, resets), reverse=reverse)


def assert_close(got, want, tol=2e-5):
    got, want = jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=tol, atol=tol)


def weights(tree):
    """A fixed cotangent for every output, so that each gradient is tested."""
    return jax.tree_util.tree_map(
        lambda a: jnp.cos(jnp.arange(a.size, dtype=a.dtype).reshape(a.shape)), tree)


@functools.partial(jax.jit, static_argnums=(0, 1),
                   static_argnames=("lengths", "resets", "reverse", "options"))
def values_and_grads(run, cell, params, xs, h0, reset_state, *, lengths, resets, **kwargs):
    """`run`'s results and the gradients of `sum(weights * results)` in its
    params, inputs, initial state and reset state."""
    f = lambda *args: run(cell, *args, lengths=lengths and LENGTHS, resets=resets and RESETS,
                          return_all_states=True, **kwargs)
    out, vjp = jax.vjp(f, params, xs, h0, reset_state)
    return out, vjp(weights(out))


def as_tuple(tree):
    return tuple(np.asarray(a) for a in tree) if isinstance(tree, tuple) else np.asarray(tree)


# Every option, on lengths that include 0 and T and resets that include steps
# past a row's length; each cell's other direction is marked slow.
CASES = [(name, reverse) for name in CELLS for reverse in (False, True)]
FAST = {("lstm", False), ("gru", True), ("rnn", False), ("paragru", True),
        ("paralstm", False), ("bare", True)}


@pytest.mark.parametrize("name, reverse", [
    pytest.param(*case, marks=() if case in FAST else pytest.mark.slow) for case in CASES])
def test_values_and_gradients_match_references(name, reverse):
    cell, params, xs, h0, np_step = setup(name)
    h0 = randomize(h0, 1, scale=1.0)
    kwargs = dict(lengths=True, resets=True, reverse=reverse)
    (h_final, (ys, states)), _ = values_and_grads(run_newton, cell, params, xs, h0, h0, **kwargs)
    np_params = jax.tree_util.tree_map(np.asarray, params)
    want = ref.loop_unroll(functools.partial(np_step, np_params), np.asarray(xs), as_tuple(h0),
                           lengths=LENGTHS, resets=RESETS, reverse=reverse,
                           reset_state=as_tuple(h0))
    swap = lambda t: jax.tree_util.tree_map(lambda a: np.swapaxes(a, 0, 1), as_tuple(t))
    assert_close((swap(ys), as_tuple(h_final), swap(states)), want)

    # A reset state of its own: against the sequential scan, values and gradients.
    reset_state = randomize(h0, 2)
    got = values_and_grads(run_newton, cell, params, xs, h0, reset_state, **kwargs)
    want = values_and_grads(run_sequential, cell, params, xs, h0, reset_state, **kwargs)
    assert_close(got[0], want[0])
    assert_close(got[1], want[1], tol=5e-5)
    # Every argument is reached (h0 through rows whose first step is not a reset).
    assert all(np.any(np.asarray(g) != 0) for g in jax.tree_util.tree_leaves(got[1]))


@pytest.mark.parametrize("name, jacobian", [("lstm", "diagonal"), ("paralstm", "full")])
def test_other_jacobians_agree(name, jacobian):
    """The quasi-Newton diagonal of a dense cell, and the full Jacobian of a
    diagonal one (the defaults, full for lstm and per-unit blocks for paralstm,
    are tested above)."""
    cell, params, xs, h0, _ = setup(name)
    kwargs = dict(lengths=True, resets=True, reverse=False)
    got = values_and_grads(run_newton, cell, params, xs, h0, h0,
                           options=Newton(jacobian=jacobian), **kwargs)
    want = values_and_grads(run_sequential, cell, params, xs, h0, h0, **kwargs)
    assert_close(got[0], want[0])
    assert_close(got[1], want[1], tol=5e-5)


def test_sequential_adjoint_for_a_large_dense_state():
    """`jacobian="diagonal"` on a dense state above AUTO_FULL_MAX: the adjoint runs
    as a sequential scan of VJPs, still exact."""
    cell = rs.gru(F, 70)
    params = randomize(cell.init(jax.random.key(0)), 0, scale=0.2)
    xs = jnp.asarray(np.random.default_rng(0).normal(size=(B, T, F)), jnp.float32)
    h0 = randomize(cell.initial_state(params, (B,)), 1)
    kwargs = dict(lengths=True, resets=True, reverse=True)
    got = values_and_grads(run_newton, cell, params, xs, h0, h0,
                           options=Newton(jacobian="diagonal"), **kwargs)
    want = values_and_grads(run_sequential, cell, params, xs, h0, h0, **kwargs)
    assert_close(got[0], want[0])
    assert_close(got[1], want[1], tol=5e-5)


@pytest.mark.parametrize("name", [
    "paralstm", "bare", pytest.param("gru", marks=pytest.mark.slow)])
def test_gradients_match_finite_differences(name):
    with jax.enable_x64(True):
        cell, params, xs, h0, _ = setup(name, dtype=jnp.float64)
        if name != "bare":  # computing in float64 throughout, matmuls included
            cell = getattr(rs, name)(F, H, param_dtype=jnp.float64)
        options = Newton(tolerance=1e-13)

        @jax.jit
        def f(params, xs, h0, reset_state):
            out = run_newton(cell, params, xs, h0, reset_state, lengths=LENGTHS, resets=RESETS,
                             reverse=True, return_all_states=True, options=options)
            return sum(jnp.vdot(w, a) for w, a in zip(*map(jax.tree_util.tree_leaves,
                                                             (weights(out), out))))

        check_grads(f, (params, xs, randomize(h0, 1), randomize(h0, 2)), order=1,
                    modes=["rev"], atol=1e-6, rtol=1e-6)


def test_converges_within_time_steps_where_newton_overshoots():
    """An expansive ReLU RNN with the diagonal approximation: steps that make the
    residual grow are replaced, and after T iterations every step is exact."""
    cell = rs.rnn(F, H, activation="relu")
    params = randomize(cell.init(jax.random.key(3)), 3, scale=1.5)
    xs = jnp.asarray(np.random.default_rng(3).normal(size=(B, T, F)), jnp.float32)
    h0 = cell.initial_state(params, (B,))
    for damping in (0.0, 1.0):
        options = Newton(jacobian="diagonal", damping=damping, return_info=True)
        h_final, ys, info = run_newton(cell, params, xs, h0, h0, options=options)
        assert bool(info.converged) and int(info.iterations) <= T
        assert_close((h_final, ys), run_sequential(cell, params, xs, h0, h0), tol=1e-4)


def test_iteration_cap_and_info():
    cell, params, xs, h0, _ = setup("lstm")
    options = Newton(jacobian="diagonal", max_iterations=2, return_info=True)
    h_final, ys, info = run_newton(cell, params, xs, h0, h0, options=options)
    assert int(info.iterations) == 2 and not bool(info.converged) and float(info.residual) > 0
    # Not converged: the sequential scan's states instead, exact all the same.
    assert_close((h_final, ys), run_sequential(cell, params, xs, h0, h0))
    *_, info = run_newton(cell, params, xs, h0, h0, options=options._replace(max_iterations=None))
    assert bool(info.converged) and int(info.iterations) <= T


def test_no_time_steps():
    cell, params, xs, h0, _ = setup("paralstm")
    h0 = randomize(h0, 1)
    xp = cell.project_inputs(params, jnp.swapaxes(xs, 0, 1)[:0])
    h_final, (ys, states), info = newton_scan(
        cell.recurrent_step, params, xp, h0, None, None, h0, reverse=False,
        return_all_states=True, options=Newton(return_info=True))
    assert_close(h_final, h0, tol=0)
    assert ys.shape == (0, B, H) and states.h.shape == (0, B, H) and int(info.iterations) == 0


def test_diagonal_cells_declare_their_jacobian_and_run_sequentially():
    for make in (rs.paragru, rs.paralstm):
        cell = make(F, H)
        assert cell.step.diagonal_jacobian
        wrapped = cell._replace(step=lambda p, h, x: cell.step(p, h, x))
        assert not isinstance(wrapped.step, rs.SplitStep)  # the declaration goes with the step
        params = cell.init(jax.random.key(0))
        xs = jnp.ones((B, T, F))
        ys, _ = rs.unroll(cell, params, xs, lengths=LENGTHS)
        h0 = cell.initial_state(params, (B,))
        assert_close(ys, jnp.swapaxes(run_sequential(cell, params, xs, h0, h0,
                                                     lengths=LENGTHS)[1], 0, 1))
    with pytest.raises(ValueError, match="hidden_size"):
        rs.paragru(F, 0)


@pytest.mark.parametrize("options, error, match", [
    (Newton(jacobian="dense"), ValueError, r"jacobian must be one of .*'dense'"),
    (Newton(max_iterations=0), ValueError, r"Newton.max_iterations must be a positive int; got 0"),
    (Newton(max_iterations=2.5), TypeError, r"max_iterations .*2\.5"),
    (Newton(tolerance=0.0), ValueError, r"Newton.tolerance must be a positive number; got 0"),
    (Newton(tolerance=-1e-3), ValueError, r"tolerance .*-0\.001"),
    (Newton(damping=-1.0), ValueError, r"Newton.damping must be a non-negative number; got -1"),
    (Newton(damping="strong"), TypeError, r"Newton.damping must be a non-negative number; got 'strong'"),
    (Newton(return_info="yes"), TypeError, r"return_info must be a bool"),
    ("newtonian", TypeError, r"method must be 'newton' or an rnnscan.Newton; got 'newtonian'"),
])
def test_bad_options_are_refused(options, error, match):
    with pytest.raises(error, match=match):
        newton_options(options)


def test_declared_diagonal_needs_leaves_of_one_size():
    _, params, xs, h0, _ = setup("bare")
    with pytest.raises(ValueError, match=r"diagonal_jacobian=True .*sizes \[2, 4\]"):
        newton_scan(bare_step, params, jnp.swapaxes(xs, 0, 1), h0, None, None, h0,
                    reverse=False, return_all_states=False, diagonal_jacobian=True)


def test_string_method_is_the_defaults():
    assert newton_options("newton") == Newton()
