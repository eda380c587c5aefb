"""`rs.interop.from_keras`: Keras 3's LSTM, GRU and SimpleRNN given the same weights
give the same numbers in rnnscan (Keras's own forward is the reference; skipped
where Keras is not installed). Also Keras's `recurrent_dropout`, which is what
`rs.layer`'s `state_dropout` does (one mask per row on the state a step reads)."""

import os

import jax
import numpy as np
import pytest

import rnnscan as rs
from rnnscan.dropout import Masks, variational

B, T, F, U = 3, 6, 4, 5
TOL = dict(rtol=1e-5, atol=1e-5)
XS = np.random.default_rng(0).standard_normal((B, T, F)).astype(np.float32)


@pytest.fixture(scope="module")
def keras():
    os.environ.setdefault("KERAS_BACKEND", "jax")  # Keras 3's default, TensorFlow, is absent
    try:
        import keras
    except ImportError as e:
        pytest.skip(f"keras does not import: {e}")
    return keras


def randomized(keras_layer, seed=1):
    """The layer built, every weight random (biases too), so each one matters."""
    keras_layer(XS)
    rng = np.random.default_rng(seed)
    for v in keras_layer.weights:
        v.assign(rng.normal(0, 0.5, v.shape).astype(np.float32))
    return keras_layer


CONFIGS = {
    "lstm": lambda k: k.layers.LSTM(U),
    "lstm_hard_sigmoid_relu": lambda k: k.layers.LSTM(U, recurrent_activation="hard_sigmoid",
                                                      activation="relu"),
    "lstm_nobias": lambda k: k.layers.LSTM(U, use_bias=False),
    "gru": lambda k: k.layers.GRU(U),
    "gru_hard_sigmoid": lambda k: k.layers.GRU(U, recurrent_activation="hard_sigmoid"),
    "gru_reset_before": lambda k: k.layers.GRU(U, reset_after=False),
    "gru_reset_before_hard_sigmoid": lambda k: k.layers.GRU(U, reset_after=False,
                                                            recurrent_activation="hard_sigmoid"),
    "gru_nobias": lambda k: k.layers.GRU(U, use_bias=False),
    "simple_rnn": lambda k: k.layers.SimpleRNN(U),
    "simple_rnn_relu": lambda k: k.layers.SimpleRNN(U, activation="relu"),
    "simple_rnn_linear": lambda k: k.layers.SimpleRNN(U, activation="linear"),
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_from_keras_matches_keras(keras, name):
    layer = CONFIGS[name](keras)
    layer.return_sequences = layer.return_state = True
    out = randomized(layer)(XS)
    ys_k, state_k = np.asarray(out[0]), [np.asarray(s) for s in out[1:]]
    cell, params = rs.interop.from_keras(layer)
    ys, state = rs.unroll(cell, params, XS)
    np.testing.assert_allclose(ys, ys_k, **TOL)
    want = rs.LSTMState(*state_k) if len(state_k) == 2 else state_k[0]
    for got, w in zip(jax.tree_util.tree_leaves(state), jax.tree_util.tree_leaves(want)):
        np.testing.assert_allclose(got, w, **TOL)


def test_from_keras_go_backwards(keras):
    layer = randomized(keras.layers.GRU(U, go_backwards=True, return_sequences=True,
                                        recurrent_activation="hard_sigmoid"))
    model, params = rs.interop.from_keras(layer)
    ys, _ = model.apply(params, XS)
    np.testing.assert_allclose(ys[:, ::-1], np.asarray(layer(XS)), **TOL)  # Keras: reversed


@pytest.mark.parametrize("make", [lambda k: k.layers.LSTMCell(U),
                                  lambda k: k.layers.GRUCell(U, reset_after=False),
                                  lambda k: k.layers.SimpleRNNCell(U)])
def test_from_keras_cells(keras, make):
    """A Keras cell, stepped by Keras's own RNN wrapper."""
    keras_cell = make(keras)
    rnn = keras.layers.RNN(keras_cell, return_sequences=True)
    want = np.asarray(randomized(rnn)(XS))
    cell, params = rs.interop.from_keras(keras_cell)
    np.testing.assert_allclose(rs.unroll(cell, params, XS)[0], want, **TOL)


def test_from_keras_refusals(keras):
    with pytest.raises(TypeError, match="layer must be a keras.layers.LSTM, GRU or SimpleRNN"):
        rs.interop.from_keras(keras.layers.Dense(3))
    with pytest.raises(ValueError, match="has no weights yet"):
        rs.interop.from_keras(keras.layers.LSTM(U))
    layer = keras.layers.GRU(U, recurrent_activation="softplus")
    layer(XS)
    with pytest.raises(ValueError, match="recurrent_activation='softplus': rnnscan knows"):
        rs.interop.from_keras(layer)


def test_state_dropout_is_keras_recurrent_dropout(keras, monkeypatch):
    """Keras's SimpleRNN with recurrent_dropout, its mask fixed: `rs.layer`'s
    state_dropout with the same mask (`variational`, what `rs.layer` runs) gives its
    outputs and final state. One mask per row, on the state each step reads (the
    initial state too); the returned outputs and state are not dropped."""
    layer = randomized(keras.layers.SimpleRNN(U, recurrent_dropout=0.5, return_sequences=True,
                                              return_state=True))
    mask = (np.random.default_rng(2).random((B, U)) < 0.5).astype(np.float32) * 2.0
    monkeypatch.setattr(layer.cell, "get_recurrent_dropout_mask", lambda h: mask)
    h0 = np.random.default_rng(3).standard_normal((B, U)).astype(np.float32)
    ys_k, h_k = (np.asarray(a) for a in layer(XS, initial_state=h0, training=True))
    cell, params = rs.interop.from_keras(layer)
    ys, h = rs.unroll(variational(cell), (params, Masks(None, (mask,), None)), XS,
                      initial_state=h0)
    np.testing.assert_allclose(ys, ys_k, **TOL)
    np.testing.assert_allclose(h, h_k, **TOL)
    # Not dropout on h's reading (the outputs) nor the identity: the mask matters.
    assert not np.allclose(ys, rs.unroll(cell, params, XS, initial_state=h0)[0], atol=1e-3)
