"""Multi-layer and bidirectional layers with torch's and TF1's weights give their numbers.

References: golden files computed by torch (`nn.LSTM/GRU/RNN` with `num_layers`,
`bidirectional`, `proj_size`, packed sequences) and TF1
(`bidirectional_dynamic_rnn`, `MultiRNNCell`); see tests/golden/README.md.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnscan as rs
from tests.reference import golden, prefixed

TOL = dict(rtol=2e-5, atol=2e-5)
TORCH_CASES = ["lstm_2layer", "gru_3layer", "lstm_bidir", "lstm_bidir_h16",
               "lstm_2layer_bidir_proj", "gru_bidir_packed", "rnn_2layer_bidir"]


def torch_layer(meta, a, batch_first=True):
    mode = meta["mode"]
    if mode == "RNN":
        mode = "RNN_RELU" if meta["nonlinearity"] == "relu" else "RNN_TANH"
    return rs.interop.from_torch_state_dict(
        mode, prefixed(a, "param/"), input_size=meta["input_size"],
        hidden_size=meta["hidden_size"], num_layers=meta["num_layers"], bias=meta["bias"],
        bidirectional=meta["bidirectional"], proj_size=meta["proj_size"], batch_first=batch_first,
    )


def value_and_grads(apply, x, state, cot):
    """`(ys, final_state)` and the gradients of `sum(ys * cot)` w.r.t. x and state."""

    def loss(x, state):
        ys, final = apply(x, state)
        return jnp.sum(ys * cot), (ys, final)

    (_, out), grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))(x, state)
    return out, grads


@pytest.mark.parametrize("case", TORCH_CASES)
def test_torch_golden(case):
    meta, a = golden(f"torch_{case}")
    layer, params = torch_layer(meta, a)
    assert isinstance(layer, rs.Layer) and len(params) == meta["num_layers"]
    shape = dict(num_layers=meta["num_layers"], bidirectional=meta["bidirectional"])
    h0 = rs.interop.torch_state(a["h0"], a.get("c0"), **shape) if "h0" in a else None
    apply = lambda x, h0: layer.apply(params, x, lengths=a.get("lengths"), initial_state=h0)
    (ys, final), (dx, dh0) = value_and_grads(apply, a["x"], h0, a["cot"])

    np.testing.assert_allclose(ys, a["y"], **TOL)
    np.testing.assert_allclose(dx, a["dx"], **TOL)
    for got, key in zip(jax.tree_util.tree_leaves(rs.interop.to_torch_state(final, **shape)),
                        ["h_n", "c_n"]):
        np.testing.assert_allclose(got, a[key], **TOL)
    if h0 is not None:
        for got, key in zip(jax.tree_util.tree_leaves(rs.interop.to_torch_state(dh0, **shape)),
                            ["dh0", "dc0"]):
            np.testing.assert_allclose(got, a[key], **TOL)


def test_torch_golden_time_major():
    """`batch_first=False` (torch's default): the layer takes `(time, batch, features)`."""
    meta, a = golden("torch_lstm_2layer_bidir_proj")
    layer, params = torch_layer(meta, a, batch_first=False)
    h0 = rs.interop.torch_state(a["h0"], a["c0"], num_layers=2, bidirectional=True)
    ys, _ = layer.apply(params, a["x"].transpose(1, 0, 2), lengths=a["lengths"], initial_state=h0)
    np.testing.assert_allclose(np.asarray(ys).transpose(1, 0, 2), a["y"], **TOL)


def test_torch_state_layout():
    h = np.arange(4 * 2 * 3, dtype=np.float32).reshape(4, 2, 3)  # 2 layers x 2 directions
    state = rs.interop.torch_state(h, h + 100, num_layers=2, bidirectional=True)
    (l0_fw, l0_bw), (l1_fw, l1_bw) = state
    np.testing.assert_array_equal(l1_fw.h, h[2])  # torch's index: layer * 2 + direction
    np.testing.assert_array_equal(l0_bw.c, h[1] + 100)
    h_n, c_n = rs.interop.to_torch_state(state, num_layers=2, bidirectional=True)
    np.testing.assert_array_equal(h_n, h)
    np.testing.assert_array_equal(c_n, h + 100)
    stacked = rs.interop.torch_state(h, num_layers=4)
    assert len(stacked) == 4 and stacked[3].shape == (2, 3)
    np.testing.assert_array_equal(rs.interop.torch_state(h[:1]), h[0])  # one cell: its state
    with pytest.raises(ValueError, match="num_layers \\* num_directions = 2"):
        rs.interop.torch_state(h, num_layers=1, bidirectional=True)


def test_from_torch_module_stack_with_dropout():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    module = torch.nn.GRU(3, 4, num_layers=2, bidirectional=True, dropout=0.5).eval()
    layer, params = rs.interop.from_torch(module)
    x = torch.randn(6, 2, 3)  # batch_first=False
    want = module(x)[0].detach().numpy()
    np.testing.assert_allclose(layer.apply(params, x.numpy())[0], want, **TOL)
    # torch's dropout between layers: on with a key only.
    dropped = layer.apply(params, x.numpy(), key=jax.random.key(0))[0]
    assert not np.allclose(dropped, want)


def tf1_lstm(a, prefix, meta):
    return rs.interop.from_tf1("lstm", prefixed(a, prefix), forget_bias=meta["forget_bias"])


@pytest.mark.parametrize("bw_as", ["cell", "layer"])
def test_tf1_bidirectional_dynamic_rnn(bw_as):
    meta, a = golden("tf1_bidirectional")
    cell_fw, p_fw = tf1_lstm(a, "var/fw/", meta)
    cell_bw, p_bw = tf1_lstm(a, "var/bw/", meta)
    bw = cell_bw if bw_as == "cell" else rs.layer(cell_bw)  # a Layer runs on reversed rows
    bi = rs.bidirectional(cell_fw, bw)
    h0 = (rs.LSTMState(a["h0_fw"], a["c0_fw"]), rs.LSTMState(a["h0_bw"], a["c0_bw"]))
    apply = lambda x, h0: bi.apply((p_fw, p_bw), x, lengths=a["sequence_length"], initial_state=h0)
    (ys, (final_fw, final_bw)), (dx, (d_fw, d_bw)) = value_and_grads(apply, a["x"], h0, a["cot"])

    np.testing.assert_allclose(ys, a["y"], **TOL)
    np.testing.assert_allclose(dx, a["dx"], **TOL)
    for name, state, grad in (("fw", final_fw, d_fw), ("bw", final_bw, d_bw)):
        np.testing.assert_allclose(state.h, a[f"final_{name}_h"], **TOL)
        np.testing.assert_allclose(state.c, a[f"final_{name}_c"], **TOL)
        np.testing.assert_allclose(grad.h, a[f"dh0_{name}"], **TOL)
        np.testing.assert_allclose(grad.c, a[f"dc0_{name}"], **TOL)


@pytest.mark.parametrize("case", ["tf1_multirnn", "tf1_multirnn_gru"])
@pytest.mark.parametrize("as_", ["stack", "multi_cell"])
def test_tf1_multirnn(case, as_):
    meta, a = golden(case)
    options = {"forget_bias": meta["forget_bias"]} if meta["cell"] == "lstm" else {}
    cells, params = zip(*(
        rs.interop.from_tf1(meta["cell"], prefixed(a, f"var/cell_{k}/"), **options)
        for k in range(meta["num_layers"])
    ))
    lstm = meta["cell"] == "lstm"
    h0 = None
    if meta["has_initial_state"]:
        h0 = tuple(rs.LSTMState(a[f"h0_{k}"], a[f"c0_{k}"]) for k in range(meta["num_layers"]))
    if as_ == "stack":
        layer = rs.stack(list(cells))
        apply = lambda x, h0: layer.apply(params, x, lengths=a["sequence_length"], initial_state=h0)
    else:
        cell = rs.multi_cell(cells)
        apply = lambda x, h0: rs.dynamic_rnn(cell, params, x, a["sequence_length"], h0)
    (ys, final), (dx, dh0) = value_and_grads(apply, a["x"], h0, a["cot"])

    np.testing.assert_allclose(ys, a["y"], **TOL)
    np.testing.assert_allclose(dx, a["dx"], **TOL)
    for k, state in enumerate(final):
        np.testing.assert_allclose(state.h if lstm else state, a[f"final_{k}_h"], **TOL)
        if lstm:
            np.testing.assert_allclose(state.c, a[f"final_{k}_c"], **TOL)
    if h0 is not None:
        for k, grad in enumerate(dh0):
            np.testing.assert_allclose(grad.h, a[f"dh0_{k}"], **TOL)
            np.testing.assert_allclose(grad.c, a[f"dc0_{k}"], **TOL)
