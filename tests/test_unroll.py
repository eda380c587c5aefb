"""`unroll` and `dynamic_rnn` against a plain Python loop over time (tests/reference.py)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import checkify
from jax.test_util import check_grads

import rnnscan as rs
from rnnscan.tuning import batch_groups
from rnnscan.unroll import execute, make_plan
from tests import reference as ref

B, T, F = 4, 7, 3
LENGTHS = np.array([5, 0, 7, 3], np.int32)


def randomize(params, seed=0, scale=0.5):
    """Every parameter random (biases and peepholes too), so each one matters."""
    leaves, treedef = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    return jax.tree_util.tree_unflatten(
        treedef, [scale * jax.random.normal(k, x.shape, x.dtype) for k, x in zip(keys, leaves)]
    )


def to_numpy(tree):
    return jax.tree_util.tree_map(np.asarray, tree)


# name -> (cell factory, numpy reference step factory taking the params)
CELLS = {
    "lstm": (lambda: rs.lstm(F, 4), lambda p: functools.partial(ref.lstm_step, p)),
    "lstm_peephole_clip_proj": (
        lambda: rs.lstm(F, 5, proj_size=2, peephole=True, cell_clip=0.4, proj_clip=0.3,
                        forget_bias=0.7),
        lambda p: functools.partial(ref.lstm_step, p, forget_bias=0.7, cell_clip=0.4,
                                    proj_clip=0.3),
    ),
    "gru": (lambda: rs.gru(F, 4), lambda p: functools.partial(ref.gru_step, p)),
    "gru_tf1": (
        lambda: rs.gru(F, 4, reset_after=False),
        lambda p: functools.partial(ref.gru_step, p, reset_after=False),
    ),
    "rnn_relu": (
        lambda: rs.rnn(F, 4, activation="relu"),
        lambda p: functools.partial(ref.rnn_step, p, act="relu"),
    ),
    "rnn_nobias": (
        lambda: rs.rnn(F, 4, use_bias=False), lambda p: functools.partial(ref.rnn_step, p)
    ),
}

RESETS = np.zeros((B, T), bool)
RESETS[:, 0] = True
RESETS[0, 3] = True
RESETS[2, 6] = True
RESETS[1, 2] = True  # on a row of length 0: must change nothing
RESETS[3, 5] = True  # past row 3's length: must change nothing

OPTIONS = {
    "plain": {},
    "lengths": {"lengths": LENGTHS},
    "reverse": {"reverse": True},
    "reverse_lengths": {"reverse": True, "lengths": LENGTHS},
    "resets": {"resets": RESETS},
    "resets_lengths_reverse": {"resets": RESETS, "lengths": LENGTHS, "reverse": True},
    "initial_state": {"initial_state": "random", "lengths": LENGTHS},
    "time_major": {"time_major": True, "lengths": LENGTHS, "resets": RESETS},
    "unroll3": {"unroll": 3, "lengths": LENGTHS, "reverse": True},
    "remat": {"remat": True, "lengths": LENGTHS},
    "all_states": {"return_all_states": True, "lengths": LENGTHS, "reverse": True, "initial_state": "random"},
}


def run_both(name, option, seed=0):
    make_cell, make_ref = CELLS[name]
    cell = make_cell()
    params = randomize(cell.init(jax.random.key(seed)), seed)
    rng = np.random.default_rng(seed)
    xs = rng.normal(size=(B, T, F)).astype(np.float32)
    kwargs = dict(option)
    h0 = cell.initial_state(params, (B,))
    if kwargs.get("initial_state") == "random":
        h0 = randomize(h0, seed + 1, scale=1.0)
        kwargs["initial_state"] = h0
    time_major = kwargs.get("time_major", False)
    resets = kwargs.get("resets")
    if time_major and resets is not None:
        kwargs["resets"] = resets.T
    out = rs.unroll(cell, params, xs.transpose(1, 0, 2) if time_major else xs, **kwargs)

    step = make_ref(to_numpy(params))
    h0_np = to_numpy(h0)
    h0_np = tuple(h0_np) if isinstance(h0_np, tuple) else h0_np
    expected = ref.loop_unroll(
        step, xs, h0_np, lengths=kwargs.get("lengths"), resets=resets,
        reverse=kwargs.get("reverse", False),
    )
    return out, expected, time_major


def assert_tree_close(got, expected, tol=2e-5):
    got, expected = jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(expected)
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        np.testing.assert_allclose(np.asarray(g), e, rtol=tol, atol=tol)


@pytest.mark.parametrize("option", list(OPTIONS))
@pytest.mark.parametrize("name", list(CELLS))
def test_unroll_matches_python_loop(name, option):
    out, (ys, final, states), time_major = run_both(name, OPTIONS[option])
    swap = (lambda a: np.swapaxes(np.asarray(a), 0, 1)) if time_major else np.asarray
    assert_tree_close(swap(out[0]), ys)
    assert_tree_close(tuple(out[1]) if isinstance(final, tuple) else out[1], final)
    if OPTIONS[option].get("return_all_states"):
        got_states = jax.tree_util.tree_map(swap, out[2])
        assert_tree_close(tuple(got_states) if isinstance(states, tuple) else got_states, states)
    else:
        assert len(out) == 2


def test_outputs_are_zero_and_state_held_past_lengths():
    out, _, _ = run_both("lstm", {"lengths": LENGTHS, "return_all_states": True})
    ys, final, states = out
    for b, n in enumerate(LENGTHS):
        assert np.all(np.asarray(ys[b, n:]) == 0)
        if n:
            # Equal up to rounding: an unrolled loop body may fuse the two copies apart.
            np.testing.assert_allclose(states.c[b, n - 1], final.c[b], rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(np.asarray(final.h[1]), 0)  # length 0 keeps the initial state


def bare_cell(params, h, x):
    """A user's own cell with a dict state: a leaky sum and a step counter."""
    a = params["decay"] * h["a"] + jnp.tanh(x @ params["w"])
    return {"a": a, "count": h["count"] + 1.0}, 2.0 * a


