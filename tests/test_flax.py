"""rnnscan.flax: the linen module given flax's own `nn.RNN` LSTM weights gives flax's
outputs; the nnx module computes rs.unroll and trains with optax; both jit."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

nn = pytest.importorskip("flax.linen")
nnx = pytest.importorskip("flax.nnx")
optax = pytest.importorskip("optax")

import rnnscan as rs  # noqa: E402
import rnnscan.flax  # noqa: E402
from tests.compiles import count_compiles  # noqa: E402

F, H, T = 4, 6, 7
XS = np.random.default_rng(0).standard_normal((3, T, F)).astype(np.float32)
LENGTHS = np.array([7, 2, 5])  # >= 1: flax's seq_lengths reads the carry at lengths - 1
TOL = dict(rtol=2e-5, atol=2e-5)


def flax_lstm_to_rnnscan(p):
    """flax's LSTMCell params (Dense `i*` on x without bias, `h*` on h with bias, gates
    i, f, g, o) as rs.lstm's: the same gate order, one bias (flax has no forget bias)."""
    concat = lambda name, part: jnp.concatenate([p[f"{name}{g}"][part] for g in "ifgo"], -1)
    return {"w_ih": concat("i", "kernel"), "w_hh": concat("h", "kernel"), "b": concat("h", "bias")}


@pytest.mark.parametrize("flax_cell", ["LSTMCell", "OptimizedLSTMCell"])
def test_linen_gives_flax_nn_rnn_outputs(flax_cell):
    flax_rnn = nn.RNN(getattr(nn, flax_cell)(H), return_carry=True)
    variables = flax_rnn.init(jax.random.key(0), XS)
    leaves, treedef = jax.tree_util.tree_flatten(variables)  # biases start at zero: draw them
    keys = jax.random.split(jax.random.key(1), len(leaves))
    variables = treedef.unflatten([0.5 * jax.random.normal(k, a.shape) for k, a in zip(keys, leaves)])
    (c, h), want = flax_rnn.apply(variables, XS, seq_lengths=LENGTHS)

    module = rnnscan.flax.RNN(rs.lstm(F, H, forget_bias=0.0))
    ours = {"params": {"rnnscan": flax_lstm_to_rnnscan(variables["params"]["cell"])}}
    assert jax.tree_util.tree_structure(ours) == jax.tree_util.tree_structure(
        module.init(jax.random.key(0), XS))
    ys, state = jax.jit(module.apply)(ours, XS, lengths=LENGTHS)
    valid = np.arange(T) < LENGTHS[:, None]
    np.testing.assert_allclose(np.asarray(ys)[valid], np.asarray(want)[valid], **TOL)
    np.testing.assert_allclose(state.h, h, **TOL)
    np.testing.assert_allclose(state.c, c, **TOL)


def test_linen_layer_with_dropout_key():
    layer = rs.stack([rs.gru(F, H), rs.gru(H, H)], dropout=0.5)
    module = rnnscan.flax.RNN(layer)
    variables = module.init(jax.random.key(0), XS)
    params = variables["params"]["rnnscan"]
    ys, _ = module.apply(variables, XS, lengths=LENGTHS)
    np.testing.assert_allclose(ys, layer.apply(params, XS, lengths=LENGTHS)[0], rtol=0, atol=0)
    dropped, _ = module.apply(variables, XS, key=jax.random.key(2))
    np.testing.assert_allclose(dropped, layer.apply(params, XS, key=jax.random.key(2))[0],
                               rtol=0, atol=0)


def test_linen_refuses_what_is_not_a_model():
    with pytest.raises(TypeError, match="model must be an rnnscan Cell or Layer; got function"):
        rnnscan.flax.RNN(lambda p, h, x: (h, h))
    with pytest.raises(TypeError, match="model is a Cell, which has none"):
        module = rnnscan.flax.RNN(rs.rnn(F, H))
        module.init(jax.random.key(0), XS, key=jax.random.key(1))


def plain(module):
    """The arrays of an NnxRNN's params, as the pytree rs.unroll takes."""
    return jax.tree_util.tree_map(lambda v: v[...], module.params,
                                  is_leaf=lambda v: isinstance(v, nnx.Variable))


def test_nnx_equals_unroll_and_trains_one_step():
    cell = rs.lstm(F, H)
    module = rnnscan.flax.NnxRNN(cell, rngs=nnx.Rngs(0))
    params = plain(module)
    resets = np.zeros((3, T), bool)
    resets[:, 3] = True
    ys, state = module(XS, lengths=LENGTHS, resets=resets)
    want_ys, want_state = rs.unroll(cell, params, XS, lengths=LENGTHS, resets=resets)
    for got, want in zip(jax.tree_util.tree_leaves((ys, state)),
                         jax.tree_util.tree_leaves((want_ys, want_state))):
        np.testing.assert_array_equal(got, want)

    tx = optax.adam(1e-2)
    optimizer = nnx.Optimizer(module, tx, wrt=nnx.Param)

    @nnx.jit
    def train_step(module, optimizer, xs):
        loss = lambda m: jnp.mean(m(xs, lengths=LENGTHS)[0] ** 2)
        value, grads = nnx.value_and_grad(loss)(module)
        optimizer.update(module, grads)
        return value

    train_step(module, optimizer, XS)
    grads = jax.grad(lambda p: jnp.mean(rs.unroll(cell, p, XS, lengths=LENGTHS)[0] ** 2))(params)
    updates, _ = tx.update(grads, tx.init(params), params)
    for got, want in zip(jax.tree_util.tree_leaves(plain(module)),
                         jax.tree_util.tree_leaves(optax.apply_updates(params, updates))):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


def test_linen_cell_built_in_compact_does_not_recompile():
    class Model(nn.Module):
        @nn.compact
        def __call__(self, xs):
            return rnnscan.flax.RNN(rs.lstm(F, H))(xs)[0]

    variables = Model().init(jax.random.key(0), XS)
    Model().apply(variables, XS)
    with count_compiles() as compiled:
        Model().apply(variables, XS)
    assert compiled == []


def test_nnx_module_rebuilt_does_not_recompile():
    run = nnx.jit(lambda module, xs: module(xs)[0])
    run(rnnscan.flax.NnxRNN(rs.lstm(F, H), rngs=nnx.Rngs(0)), XS)
    rebuilt = rnnscan.flax.NnxRNN(rs.lstm(F, H), rngs=nnx.Rngs(1))
    with count_compiles() as compiled:
        run(rebuilt, XS)
    assert compiled == []
