"""Layers (layer, bidirectional, stack, multi_cell), dropout, remat and truncated BPTT,
against plain Python loops over time (tests/reference.py) and against `rs.unroll`."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnscan as rs
from tests import reference as ref

B, T, F, H = 4, 7, 3, 5
LENGTHS = np.array([5, 0, 7, 3], np.int32)
TOL = dict(rtol=1e-5, atol=1e-5)


def random_params(init, seed=0, scale=0.5):
    """Params shaped like `init`'s, every one random (biases too), drawn by numpy:
    no XLA compile per shape, which dominates these small tests."""
    rng = np.random.RandomState(seed)
    return jax.tree_util.tree_map(lambda a: (scale * rng.standard_normal(a.shape)).astype(a.dtype),
                                  jax.eval_shape(init, jax.random.key(0)))


def apply(layer, *args, **kwargs):
    """`layer.apply` under `jit`: one compile instead of one per op."""
    return jax.jit(layer.apply)(*args, **kwargs)


def numpy(tree):
    return jax.tree_util.tree_map(np.asarray, tree)


def xs_(shape=(B, T, F), seed=1):
    return np.random.RandomState(seed).standard_normal(shape).astype(np.float32)


def loop_lstm(p, xs, lengths, reverse=False, h0=None):
    """The numpy LSTM equations in a Python loop: `(ys, LSTMState)`."""
    p = numpy(p)
    hidden, out = p["w_ih"].shape[1] // 4, p["w_hh"].shape[0]
    h0 = h0 or (np.zeros((xs.shape[0], out), np.float32), np.zeros((xs.shape[0], hidden), np.float32))
    ys, (h, c), _ = ref.loop_unroll(functools.partial(ref.lstm_step, p), xs, tuple(h0),
                                    lengths=lengths, reverse=reverse)
    return ys, rs.LSTMState(h, c)


def loop_gru(p, xs, lengths):
    p = numpy(p)
    h0 = np.zeros((xs.shape[0], p["w_hh"].shape[0]), np.float32)
    ys, h, _ = ref.loop_unroll(functools.partial(ref.gru_step, p), xs, h0, lengths=lengths)
    return ys, h


def assert_trees_close(got, want, **tol):
    assert jax.tree_util.tree_structure(got) == jax.tree_util.tree_structure(want)
    for g, w in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), **(tol or TOL))


# -- layer / bidirectional ----------------------------------------------------------


@pytest.mark.parametrize("reverse", [False, True])
def test_layer_is_unroll(reverse):
    cell = rs.lstm(F, H)
    p = random_params(cell.init)
    lay = rs.layer(cell, reverse=reverse)
    ys, state = apply(lay, p, xs_(), lengths=LENGTHS)
    want_ys, want_state = loop_lstm(p, xs_(), LENGTHS, reverse=reverse)
    assert_trees_close((ys, state), (want_ys, want_state))
    assert jax.eval_shape(lay.init, jax.random.key(0)) == jax.eval_shape(cell.init, jax.random.key(0))


@pytest.mark.parametrize("method", ["newton", rs.Newton(jacobian="full"), rs.Newton(damping=0.5)])
def test_layer_takes_every_method_unroll_takes(method):
    # rs.Newton(...) passes the one check `unroll` makes (it was refused here).
    cell = rs.lstm(F, H)
    p = random_params(cell.init)
    ys, state = apply(rs.layer(cell, method=method), p, xs_(), lengths=LENGTHS)
    assert_trees_close((ys, state), loop_lstm(p, xs_(), LENGTHS), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match=r"method must be one of .* or an rnnscan.Newton; got 'fast'"):
        rs.layer(cell, method="fast")


@pytest.mark.parametrize("merge", ["concat", "sum", "mean", "pair"])
def test_bidirectional_against_loops(merge):
    cell_fw, cell_bw = rs.lstm(F, H), rs.lstm(F, H, proj_size=H)
    bi = rs.bidirectional(cell_fw, cell_bw, merge=merge)
    p_fw, p_bw = random_params(bi.init)
    xs = xs_()
    ys, (s_fw, s_bw) = apply(bi, (p_fw, p_bw), xs, lengths=LENGTHS)
    y_fw, want_fw = loop_lstm(p_fw, xs, LENGTHS)
    y_bw, want_bw = loop_lstm(p_bw, xs, LENGTHS, reverse=True)
    want = {"concat": np.concatenate([y_fw, y_bw], -1), "sum": y_fw + y_bw,
            "mean": (y_fw + y_bw) / 2, "pair": (y_fw, y_bw)}[merge]
    assert_trees_close(ys, want)
    assert_trees_close((s_fw, s_bw), (want_fw, want_bw))


@pytest.mark.parametrize("time_major", [False, True])
def test_bidirectional_layer_bw_reverses_each_row(time_major):
    """A Layer as the backward direction runs on rows reversed within their lengths
    (TF1's reverse_sequence): the same as a Cell run with reverse=True."""
    cell = rs.gru(F, H)
    p = random_params(lambda key: (cell.init(key), cell.init(key)))
    xs = xs_()
    xs_in = xs.transpose(1, 0, 2) if time_major else xs
    via_cell = rs.bidirectional(cell, cell, time_major=time_major)
    via_layer = rs.bidirectional(cell, rs.stack([cell], time_major=time_major),
                                 time_major=time_major)
    ys, (s_fw, s_bw) = apply(via_cell, p, xs_in, lengths=LENGTHS)
    ys2, (s_fw2, (s_bw2,)) = apply(via_layer, (p[0], (p[1],)), xs_in, lengths=LENGTHS)
    assert_trees_close((ys2, s_fw2, s_bw2), (ys, s_fw, s_bw))
    # Without lengths the whole row is reversed.
    assert_trees_close(apply(via_layer, (p[0], (p[1],)), xs_in)[0], apply(via_cell, p, xs_in)[0])


# -- stack ------------------------------------------------------------------------


def test_stack_against_loops():
    cells = [rs.gru(F, H), rs.lstm(H, 4), rs.gru(4, 4)]
    st = rs.stack(cells)
    params = random_params(st.init)
    assert isinstance(params, tuple) and len(params) == 3
    xs = xs_()
    ys, finals = apply(st, params, xs, lengths=LENGTHS)
    y0, f0 = loop_gru(params[0], xs, LENGTHS)
    y1, f1 = loop_lstm(params[1], y0, LENGTHS)
    y2, f2 = loop_gru(params[2], y1, LENGTHS)
    assert_trees_close((ys, finals), (y2, (f0, f1, f2)))


def test_stack_initial_state_per_layer():
    cells = [rs.lstm(F, H), rs.lstm(H, H)]
    st = rs.stack(cells)
    params = random_params(st.init)
    h0 = rs.LSTMState(*(np.random.RandomState(2).standard_normal((2, B, H)).astype(np.float32)))
    ys, finals = apply(st, params, xs_(), lengths=LENGTHS, initial_state=(None, h0))
    y0, f0 = loop_lstm(params[0], xs_(), LENGTHS)
    y1, f1 = loop_lstm(params[1], y0, LENGTHS, h0=h0)
    assert_trees_close((ys, finals), (y1, (f0, f1)))


def test_stack_residual_where_shapes_allow():
    cells = [rs.rnn(F, H), rs.rnn(H, H), rs.rnn(H, H)]
    params = random_params(rs.stack(cells).init)
    xs = xs_()
    plain = [rs.layer(c) for c in cells]
    y0, _ = apply(plain[0], params[0], xs, lengths=LENGTHS)
    y1 = apply(plain[1], params[1], y0, lengths=LENGTHS)[0] + y0
    y2 = apply(plain[2], params[2], y1, lengths=LENGTHS)[0] + y1
    ys, _ = apply(rs.stack(cells, residual=True), params, xs, lengths=LENGTHS)
    assert_trees_close(ys, y2)
    z1, _ = apply(plain[1], params[1], y0, lengths=LENGTHS)
    ys, _ = apply(rs.stack(cells, residual=[False, False, True]), params, xs, lengths=LENGTHS)
    assert_trees_close(ys, apply(plain[2], params[2], z1, lengths=LENGTHS)[0] + z1)


@pytest.mark.parametrize("time_major", [False, True])
def test_stack_residual_keeps_padding_zero(time_major):
    st = rs.stack([rs.rnn(F, F)], residual=True, time_major=time_major)
    p = random_params(st.init)
    xs = xs_().transpose(1, 0, 2) if time_major else xs_()
    ys, _ = apply(st, p, xs, lengths=LENGTHS)
    ys = np.asarray(ys).transpose(1, 0, 2) if time_major else np.asarray(ys)
    valid = np.arange(T)[None, :] < LENGTHS[:, None]
    assert np.all(ys[~valid] == 0)
    plain, _ = rs.unroll(rs.rnn(F, F), p[0], xs_(), lengths=LENGTHS)
    np.testing.assert_allclose(ys[valid], (np.asarray(plain) + xs_())[valid], **TOL)


# -- dropout ----------------------------------------------------------------------

IDENTITY = rs.Layer(lambda key: (), lambda params, xs, **kw: (xs, ()))


def test_stack_dropout_between_layers():
    st = rs.stack([IDENTITY, IDENTITY, IDENTITY], dropout=0.25)
    ones = jnp.ones((64, 50, 8))
    assert np.all(apply(st, ((), (), ()), ones)[0] == 1)  # no key, no dropout
    ys = np.asarray(apply(st, ((), (), ()), ones, key=jax.random.key(0))[0])
    # Two dropouts (not after the last layer), one after the other.
    np.testing.assert_allclose(np.unique(ys), [0, 1 / 0.75**2], rtol=1e-6)
    np.testing.assert_allclose(np.mean(ys == 0), 1 - 0.75**2, atol=0.01)
    np.testing.assert_allclose(ys.mean(), 1.0, atol=0.02)  # expectation-preserving
    ys2 = np.asarray(apply(st, ((), (), ()), ones, key=jax.random.key(1))[0])
    assert not np.array_equal(ys, ys2)
    single = rs.stack([IDENTITY], dropout=0.5)
    assert np.all(apply(single, ((),), ones, key=jax.random.key(0))[0] == 1)


def probe_cell(size):
    """A cell whose output shows the state it read: `y_t = [x_t, h_read, c_read]`,
    next state `(ones, c + 1)`, so every mask shows up in the outputs. Like an
    LSTM, it declares that state dropout applies to `h` and not to `c`."""

    def step(params, state, x):
        del params
        y = jnp.concatenate([x, state.h, state.c], -1)
        return rs.LSTMState(jnp.ones_like(state.h), state.c + 1), y

    return rs.Cell.split(lambda key: (), lambda params, shape: rs.LSTMState(
        jnp.zeros(tuple(shape) + (size,)), jnp.zeros(tuple(shape) + (size,))),
        lambda params, x: x, step, state_dropout=(True, False))


def test_variational_dropout_one_mask_per_sequence():
    rate = 0.3
    batch, time, size = 256, 6, 8
    lay = rs.layer(probe_cell(size), input_dropout=rate, state_dropout=rate)
    ones = jnp.ones((batch, time, size))
    plain, _ = apply(lay, (), ones)
    assert np.all(np.asarray(plain)[:, :, :2 * size] == np.concatenate(
        [np.ones((batch, time, size)), np.r_[0, np.ones(time - 1)][None, :, None]
         * np.ones((batch, 1, size))], -1))
    ys, _ = apply(lay, (), ones, key=jax.random.key(0))
    x_mask, h_mask, c_read = (np.asarray(ys)[..., k * size:(k + 1) * size] for k in range(3))
    # The same mask at every step (h from step 1 on: step 0 reads the zero state).
    assert np.all(x_mask == x_mask[:, :1]) and np.all(h_mask[:, 1:] == h_mask[:, 1:2])
    # An LSTM's memory cell is not dropped.
    np.testing.assert_array_equal(c_read, np.arange(time)[None, :, None] * np.ones_like(c_read))
    for mask in (x_mask[:, 0], h_mask[:, 1]):
        np.testing.assert_allclose(np.unique(mask), [0, 1 / (1 - rate)], rtol=1e-6)
        np.testing.assert_allclose(np.mean(mask == 0), rate, atol=0.03)
        np.testing.assert_allclose(mask.mean(), 1.0, atol=0.05)  # expectation-preserving
        assert len({row.tobytes() for row in mask}) > batch // 4  # one mask per sequence
    assert not np.array_equal(x_mask[:, 0], h_mask[:, 1])  # independent masks
    ys2, _ = apply(lay, (), ones, key=jax.random.key(1))
    assert not np.array_equal(ys, ys2)


def test_output_dropout_on_outputs_only():
    lay = rs.layer(probe_cell(4), output_dropout=0.5)
    ys, state = apply(lay, (), jnp.ones((16, 5, 4)), key=jax.random.key(3))
    x_part, c_part = np.asarray(ys)[..., :4], np.asarray(ys)[..., 8:]
    mask = x_part[:, :1]  # y_t = mask * [x_t, h_t, c_t] with x_t = 1
    assert np.all(x_part == mask) and 0 < np.mean(mask == 0) < 1
    np.testing.assert_allclose(c_part, np.asarray(ys)[:, :1, 8:] * 0 + np.arange(5)[None, :, None]
                               * (np.asarray(ys)[:, 1:2, 8:]), rtol=1e-6)
    np.testing.assert_array_equal(state.c, 5 * np.ones((16, 4)))  # the state is not dropped


def test_state_dropout_in_lstm_matches_a_loop():
    """An LSTM with state dropout is the loop whose step reads h * mask (the mask
    recovered with the probe cell: same key, same state shape)."""
    rate = 0.4
    cell = rs.lstm(F, H)
    p = random_params(cell.init)
    key = jax.random.key(7)
    xs = xs_()
    ys, state = apply(rs.layer(cell, state_dropout=rate), p, xs, lengths=LENGTHS, key=key)
    probe, _ = apply(rs.layer(probe_cell(H), state_dropout=rate), (), jnp.ones((B, 2, F)), key=key)
    mask = np.asarray(probe)[:, 1, F:F + H]
    assert 0 < np.mean(mask == 0) < 1

    def step(state, x_and_mask):  # the row's mask rides along with its input
        x, row_mask = x_and_mask[:F], x_and_mask[F:]
        return ref.lstm_step(numpy(p), (state[0] * row_mask, state[1]), x)

    with_mask = np.concatenate([xs, np.repeat(mask[:, None], T, 1)], -1)
    want_ys, want_state, _ = ref.loop_unroll(step, with_mask, (np.zeros((B, H)), np.zeros((B, H))),
                                             lengths=LENGTHS)
    np.testing.assert_allclose(ys, want_ys, **TOL)
    assert_trees_close(tuple(state), want_state)


def test_dropout_off_without_key_and_gradients_flow():
    cell = rs.lstm(F, H)
    lay = rs.layer(cell, input_dropout=0.2, state_dropout=0.2, output_dropout=0.2)
    p = random_params(cell.init)
    assert_trees_close(apply(lay, p, xs_()), rs.unroll(cell, p, xs_()))
    grads = jax.jit(jax.grad(lambda p, key: jnp.sum(lay.apply(p, xs_(), key=key)[0])))(
        p, jax.random.key(0))
    assert all(np.all(np.isfinite(g)) and np.any(g != 0) for g in jax.tree_util.tree_leaves(grads))


def test_stack_with_variational_layers_under_jit_and_vmap():
    st = rs.stack([rs.lstm(F, H), rs.gru(H, H)], dropout=0.1, state_dropout=0.2)
    p = random_params(st.init)
    run = jax.jit(lambda p, xs, key: st.apply(p, xs, lengths=LENGTHS, key=key))
    ys, _ = run(p, xs_(), jax.random.key(0))
    ys_again, _ = run(p, xs_(), jax.random.key(0))
    np.testing.assert_array_equal(ys, ys_again)
    batched = jax.jit(jax.vmap(lambda xs: st.apply(p, xs)[0]))(jnp.stack([xs_(), xs_(seed=2)]))
    np.testing.assert_allclose(batched[1], apply(st, p, xs_(seed=2))[0], **TOL)


# -- multi_cell -------------------------------------------------------------------


def test_multi_cell_matches_stack_and_step_by_step_decoding():
    cells = [rs.lstm(F, H), rs.gru(H, 4), rs.rnn(4, 3)]
    multi = rs.multi_cell(cells)
    params = random_params(multi.init)
    xs = xs_()
    ys, state = rs.unroll(multi, params, xs, lengths=LENGTHS)
    want_ys, want_state = apply(rs.stack(cells), params, xs, lengths=LENGTHS)
    assert_trees_close((ys, state), (want_ys, want_state))
    # Decoding one step at a time, the way a sampler does.
    h = multi.initial_state(params, (B,))
    step = jax.jit(multi.step)
    for t in range(T):
        h, y = step(params, h, xs[:, t])
    assert_trees_close(y, apply(rs.stack(cells), params, xs)[0][:, -1])
    assert multi.has_fast_path
    x0 = xs[:, 0]
    fast = jax.jit(lambda p, h, x: multi.recurrent_step(p, h, multi.project_inputs(p, x)))
    assert_trees_close(fast(params, h, x0), step(params, h, x0))


# -- remat and truncated BPTT -----------------------------------------------------

@pytest.mark.parametrize("reverse, remats", [(False, ["dots", 3]), (True, ["carry", 7, 10])])
def test_remat_same_values_and_gradients(reverse, remats):
    cell = rs.lstm(F, H, proj_size=3)
    p = random_params(cell.init)
    resets = np.zeros((B, T), bool)
    resets[0, 2] = resets[2, 5] = True
    cot = xs_((B, T, 3), seed=3)

    def run(p, xs, remat):
        ys, final, states = rs.unroll(cell, p, xs, lengths=LENGTHS, resets=resets,
                                      reverse=reverse, remat=remat, return_all_states=True)
        return jnp.sum(ys * cot) + jnp.sum(final.c) + jnp.sum(states.h), (ys, final, states)

    grad = jax.jit(jax.grad(run, argnums=(0, 1), has_aux=True), static_argnums=2)
    want = grad(p, xs_(), False)
    for remat in remats:
        assert_trees_close(grad(p, xs_(), remat), want, rtol=1e-5, atol=1e-6)


def test_remat_chunks_hold_less_memory(monkeypatch):
    monkeypatch.setenv("RNNSCAN_NATIVE", "0")  # the scan's memory, not the CPU kernel's
    cell = rs.lstm(8, 16)
    p = random_params(cell.init)
    xs = jnp.ones((2, 1024, 8))

    def temp_bytes(remat):
        f = jax.jit(jax.grad(lambda p: jnp.sum(rs.unroll(cell, p, xs, remat=remat)[0])))
        return f.lower(p).compile().memory_analysis().temp_size_in_bytes

    assert temp_bytes(32) * 4 < temp_bytes(False)


def test_layers_pass_remat_through():
    st = rs.stack([rs.lstm(F, H), rs.lstm(H, H)], remat=3)
    p = random_params(st.init)
    plain = rs.stack([rs.lstm(F, H), rs.lstm(H, H)])
    loss = lambda layer: jax.jit(jax.grad(
        lambda p: jnp.sum(layer.apply(p, xs_(), lengths=LENGTHS)[0])))
    assert_trees_close(loss(st)(p), loss(plain)(p), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("chunk", [3, 20])
def test_truncated_unroll(chunk):
    cell = rs.gru(F, H)
    p = random_params(cell.init)
    xs = xs_()
    h0 = xs_((B, H), seed=4)
    cot = xs_((B, T, H), seed=5)
    plain = rs.unroll(cell, p, xs, lengths=LENGTHS, initial_state=h0)
    assert_trees_close(rs.truncated_unroll(cell, p, xs, chunk, lengths=LENGTHS, initial_state=h0),
                       plain)

    def truncated_loss(p, xs, h0):
        ys, _ = rs.truncated_unroll(cell, p, xs, chunk, lengths=LENGTHS, initial_state=h0)
        return jnp.sum(ys * cot)

    def reference_loss(p, xs, h0):
        # The definition: separate unrolls over slices, the state passed on with
        # its gradient stopped.
        total, h = 0.0, h0
        for start in range(0, T, chunk):
            stop = min(start + chunk, T)
            ys, h_next = rs.unroll(cell, p, xs[:, start:stop], initial_state=h,
                                   lengths=np.clip(LENGTHS - start, 0, stop - start))
            total += jnp.sum(ys * cot[:, start:stop])
            h = jax.lax.stop_gradient(h_next)
        return total

    got = jax.jit(jax.grad(truncated_loss, argnums=(0, 1, 2)))(p, xs, h0)
    want = jax.jit(jax.grad(reference_loss, argnums=(0, 1, 2)))(p, xs, h0)
    assert_trees_close(got, want, rtol=1e-5, atol=1e-6)
    if chunk >= T:
        full = jax.jit(jax.grad(lambda p: jnp.sum(rs.unroll(cell, p, xs, lengths=LENGTHS,
                                                            initial_state=h0)[0] * cot)))(p)
        assert_trees_close(got[0], full, rtol=1e-5, atol=1e-6)


# -- bad input --------------------------------------------------------------------


def test_bad_inputs():
    cell = rs.lstm(F, H)
    with pytest.raises(ValueError, match="merge must be one of"):
        rs.bidirectional(cell, cell, merge="max")
    with pytest.raises(TypeError, match="cell_bw must be an rnnscan.Cell"):
        rs.bidirectional(cell, 3)
    with pytest.raises(TypeError, match="layers_or_cells must be a list or tuple"):
        rs.stack(cell)
    with pytest.raises(ValueError, match="layers_or_cells must hold at least one"):
        rs.stack([])
    with pytest.raises(TypeError, match=r"layers_or_cells\[1\] must be an rnnscan.Cell"):
        rs.stack([cell, "gru"])
    with pytest.raises(ValueError, match="dropout must lie in"):
        rs.stack([cell], dropout=1.0)
    with pytest.raises(TypeError, match="state_dropout must be a float"):
        rs.layer(cell, state_dropout="0.1")
    with pytest.raises(ValueError, match="input_dropout must lie in"):
        rs.layer(cell, input_dropout=-0.1)
    with pytest.raises(TypeError, match="unexpected keyword arguments"):
        rs.layer(cell, remmat=2)
    with pytest.raises(ValueError, match="residual must be a bool or a sequence of 2"):
        rs.stack([cell, cell], residual=[True])
    with pytest.raises(ValueError, match="cells must hold at least one"):
        rs.multi_cell([])
    with pytest.raises(TypeError, match="no init"):
        rs.layer(lambda p, h, x: (h, x)).init(jax.random.key(0))

    st = rs.stack([cell, rs.lstm(H, H)], residual=[True, True])
    p = random_params(st.init)
    with pytest.raises(ValueError, match="residual: layer 0's output"):
        st.apply(p, xs_())
    st = rs.stack([cell, rs.lstm(H, H)])
    with pytest.raises(ValueError, match="params of a stack of 2 layers"):
        st.apply(p[:1], xs_())
    with pytest.raises(ValueError, match="initial_state of a stack of 2 layers"):
        st.apply(p, xs_(), initial_state=rs.LSTMState(jnp.zeros((B, H)), jnp.zeros((B, H))))
    with pytest.raises(ValueError, match="initial_state must match"):
        st.apply(p, xs_(), initial_state=(None, rs.LSTMState(jnp.zeros((B, 2)), jnp.zeros((B, H)))))
    bi = rs.bidirectional(cell, cell)
    with pytest.raises(TypeError, match="initial_state of a bidirectional layer must be a pair"):
        bi.apply(random_params(bi.init), xs_(), initial_state=rs.LSTMState(1, 2))
    with pytest.raises(ValueError, match="xs must have shape"):
        rs.layer(cell, state_dropout=0.5).apply(p[0], jnp.ones((F,)), key=jax.random.key(0))
    with pytest.raises(ValueError, match="remat must be a positive int"):
        rs.unroll(cell, p[0], xs_(), remat=0)
    with pytest.raises(ValueError, match="chunk_size must be a positive int"):
        rs.truncated_unroll(cell, p[0], xs_(), 0)
    with pytest.raises(ValueError, match="already checkpointed"):
        rs.truncated_unroll(cell, p[0], xs_(), 2, remat=4)


def test_layer_is_static_under_jit():
    lay = rs.bidirectional(rs.gru(F, H), rs.gru(F, H))
    p = random_params(lay.init)

    @functools.partial(jax.jit, static_argnums=0)
    def run(layer, p, xs):
        return layer.apply(p, xs, lengths=LENGTHS)[0]

    np.testing.assert_allclose(run(lay, p, xs_()), lay.apply(p, xs_(), lengths=LENGTHS)[0], **TOL)
    assert hash(lay) == hash(lay)


# -- resets through layers ---------------------------------------------------------

RESETS = np.zeros((B, T), bool)
RESETS[0, 2] = RESETS[2, 4] = RESETS[3, 1] = RESETS[1, 3] = True  # row 1 has length 0


def loop_lstm_with_resets(p, xs, reverse=False, h0=None, reset_state=None):
    """`loop_lstm` with `RESETS`: a reset goes to `reset_state` (default zeros)."""
    p = numpy(p)
    size = (xs.shape[0], p["w_hh"].shape[0])
    h0 = tuple(h0) if h0 is not None else (np.zeros(size, np.float32),) * 2
    ys, (h, c), _ = ref.loop_unroll(functools.partial(ref.lstm_step, p), xs, h0,
                                    lengths=LENGTHS, resets=RESETS, reverse=reverse,
                                    reset_state=reset_state)
    return ys, rs.LSTMState(h, c)


def test_layer_stack_and_bidirectional_take_resets():
    """Resets go back to a fresh (zero) state in every layer, also when the layer
    starts from a carried-over initial state."""
    cell = rs.lstm(F, H)
    xs = xs_()
    carried = rs.LSTMState(*(np.random.RandomState(3).standard_normal((2, B, H)).astype(np.float32)))
    p = random_params(cell.init)
    ys, state = apply(rs.layer(cell), p, xs, lengths=LENGTHS, resets=RESETS,
                      initial_state=carried)
    assert_trees_close((ys, state), loop_lstm_with_resets(p, xs, h0=carried))

    st = rs.stack([cell, rs.lstm(H, H)])
    ps = random_params(st.init)
    ys, finals = apply(st, ps, xs, lengths=LENGTHS, resets=RESETS)
    y0, f0 = loop_lstm_with_resets(ps[0], xs)
    y1, f1 = loop_lstm_with_resets(ps[1], y0)
    assert_trees_close((ys, finals), (y1, (f0, f1)))

    for bw in (cell, rs.stack([cell])):  # a Cell, and a Layer run on reversed rows
        bi = rs.bidirectional(cell, bw, merge="pair")
        pb = random_params(lambda key: (cell.init(key), cell.init(key)))
        (y_fw, y_bw), (s_fw, s_bw) = apply(bi, (pb[0], pb[1] if bw is cell else (pb[1],)), xs,
                                           lengths=LENGTHS, resets=RESETS)
        s_bw = s_bw if bw is cell else s_bw[0]
        want_fw, want_bw = loop_lstm_with_resets(pb[0], xs), loop_lstm_with_resets(pb[1], xs, reverse=True)
        assert_trees_close((y_fw, s_fw, y_bw, s_bw), (*want_fw, *want_bw))


def test_resets_go_to_a_named_reset_state():
    cell = rs.lstm(F, H)
    p = random_params(cell.init)
    xs = xs_()
    fresh = rs.LSTMState(*(np.random.RandomState(4).standard_normal((2, B, H)).astype(np.float32)))
    for reverse in (False, True):
        got = rs.unroll(cell, p, xs, lengths=LENGTHS, resets=RESETS, reset_state=fresh,
                        reverse=reverse)
        assert_trees_close(got, loop_lstm_with_resets(p, xs, reverse=reverse, reset_state=fresh))
