"""Masks with holes (`mask=` in `unroll` and the layers) and `bidirectional`'s
`merge` as a function or `"mul"`, against plain Python loops (tests/reference.py)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import rnnscan as rs
from tests import reference as ref
from tests.test_layers import (
    B, F, H, LENGTHS, T, apply, assert_trees_close, numpy, random_params, xs_,
)
from tests.test_linear import mingru_step

# Holes in the middle of rows, a row masked out entirely, true steps past a length.
MASK = np.ones((B, T), bool)
MASK[0, [1, 2, 4]] = False
MASK[1, :] = False
MASK[2, [0, 6]] = False
MASK[3, [1]] = False
RESETS = np.zeros((B, T), bool)
RESETS[0, [2, 3]] = True  # on a hole (dropped) and on a true step
RESETS[2, 5] = True


def loop(step, p, xs, h0, **kwargs):
    """`ref.loop_unroll` of `step(p, ...)` on numpy params: `(ys, final)`."""
    ys, final, _ = ref.loop_unroll(functools.partial(step, numpy(p)), xs, h0, **kwargs)
    return ys, final


def lstm_h0(batch=B, size=H):
    return (np.zeros((batch, size), np.float32),) * 2


OPTIONS = {
    "mask": {},
    "mask_lengths": {"lengths": LENGTHS},
    "mask_reverse": {"reverse": True},
    "mask_lengths_reverse_resets": {"lengths": LENGTHS, "reverse": True, "resets": RESETS},
}


@pytest.mark.parametrize("option", list(OPTIONS))
def test_unroll_mask_matches_a_loop_that_skips_false_steps(option):
    cell = rs.lstm(F, H)
    p = random_params(cell.init)
    kw = OPTIONS[option]
    ys, final = rs.unroll(cell, p, xs_(), mask=MASK, **kw)
    want_ys, want_final = loop(ref.lstm_step, p, xs_(), lstm_h0(), mask=MASK, **kw)
    assert_trees_close((ys, tuple(final)), (want_ys, want_final))


def test_mask_time_major_all_states_and_truncated_unroll():
    cell = rs.gru(F, H)
    p = random_params(cell.init)
    xs = xs_()
    h0 = np.zeros((B, H), np.float32)
    want_ys, want_final, want_states = ref.loop_unroll(
        functools.partial(ref.gru_step, numpy(p)), xs, h0, lengths=LENGTHS, mask=MASK)
    ys, final, states = rs.unroll(cell, p, xs.transpose(1, 0, 2), mask=MASK.T, lengths=LENGTHS,
                                  time_major=True, return_all_states=True)
    assert_trees_close((ys.transpose(1, 0, 2), final, states.transpose(1, 0, 2)),
                       (want_ys, want_final, want_states))
    ys, final = rs.truncated_unroll(cell, p, xs, 3, mask=MASK, lengths=LENGTHS)
    assert_trees_close((ys, final), (want_ys, want_final))


def test_mask_on_the_associative_path():
    cell = rs.mingru(F, H)
    p = random_params(cell.init)
    h0 = np.random.RandomState(3).standard_normal((B, H)).astype(np.float32)
    for reverse in (False, True):
        ys, final = rs.unroll(cell, p, xs_(), initial_state=h0, mask=MASK, lengths=LENGTHS,
                              resets=RESETS, reverse=reverse, method="associative")
        want = loop(mingru_step, p, xs_(), h0, mask=MASK, lengths=LENGTHS, resets=RESETS,
                    reverse=reverse)
        assert_trees_close((ys, final), want)


def test_mask_gradients_numerically():
    with jax.enable_x64(True):
        cell = rs.gru(F, 3, param_dtype=jnp.float64)
        params = random_params(cell.init)
        xs = jnp.asarray(xs_((B, 5, F)), jnp.float64)
        h0 = jnp.asarray(np.random.RandomState(4).standard_normal((B, 3)))
        mask = MASK[:, :5]

        def f(p, x, h):
            ys, final = rs.unroll(cell, p, x, initial_state=h, mask=mask,
                                  lengths=np.array([5, 0, 4, 3]), reverse=True)
            return jnp.sum(jnp.sin(ys)) + jnp.sum(final ** 2)

        check_grads(f, (params, xs, h0), order=1, modes=("rev",), atol=1e-6, rtol=1e-6)


def test_the_kernel_refuses_a_mask():
    cell = rs.lstm(F, H)
    p = random_params(cell.init)
    with pytest.raises(ValueError, match="method='kernel' cannot run this call: a mask"):
        rs.unroll(cell, p, xs_(), mask=MASK, method="kernel")
    # "auto" falls back to the scan and stays exact.
    ys, _ = rs.unroll(cell, p, xs_(), mask=MASK, method="auto")
    assert_trees_close(ys, loop(ref.lstm_step, p, xs_(), lstm_h0(), mask=MASK)[0])


@pytest.mark.parametrize(
    "mask, error, match",
    [
        (MASK[:, :-1], ValueError,
         r"mask must have shape \(batch, time\) = \(4, 7\); got shape \(4, 6\)"),
        (MASK.T, ValueError, r"mask must have shape \(batch, time\)"),
        (MASK.astype(np.int32), TypeError, r"mask must be a bool mask; got dtype int32"),
    ],
)
def test_bad_mask(mask, error, match):
    cell = rs.gru(F, H)
    with pytest.raises(error, match=match):
        rs.unroll(cell, random_params(cell.init), xs_(), mask=mask)
    with pytest.raises(error, match=match):
        rs.layer(cell).apply(random_params(cell.init), xs_(), mask=mask)


def test_layers_take_a_mask():
    """layer, bidirectional (a Cell and a Layer backward) and stack (residual
    connections zero where a step did not run), against loops."""
    gru = rs.gru(F, H)
    p = random_params(lambda k: (gru.init(k), gru.init(k)))
    xs = xs_()
    h0 = np.zeros((B, H), np.float32)
    y_fw, s_fw = loop(ref.gru_step, p[0], xs, h0, mask=MASK, lengths=LENGTHS)
    y_bw, s_bw = loop(ref.gru_step, p[1], xs, h0, mask=MASK, lengths=LENGTHS, reverse=True)
    assert_trees_close(apply(rs.layer(gru), p[0], xs, mask=MASK, lengths=LENGTHS), (y_fw, s_fw))
    bi = rs.bidirectional(gru, gru, merge="pair")
    assert_trees_close(apply(bi, p, xs, mask=MASK, lengths=LENGTHS), ((y_fw, y_bw), (s_fw, s_bw)))
    bi_layer = rs.bidirectional(gru, rs.stack([gru]), merge="pair")
    ys, (f_fw, (f_bw,)) = apply(bi_layer, (p[0], (p[1],)), xs, mask=MASK, lengths=LENGTHS)
    assert_trees_close((ys, f_fw, f_bw), ((y_fw, y_bw), s_fw, s_bw))

    st = rs.stack([gru, rs.gru(H, H)], residual=True)
    sp = random_params(st.init)
    ys, (f0, f1) = apply(st, sp, xs, mask=MASK, lengths=LENGTHS)
    y0, g0 = loop(ref.gru_step, sp[0], xs, h0, mask=MASK, lengths=LENGTHS)
    y1, g1 = loop(ref.gru_step, sp[1], y0, h0, mask=MASK, lengths=LENGTHS)
    assert_trees_close((ys, f0, f1), (y1 + y0, g0, g1))  # y0 is zero where no step ran


# -- merge -------------------------------------------------------------------------


def test_merge_mul_and_a_function():
    cell = rs.lstm(F, H)
    p = random_params(lambda k: (cell.init(k), cell.init(k)))
    xs = xs_()
    y_fw, _ = loop(ref.lstm_step, p[0], xs, lstm_h0(), lengths=LENGTHS)
    y_bw, _ = loop(ref.lstm_step, p[1], xs, lstm_h0(), lengths=LENGTHS, reverse=True)
    ys, _ = apply(rs.bidirectional(cell, cell, merge="mul"), p, xs, lengths=LENGTHS)
    assert_trees_close(ys, y_fw * y_bw)
    merge = lambda fw, bw: jnp.maximum(fw, 2 * bw)
    ys, _ = apply(rs.bidirectional(cell, cell, merge=merge), p, xs, lengths=LENGTHS)
    assert_trees_close(ys, np.maximum(y_fw, 2 * y_bw))


@pytest.mark.parametrize("merge", ["max", None, 3])
def test_unknown_merge_names_the_choices(merge):
    with pytest.raises(ValueError, match=r"merge must be one of \['concat', 'mean', 'mul', 'pair', "
                                         r"'sum'\] or a function"):
        rs.bidirectional(rs.gru(F, H), rs.gru(F, H), merge=merge)


# -- zoneout -----------------------------------------------------------------------


def zoned(step, rates):
    """Krueger et al. 2017, eq. (3) at evaluation: each state leaf is the
    expectation `rate * h_prev + (1 - rate) * h_new`; the output is the step's."""

    def zoned_step(h, x):
        h_new, y = step(h, x)
        return tuple(r * a + (1 - r) * b for r, a, b in zip(rates, h, h_new)), y

    return zoned_step


