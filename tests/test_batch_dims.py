"""Leading batch axes, `(*batch, time, features)`: every entry point and option
against a plain Python loop over the rows and time (tests/reference.py) and
against the same call on the batch axes flattened into one; gradients by finite
differences; jit and vmap; flax's `test_rnn_multiple_batch_dims` against flax's
`nn.RNN` given the same weights; and the refusals, with shapes as passed."""

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import rnnscan as rs
from tests import reference as ref
from tests.test_unroll import assert_tree_close, randomize, to_numpy

BATCH, T, F, H = (2, 3), 5, 3, 4
N = 6  # rows, flattened
rng = np.random.default_rng(0)
XS = rng.normal(size=(*BATCH, T, F)).astype(np.float32)
LENGTHS = np.array([[5, 0, 3], [2, 5, 4]], np.int32)
RESETS = rng.random((*BATCH, T)) < 0.3
MASK = rng.random((*BATCH, T)) < 0.7

CELLS = {
    "lstm": (lambda: rs.lstm(F, H), lambda p: functools.partial(ref.lstm_step, p)),
    "gru": (lambda: rs.gru(F, H), lambda p: functools.partial(ref.gru_step, p)),
}
OPTIONS = {
    "plain": {},
    "lengths": {"lengths": LENGTHS},
    "reverse_lengths": {"reverse": True, "lengths": LENGTHS},
    "resets_reset_state": {"resets": RESETS, "reset_state": "random", "initial_state": "random"},
    "mask_lengths": {"mask": MASK, "lengths": LENGTHS, "reverse": True},
    "time_major": {"time_major": True, "lengths": LENGTHS, "resets": RESETS, "mask": MASK},
    "all_states": {"return_all_states": True, "lengths": LENGTHS, "reverse": True,
                   "initial_state": "random"},
    "remat_chunks": {"remat": 2, "lengths": LENGTHS, "resets": RESETS},
    "scan": {"method": "scan", "lengths": LENGTHS},
}

flat = lambda a: np.reshape(a, (N,) + np.shape(a)[len(BATCH):])  # (*batch, ...) -> (N, ...)
unflat = lambda a: np.reshape(a, BATCH + np.shape(a)[1:])
# (*batch, T, F) -> (T, *batch, F) (`at=-1` for a mask (*batch, T)), and back.
to_time_major = lambda a, at=-2: np.moveaxis(np.asarray(a), at, 0)
from_time_major = lambda a: np.moveaxis(np.asarray(a), 0, -2)


def setup(name, option, seed=0):
    """The cell, its params, the keyword arguments (batch-major, `(*batch, ...)`)
    and the loop reference's `(ys, final, states)`, each `(*batch, ...)`."""
    make_cell, make_ref = CELLS[name]
    cell = make_cell()
    params = randomize(cell.init(jax.random.key(seed)), seed)
    kwargs = dict(option)
    for i, state in enumerate(("initial_state", "reset_state")):
        if kwargs.get(state) == "random":
            kwargs[state] = randomize(cell.initial_state(params, BATCH), seed + 1 + i, scale=1.0)
    h0 = kwargs.get("initial_state", cell.initial_state(params, BATCH))
    as_rows = lambda s: None if s is None else (  # loop_unroll's state: a tuple or an array
        tuple(map(flat, to_numpy(s))) if isinstance(s, tuple) else flat(to_numpy(s)))
    ys, final, states = ref.loop_unroll(
        make_ref(to_numpy(params)), flat(XS), as_rows(h0),
        lengths=None if "lengths" not in kwargs else flat(kwargs["lengths"]),
        resets=None if "resets" not in kwargs else flat(kwargs["resets"]),
        mask=None if "mask" not in kwargs else flat(kwargs["mask"]),
        reverse=kwargs.get("reverse", False), reset_state=as_rows(kwargs.get("reset_state")))
    as_state = lambda s: type(h0)(*s) if isinstance(h0, tuple) else s
    expected = jax.tree_util.tree_map(unflat, (ys, as_state(final), as_state(states)))
    return cell, params, kwargs, expected


def call(entry, cell, params, xs, kwargs):
    """`entry` with `kwargs` (batch-major), in the layout `kwargs` asks for; the
    results back in batch-major."""
    if not kwargs.get("time_major"):
        return entry(cell, params, xs, **kwargs)
    kwargs = {k: to_time_major(v, -1) if k in ("resets", "mask") else v for k, v in kwargs.items()}
    out = entry(cell, params, to_time_major(xs), **kwargs)
    timed = (True, False, True)
    return tuple(jax.tree_util.tree_map(from_time_major, o) if t else o for o, t in zip(out, timed))