def test_bare_function_cell_with_pytree_state():
    params = {"decay": jnp.float32(0.9), "w": jnp.ones((F, 2)) * 0.3}
    xs = np.random.default_rng(0).normal(size=(B, T, F)).astype(np.float32)
    h0 = {"a": jnp.zeros((B, 2)), "count": jnp.zeros((B, 1))}
    ys, final = rs.unroll(bare_cell, params, xs, initial_state=h0, lengths=LENGTHS, reverse=True)

    def np_step(h, x):
        a, count = h
        a = 0.9 * a + np.tanh(x @ np.asarray(params["w"]))
        return (a, count + 1.0), 2.0 * a

    e_ys, (e_a, e_count), _ = ref.loop_unroll(
        np_step, xs, (np.zeros((B, 2)), np.zeros((B, 1))), lengths=LENGTHS, reverse=True
    )
    assert_tree_close(ys, e_ys)
    assert_tree_close(final["a"], e_a)
    np.testing.assert_array_equal(np.asarray(final["count"])[:, 0], LENGTHS)


def test_generic_step_path_equals_fast_path():
    cell = rs.gru(F, 4)
    slow = cell._replace(project_inputs=None, recurrent_step=None)
    params = randomize(cell.init(jax.random.key(0)))
    xs = np.random.default_rng(1).normal(size=(B, T, F)).astype(np.float32)
    a = rs.unroll(cell, params, xs, lengths=LENGTHS)
    b = rs.unroll(slow, params, xs, lengths=LENGTHS)
    assert_tree_close(a, to_numpy(b), tol=1e-6)


def test_pytree_inputs():
    def step(params, h, x):
        h = jnp.tanh(h @ params + x["u"] * x["v"][..., None])
        return h, h

    rng = np.random.default_rng(0)
    w = rng.normal(size=(3, 3)).astype(np.float32) * 0.5
    xs = {"u": rng.normal(size=(B, T, 3)).astype(np.float32), "v": rng.normal(size=(B, T)).astype(np.float32)}
    ys, final = rs.unroll(step, w, xs, initial_state=jnp.zeros((B, 3)), lengths=LENGTHS)
    flat = np.concatenate([xs["u"], xs["v"][..., None]], axis=-1)
    e_ys, e_final, _ = ref.loop_unroll(
        lambda h, x: (np.tanh(h @ w + x[:3] * x[3]),) * 2, flat, np.zeros((B, 3)), lengths=LENGTHS
    )
    assert_tree_close(ys, e_ys)
    assert_tree_close(final, e_final)


