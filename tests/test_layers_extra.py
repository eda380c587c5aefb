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
from tests.test_layers import B, F, H, LENGTHS, T, apply, assert_trees_close, numpy, random_params, xs_
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
            ys, final = rs.unroll(cell, p, x, initial_state=h, mask=mask, lengths=np.array([5, 0, 4, 3]),
                                  reverse=True)
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
        (MASK[:, :-1], ValueError, r"mask must have shape \(batch, time\) = \(4, 7\); got shape \(4, 6\)"),
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