def zoned_by_masks(step, split_at):
    """Training: `x` carries the step's masks `m` (1: keep) after its first
    `split_at` features, and each leaf is `m * h_prev + (1 - m) * h_new`."""

    def zoned_step(h, x):
        x, m_h, m_c = np.split(x, split_at)
        h_new, y = step(h, x)
        return tuple(m * a + (1 - m) * b for m, a, b in zip((m_h, m_c), h, h_new)), y

    return zoned_step


def test_zoneout_at_evaluation_is_the_expectation():
    cell = rs.lstm(F, H)
    p = random_params(cell.init)
    h0 = tuple(np.random.RandomState(5).standard_normal((2, B, H)).astype(np.float32))
    for reverse in (False, True):
        lay = rs.layer(cell, zoneout=(0.3, 0.6), reverse=reverse)
        ys, final = apply(lay, p, xs_(), lengths=LENGTHS, mask=MASK,
                          initial_state=rs.LSTMState(*h0))
        step = zoned(functools.partial(ref.lstm_step, numpy(p)), (0.3, 0.6))
        want_ys, want_final, _ = ref.loop_unroll(step, xs_(), h0, lengths=LENGTHS, mask=MASK,
                                                 reverse=reverse)
        assert_trees_close((ys, tuple(final)), (want_ys, want_final))


