#!/usr/bin/env python3
"""Generate TensorFlow-1 (tf.compat.v1 graph mode) golden reference data.

Needs TensorFlow + tf-keras in a separate venv (NOT needed at test time):

    python3 -m venv /tmp/tfenv
    /tmp/tfenv/bin/pip install tensorflow==2.20.0 tf-keras==2.20.1 numpy
    TF_USE_LEGACY_KERAS=1 /tmp/tfenv/bin/python tests/golden/make_tf1_golden.py

Writes tests/golden/tf1_<case>.npz.  Key convention: see README.md in this
directory.  float32 throughout; deterministic (fixed numpy seeds, every
variable overwritten with numpy-generated values after the graph is built).
"""
import json
import os
import re

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

v1 = tf.compat.v1
v1.logging.set_verbosity(v1.logging.ERROR)
rnn_cell = v1.nn.rnn_cell

HERE = os.path.dirname(os.path.abspath(__file__))
SCALE = 0.5  # variables ~ N(0, 1) * SCALE

_CELL_TOKENS = ("lstm_cell", "gru_cell", "basic_rnn_cell")


def _rand(rng, shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def _rel_var_key(full_name):
    """'bidirectional_rnn/fw/lstm_cell/kernel:0' -> 'var/fw/kernel';
    'rnn/multi_rnn_cell/cell_1/gru_cell/gates/bias:0' -> 'var/cell_1/gates/bias'."""
    name = full_name.split(":")[0]
    parts = name.split("/")
    idx = [i for i, p in enumerate(parts) if p in _CELL_TOKENS]
    assert len(idx) == 1, full_name
    idx = idx[0]
    prefix = [p for p in parts[:idx] if p in ("fw", "bw") or re.fullmatch(r"cell_\d+", p)]
    return "var/" + "/".join(prefix + parts[idx + 1:])


def _save(case, meta, arrays):
    out = {"meta_json": np.array(json.dumps(meta, sort_keys=True))}
    for k, v in arrays.items():
        out[k] = np.asarray(v)
    path = os.path.join(HERE, "tf1_%s.npz" % case)
    np.savez_compressed(path, **out)
    print("wrote %-42s %6d bytes  keys=%s" % (os.path.relpath(path), os.path.getsize(path),
                                               sorted(out)))
    return out


def run_case(case, *, seed, x_shape, build, meta, x_scale=1.0, state_scales=None,
             sequence_length=None):
    """Build a graph, overwrite all variables, run forward + tf.gradients.

    build(x, seq_len) -> (outputs, init_placeholders) where outputs is an ordered
    dict of name -> tensor and must contain 'y' (the tensor that gets the
    cotangent); init_placeholders is an ordered dict name -> placeholder.
    """
    rng = np.random.RandomState(seed)
    state_scales = state_scales or {}
    graph = tf.Graph()
    with graph.as_default():
        v1.set_random_seed(seed)
        x = v1.placeholder(tf.float32, x_shape, name="x")
        seq = None
        if sequence_length is not None:
            seq = tf.constant(np.asarray(sequence_length, np.int32), name="sequence_length")
        outputs, inits = build(x, seq)
        variables = v1.global_variables()
        assign_phs, assign_ops = [], []
        for v in variables:
            ph = v1.placeholder(tf.float32, v.shape)
            assign_phs.append(ph)
            assign_ops.append(v1.assign(v, ph))
        y = outputs["y"]
        cot_ph = v1.placeholder(tf.float32, y.shape)
        loss = tf.reduce_sum(y * cot_ph)
        grad_targets = [x] + list(inits.values())
        grads = tf.gradients(loss, grad_targets)

        arrays = {}
        var_names = {}
        # 1) variables, in creation order
        feed_assign = {}
        for v, ph in zip(variables, assign_phs):
            val = _rand(rng, tuple(v.shape.as_list()), SCALE)
            key = _rel_var_key(v.name)
            assert key not in arrays, key
            arrays[key] = val
            var_names[key] = v.name
            feed_assign[ph] = val
        # 2) input, 3) initial states, 4) cotangent
        x_np = _rand(rng, x_shape, x_scale)
        arrays["x"] = x_np
        if sequence_length is not None:
            arrays["sequence_length"] = np.asarray(sequence_length, np.int32)
        feed = {x: x_np}
        for name, ph in inits.items():
            val = _rand(rng, tuple(ph.shape.as_list()), state_scales.get(name, 1.0))
            arrays[name] = val
            feed[ph] = val
        cot_np = _rand(rng, tuple(y.shape.as_list()))
        feed[cot_ph] = cot_np

        config = v1.ConfigProto(intra_op_parallelism_threads=1,
                                inter_op_parallelism_threads=1)
        with v1.Session(graph=graph, config=config) as sess:
            sess.run(v1.global_variables_initializer())
            sess.run(assign_ops, feed_dict=feed_assign)
            out_vals, grad_vals = sess.run([outputs, grads], feed_dict=feed)
    for k, v in out_vals.items():
        arrays[k] = v
    arrays["cot"] = cot_np
    arrays["dx"] = grad_vals[0]
    for name, g in zip(inits, grad_vals[1:]):
        arrays["d" + name] = g if g is not None else np.zeros_like(arrays[name])
    meta = dict(meta)
    meta.update(seed=seed, dtype="float32", var_scale=SCALE, x_scale=x_scale,
                state_scales=state_scales, tf_version=tf.__version__,
                tf_variable_names=var_names,
                loss="sum(y * cot); dx (and d<init-state>) are its gradients via tf.gradients")
    if sequence_length is not None:
        _check_masking(arrays, meta)
    return arrays, meta


def _check_masking(arrays, meta):
    L = arrays["sequence_length"]
    ys = [k for k in ("y", "y_fw", "y_bw") if k in arrays]
    for k in ys + ["dx"]:
        a = arrays[k]
        if meta["time_major"]:
            a = np.swapaxes(a, 0, 1)
        T = a.shape[1]
        mask = np.arange(T)[None, :] < L[:, None]
        assert np.all(a[~mask] == 0), k


def _lstm_state_ph(prefix, B, num_units, num_proj=None):
    c = v1.placeholder(tf.float32, [B, num_units], name="c0" + prefix)
    h = v1.placeholder(tf.float32, [B, num_proj or num_units], name="h0" + prefix)
    return c, h


# --------------------------------------------------------------------------
# numpy replay of the peephole/clip/proj case, used only to assert that the
# cell clip is actually exercised (and as an extra cross-check of TF output).
# --------------------------------------------------------------------------
def _np_lstm_replay(a, forget_bias, cell_clip):
    sig = lambda z: 1.0 / (1.0 + np.exp(-z))  # noqa: E731
    x = a["x"].astype(np.float64)  # (B, T, I) batch-major
    K, b = a["var/kernel"].astype(np.float64), a["var/bias"].astype(np.float64)
    wi, wf, wo = (a["var/w_i_diag"], a["var/w_f_diag"], a["var/w_o_diag"])
    P = a["var/projection/kernel"].astype(np.float64)
    c, h = a["c0"].astype(np.float64), a["h0"].astype(np.float64)
    L = a["sequence_length"]
    B, T, _ = x.shape
    ys = np.zeros((B, T, P.shape[1]))
    max_pre = 0.0
    for t in range(T):
        z = np.concatenate([x[:, t], h], 1) @ K + b
        i, j, f, o = np.split(z, 4, axis=1)
        c_new = sig(f + forget_bias + wf * c) * c + sig(i + wi * c) * np.tanh(j)
        live = (t < L)[:, None]
        max_pre = max(max_pre, float(np.abs(c_new[live[:, 0]]).max(initial=0.0)))
        c_new = np.clip(c_new, -cell_clip, cell_clip)
        m = sig(o + wo * c_new) * np.tanh(c_new)
        h_new = m @ P
        ys[:, t] = np.where(live, h_new, 0.0)
        c = np.where(live, c_new, c)
        h = np.where(live, h_new, h)
    return ys, c, h, max_pre


# --------------------------------------------------------------------------
# cases
# --------------------------------------------------------------------------
def case_lstm_peephole_clip_proj():
    B, T, I, H, P = 4, 6, 4, 5, 3
    clip, fb = 2.0, 1.0

    def build(x, seq):
        cell = rnn_cell.LSTMCell(H, use_peepholes=True, cell_clip=clip, num_proj=P,
                                 forget_bias=fb)
        c0, h0 = _lstm_state_ph("", B, H, P)
        y, st = v1.nn.dynamic_rnn(cell, x, sequence_length=seq,
                                  initial_state=rnn_cell.LSTMStateTuple(c0, h0),
                                  time_major=False)
        return {"y": y, "final_c": st.c, "final_h": st.h}, {"c0": c0, "h0": h0}

    meta = dict(cell="lstm", api="tf.compat.v1.nn.dynamic_rnn + rnn_cell.LSTMCell",
                input_size=I, num_units=H, use_peepholes=True, cell_clip=clip,
                num_proj=P, proj_clip=None, forget_bias=fb, activation="tanh",
                time_major=False, has_initial_state=True, batch=B, time=T,
                description="LSTMCell with peepholes, cell_clip, projection; a zero "
                            "sequence_length row; initial LSTMStateTuple(c0, h0) with "
                            "h0 of size num_proj. Inputs/c0 scaled up so the clip is hit.")
    arrays, meta = run_case("lstm_peephole_clip_proj", seed=101, x_shape=(B, T, I),
                            build=build, meta=meta, x_scale=2.0,
                            state_scales={"c0": 2.0}, sequence_length=[6, 3, 0, 5])
    ys, c, h, max_pre = _np_lstm_replay(arrays, fb, clip)
    assert max_pre > clip, "cell clip not exercised: max pre-clip |c| = %g" % max_pre
    np.testing.assert_allclose(ys, arrays["y"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(c, arrays["final_c"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(h, arrays["final_h"], rtol=1e-4, atol=1e-5)
    meta["max_preclip_abs_c"] = round(max_pre, 4)
    _save("lstm_peephole_clip_proj", meta, arrays)


def case_lstm_basic():
    B, T, I, H = 3, 5, 3, 5
    fb = 0.5

    def build(x, seq):
        cell = rnn_cell.LSTMCell(H, forget_bias=fb)
        y, st = v1.nn.dynamic_rnn(cell, x, sequence_length=seq, dtype=tf.float32,
                                  time_major=True)
        return {"y": y, "final_c": st.c, "final_h": st.h}, {}

    meta = dict(cell="lstm", api="tf.compat.v1.nn.dynamic_rnn + rnn_cell.LSTMCell",
                input_size=I, num_units=H, use_peepholes=False, cell_clip=None,
                num_proj=None, proj_clip=None, forget_bias=fb, activation="tanh",
                time_major=True, has_initial_state=False, batch=B, time=T,
                description="plain LSTMCell, forget_bias=0.5, time-major (x is (T,B,F)), "
                            "sequence_length, zero initial state")
    arrays, meta = run_case("lstm_basic", seed=102, x_shape=(T, B, I), build=build,
                            meta=meta, sequence_length=[5, 2, 4])
    _save("lstm_basic", meta, arrays)


def case_gru():
    B, T, I, H = 4, 6, 4, 5

    def build(x, seq):
        cell = rnn_cell.GRUCell(H)
        h0 = v1.placeholder(tf.float32, [B, H], name="h0")
        y, st = v1.nn.dynamic_rnn(cell, x, sequence_length=seq, initial_state=h0,
                                  time_major=False)
        return {"y": y, "final_h": st}, {"h0": h0}

    meta = dict(cell="gru", api="tf.compat.v1.nn.dynamic_rnn + rnn_cell.GRUCell",
                input_size=I, num_units=H, activation="tanh", time_major=False,
                has_initial_state=True, batch=B, time=T,
                description="GRUCell, sequence_length with a 0, initial state h0")
    arrays, meta = run_case("gru", seed=103, x_shape=(B, T, I), build=build, meta=meta,
                            sequence_length=[6, 0, 3, 4])
    _save("gru", meta, arrays)


def case_rnn():
    B, T, I, H = 3, 5, 3, 4

    def build(x, seq):
        cell = rnn_cell.BasicRNNCell(H)
        y, st = v1.nn.dynamic_rnn(cell, x, dtype=tf.float32, time_major=True)
        return {"y": y, "final_h": st}, {}

    meta = dict(cell="rnn", api="tf.compat.v1.nn.dynamic_rnn + rnn_cell.BasicRNNCell",
                input_size=I, num_units=H, activation="tanh", time_major=True,
                has_initial_state=False, batch=B, time=T,
                description="BasicRNNCell tanh, time-major (x is (T,B,F)), no "
                            "sequence_length, zero initial state")
    arrays, meta = run_case("rnn", seed=104, x_shape=(T, B, I), build=build, meta=meta)
    _save("rnn", meta, arrays)


def case_rnn_relu():
    B, T, I, H = 4, 5, 3, 5

    def build(x, seq):
        cell = rnn_cell.BasicRNNCell(H, activation=tf.nn.relu)
        h0 = v1.placeholder(tf.float32, [B, H], name="h0")
        y, st = v1.nn.dynamic_rnn(cell, x, sequence_length=seq, initial_state=h0,
                                  time_major=False)
        return {"y": y, "final_h": st}, {"h0": h0}

    meta = dict(cell="rnn", api="tf.compat.v1.nn.dynamic_rnn + rnn_cell.BasicRNNCell",
                input_size=I, num_units=H, activation="relu", time_major=False,
                has_initial_state=True, batch=B, time=T,
                description="BasicRNNCell relu, sequence_length, initial state h0")
    arrays, meta = run_case("rnn_relu", seed=105, x_shape=(B, T, I), build=build,
                            meta=meta, sequence_length=[5, 1, 3, 4])
    _save("rnn_relu", meta, arrays)


def case_bidirectional():
    B, T, I, H = 4, 6, 3, 4

    def build(x, seq):
        fw = rnn_cell.LSTMCell(H)
        bw = rnn_cell.LSTMCell(H)
        c0f, h0f = _lstm_state_ph("_fw", B, H)
        c0b, h0b = _lstm_state_ph("_bw", B, H)
        (yf, yb), (sf, sb) = v1.nn.bidirectional_dynamic_rnn(
            fw, bw, x, sequence_length=seq,
            initial_state_fw=rnn_cell.LSTMStateTuple(c0f, h0f),
            initial_state_bw=rnn_cell.LSTMStateTuple(c0b, h0b), time_major=False)
        y = tf.concat([yf, yb], axis=-1)
        outs = {"y": y, "y_fw": yf, "y_bw": yb, "final_fw_c": sf.c, "final_fw_h": sf.h,
                "final_bw_c": sb.c, "final_bw_h": sb.h}
        return outs, {"c0_fw": c0f, "h0_fw": h0f, "c0_bw": c0b, "h0_bw": h0b}

    meta = dict(cell="lstm", api="tf.compat.v1.nn.bidirectional_dynamic_rnn + 2x "
                "rnn_cell.LSTMCell", input_size=I, num_units=H, use_peepholes=False,
                cell_clip=None, num_proj=None, forget_bias=1.0, activation="tanh",
                time_major=False, has_initial_state=True, batch=B, time=T,
                var_prefixes={"var/fw/": "forward cell (bidirectional_rnn/fw/lstm_cell)",
                              "var/bw/": "backward cell (bidirectional_rnn/bw/lstm_cell)"},
                description="bidirectional_dynamic_rnn with two LSTMCells, "
                            "sequence_length with a 0, initial states per direction. "
                            "y = concat([y_fw, y_bw], -1); y_bw is in original time order "
                            "(TF reverse_sequence's each row within its length). cot is "
                            "shaped like y (cot[..., :H] for fw, cot[..., H:] for bw).")
    arrays, meta = run_case("bidirectional", seed=106, x_shape=(B, T, I), build=build,
                            meta=meta, sequence_length=[6, 3, 0, 4])
    _save("bidirectional", meta, arrays)


def case_multirnn():
    B, T, I = 4, 6, 3
    Hs = [4, 5]

    def build(x, seq):
        cells = [rnn_cell.LSTMCell(h) for h in Hs]
        multi = rnn_cell.MultiRNNCell(cells)
        inits, states = {}, []
        for k, h in enumerate(Hs):
            c0, h0 = _lstm_state_ph("_%d" % k, B, h)
            inits["c0_%d" % k], inits["h0_%d" % k] = c0, h0
            states.append(rnn_cell.LSTMStateTuple(c0, h0))
        y, st = v1.nn.dynamic_rnn(multi, x, sequence_length=seq,
                                  initial_state=tuple(states), time_major=False)
        outs = {"y": y}
        for k, s in enumerate(st):
            outs["final_%d_c" % k], outs["final_%d_h" % k] = s.c, s.h
        return outs, inits

    meta = dict(cell="lstm", api="tf.compat.v1.nn.dynamic_rnn + rnn_cell.MultiRNNCell of "
                "2 rnn_cell.LSTMCell", input_size=I, num_units=Hs, num_layers=2,
                use_peepholes=False, cell_clip=None, num_proj=None, forget_bias=1.0,
                activation="tanh", time_major=False, has_initial_state=True, batch=B,
                time=T,
                var_prefixes={"var/cell_%d/" % k: "layer %d (multi_rnn_cell/cell_%d/"
                              "lstm_cell)" % (k, k) for k in range(2)},
                description="MultiRNNCell([LSTMCell(4), LSTMCell(5)]), sequence_length "
                            "with a 0, initial state per layer (c0_k, h0_k); final state "
                            "per layer final_k_c/final_k_h; y is the top layer's output")
    arrays, meta = run_case("multirnn", seed=107, x_shape=(B, T, I), build=build,
                            meta=meta, sequence_length=[6, 0, 2, 5])
    _save("multirnn", meta, arrays)


def case_multirnn_gru():
    B, T, I = 3, 5, 4
    Hs = [5, 4]

    def build(x, seq):
        multi = rnn_cell.MultiRNNCell([rnn_cell.GRUCell(h) for h in Hs])
        y, st = v1.nn.dynamic_rnn(multi, x, sequence_length=seq, dtype=tf.float32,
                                  time_major=False)
        outs = {"y": y}
        for k, s in enumerate(st):
            outs["final_%d_h" % k] = s
        return outs, {}

    meta = dict(cell="gru", api="tf.compat.v1.nn.dynamic_rnn + rnn_cell.MultiRNNCell of "
                "2 rnn_cell.GRUCell", input_size=I, num_units=Hs, num_layers=2,
                activation="tanh", time_major=False, has_initial_state=False, batch=B,
                time=T,
                var_prefixes={"var/cell_%d/" % k: "layer %d (multi_rnn_cell/cell_%d/"
                              "gru_cell)" % (k, k) for k in range(2)},
                description="MultiRNNCell([GRUCell(5), GRUCell(4)]), sequence_length, "
                            "zero initial state; final_k_h per layer")
    arrays, meta = run_case("multirnn_gru", seed=108, x_shape=(B, T, I), build=build,
                            meta=meta, sequence_length=[5, 2, 4])
    _save("multirnn_gru", meta, arrays)


def main():
    case_lstm_peephole_clip_proj()
    case_lstm_basic()
    case_gru()
    case_rnn()
    case_rnn_relu()
    case_bidirectional()
    case_multirnn()
    case_multirnn_gru()


if __name__ == "__main__":
    main()
