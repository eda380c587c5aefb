"""Export to torch: `to_torch` gives a torch module whose own forward (the reference)
computes what the rnnscan model computes, and `from_torch` of it gives back the
params bit for bit. Without torch only the state-dict tests run."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnscan as rs

TOL = dict(rtol=2e-5, atol=2e-5)


def with_signed_zeros(params):
    """The params with their first entry set to -0.0, so a round trip must keep signs."""

    def edit(a):
        a = np.array(a)
        a.reshape(-1)[0] = -0.0
        return a

    return jax.tree_util.tree_map(edit, params)


def assert_same_bits(got, want):
    assert jax.tree_util.tree_structure(got) == jax.tree_util.tree_structure(want)
    for g, w in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
        g, w = np.ascontiguousarray(g), np.ascontiguousarray(w)
        assert g.dtype == w.dtype and g.shape == w.shape
        np.testing.assert_array_equal(g.view(np.uint8), w.view(np.uint8))


def torch_forward(module, x, lengths=None):
    """The module's outputs for batch-major `x` (numpy), packed by `lengths`."""
    import torch

    x = torch.from_numpy(np.asarray(x))
    if not module.batch_first:
        x = x.transpose(0, 1)
    if lengths is not None:
        x = torch.nn.utils.rnn.pack_padded_sequence(x, torch.as_tensor(lengths),
                                                    batch_first=module.batch_first,
                                                    enforce_sorted=False)
    with torch.no_grad():
        ys = module(x)[0]
    if lengths is not None:
        ys, _ = torch.nn.utils.rnn.pad_packed_sequence(ys, batch_first=module.batch_first,
                                                       total_length=TIME)
    ys = ys.numpy()
    return ys if module.batch_first else ys.transpose(1, 0, 2)


TIME = 7
XS = np.random.default_rng(0).standard_normal((3, TIME, 4)).astype(np.float32)
LENGTHS = np.array([7, 3, 5])


@pytest.mark.parametrize(
    "make",
    [
        lambda nn: nn.LSTM(4, 5, batch_first=True, proj_size=2),
        lambda nn: nn.GRU(4, 5),
        lambda nn: nn.RNN(4, 5, nonlinearity="relu", bias=False, batch_first=True),
        lambda nn: nn.LSTM(4, 5, num_layers=2, bidirectional=True, proj_size=3, batch_first=True),
        lambda nn: nn.GRU(4, 5, num_layers=2, bidirectional=True, dropout=0.5),
        lambda nn: nn.RNN(4, 3, num_layers=3),
    ],
)
def test_round_trip(make):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    model, params = rs.interop.from_torch(make(torch.nn))
    params = with_signed_zeros(params)
    module = rs.interop.to_torch(model, params)
    back, back_params = rs.interop.from_torch(module)
    assert back is model
    assert_same_bits(back_params, params)

    xs = XS.astype(jax.tree_util.tree_leaves(params)[0].dtype)
    if isinstance(model, rs.Cell):
        ys, _ = rs.unroll(model, params, xs, lengths=LENGTHS)
    else:
        ys, _ = model.apply(params, xs if module.batch_first else xs.transpose(1, 0, 2),
                            lengths=LENGTHS)
        ys = ys if module.batch_first else np.asarray(ys).transpose(1, 0, 2)
    np.testing.assert_allclose(torch_forward(module.eval(), xs, LENGTHS), ys, **TOL)


def random_params(cell, seed=0):
    """The cell's params with every leaf random (the biases too: init makes them zero)."""
    params = cell.init(jax.random.key(seed))
    leaves, treedef = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.key(seed + 1), len(leaves))
    return treedef.unflatten([0.5 * jax.random.normal(k, a.shape) for k, a in zip(keys, leaves)])


@pytest.mark.parametrize(
    "cell, options, module_type",
    [
        (rs.lstm(4, 6), {}, "LSTM"),  # forget_bias=1.0, folded into bias_ih
        (rs.lstm(4, 6, forget_bias=-0.5, proj_size=3), {"forget_bias": -0.5}, "LSTM"),
        (rs.lstm(4, 6, forget_bias=0.0, use_bias=False), {"forget_bias": 0.0}, "LSTM"),
        (rs.gru(4, 6), {}, "GRU"),
        (rs.gru(4, 6, use_bias=False), {}, "GRU"),
        (rs.rnn(4, 6), {}, "RNN"),
        (rs.rnn(4, 6, activation="relu"), {"activation": "relu"}, "RNN"),
    ],
)
def test_hand_built_cell(cell, options, module_type):
    torch = pytest.importorskip("torch")
    params = random_params(cell)
    module = rs.interop.to_torch(cell, params, batch_first=True, **options)
    assert type(module) is getattr(torch.nn, module_type) and module.batch_first
    ys, _ = rs.unroll(cell, params, XS, lengths=LENGTHS)
    np.testing.assert_allclose(torch_forward(module, XS, LENGTHS), ys, **TOL)