@pytest.mark.parametrize("unroll_options", [{}, {"remat": 3}, {"time_major": True}])
def test_zoneout_in_training_applies_a_fresh_mask_per_step(unroll_options):
    cell = rs.lstm(F, H)
    p = random_params(cell.init)
    key = jax.random.key(7)
    time_major = unroll_options.get("time_major", False)
    lay = rs.layer(cell, zoneout=(0.3, 0.6), **unroll_options)
    xs = xs_()
    ys, final = apply(lay, p, xs.transpose(1, 0, 2) if time_major else xs, lengths=LENGTHS,
                      key=key)
    if time_major:
        ys = ys.transpose(1, 0, 2)
    # The masks as rs.layer documents them: from split(key)[1], one key per state leaf.
    k_h, k_c = jax.random.split(jax.random.split(key)[1], 2)
    shape = (T, B, H) if time_major else (B, T, H)
    m_h, m_c = (np.asarray(jax.random.bernoulli(k, r, shape), np.float32)
                for k, r in ((k_h, 0.3), (k_c, 0.6)))
    if time_major:
        m_h, m_c = m_h.transpose(1, 0, 2), m_c.transpose(1, 0, 2)
    step = zoned_by_masks(functools.partial(ref.lstm_step, numpy(p)), [F, F + H])
    want_ys, want_final, _ = ref.loop_unroll(step, np.concatenate([xs, m_h, m_c], -1),
                                             lstm_h0(), lengths=LENGTHS)
    assert_trees_close((ys, tuple(final)), (want_ys, want_final))


