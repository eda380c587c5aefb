"""`from_haiku`, `from_flax`, `from_equinox`: each framework's own cell, given the same
weights, is the reference (skipped where the framework is not installed)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnscan as rs

B, T, F, H = 3, 6, 4, 5
TOL = dict(rtol=1e-5, atol=1e-5)
XS = np.random.default_rng(0).standard_normal((B, T, F)).astype(np.float32)
LENGTHS = np.array([6, 2, 1])  # flax gives no defined carry for a length of 0


def randomized(params, seed=1):
    """Every param random (biases too), so each one matters."""
    leaves, treedef = jax.tree_util.tree_flatten(params)
    rng = np.random.default_rng(seed)
    return treedef.unflatten([rng.normal(0, 0.5, np.shape(a)).astype(np.float32) for a in leaves])


def check(got, want):
    for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
        np.testing.assert_allclose(a, b, **TOL)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_from_haiku(kind):
    hk = pytest.importorskip("haiku")

    def forward(xs):
        core = hk.LSTM(H) if kind == "lstm" else hk.GRU(H)
        return hk.dynamic_unroll(core, xs, core.initial_state(B), time_major=False)

    f = hk.transform(forward)
    hk_params = randomized(f.init(jax.random.key(0), XS))
    ys_hk, state_hk = f.apply(hk_params, None, XS)
    cell, params = rs.interop.from_haiku(hk_params["lstm/linear" if kind == "lstm" else "gru"])
    ys, state = rs.unroll(cell, params, XS)
    check(ys, ys_hk)
    check(state, rs.LSTMState(state_hk.hidden, state_hk.cell) if kind == "lstm" else state_hk)


def test_haiku_gru_needs_its_update_gate_negated():
    """Without the negation, haiku's GRU weights in rs.gru give other numbers."""
    hk = pytest.importorskip("haiku")
    f = hk.transform(lambda x: hk.dynamic_unroll(hk.GRU(H), x, jnp.zeros((B, H)),
                                                 time_major=False))
    hk_params = randomized(f.init(jax.random.key(0), XS))
    cell, params = rs.interop.from_haiku(hk_params["gru"])
    p = hk_params["gru"]
    order = np.r_[H:2 * H, 0:H, 2 * H:3 * H]
    naive = {"w_ih": p["w_i"][:, order], "w_hh": p["w_h"][:, order], "b": p["b"][order]}
    assert not np.allclose(rs.unroll(cell, naive, XS)[0], f.apply(hk_params, None, XS)[0],
                           atol=1e-2)


@pytest.mark.parametrize("make", ["LSTMCell", "OptimizedLSTMCell", "GRUCell",
                                  "GRUCell-hard_sigmoid"])
def test_from_flax(make):
    nn = pytest.importorskip("flax.linen")
    name, _, gate = make.partition("-")
    gate = gate or "sigmoid"
    flax_cell = getattr(nn, name)(H, gate_fn=getattr(jax.nn, gate))
    rnn = nn.RNN(flax_cell, return_carry=True)
    variables = rnn.init(jax.random.key(0), XS)
    variables = {"params": randomized(variables["params"])}
    carry, ys_flax = rnn.apply(variables, XS, seq_lengths=LENGTHS)
    cell, params = rs.interop.from_flax(variables["params"]["cell"], gate_activation=gate)
    ys, state = rs.unroll(cell, params, XS, lengths=LENGTHS)
    valid = np.arange(T) < LENGTHS[:, None]
    np.testing.assert_allclose(ys[valid], ys_flax[valid], **TOL)
    check(state, rs.LSTMState(carry[1], carry[0]) if "LSTM" in name else carry)


@pytest.mark.parametrize("name", ["LSTMCell", "GRUCell"])
@pytest.mark.parametrize("use_bias", [True, False])
def test_from_equinox(name, use_bias):
    eqx = pytest.importorskip("equinox")
    arrays, static = eqx.partition(getattr(eqx.nn, name)(F, H, use_bias=use_bias,
                                                        key=jax.random.key(0)), eqx.is_array)
    module = eqx.combine(randomized(arrays), static)
    h0 = (jnp.zeros((B, H)), jnp.zeros((B, H))) if name == "LSTMCell" else jnp.zeros((B, H))

    def body(h, x):
        h = jax.vmap(module)(x, h)
        return h, h[0] if name == "LSTMCell" else h

    state_eqx, ys_eqx = jax.lax.scan(body, h0, XS.swapaxes(0, 1))
    cell, params = rs.interop.from_equinox(module)
    ys, state = rs.unroll(cell, params, XS)
    check(ys, ys_eqx.swapaxes(0, 1))
    check(state, rs.LSTMState(*state_eqx) if name == "LSTMCell" else state_eqx)


def test_refusals():
    with pytest.raises(ValueError, match=r"params must be hk.LSTM's linear"):
        rs.interop.from_haiku({"w": np.ones((3, 8))})
    with pytest.raises(ValueError, match=r"params\['w'\] must be 2-D with 4 gates"):
        rs.interop.from_haiku({"w": np.ones((9, 7)), "b": np.ones(7)})
    with pytest.raises(ValueError, match=r"params must be a flax LSTMCell's"):
        rs.interop.from_flax({"ii": {}})
    with pytest.raises(ValueError, match="gate_activation must be one of"):
        rs.interop.from_flax({k: {"kernel": np.ones((2, 3)), "bias": np.ones(3)}
                              for k in ("ir", "iz", "in", "hr", "hz", "hn")},
                             gate_activation="nope")
    with pytest.raises(TypeError, match="module must be an eqx.nn.LSTMCell or eqx.nn.GRUCell"):
        rs.interop.from_equinox("lstm")


def test_imported_cells_are_the_constructors():
    """Imported float32 cells are the objects rs.lstm / rs.gru build (jit caches hit)."""
    rng = np.random.default_rng(0)
    lstm_cell, _ = rs.interop.from_haiku({"w": rng.normal(size=(F + H, 4 * H)).astype(np.float32),
                                          "b": np.zeros(4 * H, np.float32)})
    assert lstm_cell is rs.lstm(F, H)
