#!/usr/bin/env python3
"""Generate PyTorch golden reference data for rnnscan tests.

Run with the system python3 (needs torch; NOT needed at test time):

    python3 tests/golden/make_torch_golden.py

Writes tests/golden/torch_<case>.npz.  Key convention: see README.md in this
directory.  Everything is float32 and deterministic (fixed numpy seeds; the
torch module's default init is overwritten with numpy-generated values).
"""
import json
import os

import numpy as np
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

HERE = os.path.dirname(os.path.abspath(__file__))
SCALE = 0.5  # weights/biases ~ N(0, 1) * SCALE

torch.set_num_threads(1)  # reproducible CPU reductions


def _rand(rng, shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def _set_params(module, rng):
    """Overwrite every parameter with N(0,1)*SCALE, in state_dict order."""
    params = {}
    with torch.no_grad():
        for name, p in module.named_parameters():
            val = _rand(rng, tuple(p.shape), SCALE)
            p.copy_(torch.from_numpy(val))
            params["param/" + name] = val
    # sanity: state_dict keys == named_parameters keys (no buffers here)
    assert set("param/" + k for k in module.state_dict()) == set(params)
    return params


def _save(case, meta, arrays):
    out = {"meta_json": np.array(json.dumps(meta, sort_keys=True))}
    for k, v in arrays.items():
        v = np.asarray(v)
        if v.dtype == np.float64:
            v = v.astype(np.float32)
        out[k] = v
    path = os.path.join(HERE, "torch_%s.npz" % case)
    np.savez_compressed(path, **out)
    print("wrote %-45s %6d bytes  keys=%s" % (os.path.relpath(path), os.path.getsize(path),
                                               sorted(out)))


def make_module_case(case, mode, *, B, T, input_size, hidden_size, num_layers=1,
                     bidirectional=False, proj_size=0, bias=True, nonlinearity="tanh",
                     lengths=None, with_h0=False, seed=0, description=""):
    rng = np.random.RandomState(seed)
    kwargs = dict(input_size=input_size, hidden_size=hidden_size, num_layers=num_layers,
                  bias=bias, batch_first=True, bidirectional=bidirectional)
    if mode == "LSTM":
        module = torch.nn.LSTM(proj_size=proj_size, **kwargs)
    elif mode == "GRU":
        assert proj_size == 0
        module = torch.nn.GRU(**kwargs)
    elif mode == "RNN":
        assert proj_size == 0
        module = torch.nn.RNN(nonlinearity=nonlinearity, **kwargs)
    else:
        raise ValueError(mode)
    module.eval()
    params = _set_params(module, rng)

    D = 2 if bidirectional else 1
    H_out = proj_size if proj_size > 0 else hidden_size
    x_np = _rand(rng, (B, T, input_size))
    packed = lengths is not None
    arrays = dict(params)
    arrays["x"] = x_np
    if packed:
        lengths = np.asarray(lengths, dtype=np.int32)
        assert lengths.shape == (B,) and lengths.min() >= 1 and lengths.max() <= T
        arrays["lengths"] = lengths

    x = torch.from_numpy(x_np).requires_grad_(True)
    hx = None
    h0 = c0 = None
    if with_h0:
        h0_np = _rand(rng, (num_layers * D, B, H_out))
        h0 = torch.from_numpy(h0_np).requires_grad_(True)
        arrays["h0"] = h0_np
        if mode == "LSTM":
            c0_np = _rand(rng, (num_layers * D, B, hidden_size))
            c0 = torch.from_numpy(c0_np).requires_grad_(True)
            arrays["c0"] = c0_np
            hx = (h0, c0)
        else:
            hx = h0

    if packed:
        inp = pack_padded_sequence(x, torch.from_numpy(lengths.astype(np.int64)),
                                   batch_first=True, enforce_sorted=False)
        out, state = module(inp, hx)
        y, _ = pad_packed_sequence(out, batch_first=True, padding_value=0.0, total_length=T)
    else:
        y, state = module(x, hx)
    assert y.shape == (B, T, D * H_out), y.shape

    cot_np = _rand(rng, (B, T, D * H_out))
    loss = (y * torch.from_numpy(cot_np)).sum()
    loss.backward()

    arrays["y"] = y.detach().numpy()
    if mode == "LSTM":
        arrays["h_n"] = state[0].detach().numpy()
        arrays["c_n"] = state[1].detach().numpy()
    else:
        arrays["h_n"] = state.detach().numpy()
    arrays["cot"] = cot_np
    arrays["dx"] = x.grad.numpy()
    if with_h0:
        arrays["dh0"] = h0.grad.numpy()
        if mode == "LSTM":
            arrays["dc0"] = c0.grad.numpy()
    if packed:
        mask = np.arange(T)[None, :] < lengths[:, None]
        assert np.all(arrays["y"][~mask] == 0) and np.all(arrays["dx"][~mask] == 0)

    meta = dict(mode=mode, input_size=input_size, hidden_size=hidden_size,
                num_layers=num_layers, bidirectional=bidirectional, proj_size=proj_size,
                bias=bias, nonlinearity=nonlinearity if mode == "RNN" else None,
                batch_first=True, packed=packed, enforce_sorted=False if packed else None,
                has_initial_state=with_h0, batch=B, time=T, dropout=0.0,
                dtype="float32", param_scale=SCALE, seed=seed,
                torch_version=torch.__version__,
                loss="sum(y * cot); dx/dh0/dc0 are its gradients",
                description=description)
    _save(case, meta, arrays)


def make_cell_case(case, mode, *, B, T, input_size, hidden_size, bias=True,
                   nonlinearity="tanh", seed=0, description=""):
    """nn.LSTMCell / nn.GRUCell / nn.RNNCell stepped by a Python loop over time."""
    rng = np.random.RandomState(seed)
    if mode == "LSTMCell":
        cell = torch.nn.LSTMCell(input_size, hidden_size, bias=bias)
    elif mode == "GRUCell":
        cell = torch.nn.GRUCell(input_size, hidden_size, bias=bias)
    elif mode == "RNNCell":
        cell = torch.nn.RNNCell(input_size, hidden_size, bias=bias, nonlinearity=nonlinearity)
    else:
        raise ValueError(mode)
    params = _set_params(cell, rng)
    arrays = dict(params)
    x_np = _rand(rng, (B, T, input_size))
    h0_np = _rand(rng, (B, hidden_size))
    arrays["x"] = x_np
    arrays["h0"] = h0_np
    x = torch.from_numpy(x_np).requires_grad_(True)
    h = h0 = torch.from_numpy(h0_np).requires_grad_(True)
    if mode == "LSTMCell":
        c0_np = _rand(rng, (B, hidden_size))
        arrays["c0"] = c0_np
        c = c0 = torch.from_numpy(c0_np).requires_grad_(True)
    ys = []
    for t in range(T):
        if mode == "LSTMCell":
            h, c = cell(x[:, t], (h, c))
        else:
            h = cell(x[:, t], h)
        ys.append(h)
    y = torch.stack(ys, dim=1)
    cot_np = _rand(rng, (B, T, hidden_size))
    (y * torch.from_numpy(cot_np)).sum().backward()
    arrays["y"] = y.detach().numpy()
    arrays["h_n"] = h.detach().numpy()
    if mode == "LSTMCell":
        arrays["c_n"] = c.detach().numpy()
        arrays["dc0"] = c0.grad.numpy()
    arrays["cot"] = cot_np
    arrays["dx"] = x.grad.numpy()
    arrays["dh0"] = h0.grad.numpy()
    meta = dict(mode=mode, input_size=input_size, hidden_size=hidden_size, num_layers=1,
                bidirectional=False, proj_size=0, bias=bias,
                nonlinearity=nonlinearity if mode == "RNNCell" else None,
                batch_first=True, packed=False, has_initial_state=True, batch=B, time=T,
                dtype="float32", param_scale=SCALE, seed=seed,
                torch_version=torch.__version__,
                state_layout="h0/c0/h_n/c_n are (B, H) (cell layout, no layer axis)",
                loss="sum(y * cot); dx/dh0/dc0 are its gradients",
                description=description)
    _save(case, meta, arrays)


def main():
    # ---- single layer -------------------------------------------------------
    make_module_case("lstm", "LSTM", B=3, T=5, input_size=3, hidden_size=5, with_h0=True,
                     seed=1, description="1-layer LSTM, unpacked, with (h0, c0)")
    make_module_case("lstm_packed", "LSTM", B=4, T=6, input_size=4, hidden_size=5,
                     lengths=[6, 3, 1, 4], seed=2,
                     description="1-layer LSTM, packed (unsorted lengths), zero initial state")
    make_module_case("lstm_proj", "LSTM", B=4, T=6, input_size=3, hidden_size=5, proj_size=3,
                     lengths=[6, 3, 1, 4], with_h0=True, seed=3,
                     description="1-layer LSTM with proj_size=3, packed, with (h0, c0); "
                                 "h0 is (1,B,proj_size), c0 is (1,B,hidden_size)")
    make_module_case("gru", "GRU", B=4, T=6, input_size=4, hidden_size=5,
                     lengths=[2, 6, 1, 5], with_h0=True, seed=4,
                     description="1-layer GRU, packed, with h0")
    make_module_case("rnn_relu", "RNN", B=4, T=6, input_size=3, hidden_size=4,
                     nonlinearity="relu", lengths=[6, 4, 1, 3], seed=29,
                     description="1-layer Elman RNN with relu, packed, zero initial state")
    make_module_case("rnn_tanh_nobias", "RNN", B=3, T=5, input_size=4, hidden_size=5,
                     bias=False, with_h0=True, seed=6,
                     description="1-layer Elman RNN tanh, bias=False, unpacked, with h0")
    # ---- cells (python loop over time) ---------------------------------------
    make_cell_case("lstmcell", "LSTMCell", B=3, T=5, input_size=3, hidden_size=4, seed=7,
                   description="nn.LSTMCell stepped over time in a Python loop")
    make_cell_case("grucell", "GRUCell", B=3, T=5, input_size=4, hidden_size=5, seed=8,
                   description="nn.GRUCell stepped over time in a Python loop")
    make_cell_case("rnncell", "RNNCell", B=3, T=5, input_size=3, hidden_size=4, seed=9,
                   description="nn.RNNCell (tanh) stepped over time in a Python loop")
    # ---- multi-layer / bidirectional ----------------------------------------
    make_module_case("lstm_2layer", "LSTM", B=4, T=6, input_size=3, hidden_size=5,
                     num_layers=2, lengths=[6, 3, 1, 4], with_h0=True, seed=10,
                     description="2-layer LSTM, packed, with (h0, c0)")
    make_module_case("gru_3layer", "GRU", B=3, T=5, input_size=4, hidden_size=4,
                     num_layers=3, with_h0=True, seed=11,
                     description="3-layer GRU, unpacked, with h0")
    make_module_case("lstm_bidir", "LSTM", B=4, T=6, input_size=3, hidden_size=4,
                     bidirectional=True, lengths=[6, 3, 1, 4], with_h0=True, seed=12,
                     description="1-layer bidirectional LSTM, packed, with (h0, c0); "
                                 "y[..., :H] forward, y[..., H:] reverse")
    make_module_case("lstm_2layer_bidir_proj", "LSTM", B=4, T=6, input_size=3,
                     hidden_size=5, num_layers=2, bidirectional=True, proj_size=3,
                     lengths=[6, 3, 1, 4], with_h0=True, seed=13,
                     description="2-layer bidirectional LSTM with proj_size=3, packed, "
                                 "with (h0, c0); layer 1 input size is 2*proj_size")
    # ---- widths that run rnnscan's CPU LSTM kernel (a multiple of 16 units) ----
    make_module_case("lstm_h32", "LSTM", B=7, T=9, input_size=5, hidden_size=32, with_h0=True,
                     seed=16, description="1-layer LSTM, 32 units, unpacked, with (h0, c0)")
    make_module_case("lstm_bidir_h16", "LSTM", B=5, T=8, input_size=6, hidden_size=16,
                     bidirectional=True, with_h0=True, seed=17,
                     description="1-layer bidirectional LSTM, 16 units, unpacked, with "
                                 "(h0, c0); y[..., :H] forward, y[..., H:] reverse")
    make_module_case("gru_bidir_packed", "GRU", B=4, T=6, input_size=4, hidden_size=5,
                     bidirectional=True, lengths=[6, 3, 1, 4], with_h0=True, seed=14,
                     description="1-layer bidirectional GRU, packed, with h0")
    make_module_case("rnn_2layer_bidir", "RNN", B=3, T=5, input_size=3, hidden_size=4,
                     num_layers=2, bidirectional=True, seed=15,
                     description="2-layer bidirectional Elman RNN tanh, unpacked, zero "
                                 "initial state")


if __name__ == "__main__":
    main()
