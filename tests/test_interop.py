"""Weight import: rnnscan with torch's or TF1's weights gives their numbers.

The references are golden files computed by torch and TensorFlow 1 themselves
(tests/golden/, made by the scripts there); torch is only needed for the live
`from_torch(module)` tests, which are skipped without it.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnscan as rs
from tests.reference import golden, prefixed

TORCH_CASES = ["lstm", "lstm_packed", "lstm_proj", "lstm_h32", "gru", "rnn_relu",
               "rnn_tanh_nobias", "lstmcell", "grucell", "rnncell"]
TF1_CASES = ["lstm_peephole_clip_proj", "lstm_basic", "gru", "rnn", "rnn_relu"]
TOL = dict(rtol=2e-5, atol=2e-5)


def torch_state(meta, arrays, h="h0", c="c0"):
    """torch's state arrays as the rnnscan cell's state (dropping the layer axis)."""
    if h not in arrays:
        return None
    squeeze = (lambda a: a) if meta["mode"].endswith("Cell") else (lambda a: a[0])
    if c in arrays:
        return rs.LSTMState(jnp.asarray(squeeze(arrays[h])), jnp.asarray(squeeze(arrays[c])))
    return jnp.asarray(squeeze(arrays[h]))


def cell_from_torch_golden(meta, arrays):
    mode = meta["mode"]
    cell_module = mode.endswith("Cell")
    if mode in ("RNN", "RNNCell"):
        mode = "RNN_RELU" if meta["nonlinearity"] == "relu" else "RNN_TANH"
    return rs.interop.from_torch_state_dict(
        mode.removesuffix("Cell"), prefixed(arrays, "param/"), input_size=meta["input_size"],
        hidden_size=meta["hidden_size"], bias=meta["bias"], proj_size=meta["proj_size"],
        cell_module=cell_module,
    )


@pytest.mark.parametrize("case", TORCH_CASES)
def test_torch_golden(case):
    meta, a = golden(f"torch_{case}")
    cell, params = cell_from_torch_golden(meta, a)
    h0 = torch_state(meta, a)
    lengths = a.get("lengths")

    def run(x, h0):
        return rs.unroll(cell, params, x, initial_state=h0, lengths=lengths)

    assert_matches_golden(run, a, h0, lambda h, c: torch_state(meta, a, h, c))


def assert_matches_golden(run, a, h0, golden_state):
    """Outputs, final state and the gradients of `sum(y * cot)` w.r.t. x and h0.

    `golden_state(h_key, c_key)` reads a state from the golden arrays `a`.
    """

    def loss(x, h0):
        ys, final = run(x, h0)
        return jnp.sum(ys * a["cot"]), (ys, final)

    (grad_x, grad_h0), (ys, final) = jax.grad(loss, argnums=(0, 1), has_aux=True)(jnp.asarray(a["x"]), h0)
    np.testing.assert_allclose(ys, a["y"], **TOL)
    np.testing.assert_allclose(grad_x, a["dx"], **TOL)
    pairs = [(final, golden_state("h_n", "c_n") if "h_n" in a else golden_state("final_h", "final_c"))]
    if h0 is not None:
        pairs.append((grad_h0, golden_state("dh0", "dc0")))
    for got_tree, want_tree in pairs:
        got, want = jax.tree_util.tree_leaves(got_tree), jax.tree_util.tree_leaves(want_tree)
        assert len(got) == len(want)
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, **TOL)


def tf1_state(meta, a, h, c):
    if h not in a:
        return None
    if meta["cell"] == "lstm":
        return rs.LSTMState(jnp.asarray(a[h]), jnp.asarray(a[c]))  # TF1 orders them (c, h)
    return jnp.asarray(a[h])


@pytest.mark.parametrize("case", TF1_CASES)
def test_tf1_golden(case):
    meta, a = golden(f"tf1_{case}")
    options = {"activation": meta["activation"]}
    if meta["cell"] == "lstm":
        options |= {"forget_bias": meta["forget_bias"], "cell_clip": meta["cell_clip"],
                    "proj_clip": meta["proj_clip"]}
    cell, params = rs.interop.from_tf1(meta["cell"], prefixed(a, "var/"), **options)
    h0 = tf1_state(meta, a, "h0", "c0")

    def run(x, h0):
        return rs.dynamic_rnn(cell, params, x, sequence_length=a.get("sequence_length"),
                              initial_state=h0, time_major=meta["time_major"])

    assert_matches_golden(run, a, h0, lambda h, c: tf1_state(meta, a, h, c))


def test_tf1_clip_was_exercised():
    meta, _ = golden("tf1_lstm_peephole_clip_proj")
    assert meta["max_preclip_abs_c"] > meta["cell_clip"]


def test_tf1_variable_names_are_checked():
    _, a = golden("tf1_gru")
    variables = prefixed(a, "var/")
    with pytest.raises(ValueError, match="missing.*candidate/bias"):
        rs.interop.from_tf1("gru", {k: v for k, v in variables.items() if k != "candidate/bias"})
    with pytest.raises(ValueError, match="unexpected.*kernel"):
        rs.interop.from_tf1("gru", variables | {"kernel": variables["gates/kernel"]})
    with pytest.raises(ValueError, match="kind must be one of"):
        rs.interop.from_tf1("lstmp", variables)
    # full TF names as stored in a checkpoint carry a ":0" suffix
    cell, _ = rs.interop.from_tf1("gru", {k + ":0": v for k, v in variables.items()})
    assert isinstance(cell, rs.Cell)


def test_torch_state_dict_errors():
    _, a = golden("torch_gru")
    params = prefixed(a, "param/")
    with pytest.raises(ValueError, match="mode must be one of"):
        rs.interop.from_torch_state_dict("LSTMP", params, input_size=4, hidden_size=5)
    with pytest.raises(ValueError, match="state_dict has no 'bias_hh_l0'"):
        rs.interop.from_torch_state_dict(
            "GRU", {k: v for k, v in params.items() if k != "bias_hh_l0"}, input_size=4, hidden_size=5
        )


@pytest.mark.parametrize(
    "make",
    [
        lambda nn: nn.LSTM(3, 5, batch_first=True, proj_size=2),
        lambda nn: nn.GRU(3, 5),
        lambda nn: nn.RNN(3, 5, nonlinearity="relu", bias=False, batch_first=True),
        lambda nn: nn.LSTMCell(3, 5),
        lambda nn: nn.GRUCell(3, 5, bias=False),
        lambda nn: nn.RNNCell(3, 5, nonlinearity="relu"),
    ],
)
def test_from_torch_module(make):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    module = make(torch.nn)
    x = torch.randn(2, 6, 3)
    cell, params = rs.interop.from_torch(module)
    if isinstance(module, torch.nn.RNNCellBase):
        h = None
        outs = []
        for t in range(x.shape[1]):
            h = module(x[:, t], h)
            outs.append((h[0] if isinstance(h, tuple) else h).detach().numpy())
        want = np.stack(outs, 1)
        ys, _ = rs.unroll(cell, params, x.numpy())
    else:
        want = module(x if module.batch_first else x.transpose(0, 1))[0].detach().numpy()
        ys, _ = rs.unroll(cell, params, x.numpy() if module.batch_first else x.numpy().transpose(1, 0, 2),
                          time_major=not module.batch_first)
    np.testing.assert_allclose(ys, want, **TOL)


def test_from_torch_rejects_other_modules():
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match="module must be torch.nn.LSTM"):
        rs.interop.from_torch(torch.nn.Linear(2, 3))
    with pytest.raises(TypeError, match="module must be a torch.nn.Module"):
        rs.interop.from_torch("lstm")


def test_torch_state_dict_prefix():
    """A real model's state dict: the RNN's keys carry its name; other keys are ignored."""
    meta, a = golden("torch_gru")
    weights = prefixed(a, "param/")
    model_dict = {f"encoder.rnn.{k}": v for k, v in weights.items()}
    model_dict |= {"embed.weight": np.zeros((7, 4)), "head.bias": np.zeros(3, np.float64)}
    sizes = dict(input_size=meta["input_size"], hidden_size=meta["hidden_size"])
    for prefix in (None, "encoder.rnn", "encoder.rnn."):
        cell, params = rs.interop.from_torch_state_dict("GRU", model_dict, prefix=prefix, **sizes)
        assert params["w_ih"].dtype == np.float32  # the other keys' float64 is not the RNN's
        ys, _ = rs.unroll(cell, params, a["x"], lengths=a["lengths"],
                          initial_state=jnp.asarray(a["h0"][0]))
        np.testing.assert_allclose(ys, a["y"], **TOL)

    two = model_dict | {f"decoder.rnn.{k}": v for k, v in weights.items()}
    with pytest.raises(ValueError, match=r"got 2, under the prefixes \['decoder.rnn.', 'encoder.rnn.'\]"):
        rs.interop.from_torch_state_dict("GRU", two, **sizes)
    with pytest.raises(ValueError, match=r"prefix='encoder' names none .* their prefixes are \['encoder.rnn.'\]"):
        rs.interop.from_torch_state_dict("GRU", model_dict, prefix="encoder", **sizes)
    with pytest.raises(ValueError, match="got 0, keys"):
        rs.interop.from_torch_state_dict("GRU", {"embed.weight": np.zeros(3)}, **sizes)


def test_torch_state_dict_prefix_live():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    net = torch.nn.Module()
    net.embed = torch.nn.Embedding(10, 3)
    net.lstm = torch.nn.LSTM(3, 5, num_layers=2, batch_first=True)
    state_dict = {k: v.numpy() for k, v in net.state_dict().items()}
    layer, params = rs.interop.from_torch_state_dict("LSTM", state_dict, input_size=3,
                                                     hidden_size=5, num_layers=2,
                                                     batch_first=True)
    x = torch.randn(2, 6, 3)
    np.testing.assert_allclose(layer.apply(params, x.numpy())[0],
                               net.lstm(x)[0].detach().numpy(), **TOL)


def test_from_torch_bfloat16_module():
    """A bf16 module imports as bf16 params and a bf16 cell, and computes what torch's
    own bf16 forward computes (to bf16 rounding); to_torch gives a bf16 module back."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    module = torch.nn.LSTM(4, 5).to(torch.bfloat16)
    cell, params = rs.interop.from_torch(module)
    assert {np.dtype(v.dtype) for v in params.values()} == {np.dtype(jnp.bfloat16)}
    x = torch.randn(6, 2, 4).to(torch.bfloat16)
    want = module(x)[0].float().detach().numpy()
    ys, _ = rs.unroll(cell, params, jnp.asarray(x.float().numpy(), jnp.bfloat16), time_major=True)
    assert ys.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(ys, np.float32), want, atol=2e-2)
    back = rs.interop.to_torch(cell, params)
    assert back.weight_ih_l0.dtype == torch.bfloat16
    np.testing.assert_array_equal(back.weight_hh_l0.float().detach().numpy(),
                                  module.weight_hh_l0.float().detach().numpy())
    np.testing.assert_allclose(back(x)[0].float().detach().numpy(), want, atol=2e-2)


