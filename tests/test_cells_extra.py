"""The layer-normalised LSTM and GRU (`layer_norm=True`) against the published
equations in numpy (tests/reference.py), one step and unrolled in a Python loop."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import rnnscan as rs
from rnnscan.cell import split_step
from tests import reference as ref
from tests.test_unroll import LENGTHS, RESETS, randomize, to_numpy

B, T, F, H = 4, 7, 3, 5

# name -> (cell factory, numpy reference step factory taking the params)
CELLS = {
    "lstm": (lambda **kw: rs.lstm(F, H, layer_norm=True, **kw),
             lambda p: functools.partial(ref.layer_norm_lstm_step, p)),
    "lstm_proj_clips": (
        lambda **kw: rs.lstm(F, H, layer_norm=True, proj_size=2, cell_clip=0.5, proj_clip=0.3,
                             forget_bias=0.0, **kw),
        lambda p: functools.partial(ref.layer_norm_lstm_step, p, forget_bias=0.0, cell_clip=0.5,
                                    proj_clip=0.3)),
    "lstm_relu_nobias": (
        lambda **kw: rs.lstm(F, H, layer_norm=True, activation="relu", use_bias=False, **kw),
        lambda p: functools.partial(ref.layer_norm_lstm_step, p, act="relu")),
    "gru": (lambda **kw: rs.gru(F, H, layer_norm=True, **kw),
            lambda p: functools.partial(ref.layer_norm_gru_step, p)),
    "gru_relu_nobias": (
        lambda **kw: rs.gru(F, H, layer_norm=True, activation="relu", use_bias=False, **kw),
        lambda p: functools.partial(ref.layer_norm_gru_step, p, act="relu")),
}


def setup(name, seed=0, **kw):
    make_cell, make_ref = CELLS[name]
    cell = make_cell(**kw)
    # Every param random, the gains and biases of the norms too, so each one matters.
    params = randomize(cell.init(jax.random.key(seed)), seed)
    return cell, params, make_ref(to_numpy(params))


def numpy_state(state):
    state = to_numpy(state)
    return tuple(state) if isinstance(state, tuple) else state


def assert_close(got, want, tol=2e-5):
    got, want = jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        np.testing.assert_allclose(np.asarray(g, np.float32), w, rtol=tol, atol=tol)


@pytest.mark.parametrize("name", list(CELLS))
def test_step_matches_the_equations(name):
    cell, params, step = setup(name)
    x = np.random.default_rng(0).normal(size=(B, F)).astype(np.float32)
    h = randomize(cell.initial_state(params, (B,)), 2, scale=1.0)
    assert_close(jax.jit(cell.step)(params, h, x), step(numpy_state(h), x))


@pytest.mark.parametrize("name", ["lstm_proj_clips", "gru"])
def test_unroll_with_lengths_resets_reverse_matches_a_loop(name):
    cell, params, step = setup(name, seed=1)
    xs = np.random.default_rng(1).normal(size=(B, T, F)).astype(np.float32)
    h0 = randomize(cell.initial_state(params, (B,)), 3, scale=1.0)
    for reverse in (False, True):
        ys, final = rs.unroll(cell, params, xs, initial_state=h0, lengths=LENGTHS, resets=RESETS,
                              reverse=reverse)
        want_ys, want_final, _ = ref.loop_unroll(step, xs, numpy_state(h0), lengths=LENGTHS,
                                                 resets=RESETS, reverse=reverse)
        assert_close((ys, final), (want_ys, want_final))


@pytest.mark.parametrize("name", ["lstm", "gru"])
def test_bf16_compute_keeps_the_equations(name):
    cell, params, step = setup(name, compute_dtype=jnp.bfloat16)
    xs = np.random.default_rng(2).normal(size=(B, T, F)).astype(np.float32)
    ys, final = rs.unroll(cell, params, xs, lengths=LENGTHS)
    assert ys.dtype == jnp.float32 and jax.tree_util.tree_leaves(final)[0].dtype == jnp.float32
    want_ys, want_final, _ = ref.loop_unroll(
        step, xs, numpy_state(cell.initial_state(params, (B,))), lengths=LENGTHS)
    assert_close((ys, final), (want_ys, want_final), tol=5e-2)


@pytest.mark.parametrize("name, options", [("lstm", {"proj_size": 2}), ("gru", {})])
def test_gradients_numerically(name, options):
    # No clipping: finite differences across a clip's edge are not its derivative.
    # eps=1e-6: the normalised projection's curvature makes 1e-4 too coarse.
    with jax.enable_x64(True):
        cell = CELLS[name][0](param_dtype=jnp.float64, **options)
        params = randomize(cell.init(jax.random.key(0)))
        xs = jnp.asarray(np.random.default_rng(0).normal(size=(3, 4, F)))
        h0 = randomize(cell.initial_state(params, (3,)), 1)

        def f(p, x, h):
            ys, final = rs.unroll(cell, p, x, initial_state=h, lengths=np.array([4, 0, 2]),
                                  reverse=True)
            leaves = jax.tree_util.tree_leaves(final)
            return jnp.sum(jnp.sin(ys)) + sum(jnp.sum(a ** 2) for a in leaves)

        check_grads(f, (params, xs, h0), order=1, modes=("rev",), atol=1e-6, rtol=1e-6,
                    eps=1e-6)


def test_params_and_traits():
    shapes = lambda cell: {k: v.shape for k, v in cell.init(jax.random.key(0)).items()}
    assert shapes(rs.lstm(F, H, layer_norm=True, proj_size=2)) == {
        "w_ih": (F, 4 * H), "w_hh": (2, 4 * H), "b": (4 * H,), "w_proj": (H, 2),
        "ln_ih_gain": (4 * H,), "ln_ih_bias": (4 * H,), "ln_hh_gain": (4 * H,),
        "ln_hh_bias": (4 * H,), "ln_c_gain": (H,), "ln_c_bias": (H,)}
    assert shapes(rs.gru(F, H, layer_norm=True)) == {
        "w_ih": (F, 3 * H), "w_hh": (H, 3 * H), "b": (3 * H,), "b_hn": (H,),
        "ln_ih_gain": (3 * H,), "ln_ih_bias": (3 * H,), "ln_hh_gain": (3 * H,),
        "ln_hh_bias": (3 * H,)}
    p = rs.gru(F, H, layer_norm=True).init(jax.random.key(0))
    np.testing.assert_array_equal(p["ln_hh_gain"], np.ones(3 * H))
    np.testing.assert_array_equal(p["ln_hh_bias"], np.zeros(3 * H))
    assert not any(k.startswith("ln_") for k in rs.lstm(F, H).init(jax.random.key(0)))
    for cell in (rs.lstm(F, H, layer_norm=True), rs.gru(F, H, layer_norm=True)):
        split = split_step(cell)
        assert split.rowwise and split.recurrent_kernel is None and split.kernel is None
    assert rs.lstm(F, H, layer_norm=True) == rs.lstm(F, H, layer_norm=True)


def test_no_kernel_for_the_layer_norm_lstm():
    cell = rs.lstm(F, H, layer_norm=True)
    params = cell.init(jax.random.key(0))
    with pytest.raises(ValueError, match="method='kernel' cannot run this call: the cell has no "
                                         "compiled kernel"):
        rs.unroll(cell, params, jnp.ones((B, T, F)), method="kernel")


@pytest.mark.parametrize(
    "make, error, match",
    [
        (lambda: rs.lstm(F, H, layer_norm=True, peephole=True), ValueError,
         "layer_norm=True does not combine with peephole=True"),
        (lambda: rs.gru(F, H, layer_norm=True, reset_after=False), ValueError,
         "layer_norm=True does not combine with reset_after=False"),
        (lambda: rs.lstm(F, H, layer_norm="yes"), TypeError, "layer_norm must be a bool"),
        (lambda: rs.gru(F, H, layer_norm=1), TypeError, "layer_norm must be a bool"),
    ],
)
def test_refused_combinations(make, error, match):
    with pytest.raises(error, match=match):
        make()
