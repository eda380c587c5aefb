"""Library cells, one step at a time, against their published equations in numpy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnscan as rs
from tests import reference as ref
from tests.test_unroll import CELLS, randomize, to_numpy


@pytest.mark.parametrize("batch_shape", [(), (3,), (2, 3)])
@pytest.mark.parametrize("name", list(CELLS))
def test_step_matches_equations_for_any_batch_shape(name, batch_shape):
    make_cell, make_ref = CELLS[name]
    cell = make_cell()
    params = randomize(cell.init(jax.random.key(1)))
    rng = np.random.default_rng(0)
    x = rng.normal(size=batch_shape + (3,)).astype(np.float32)
    h = randomize(cell.initial_state(params, batch_shape), 2, scale=1.0)
    h_new, y = jax.jit(cell.step)(params, h, x)
    h_np = to_numpy(h)
    (e_h, e_y) = make_ref(to_numpy(params))(tuple(h_np) if isinstance(h_np, tuple) else h_np, x)
    for got, want in zip(jax.tree_util.tree_leaves(h_new), jax.tree_util.tree_leaves(e_h)):
        assert got.shape == batch_shape + want.shape[len(batch_shape):]
        np.testing.assert_allclose(got, want, rtol=2e-6, atol=2e-6)
    np.testing.assert_allclose(y, e_y, rtol=2e-6, atol=2e-6)


@pytest.mark.parametrize("name", list(CELLS))
def test_fast_path_is_the_step(name):
    cell = CELLS[name][0]()
    params = randomize(cell.init(jax.random.key(1)))
    x = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    h = randomize(cell.initial_state(params, (5,)), 2)
    a = cell.step(params, h, x)
    b = cell.recurrent_step(params, h, cell.project_inputs(params, x))
    for u, v in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_array_equal(u, v)


def test_param_shapes_and_state():
    p = rs.lstm(3, 5, proj_size=2, peephole=True).init(jax.random.key(0))
    assert {k: v.shape for k, v in p.items()} == {
        "w_ih": (3, 20), "w_hh": (2, 20), "b": (20,), "w_peep": (3, 5), "w_proj": (5, 2)
    }
    s = rs.lstm(3, 5, proj_size=2).initial_state(None, (4,))
    assert isinstance(s, rs.LSTMState) and s.h.shape == (4, 2) and s.c.shape == (4, 5)
    p = rs.gru(3, 5).init(jax.random.key(0))
    assert {k: v.shape for k, v in p.items()} == {"w_ih": (3, 15), "w_hh": (5, 15), "b": (15,), "b_hn": (5,)}
    assert "b_hn" not in rs.gru(3, 5, reset_after=False).init(jax.random.key(0))
    assert "b" not in rs.rnn(3, 5, use_bias=False).init(jax.random.key(0))
    assert rs.rnn(3, 5, param_dtype=jnp.bfloat16).init(jax.random.key(0))["w_hh"].dtype == jnp.bfloat16


def test_forget_bias_is_added_to_the_forget_gate():
    params = {k: jnp.zeros_like(v) for k, v in rs.lstm(2, 3).init(jax.random.key(0)).items()}
    c0 = jnp.ones((1, 3))
    for fb in (0.0, 1.0, 2.5):
        state, _ = rs.lstm(2, 3, forget_bias=fb).step(params, rs.LSTMState(jnp.zeros((1, 3)), c0), jnp.zeros((1, 2)))
        # all pre-activations zero: c' = σ(fb) * c + σ(0) * tanh(0)
        np.testing.assert_allclose(state.c, ref.sigmoid(fb) * np.ones((1, 3)), rtol=1e-6)


def test_cells_are_hashable_static_arguments():
    cell = rs.lstm(3, 4)
    hash(cell)
    f = jax.jit(lambda c, p, x: rs.unroll(c, p, x)[0], static_argnums=0)
    params = cell.init(jax.random.key(0))
    assert f(cell, params, jnp.ones((2, 3, 3))).shape == (2, 3, 4)


@pytest.mark.parametrize(
    "make, error, match",
    [
        (lambda: rs.lstm(0, 4), ValueError, "input_size"),
        (lambda: rs.lstm(3, -1), ValueError, "hidden_size"),
        (lambda: rs.lstm(3, 4, proj_size=0), ValueError, "proj_size"),
        (lambda: rs.gru(3.0, 4), TypeError, "input_size"),
        (lambda: rs.rnn(3, True), TypeError, "hidden_size"),
        (lambda: rs.rnn(3, 4, activation="swishy"), ValueError, "activation"),
        (lambda: rs.lstm(3, 4, param_dtype=jnp.int32), TypeError, "param_dtype"),
        (lambda: rs.gru(3, 4, compute_dtype="int8"), TypeError, "compute_dtype"),
    ],
)
def test_constructor_errors(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_step_with_wrong_feature_size():
    cell = rs.gru(3, 4)
    params = cell.init(jax.random.key(0))
    with pytest.raises(ValueError, match="3 features.*got 5"):
        cell.step(params, cell.initial_state(params, (2,)), jnp.ones((2, 5)))


def test_relu_activation_by_name_and_callable():
    params = randomize(rs.rnn(3, 4).init(jax.random.key(0)))
    x, h = jnp.ones((2, 3)), jnp.zeros((2, 4))
    a = rs.rnn(3, 4, activation="relu").step(params, h, x)[0]
    b = rs.rnn(3, 4, activation=jax.nn.relu).step(params, h, x)[0]
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(a, ref.rnn_step(to_numpy(params), np.zeros((2, 4)), np.ones((2, 3)), act="relu")[0], rtol=1e-6)