def flattened(kwargs):
    """`kwargs` with every batch axis joined into one (rows row-major)."""
    return {k: jax.tree_util.tree_map(flat, v) if k in ("lengths", "resets", "mask", "initial_state",
                                                           "reset_state") else v
            for k, v in kwargs.items()}


@pytest.mark.parametrize("name, option", [("lstm", o) for o in OPTIONS] + [
    ("gru", o) for o in ("plain", "resets_reset_state", "time_major")])
def test_unroll_matches_the_loop_and_the_flattened_call(name, option):
    cell, params, kwargs, (ys, final, states) = setup(name, OPTIONS[option])
    out = call(rs.unroll, cell, params, XS, kwargs)
    assert np.shape(out[0]) == (*BATCH, T, H)
    assert_tree_close(out[0], ys)
    assert_tree_close(out[1], final)
    if kwargs.get("return_all_states"):
        assert_tree_close(out[2], states)
    else:
        assert len(out) == 2
    on_rows = call(rs.unroll, cell, params, flat(XS), flattened(kwargs))
    assert_tree_close(out, jax.tree_util.tree_map(lambda a: unflat(np.asarray(a)), on_rows), tol=1e-6)


@pytest.mark.parametrize("time_major", [False, True])
def test_truncated_unroll_and_dynamic_rnn(time_major):
    cell, params, kwargs, (ys, final, _) = setup("lstm", {"lengths": LENGTHS, "time_major": time_major})
    out = call(functools.partial(rs.truncated_unroll, chunk_size=2), cell, params, XS, kwargs)
    assert_tree_close(out, (ys, final))
    xs = to_time_major(XS) if time_major else XS
    outputs, state = rs.dynamic_rnn(cell, params, xs, sequence_length=LENGTHS, time_major=time_major)
    assert_tree_close((from_time_major(outputs) if time_major else outputs, state), (ys, final))


def test_associative_and_newton_equal_the_flattened_call():
    cell = rs.mingru(F, H)
    params = randomize(cell.init(jax.random.key(0)))
    for method in ("associative", "newton"):
        got = rs.unroll(cell, params, XS, lengths=LENGTHS, resets=RESETS, method=method)
        want = rs.unroll(cell, params, flat(XS), lengths=flat(LENGTHS), resets=flat(RESETS),
                         method="scan")
        assert_tree_close(got, jax.tree_util.tree_map(lambda a: unflat(np.asarray(a)), want), 1e-5)


def test_gradients_numerically_and_against_the_flattened_call():
    with jax.enable_x64(True):
        cell = rs.lstm(F, H, param_dtype=jnp.float64)
        params = randomize(cell.init(jax.random.key(0)))
        xs = jnp.asarray(XS, jnp.float64)
        h0 = randomize(cell.initial_state(params, BATCH), 1)

        def loss(p, x, h, batch_shape=BATCH):
            ys, final = rs.unroll(cell, p, x, initial_state=h, resets=RESETS.reshape(*batch_shape, T),
                                  lengths=LENGTHS.reshape(batch_shape), reverse=True)
            return jnp.sum(jnp.sin(ys)) + jnp.sum(final.c)

        check_grads(loss, (params, xs, h0), order=1, modes=("rev",), atol=1e-6, rtol=1e-6)
        got = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(params, xs, h0)
        want = jax.grad(loss, argnums=(0, 1, 2))(params, flat(xs), jax.tree_util.tree_map(flat, h0),
                                                 (N,))
        assert_tree_close(got[0], to_numpy(want[0]), 1e-10)
        assert_tree_close((got[1], got[2]), jax.tree_util.tree_map(
            lambda a: unflat(np.asarray(a)), (want[1], want[2])), 1e-10)


def test_jit_and_vmap_over_a_multi_batch_call():
    cell, params, kwargs, (ys, final, _) = setup("gru", {"lengths": LENGTHS, "resets": RESETS})
    run = lambda p, x, n, r: rs.unroll(cell, p, x, lengths=n, resets=r)
    assert_tree_close(jax.jit(run)(params, XS, LENGTHS, RESETS), (ys, final))
    # vmap over a leading axis: each slice is a (2, 3)-batch call of its own.
    xs = np.stack([XS, 2 * XS])
    got = jax.jit(jax.vmap(run, in_axes=(None, 0, None, None)))(params, xs, LENGTHS, RESETS)
    assert_tree_close(jax.tree_util.tree_map(lambda a: a[1], got),
                      run(params, 2 * XS, LENGTHS, RESETS), tol=1e-6)


