"""Bad input gets a ValueError/TypeError naming the argument, raised at trace time."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnscan as rs

B, T, F, H = 2, 5, 3, 4
CELL = rs.lstm(F, H)
PARAMS = CELL.init(jax.random.key(0))
XS = np.ones((B, T, F), np.float32)


def unroll(**kwargs):
    args = {"cell": CELL, "params": PARAMS, "xs": XS} | kwargs
    return rs.unroll(args.pop("cell"), args.pop("params"), args.pop("xs"), **args)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"xs": np.ones((T,), np.float32)}, ValueError, r"xs must have shape \(\*batch, time, \.\.\.\); got shape \(5,\)"),
        ({"xs": np.ones((B, T, F + 1), np.float32)}, ValueError, "3 features.*got 4"),
        ({"xs": {}}, ValueError, "xs must hold at least one array"),
        ({"xs": {"a": np.ones((B, T, F)), "b": np.ones((B, T + 1, F))}}, ValueError, "share"),
        ({"xs": "abc"}, TypeError, "xs must be an array"),
        ({"lengths": np.array([1, 2, 3])}, ValueError, r"lengths must have shape \(batch,\) = \(2,\); got shape \(3,\)"),
        ({"lengths": np.array([1.0, 2.0])}, TypeError, "lengths must have an integer dtype; got float"),
        ({"lengths": np.array([1, T + 1])}, ValueError, r"lengths must lie in \[0, time\] = \[0, 5\]; got \[6\] at rows \[1\]"),
        ({"lengths": np.array([-1, 2])}, ValueError, "lengths must lie in"),
        ({"resets": np.zeros((T, B), bool)}, ValueError, r"resets must have shape \(batch, time\) = \(2, 5\); got shape \(5, 2\)"),
        ({"resets": np.zeros((B, T), np.float32)}, TypeError, "resets must be a bool mask"),
        ({"initial_state": jnp.zeros((B, H))}, TypeError, "initial_state must have the structure"),
        ({"initial_state": rs.LSTMState(jnp.zeros((B, H)), jnp.zeros((B, H + 1)))}, ValueError, "initial_state must match"),
        ({"initial_state": rs.LSTMState(jnp.zeros((B, H)), jnp.zeros((B, H), jnp.int32))}, TypeError, "initial_state must match the dtypes"),
        ({"cell": "lstm"}, TypeError, "cell must be an rnnscan.Cell or a function"),
        ({"unroll": 0}, ValueError, "unroll must be a positive int"),
        ({"remat": "everything"}, ValueError, "remat must be"),
        ({"cell": CELL._replace(step=CELL.step._replace(recurrent_kernel="b"))}, ValueError,
         r"recurrent_kernel='b' must name a matrix of shape \(state, projected inputs\) = \(4, 16\); params\['b'\] has shape \(16,\)"),
        ({"cell": CELL._replace(step=CELL.step._replace(recurrent_kernel="w_rec"))}, ValueError,
         r"recurrent_kernel='w_rec' needs .* a params dict holding 'w_rec'"),
    ],
)
def test_bad_input(kwargs, error, match):
    with pytest.raises(error, match=match):
        unroll(**kwargs)


def test_bad_input_is_caught_inside_jit_at_trace_time():
    f = jax.jit(lambda x: rs.unroll(CELL, PARAMS, x)[0])
    with pytest.raises(ValueError, match="3 features"):
        f(np.ones((B, T, F + 2), np.float32))
    g = jax.jit(lambda l: rs.unroll(CELL, PARAMS, XS, lengths=l)[0])
    with pytest.raises(TypeError, match="lengths must have an integer dtype"):
        g(jnp.ones((B,)))


def test_bare_cell_needs_an_initial_state():
    with pytest.raises(ValueError, match="initial_state is required"):
        rs.unroll(lambda p, h, x: (h, h), None, XS)


def test_step_changing_the_state_is_caught():
    def grows(params, h, x):
        return jnp.concatenate([h, x], -1), h

    def recasts(params, h, x):
        return h.astype(jnp.bfloat16), h

    def restructures(params, h, x):
        return (h, h), h

    def no_pair(params, h, x):
        return h

    h0 = jnp.zeros((B, H))
    with pytest.raises(ValueError, match="the state returned by cell.step must match"):
        rs.unroll(grows, None, XS, initial_state=h0)
    with pytest.raises(TypeError, match="the state returned by cell.step must match the dtypes"):
        rs.unroll(recasts, None, XS, initial_state=h0)
    with pytest.raises(TypeError, match="the state returned by cell.step must have the structure"):
        rs.unroll(restructures, None, XS, initial_state=h0)
    with pytest.raises(TypeError, match="cell.step must return a pair"):
        rs.unroll(no_pair, None, XS, initial_state=h0)


def test_dynamic_rnn_names_its_own_arguments():
    with pytest.raises(ValueError, match="inputs must have shape"):
        rs.dynamic_rnn(CELL, PARAMS, np.ones((T,), np.float32))
    with pytest.raises(TypeError, match="sequence_length must have an integer dtype"):
        rs.dynamic_rnn(CELL, PARAMS, XS, sequence_length=np.array([1.0, 2.0]))


def test_params_are_checked_against_an_init_that_takes_raw_uint32_keys():
    def init(key):
        if key.dtype != jnp.uint32:  # old code: the (2,) uint32 keys of jax.random.PRNGKey
            raise TypeError("this init wants a raw key")
        return {"w": jax.random.normal(key, (3, 3))}

    def step(params, h, x):
        h = jnp.tanh(h @ params["w"] + x)
        return h, h

    cell = rs.Cell(init, lambda params, batch_shape=(): jnp.zeros(tuple(batch_shape) + (3,)), step)
    xs = jnp.ones((2, 4, 3))
    assert rs.unroll(cell, init(jax.random.PRNGKey(0)), xs)[0].shape == (2, 4, 3)
    with pytest.raises(ValueError, match=r"params.*\(3, 3\)"):
        rs.unroll(cell, {"w": jnp.ones((4, 3))}, xs)


def test_dynamic_rnn_takes_tf1s_other_arguments():
    """TF1's dtype (of the zero initial state), parallel_iterations, swap_memory and
    scope: accepted; the numbers are unroll's with lengths=sequence_length."""
    lengths = np.arange(XS.shape[0], dtype=np.int32) % (XS.shape[1] + 1)
    want = rs.unroll(CELL, PARAMS, XS, lengths=lengths)
    got = rs.dynamic_rnn(CELL, PARAMS, XS, lengths, dtype=np.float32, parallel_iterations=32,
                         swap_memory=True, scope="rnn")
    for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
        np.testing.assert_array_equal(a, b)
    # With an initial state, dtype is ignored, as in TF1.
    h0 = CELL.initial_state(PARAMS, (XS.shape[0],))
    rs.dynamic_rnn(CELL, PARAMS, XS, initial_state=h0, dtype=jnp.float16)


def test_dynamic_rnn_refuses_a_dtype_the_cell_does_not_have():
    with pytest.raises(ValueError, match=r"dtype=float16: the cell's zero state is float32"):
        rs.dynamic_rnn(CELL, PARAMS, XS, dtype=jnp.float16)
    with pytest.raises(TypeError, match="parallel_iterations must be a positive int"):
        rs.dynamic_rnn(CELL, PARAMS, XS, parallel_iterations=1.5)
    with pytest.raises(TypeError, match="swap_memory must be a bool"):
        rs.dynamic_rnn(CELL, PARAMS, XS, swap_memory="yes")
    with pytest.raises(TypeError, match="scope must be a str"):
        rs.dynamic_rnn(CELL, PARAMS, XS, scope=3)