def test_dynamic_rnn_is_unroll_with_tf_names():
    cell = rs.lstm(F, 4)
    params = randomize(cell.init(jax.random.key(0)))
    xs = np.random.default_rng(0).normal(size=(T, B, F)).astype(np.float32)
    got = rs.dynamic_rnn(cell, params, xs, sequence_length=LENGTHS, time_major=True)
    want = rs.unroll(cell, params, xs, lengths=LENGTHS, time_major=True)
    assert_tree_close(got, to_numpy(want), tol=0)
    with pytest.raises(ValueError, match="sequence_length"):
        rs.dynamic_rnn(cell, params, xs, sequence_length=LENGTHS + 5, time_major=True)


def test_compiles_once_per_cell_and_shape():
    cell = rs.rnn(F, 4)
    params = cell.init(jax.random.key(0))
    xs = np.ones((B, T, F), np.float32)
    before = execute._cache_size()
    for _ in range(3):
        rs.unroll(cell, params, xs, lengths=LENGTHS)
    assert execute._cache_size() == before + 1
    rs.unroll(cell, params, xs[:, :5], lengths=np.minimum(LENGTHS, 5))
    assert execute._cache_size() == before + 2


def test_jit_vmap_grad_compose():
    cell = rs.lstm(F, 4, proj_size=2)
    params = randomize(cell.init(jax.random.key(0)))
    xs = np.random.default_rng(0).normal(size=(2, B, T, F)).astype(np.float32)

    def loss(p, x, lengths):
        ys, state = rs.unroll(cell, p, x, lengths=lengths, reverse=True)
        return jnp.sum(ys**2) + jnp.sum(state.c)

    eager = [loss(params, x, LENGTHS) for x in xs]
    vmapped = jax.jit(jax.vmap(loss, in_axes=(None, 0, None)))(params, xs, LENGTHS)
    np.testing.assert_allclose(vmapped, eager, rtol=1e-5)
    g_jit = jax.jit(jax.grad(loss))(params, xs[0], LENGTHS)
    g_eager = jax.grad(loss)(params, xs[0], LENGTHS)
    assert_tree_close(g_jit, to_numpy(g_eager), tol=1e-5)
    # vmap over a batch of parameter sets too
    stacked = jax.tree_util.tree_map(lambda a: jnp.stack([a, 2 * a]), params)
    per_set = jax.vmap(loss, in_axes=(0, None, None))(stacked, xs[0], LENGTHS)
    np.testing.assert_allclose(per_set[1], loss(jax.tree_util.tree_map(lambda a: 2 * a, params), xs[0], LENGTHS), rtol=1e-5)


X64_CELLS = {
    "lstm_peephole_clip_proj": lambda: rs.lstm(
        F, 5, proj_size=2, peephole=True, cell_clip=2.0, forget_bias=0.7, param_dtype=jnp.float64
    ),
    "gru": lambda: rs.gru(F, 4, param_dtype=jnp.float64),
    "gru_tf1": lambda: rs.gru(F, 4, reset_after=False, param_dtype=jnp.float64),
    "rnn_nobias": lambda: rs.rnn(F, 4, use_bias=False, param_dtype=jnp.float64),
}