def test_layers_match_the_loop_and_the_flattened_call():
    cell, params, _, (ys_fw, final_fw, _) = setup("lstm", {"lengths": LENGTHS, "mask": MASK})
    _, _, _, (ys_bw, final_bw, _) = setup("lstm", {"lengths": LENGTHS, "mask": MASK, "reverse": True})
    bi = rs.bidirectional(cell, cell)
    ys, (fw, bw) = bi.apply((params, params), XS, lengths=LENGTHS, mask=MASK)
    assert_tree_close((ys, fw, bw), (np.concatenate([ys_fw, ys_bw], -1), final_fw, final_bw))

    layers = {
        "layer_dropout": (rs.layer(cell, input_dropout=0.3, state_dropout=0.2, zoneout=0.1), {}),
        "bidirectional_stack_bw": (rs.bidirectional(cell, rs.stack([cell])), {}),
        "stack_residual": (rs.stack([rs.gru(F, F), rs.gru(F, F)], residual=True, dropout=0.5), {}),
        "time_major": (rs.stack([cell, rs.lstm(H, H)], time_major=True), {"time_major": True}),
    }
    for name, (model, options) in layers.items():
        p = model.init(jax.random.key(1))
        one_step = XS[:, :, :1]  # the state's structure at BATCH:
        h0 = model.apply(p, to_time_major(one_step) if options else one_step)[1]
        h0 = randomize(h0, 2, scale=1.0)
        kwargs = dict(lengths=LENGTHS, resets=RESETS, mask=MASK, initial_state=h0)
        apply = lambda _, p, x, time_major=None, **kw: model.apply(p, x, key=jax.random.key(3), **kw)
        got = call(apply, None, p, XS, dict(kwargs, **options))
        want = call(apply, None, p, flat(XS), dict(flattened(kwargs), **options))
        assert np.shape(got[0])[:3] == (*BATCH, T), name
        assert_tree_close(got, jax.tree_util.tree_map(lambda a: unflat(np.asarray(a)), want), 1e-6)


def test_equinox_module_takes_batch_axes():
    eqx_rnn = pytest.importorskip("rnnscan.equinox")
    module = eqx_rnn.RNN(rs.stack([rs.gru(F, H), rs.gru(H, H)]), key=jax.random.key(0))
    ys, state = module(XS, lengths=LENGTHS)
    want_ys, want_state = module(flat(XS), lengths=flat(LENGTHS))
    assert_tree_close((ys, state), jax.tree_util.tree_map(lambda a: unflat(np.asarray(a)),
                                                          (want_ys, want_state)), 1e-6)


def test_rnn_multiple_batch_dims_as_flax():
    """flax's `test_rnn_multiple_batch_dims`, against flax's `nn.RNN` given the same weights."""
    nn = pytest.importorskip("flax.linen")
    import rnnscan.flax
    from tests.test_flax import flax_lstm_to_rnnscan

    batch_dims, seq_len, channels_in, channels_out = (10, 11), 40, 5, 15
    xs = jax.random.normal(jax.random.key(4), (*batch_dims, seq_len, channels_in))
    flax_rnn = nn.RNN(nn.LSTMCell(channels_out), return_carry=True)
    variables = flax_rnn.init(jax.random.key(0), xs)
    (c, h), want = flax_rnn.apply(variables, xs)
    assert want.shape == (*batch_dims, seq_len, channels_out)

    module = rnnscan.flax.RNN(rs.lstm(channels_in, channels_out, forget_bias=0.0))
    ours = {"params": {"rnnscan": flax_lstm_to_rnnscan(variables["params"]["cell"])}}
    ys, state = jax.jit(module.apply)(ours, xs)
    assert ys.shape == (*batch_dims, seq_len, channels_out)
    tol = dict(rtol=2e-5, atol=2e-5)
    np.testing.assert_allclose(ys, want, **tol)
    np.testing.assert_allclose(state.h, h, **tol)
    np.testing.assert_allclose(state.c, c, **tol)