def test_zoneout_keeps_each_unit_with_probability_rate():
    """A counter cell, h' = h + 1, zoned out: the final state counts the steps a
    unit took the new value, and the output of a step is the state it read."""
    counter = rs.Cell(None, lambda p, batch_shape: jnp.zeros(batch_shape + (256,)),
                      lambda p, h, x: (h + 1, h))
    rate, batch, time = 0.3, 16, 64
    lay = rs.layer(counter, zoneout=rate)
    ys, final = jax.jit(lay.apply)(None, jnp.zeros((batch, time, 1)), key=jax.random.key(0))
    np.testing.assert_allclose(np.mean(final) / time, 1 - rate, atol=0.01)
    # Fresh masks per step: whether a unit moves at step t says nothing about t + 1.
    moved = np.diff(np.concatenate([np.asarray(ys), np.asarray(final)[:, None]], 1), axis=1)
    assert set(np.unique(moved)) == {0.0, 1.0}
    same = np.mean(moved[:, 1:] == moved[:, :-1])
    np.testing.assert_allclose(same, rate ** 2 + (1 - rate) ** 2, atol=0.01)
    # Without a key: the expectation, every unit the same.
    _, final = jax.jit(lay.apply)(None, jnp.zeros((batch, time, 1)))
    np.testing.assert_allclose(final, (1 - rate) * time, rtol=1e-5)


def test_zoneout_with_dropout_stack_and_gradients():
    cell = rs.gru(F, H)
    st = rs.stack([cell, rs.gru(H, H)], zoneout=0.2, state_dropout=0.3)
    p = random_params(st.init)
    loss = lambda p, key: jnp.sum(st.apply(p, xs_(), lengths=LENGTHS, key=key)[0] ** 2)
    grads = jax.jit(jax.grad(loss))(p, jax.random.key(1))
    assert all(np.isfinite(g).all() and np.any(g) for g in jax.tree_util.tree_leaves(grads))
    # At evaluation the stack is the expectation in each layer.
    ys, _ = apply(st, p, xs_(), lengths=LENGTHS)
    h0 = np.zeros((B, H), np.float32)
    y0, _ = loop(lambda q, h, x: (lambda s: (0.2 * h + 0.8 * s[0], s[1]))(ref.gru_step(q, h, x)),
                 p[0], xs_(), h0, lengths=LENGTHS)
    y1, _ = loop(lambda q, h, x: (lambda s: (0.2 * h + 0.8 * s[0], s[1]))(ref.gru_step(q, h, x)),
                 p[1], y0, h0, lengths=LENGTHS)
    assert_trees_close(ys, y1)


def test_bad_zoneout():
    cell = rs.lstm(F, H)
    with pytest.raises(ValueError, match=r"zoneout must lie in \[0, 1\); got 1.0"):
        rs.layer(cell, zoneout=1.0)
    with pytest.raises(ValueError, match=r"zoneout\[1\] must lie in"):
        rs.layer(cell, zoneout=(0.1, -0.5))
    with pytest.raises(TypeError, match="zoneout must be a float"):
        rs.layer(cell, zoneout="0.1")
    lay = rs.layer(cell, zoneout=(0.1, 0.2, 0.3))
    with pytest.raises(ValueError, match=r"one rate per state leaf \(2 for this cell\); got 3"):
        lay.apply(random_params(cell.init), xs_())


def test_layers_without_a_mask_argument_still_stack():
    """A user's Layer whose apply predates `mask`: it runs while no mask is given."""
    inner = rs.layer(rs.gru(F, H))
    legacy = rs.Layer(inner.init, lambda p, xs, *, lengths=None, resets=None, initial_state=None,
                      key=None: inner.apply(p, xs, lengths=lengths, initial_state=initial_state))
    p = random_params(lambda k: (legacy.init(k),))
    ys, _ = apply(rs.stack([legacy]), p, xs_(), lengths=LENGTHS)
    assert_trees_close(ys, loop(ref.gru_step, p[0], xs_(), np.zeros((B, H), np.float32),
                                lengths=LENGTHS)[0])
