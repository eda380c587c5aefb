"""rnnscan.equinox: the module computes rs.unroll on its params, trains one optax step
as plain JAX does, jits; importing rnnscan imports neither equinox nor flax."""

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

eqx = pytest.importorskip("equinox")
optax = pytest.importorskip("optax")

import rnnscan as rs  # noqa: E402
import rnnscan.equinox  # noqa: E402
from tests.compiles import count_compiles  # noqa: E402

F, H, T = 4, 6, 7
XS = np.random.default_rng(0).standard_normal((3, T, F)).astype(np.float32)
LENGTHS = np.array([7, 0, 5])


def test_equals_unroll_and_trains_one_step():
    cell = rs.gru(F, H)
    module = rnnscan.equinox.RNN(cell, key=jax.random.key(0))
    params = cell.init(jax.random.key(0))
    h0 = jnp.ones((3, H))
    ys, state = module(XS, lengths=LENGTHS, initial_state=h0)
    want_ys, want_state = rs.unroll(cell, params, XS, lengths=LENGTHS, initial_state=h0)
    np.testing.assert_array_equal(ys, want_ys)
    np.testing.assert_array_equal(state, want_state)

    tx = optax.adam(1e-2)
    opt_state = tx.init(eqx.filter(module, eqx.is_array))

    @eqx.filter_jit
    def train_step(module, opt_state, xs):
        loss = lambda m: jnp.mean(m(xs, lengths=LENGTHS)[0] ** 2)
        grads = eqx.filter_grad(loss)(module)
        updates, opt_state = tx.update(grads, opt_state, eqx.filter(module, eqx.is_array))
        return eqx.apply_updates(module, updates), opt_state

    module, _ = train_step(module, opt_state, XS)
    grads = jax.grad(lambda p: jnp.mean(rs.unroll(cell, p, XS, lengths=LENGTHS)[0] ** 2))(params)
    updates, _ = tx.update(grads, tx.init(params), params)
    for got, want in zip(jax.tree_util.tree_leaves(module.params),
                         jax.tree_util.tree_leaves(optax.apply_updates(params, updates))):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


def test_layer_and_its_dropout_key():
    layer = rs.bidirectional(rs.lstm(F, H), rs.lstm(F, H), input_dropout=0.5)
    module = rnnscan.equinox.RNN(layer, key=jax.random.key(0))
    np.testing.assert_array_equal(module(XS, lengths=LENGTHS)[0],
                                  layer.apply(module.params, XS, lengths=LENGTHS)[0])
    key = jax.random.key(3)
    np.testing.assert_array_equal(module(XS, key=key)[0], layer.apply(module.params, XS, key=key)[0])


def test_module_rebuilt_does_not_recompile():
    run = eqx.filter_jit(lambda module, xs: module(xs)[0])
    run(rnnscan.equinox.RNN(rs.lstm(F, H), key=jax.random.key(0)), XS)
    rebuilt = rnnscan.equinox.RNN(rs.lstm(F, H), key=jax.random.key(1))
    with count_compiles() as compiled:
        run(rebuilt, XS)
    assert compiled == []


def test_importing_rnnscan_imports_no_framework():
    code = "import sys, rnnscan; print(sorted({'flax', 'equinox', 'torch', 'haiku'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