@pytest.mark.parametrize("cell_module", [False, True])
def test_from_torch_parametrized_module(cell_module):
    """Under a parametrization the module computes with the parametrized weight, which
    its state_dict does not hold under torch's name: from_torch reads that weight."""
    torch = pytest.importorskip("torch")
    weight_norm = torch.nn.utils.parametrizations.weight_norm
    torch.manual_seed(0)
    if cell_module:
        module = weight_norm(torch.nn.GRUCell(4, 5), "weight_ih")
    else:
        module = weight_norm(torch.nn.LSTM(4, 5, num_layers=2), "weight_hh_l0")
        weight_norm(module, "weight_ih_l1")
    with torch.no_grad():  # the parametrization's magnitude, away from what it was built with
        for p in module.parametrizations.values():
            p.original0.mul_(1.7)
    x = torch.randn(6, 2, 4)
    cell, params = rs.interop.from_torch(module)
    if cell_module:
        h, outs = None, []
        for t in range(6):
            h = module(x[t], h)
            outs.append(h.detach().numpy())
        ys, _ = rs.unroll(cell, params, x.numpy(), time_major=True)
        np.testing.assert_allclose(ys, np.stack(outs), **TOL)
        return
    ys, _ = cell.apply(params, x.numpy())
    want = module(x)[0].detach().numpy()
    np.testing.assert_allclose(ys, want, **TOL)
    back = rs.interop.to_torch(cell, params)  # a plain module computing the same
    np.testing.assert_allclose(back(x)[0].detach().numpy(), want, **TOL)