CELL = rs.lstm(F, H)
P = CELL.init(jax.random.key(0))
V, TE = ValueError, TypeError
REFUSED = [
    ("lengths", lambda: rs.unroll(CELL, P, XS, lengths=LENGTHS.T), V,
     "lengths must have shape (*batch,) = (2, 3); got shape (3, 2)"),
    ("lengths-range", lambda: rs.unroll(CELL, P, XS, lengths=LENGTHS + 1), V,
     "lengths must lie in [0, time] = [0, 5]; got [6, 6] at rows [[0, 0], [1, 1]]"),
    ("resets", lambda: rs.unroll(CELL, P, XS, resets=RESETS[0]), V,
     "resets must have shape (*batch, time) = (2, 3, 5); got shape (3, 5)"),
    ("mask-time-major", lambda: rs.unroll(CELL, P, to_time_major(XS), mask=MASK, time_major=True),
     V, "mask must have shape (time, *batch) = (5, 2, 3); got shape (2, 3, 5)"),
    ("initial-state-batch", lambda: rs.unroll(CELL, P, XS, initial_state=CELL.initial_state(P, (6,))),
     V, "initial_state must have leaves (*batch, ...) with the batch axes (2, 3) of xs; got "
        "LSTMState(h='float32[6, 4]', c='float32[6, 4]')"),
    ("initial-state-size", lambda: rs.unroll(CELL, P, XS, initial_state=rs.LSTMState(
        jnp.zeros((2, 3, 4)), jnp.zeros((2, 3, 5)))), V,
     "initial_state must match cell.initial_state(params, (2, 3)): expected LSTMState(h='float32[2, 3, 4]', "
     "c='float32[2, 3, 4]'), got LSTMState(h='float32[2, 3, 4]', c='float32[2, 3, 5]')"),
    ("reset-state-size", lambda: rs.unroll(CELL, P, XS, resets=RESETS, reset_state=CELL.initial_state(
        P, (2, 3, 1))), V, "reset_state must match the cell's state: expected LSTMState(h='float32[2, 3, 4]', "
                           "c='float32[2, 3, 4]'), got LSTMState(h='float32[2, 3, 1, 4]'"),
    ("layer-initial-state", lambda: rs.stack([CELL]).apply((P,), XS, initial_state=(
        CELL.initial_state(P, (3, 2)),)), V, "initial_state must have leaves (*batch, ...) with the "
                                              "batch axes (2, 3) of xs; got (LSTMState(h='float32[3, 2, 4]'"),
    ("layer-lengths", lambda: rs.bidirectional(CELL, CELL).apply((P, P), XS, lengths=LENGTHS[0]), V,
     "lengths must have shape (*batch,) = (2, 3); got shape (3,)"),
    ("dynamic-rnn", lambda: rs.dynamic_rnn(CELL, P, XS, sequence_length=LENGTHS[:, :2]), V,
     "sequence_length must have shape (*batch,) = (2, 3); got shape (2, 2)"),
    ("rank-2", lambda: rs.unroll(CELL, P, XS[0, 0]), V,
     "xs must have shape (*batch, time, ...); got shape (5, 3)"),
    ("features", lambda: rs.unroll(CELL, P, XS[..., :2]), V, "must have 3 features on its last axis"),
    # Integer and bool xs, at every entry point.
    ("int-unroll", lambda: rs.unroll(CELL, P, np.ones((B := 2, T, F), np.int32)), TE,
     "xs must have a floating dtype (float32, bfloat16, ...); got int32"),
    ("bool-unroll", lambda: rs.unroll(CELL, P, XS > 0), TE, "xs must have a floating dtype"),
    ("int-truncated", lambda: rs.truncated_unroll(CELL, P, XS.astype(np.int64), 2), TE,
     "xs must have a floating dtype"),
    ("int-dynamic-rnn", lambda: rs.dynamic_rnn(CELL, P, XS.astype(np.int8)), TE,
     "inputs must have a floating dtype (float32, bfloat16, ...); got int8"),
    ("int-layer", lambda: rs.layer(CELL).apply(P, XS.astype(np.int32)), TE,
     "xs must have a floating dtype"),
    ("int-stack-jit", lambda: jax.jit(rs.stack([CELL]).apply)((P,), XS.astype(np.int32)), TE,
     "xs must have a floating dtype"),
]


@pytest.mark.parametrize("call_, error, message", [r[1:] for r in REFUSED], ids=[r[0] for r in REFUSED])
def test_refused_with_shapes_as_passed(call_, error, message):
    with pytest.raises(error, match=re.escape(message)):
        call_()


def test_a_pytree_xs_takes_batch_axes_on_every_leaf():
    step = lambda p, h, x: (h + x["a"] * x["b"][..., :1], h)
    xs = {"a": np.ones((*BATCH, T, 1), np.float32), "b": np.full((*BATCH, T, 2), 2.0, np.float32)}
    _, h = rs.unroll(step, None, xs, initial_state=jnp.zeros((*BATCH, 1)), lengths=LENGTHS)
    np.testing.assert_allclose(h, 2.0 * LENGTHS[..., None])
