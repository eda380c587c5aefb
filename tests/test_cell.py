"""The `Cell` contract: the step is what runs, wrappers are honoured or refused,
and equal configurations give equal cells (one jit compilation)."""


import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnscan as rs
from rnnscan.unroll import execute, make_plan
from tests import reference as ref
from tests.test_unroll import randomize, to_numpy

B, T, F, H = 3, 6, 5, 16  # 16 units and float32: the CPU kernel could run this LSTM


def lstm_problem():
    cell = rs.lstm(F, H)
    params = randomize(cell.init(jax.random.key(0)), scale=0.3)
    xs = np.random.default_rng(0).normal(size=(B, T, F)).astype(np.float32)
    return cell, params, xs


def loop(params, xs, scale=1.0):
    """The plain loop of `scale` times the LSTM's state and output each step."""

    def step(state, x):
        (h, c), y = ref.lstm_step(to_numpy(params), state, x)
        return (scale * h, scale * c), scale * y

    h0 = (np.zeros((B, H)), np.zeros((B, H)))
    return ref.loop_unroll(step, xs, h0)


@pytest.mark.parametrize("method", ["auto", "scan", "sequential"])
def test_a_replaced_step_is_what_runs(method):
    """`cell._replace(step=wrapped)` runs `wrapped`, with every option, though the
    original step had a kernel, a hoisted gradient and row groups."""
    cell, params, xs = lstm_problem()

    def halved(params, state, x):
        state, y = cell.step(params, state, x)
        return jax.tree_util.tree_map(lambda a: a / 2, state), y / 2

    wrapped = cell._replace(step=halved)
    assert make_plan(wrapped, params, xs, method=method).strategy == "scan"
    ys, (h, c) = rs.unroll(wrapped, params, xs, method=method)
    want_ys, (want_h, want_c), _ = loop(params, xs, scale=0.5)
    np.testing.assert_allclose(ys, want_ys, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(c, want_c, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="method='kernel' cannot run this call: the cell has no compiled kernel"):
        rs.unroll(wrapped, params, xs, method="kernel")


def test_a_users_wrapper_cell_is_honoured():
    cell, params, xs = lstm_problem()
    doubled = rs.Cell(cell.init, cell.initial_state,
                      lambda p, s, x: (lambda out: (out[0], 2 * out[1]))(cell.step(p, s, x)))
    ys, _ = rs.unroll(doubled, params, xs)
    np.testing.assert_allclose(ys, 2 * loop(params, xs)[0], rtol=1e-5, atol=1e-6)


def test_replacing_one_half_of_the_split_is_refused():
    cell, params, xs = lstm_problem()
    other = lambda p, h, xp: cell.recurrent_step(p, h, 2 * xp)
    for bad in (cell._replace(recurrent_step=other), cell._replace(project_inputs=lambda p, x: x)):
        with pytest.raises(ValueError, match="must be the halves of cell.step"):
            rs.unroll(bad, params, xs)


def test_dropping_the_fast_path_runs_the_whole_step():
    cell, params, xs = lstm_problem()
    whole = cell._replace(project_inputs=None, recurrent_step=None)
    assert not whole.has_fast_path
    np.testing.assert_allclose(rs.unroll(whole, params, xs)[0], loop(params, xs)[0],
                               rtol=1e-5, atol=1e-6)


def test_cell_split_builds_a_fast_path_from_its_halves():
    project = lambda p, x: x @ p["w"]
    advance = lambda p, h, xp: (jnp.tanh(h + xp),) * 2
    cell = rs.Cell.split(lambda key: {"w": jnp.eye(F)}, lambda p, shape=(): jnp.zeros(shape + (F,)),
                         project, advance)
    assert cell.has_fast_path and isinstance(cell.step, rs.SplitStep)
    xs = np.random.default_rng(1).normal(size=(B, T, F)).astype(np.float32)
    ys, _ = rs.unroll(cell, cell.init(None), xs)
    want = ref.loop_unroll(lambda h, x: (np.tanh(h + x),) * 2, xs, np.zeros((B, F)))[0]
    np.testing.assert_allclose(ys, want, rtol=1e-5, atol=1e-6)


def test_equal_configurations_give_equal_cells_and_layers():
    assert rs.lstm(F, H, proj_size=4) == rs.lstm(F, H, proj_size=4)
    assert hash(rs.gru(F, H)) == hash(rs.gru(F, H))
    assert rs.lstm(F, H) != rs.lstm(F, H + 1)
    assert rs.multi_cell((rs.rnn(F, 4), rs.gru(4, 4))) == rs.multi_cell((rs.rnn(F, 4), rs.gru(4, 4)))
    assert rs.layer(rs.gru(F, H), state_dropout=0.2) == rs.layer(rs.gru(F, H), state_dropout=0.2)
    assert rs.bidirectional(rs.gru(F, H), rs.gru(F, H)) == rs.bidirectional(rs.gru(F, H), rs.gru(F, H))


def test_a_cell_rebuilt_on_every_call_compiles_once():
    params = rs.gru(F, H).init(jax.random.key(0))
    xs = np.ones((B, T, F), np.float32)
    rs.unroll(rs.gru(F, H), params, xs)
    before = execute._cache_size()
    for _ in range(3):
        rs.unroll(rs.gru(F, H), params, xs)
    assert execute._cache_size() == before


def test_jit_of_a_library_step():
    cell, params, xs = lstm_problem()
    h = cell.initial_state(params, (B,))
    got = jax.jit(cell.step)(params, h, xs[:, 0])
    want = ref.lstm_step(to_numpy(params), (np.zeros((B, H)),) * 2, xs[:, 0])
    np.testing.assert_allclose(got[1], want[1], rtol=1e-5, atol=1e-6)


def test_defaults_and_types_count_in_equality():
    assert rs.lstm(F, H) is rs.lstm(F, H, forget_bias=1.0) is rs.lstm(input_size=F, hidden_size=H)
    with pytest.raises(TypeError, match="input_size"):
        rs.gru(3.0, 4)  # not the cached rs.gru(3, 4)
    rs.gru(3, 4)
    with pytest.raises(TypeError, match="input_size"):
        rs.gru(3.0, 4)


def test_a_bare_cell_drops_every_state_leaf():
    """Without a declaration (`SplitStep.state_dropout`) state dropout applies to
    every leaf of the state."""
    size, rate = 8, 0.5

    def step(params, state, x):
        return state, jnp.concatenate(state, -1)

    cell = rs.Cell(lambda key: (), lambda p, shape: (jnp.ones(shape + (size,)),) * 2, step)
    ys, _ = rs.layer(cell, state_dropout=rate).apply((), jnp.ones((64, 2, 3)), key=jax.random.key(0))
    for part in (ys[:, 0, :size], ys[:, 0, size:]):  # the first step reads the masked ones
        np.testing.assert_allclose(np.unique(np.asarray(part)), [0, 2.0])