@pytest.mark.parametrize(
    "cell, options, match",
    [
        (rs.lstm(4, 6, peephole=True), {}, "no peephole"),
        (rs.lstm(4, 6, cell_clip=3.0), {"cell_clip": 3.0}, "cell_clip=3.0: torch's nn.LSTM does not clip"),
        (rs.lstm(4, 6, use_bias=False), {}, "forget_bias=1.0: torch's module without biases"),
        (rs.lstm(4, 6, forget_bias=2.0), {}, "does not compute what a torch LSTM"),
        (rs.lstm(4, 6, activation="relu"), {"activation": "relu"}, "torch's LSTM has tanh"),
        (rs.lstm(4, 6, compute_dtype=jnp.bfloat16), {}, "does not compute"),
        (rs.gru(4, 6, reset_after=False), {}, "reset_after=False"),
        (rs.gru(4, 6, reset_after=False, use_bias=False), {}, "does not compute what a torch GRU"),
        (rs.rnn(4, 6, activation="relu"), {}, "does not compute what a torch RNN_TANH"),
        (rs.rnn(4, 6, activation="gelu"), {"activation": "gelu"}, "tanh or relu"),
    ],
)
def test_refused(cell, options, match):
    with pytest.raises(ValueError, match=match):
        rs.interop.to_torch_state_dict(cell, random_params(cell), **options)


def test_refused_arguments():
    cell = rs.gru(4, 6)
    with pytest.raises(TypeError, match=r"cell_options \['forget_bias'\] do not apply to a GRU"):
        rs.interop.to_torch_state_dict(cell, cell.init(jax.random.key(0)), forget_bias=1.0)
    with pytest.raises(TypeError, match="model must be an rnnscan Cell or Layer; got str"):
        rs.interop.to_torch_state_dict("lstm", {})
    with pytest.raises(ValueError, match="params must be an rnnscan lstm, gru or rnn"):
        rs.interop.to_torch_state_dict(rs.mingru(4, 6), rs.mingru(4, 6).init(jax.random.key(0)))
    bi = rs.bidirectional(rs.lstm(4, 6), rs.lstm(4, 6))
    with pytest.raises(ValueError, match="a Layer that from_torch did not build"):
        rs.interop.to_torch_state_dict(bi, bi.init(jax.random.key(0)))
    with pytest.raises(ValueError, match="params must match model.init's params"):
        rs.interop.to_torch_state_dict(rs.lstm(4, 6), rs.lstm(4, 7).init(jax.random.key(0)),
                                       forget_bias=1.0)


def test_refused_for_from_torch_models():
    """Options given for a model from from_torch must be torch's; the layout its own."""
    cell, params = rs.interop.from_torch_state_dict("LSTM", lstm_state_dict(["_l0"]),
                                                    input_size=4, hidden_size=6)
    with pytest.raises(ValueError, match="built by from_torch with .*'forget_bias': 0.0"):
        rs.interop.to_torch_state_dict(cell, params, forget_bias=1.0)
    layer, layer_params = rs.interop.from_torch_state_dict(
        "LSTM", lstm_state_dict(["_l0", "_l0_reverse"]), input_size=4, hidden_size=6,
        bidirectional=True, batch_first=True)
    with pytest.raises(ValueError, match="batch_first=False: model is a Layer with batch_first=True"):
        rs.interop.to_torch_state_dict(layer, layer_params, batch_first=False)


def lstm_state_dict(suffixes, input_size=4, hidden_size=6):
    """Random weights under torch's names for an nn.LSTM's layers and directions."""
    rng = np.random.default_rng(0)
    shapes = {"weight_ih": (4 * hidden_size, input_size), "weight_hh": (4 * hidden_size, hidden_size),
              "bias_ih": (4 * hidden_size,), "bias_hh": (4 * hidden_size,)}
    return {name + suffix: rng.standard_normal(shape).astype(np.float32)
            for suffix in suffixes for name, shape in shapes.items()}


def test_state_dict_without_torch():
    """`(mode, state_dict, options)` is what from_torch_state_dict takes, torch's names and all."""
    cell = rs.lstm(4, 6, proj_size=3)
    params = random_params(cell)
    mode, state_dict, options = rs.interop.to_torch_state_dict(cell, params)
    assert mode == "LSTM"
    assert options == dict(input_size=4, hidden_size=6, num_layers=1, bias=True,
                           bidirectional=False, proj_size=3, batch_first=False, dropout=0.0)
    assert {k: v.shape for k, v in state_dict.items()} == {
        "weight_ih_l0": (24, 4), "weight_hh_l0": (24, 3), "weight_hr_l0": (3, 6),
        "bias_ih_l0": (24,), "bias_hh_l0": (24,)}
    # rs.lstm's forget_bias=1.0 sits in the forget slice of bias_ih; bias_hh is -0.0
    np.testing.assert_array_equal(state_dict["bias_ih_l0"][6:12], np.asarray(params["b"][6:12]) + 1.0)
    assert np.all(np.signbit(state_dict["bias_hh_l0"]))