@pytest.mark.parametrize("name", list(X64_CELLS))
def test_gradients_numerically(name):
    """Reverse-mode gradients w.r.t. params, inputs and initial state, in float64."""
    with jax.enable_x64(True):
        cell = X64_CELLS[name]()
        params = randomize(cell.init(jax.random.key(0)))
        xs = jnp.asarray(np.random.default_rng(0).normal(size=(B, 5, F)))
        h0 = randomize(cell.initial_state(params, (B,)), 1)
        lengths = np.array([5, 0, 2, 4])
        resets = np.zeros((B, 5), bool)
        resets[0, 2] = True

        def f(p, x, h):
            ys, final = rs.unroll(cell, p, x, initial_state=h, lengths=lengths, resets=resets,
                                  reverse=True, remat=True)
            return jnp.sum(jnp.sin(ys)) + sum(jnp.sum(l) for l in jax.tree_util.tree_leaves(final))

        check_grads(f, (params, xs, h0), order=1, modes=("rev",), atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("remat", [True, "carry", "dots"])
def test_remat_gives_the_same_gradients(remat):
    cell = rs.lstm(F, 4)
    params = randomize(cell.init(jax.random.key(0)))
    xs = np.random.default_rng(0).normal(size=(B, T, F)).astype(np.float32)

    def f(p, remat):
        return jnp.sum(rs.unroll(cell, p, xs, lengths=LENGTHS, remat=remat)[0] ** 2)

    assert_tree_close(jax.grad(f)(params, remat), to_numpy(jax.grad(f)(params, False)), tol=1e-6)


def test_float64_when_x64_enabled():
    with jax.enable_x64(True):
        cell = rs.lstm(F, 4, peephole=True, param_dtype=jnp.float64)
        params = randomize(cell.init(jax.random.key(0)))
        xs = np.random.default_rng(0).normal(size=(B, T, F))
        ys, final = rs.unroll(cell, params, xs, lengths=LENGTHS)
        assert ys.dtype == jnp.float64 and final.c.dtype == jnp.float64
        e_ys, e_final, _ = ref.loop_unroll(
            functools.partial(ref.lstm_step, to_numpy(params)), xs,
            (np.zeros((B, 4)), np.zeros((B, 4))), lengths=LENGTHS,
        )
        np.testing.assert_allclose(ys, e_ys, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(final.c, e_final[1], rtol=1e-12, atol=1e-12)


def test_bf16_compute_keeps_an_f32_carry():
    cell16 = rs.lstm(F, 8, compute_dtype=jnp.bfloat16)
    cell32 = rs.lstm(F, 8)
    params = randomize(cell32.init(jax.random.key(0)))
    xs = np.random.default_rng(0).normal(size=(B, T, F)).astype(np.float32)
    ys16, s16 = rs.unroll(cell16, params, xs)
    ys32, s32 = rs.unroll(cell32, params, xs)
    assert s16.c.dtype == jnp.float32 and ys16.dtype == jnp.float32
    np.testing.assert_allclose(ys16, ys32, atol=3e-2)
    assert not np.allclose(ys16, ys32, atol=1e-7)  # bf16 really was used


def test_checkify_catches_traced_lengths_out_of_range():
    cell = rs.rnn(F, 4)
    params = cell.init(jax.random.key(0))
    xs = np.ones((B, T, F), np.float32)
    run = jax.jit(checkify.checkify(lambda l: rs.unroll(cell, params, xs, lengths=l)[0]))
    err, _ = run(jnp.array([1, 2, 3, T + 1]))
    with pytest.raises(checkify.JaxRuntimeError, match="lengths"):
        err.throw()
    err, _ = run(jnp.array([1, 2, 3, T]))
    err.throw()  # in range: no error


@pytest.mark.parametrize("cell_name", ["lstm_peephole_clip_proj", "rnn_nobias"])
@pytest.mark.parametrize("remat", [False, True])
def test_hoisted_kernel_gradient_equals_the_in_loop_one(cell_name, remat):
    """`SplitStep.recurrent_kernel` moves `w_hh`'s tangent out of the loop: forward and
    reverse mode must match the same cell without it (lengths, resets, reverse,
    an initial state that resets return to, all states)."""
    cell = CELLS[cell_name][0]()
    assert cell.step.recurrent_kernel == "w_hh"
    plain = cell._replace(step=cell.step._replace(recurrent_kernel=None))
    params = randomize(cell.init(jax.random.key(0)))
    xs = jnp.asarray(np.random.default_rng(0).normal(size=(B, T, F)), jnp.float32)
    h0 = randomize(cell.initial_state(params, (B,)), 1)

    def f(cell, p, x, h):
        ys, final, states = rs.unroll(cell, p, x, initial_state=h, lengths=LENGTHS,
                                      resets=RESETS, reverse=True, remat=remat,
                                      return_all_states=True)
        return jnp.sum(jnp.sin(ys)) + sum(jnp.sum(l**2) for l in jax.tree_util.tree_leaves((final, states)))

    args = (params, xs, h0)
    assert_tree_close(jax.grad(functools.partial(f, cell), argnums=(0, 1, 2))(*args),
                      to_numpy(jax.grad(functools.partial(f, plain), argnums=(0, 1, 2))(*args)),
                      tol=1e-5)
    tangents = tuple(randomize(a, 2) for a in args)
    _, jvp = jax.jvp(functools.partial(f, cell), args, tangents)
    _, expected = jax.jvp(functools.partial(f, plain), args, tangents)
    np.testing.assert_allclose(jvp, expected, rtol=1e-5)


@pytest.mark.slow
def test_hoisted_kernel_gradient_second_order_numerically():
    """Forward over reverse (a Hessian-vector product) through the hoisted rule, in float64."""
    with jax.enable_x64(True):
        cell = rs.lstm(F, 4, param_dtype=jnp.float64)
        params = randomize(cell.init(jax.random.key(0)))
        xs = jnp.asarray(np.random.default_rng(0).normal(size=(B, 5, F)))

        def f(p):
            ys, _ = rs.unroll(cell, p, xs, lengths=np.array([5, 0, 2, 4]))
            return jnp.sum(jnp.sin(ys))

        check_grads(f, (params,), order=2, modes=("fwd", "rev"), atol=1e-5, rtol=1e-5)


# Two of the eight cases by default (every cell, direction and remat once); all with -m slow.
FAST_LAYOUTS = {("gru", True, 3)}


@pytest.mark.parametrize("name, reverse, remat", [
    pytest.param(n, r, m, marks=() if (n, r, m) in FAST_LAYOUTS else pytest.mark.slow)
    for n in ("lstm", "gru") for r in (False, True) for m in (False, 3)])
def test_scan_layout_changes_nothing(name, reverse, remat):
    """The time axis split into consecutive scans (`time_segments`) and each step's
    batch into groups of rows (`batch_groups`) give the values and gradients of one
    scan over the whole batch: for the hoisted-kernel LSTM and the plain GRU, with
    lengths, resets, every state returned, and checkpointed chunks of 3 steps."""
    cell = CELLS[name][0]()
    params = randomize(cell.init(jax.random.key(0)))
    xs = jnp.asarray(np.random.default_rng(0).normal(size=(B, T, F)), jnp.float32)

    plan = make_plan(cell, params, xs, lengths=LENGTHS, resets=RESETS, reverse=reverse,
                     unroll=1, remat=remat, return_all_states=True, method="scan")

    def loss(params, xs, segments, groups):
        ys, final, states = execute(plan._replace(segments=segments, groups=groups), params, xs,
                                    None, jnp.asarray(LENGTHS), jnp.asarray(RESETS))
        leaves = jax.tree_util.tree_leaves((final, states))
        return jnp.sum(jnp.sin(ys)) + sum(jnp.sum(jnp.cos(a)) for a in leaves)

    results = lambda *layout: (loss(params, xs, *layout),
                               jax.grad(loss, argnums=(0, 1))(params, xs, *layout))
    expected = to_numpy(results(1, 1))
    # Segments of 3, 2 and 2 steps, and of a step each (with remat=3 its chunks
    # stand in for them); groups of 2 rows, of 1 row each, and of 1, 1 and 2 rows.
    for layout in [(3, 1), (T, 1), (1, 2), (1, B), (3, 3)]:
        assert_tree_close(results(*layout), expected, tol=1e-5)


def two_cores(monkeypatch):
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setattr("os.cpu_count", lambda: 2)


def test_batch_groups_only_split_mid_sized_products_on_cpus(monkeypatch):
    two_cores(monkeypatch)
    lstm_row = lambda hidden: 4 * hidden * hidden  # multiply-adds per row of h @ w_hh
    assert batch_groups(32, lstm_row(256), "cpu") == 2  # 8.4M a step
    assert batch_groups(16, lstm_row(256), "cpu") == 2  # 4.2M: 2.1M a group
    assert batch_groups(16, lstm_row(128), "cpu") == 1  # 1M: too small to split
    assert batch_groups(32, lstm_row(128), "cpu") == 1  # 2.1M: a group would have 1M
    assert batch_groups(24, 1_000_000, "cpu") == 2  # 24M, the largest split
    assert batch_groups(24, 1_000_001, "cpu") == 1  # above: XLA splits one product as well
    assert batch_groups(15, lstm_row(512), "cpu") == 1  # a group would have under 8 rows
    assert batch_groups(1024, lstm_row(64), "cpu") == 2  # at most 2, the number measured
    assert batch_groups(32, lstm_row(256), "gpu") == 1


def test_grouped_lstm_matches_python_loop(monkeypatch):
    """An LSTM big enough to be split in 2 groups by default (16 rows of 256
    units) against the plain loop, with lengths and resets, and its gradient
    against the one-group scan's."""
    two_cores(monkeypatch)
    batch, hidden = 16, 256
    cell = rs.lstm(F, hidden)
    params = randomize(cell.init(jax.random.key(0)), scale=0.1)
    xs = jnp.asarray(np.random.default_rng(0).normal(size=(batch, T, F)), jnp.float32)
    lengths = np.arange(batch) % (T + 1)
    resets = np.zeros((batch, T), bool)
    resets[::3, 4] = True
    assert batch_groups(batch, 4 * hidden * hidden) == 2

    ys, (h, c) = rs.unroll(cell, params, xs, lengths=lengths, resets=resets)
    h0 = tuple(np.zeros((batch, hidden), np.float32) for _ in range(2))
    expected_ys, expected_final, _ = ref.loop_unroll(
        functools.partial(ref.lstm_step, to_numpy(params)), xs, h0, lengths=lengths, resets=resets)
    assert_tree_close((ys, h, c), (expected_ys, *expected_final), tol=1e-4)

    plan = make_plan(cell, params, xs, lengths=lengths, resets=resets, unroll=4, method="scan")
    assert plan.groups == 2

    def loss(params, groups):
        ys, _ = execute(plan._replace(segments=2, groups=groups), params, xs, None,
                        jnp.asarray(lengths), jnp.asarray(resets))
        return jnp.sum(jnp.sin(ys))

    assert_tree_close(jax.grad(loss)(params, 2), to_numpy(jax.grad(loss)(params, 1)), tol=1e-5)


def test_steps_that_mix_rows_are_never_split(monkeypatch):
    """A bare step that centres its state over the batch and counts steps in a
    scalar state leaf, at a size an LSTM would be split at, is run over the whole
    batch at once: the same as the plain loop."""
    two_cores(monkeypatch)
    batch, hidden = 16, 512
    w = jnp.asarray(np.random.default_rng(1).normal(size=(hidden, hidden)) / hidden**0.5,
                    jnp.float32)
    xs = jnp.asarray(np.random.default_rng(2).normal(size=(batch, T, hidden)), jnp.float32)

    def centred(params, state, x):
        h, count = state
        h = jnp.tanh(x + h @ params)
        return (h - h.mean(axis=0), count + 1), h

    ys, (h, count) = rs.unroll(centred, w, xs, initial_state=(jnp.zeros((batch, hidden)),
                                                               jnp.float32(0)))
    h_ref, ys_ref = np.zeros((batch, hidden), np.float32), []
    for t in range(T):
        new = np.tanh(np.asarray(xs[:, t]) + h_ref @ np.asarray(w))
        h_ref = new - new.mean(axis=0)
        ys_ref.append(new)
    assert_tree_close((ys, h, count), (np.stack(ys_ref, 1), h_ref, np.float32(T)), tol=1e-4)


def test_zero_time_steps():
    cell = rs.lstm(F, 4)
    params = cell.init(jax.random.key(0))
    h0 = randomize(cell.initial_state(params, (B,)), 1)
    ys, final = rs.unroll(cell, params, jnp.ones((B, 0, F)), initial_state=h0)
    assert ys.shape == (B, 0, 4)
    assert_tree_close(final, to_numpy(h0), tol=0)


def test_hoisted_kernel_gradient_with_integer_and_nested_params():
    """Params beside the cell's own (an int counter, a nested dict) pass through the
    hoisted rule's tangents: differentiating w.r.t. part of them, or only the inputs."""
    cell = rs.lstm(F, 4)
    params = {**randomize(cell.init(jax.random.key(0))), "count": jnp.int32(3),
              "extra": {"a": jnp.ones(2)}}
    xs = jnp.asarray(np.random.default_rng(0).normal(size=(B, T, F)), jnp.float32)

    def results(cell):
        loss = lambda p, x: jnp.sum(jnp.sin(rs.unroll(cell, p, x, lengths=LENGTHS)[0]))
        return (
            jax.grad(lambda w: loss({**params, "w_ih": w}, xs))(params["w_ih"]),
            jax.grad(loss, allow_int=True)(params, xs)["w_hh"],
            jax.jvp(lambda x: loss(params, x), (xs,), (xs,))[1],
        )

    assert_tree_close(results(cell), to_numpy(results(cell._replace(step=cell.step._replace(recurrent_kernel=None)))),
                      tol=1e-5)
