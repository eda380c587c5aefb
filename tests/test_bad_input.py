"""Every bad input named: a table of wrong calls across the public API.

Each row asserts the exception type (`ValueError` or `TypeError`), that the
message names the argument (a regex), and, where the message shows a shape,
that it is the shape the caller passed, in the caller's layout. The CLI's rows
assert exit status 2 and a one-line message without a traceback. The valid
inputs near these edges (empty batches, lists for `lengths`) are tested last.
"""

import json
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import rnnscan as rs
from rnnscan import tasks, train
from rnnscan.cli import main
from rnnscan.interop import from_tf1, from_torch, from_torch_state_dict, to_torch_state, torch_state
from rnnscan.tasks import adding, charlm, copy
from rnnscan.unroll import make_plan

B, T, F, H = 4, 10, 7, 5
KEY = jax.random.key(0)
CELL = rs.lstm(F, H)
P = CELL.init(KEY)
XS = np.ones((B, T, F), np.float32)
XS_TM = np.ones((T, B, F), np.float32)
GRU, MIN = rs.gru(F, H), rs.mingru(F, H)
P_GRU, P_MIN = GRU.init(KEY), MIN.init(KEY)
BIG = rs.lstm(F, H + 1)
SD = {"weight_ih_l0": np.zeros((4 * H, F), np.float32), "weight_hh_l0": np.zeros((4 * H, H), np.float32),
      "bias_ih_l0": np.zeros(4 * H, np.float32), "bias_hh_l0": np.zeros(4 * H, np.float32)}
TF_LSTM = {"kernel": np.zeros((F + H, 4 * H), np.float32), "bias": np.zeros(4 * H, np.float32)}
TF_GRU = {"gates/kernel": np.zeros((F + H, 2 * H), np.float32), "gates/bias": np.zeros(2 * H, np.float32),
          "candidate/kernel": np.zeros((F + H, H), np.float32), "candidate/bias": np.zeros(H, np.float32)}
TF_RNN = {"kernel": np.zeros((F + H, H), np.float32), "bias": np.zeros(H, np.float32)}
STATE = train.init_state({"w": jnp.ones(2)}, optax.sgd(0.1), jax.random.PRNGKey(0))
STEP = train.make_train_step(lambda p, b, k: jnp.sum(p["w"] ** 2), optax.sgd(0.1))
BATCHES = lambda s: {"x": np.ones((1,), np.float32)}


def ones(*shape, dtype=np.float32):
    return np.ones(shape, dtype)


def edit(tree: dict, **changes) -> dict:
    """`tree` with keys replaced (a value of None deletes the key)."""
    out = {**tree, **changes}
    return {k: v for k, v in out.items() if v is not None}


def unroll(**kw):
    args = {"cell": CELL, "params": P, "xs": XS} | kw
    return rs.unroll(args.pop("cell"), args.pop("params"), args.pop("xs"), **args)


def fit(**kw):
    args = dict(state=STATE, train_step=STEP, batches=BATCHES, steps=3, progress=False) | kw
    return train.fit(args.pop("state"), args.pop("train_step"), args.pop("batches"), **args)


def sd_call(sd=SD, **kw):
    return from_torch_state_dict(kw.pop("mode", "LSTM"), sd, **({"input_size": F, "hidden_size": H} | kw))


def torch_module(name, *args, **kw):
    import torch

    return getattr(torch.nn, name)(*args, **kw)


V, TE = ValueError, TypeError
ROWS = [
    # -- cell constructors ---------------------------------------------------------
    ("lstm-input-size-0", lambda: rs.lstm(0, H), V, r"input_size must be a positive int; got 0", None),
    ("lstm-hidden-negative", lambda: rs.lstm(F, -1), V, r"hidden_size must be a positive int; got -1", None),
    ("lstm-hidden-float", lambda: rs.lstm(F, 2.5), TE, r"hidden_size must be a positive int; got 2.5", None),
    ("lstm-input-str", lambda: rs.lstm("7", H), TE, r"input_size must be a positive int; got '7'", None),
    ("lstm-input-bool", lambda: rs.lstm(True, H), TE, r"input_size must be a positive int; got True", None),
    ("lstm-proj-0", lambda: rs.lstm(F, H, proj_size=0), V, r"proj_size must be a positive int", None),
    ("lstm-cell-clip-negative", lambda: rs.lstm(F, H, cell_clip=-1.0), V, r"cell_clip must be a non-negative number.*got -1.0", None),
    ("lstm-cell-clip-str", lambda: rs.lstm(F, H, cell_clip="big"), TE, r"cell_clip must be a non-negative number.*'big'", None),
    ("lstm-cell-clip-nan", lambda: rs.lstm(F, H, cell_clip=float("nan")), V, r"cell_clip must be a non-negative number", None),
    ("lstm-proj-clip-negative", lambda: rs.lstm(F, H, proj_size=3, proj_clip=-0.5), V, r"proj_clip must be a non-negative number.*got -0.5", None),
    ("lstm-proj-clip-without-proj", lambda: rs.lstm(F, H, proj_clip=1.0), V, r"proj_clip .*proj_size", None),
    ("lstm-activation-name", lambda: rs.lstm(F, H, activation="swish"), V, r"activation must be one of .*'swish'", None),
    ("lstm-activation-int", lambda: rs.lstm(F, H, activation=3), V, r"activation must be one of .*got 3", None),
    ("lstm-peephole-str", lambda: rs.lstm(F, H, peephole="yes"), TE, r"peephole must be a bool.*'yes'", None),
    ("lstm-use-bias-none", lambda: rs.lstm(F, H, use_bias=None), TE, r"use_bias must be a bool.*None", None),
    ("lstm-forget-bias-str", lambda: rs.lstm(F, H, forget_bias="1"), TE, r"forget_bias must be a (finite )?number.*'1'", None),
    ("lstm-forget-bias-inf", lambda: rs.lstm(F, H, forget_bias=float("inf")), V, r"forget_bias must be a finite number", None),
    ("lstm-param-dtype-int", lambda: rs.lstm(F, H, param_dtype=jnp.int32), TE, r"param_dtype must be a floating dtype; got int32", None),
    ("lstm-compute-dtype-int", lambda: rs.lstm(F, H, compute_dtype=jnp.int8), TE, r"compute_dtype must be a floating dtype", None),
    ("lstm-kernel-init-str", lambda: rs.lstm(F, H, kernel_init="glorot"), TE, r"kernel_init must be .*initializer.*got str", None),
    ("gru-input-float-after-int", lambda: (rs.gru(F, H), rs.gru(float(F), H)), TE, r"input_size must be a positive int; got 7.0", None),
    ("gru-input-0", lambda: rs.gru(0, H), V, r"input_size must be a positive int; got 0", None),
    ("gru-hidden-none", lambda: rs.gru(F, None), TE, r"hidden_size must be a positive int; got None", None),
    ("gru-reset-after-str", lambda: rs.gru(F, H, reset_after="no"), TE, r"reset_after must be a bool.*'no'", None),
    ("gru-activation", lambda: rs.gru(F, H, activation="softmax"), V, r"activation must be one of", None),
    ("gru-use-bias-int", lambda: rs.gru(F, H, use_bias=1), TE, r"use_bias must be a bool", None),
    ("gru-param-dtype", lambda: rs.gru(F, H, param_dtype=jnp.int16), TE, r"param_dtype must be a floating dtype", None),
    ("gru-recurrent-init", lambda: rs.gru(F, H, recurrent_init=0.1), TE, r"recurrent_init must be", None),
    ("rnn-hidden-0", lambda: rs.rnn(F, 0), V, r"hidden_size must be a positive int; got 0", None),
    ("rnn-activation", lambda: rs.rnn(F, H, activation="softmax"), V, r"activation must be one of .*'softmax'", None),
    ("rnn-use-bias-str", lambda: rs.rnn(F, H, use_bias="no"), TE, r"use_bias must be a bool", None),
    ("rnn-input-float", lambda: rs.rnn(7.0, H), TE, r"input_size must be a positive int; got 7.0", None),
    ("mingru-input-0", lambda: rs.mingru(0, H), V, r"input_size must be a positive int", None),
    ("mingru-use-bias", lambda: rs.mingru(F, H, use_bias="x"), TE, r"use_bias must be a bool", None),
    ("minlstm-hidden-negative", lambda: rs.minlstm(F, -2), V, r"hidden_size must be a positive int; got -2", None),
    ("minlstm-param-dtype", lambda: rs.minlstm(F, H, param_dtype=jnp.int32), TE, r"param_dtype must be a floating dtype", None),
    ("lru-hidden-0", lambda: rs.lru(F, 0), V, r"hidden_size must be a positive int", None),
    ("lru-r-order", lambda: rs.lru(F, H, r_min=0.5, r_max=0.2), V, r"r_min and r_max must satisfy", None),
    ("lru-r-max-above-1", lambda: rs.lru(F, H, r_max=1.5), V, r"r_max=1.5", None),
    ("lru-r-min-str", lambda: rs.lru(F, H, r_min="a"), TE, r"r_min must be a (finite )?number.*'a'", None),
    ("lru-phase-0", lambda: rs.lru(F, H, max_phase=0), V, r"max_phase must be positive; got 0", None),
    ("lru-phase-str", lambda: rs.lru(F, H, max_phase="pi"), TE, r"max_phase must be a (finite )?number.*'pi'", None),
    ("multi-empty", lambda: rs.multi_cell([]), V, r"cells must hold at least one Cell", None),
    ("multi-a-cell", lambda: rs.multi_cell(CELL), TE, r"cells must be a list or tuple of Cells", None),
    ("multi-not-a-cell", lambda: rs.multi_cell([CELL, 3]), TE, r"cells\[1\] must be an rnnscan.Cell", None),
    ("multi-sizes", lambda: rs.unroll(rs.multi_cell([CELL, rs.lstm(H + 1, H)]), rs.multi_cell([CELL, rs.lstm(H + 1, H)]).init(KEY), XS),
     V, r"^cells\[1\] of the multi_cell: .*must have 6 features.*got 5", None),
    ("multi-params-count", lambda: rs.unroll(rs.multi_cell([CELL, CELL]), (P,), XS), V, r"params must hold every leaf .*missing \[1\]\['b'\]", None),
    ("multi-params-shape", lambda: rs.unroll(rs.multi_cell([CELL, CELL]), (P, BIG.init(KEY)), XS), V,
     r"params\[1\]\['b'\] must have shape \(20,\); got shape \(24,\)", None),
    ("split-project-not-callable", lambda: rs.Cell.split(None, None, "p", lambda p, h, x: (h, h)), TE, r"project_inputs must be callable; got str", None),
    ("split-recurrent-not-callable", lambda: rs.Cell.split(None, None, lambda p, x: x, None), TE, r"recurrent_step must be callable; got NoneType", None),
    ("split-init-not-callable", lambda: rs.Cell.split(3, None, lambda p, x: x, lambda p, h, x: (h, h)), TE, r"init must be callable or None; got int", None),
    ("split-rowwise-str", lambda: rs.Cell.split(None, None, lambda p, x: x, lambda p, h, x: (h, h), rowwise="yes"), TE, r"rowwise must be a bool", None),
    ("split-linear-wrong", lambda: rs.Cell.split(None, None, lambda p, x: x, lambda p, h, x: (h, h), linear=3), TE, r"linear must be a LinearRecurrence or None", None),
    ("split-unknown-trait", lambda: rs.Cell.split(None, None, lambda p, x: x, lambda p, h, x: (h, h), fast=True), TE, r"fast", None),
    ("cell-step-x-tuple", lambda: CELL.step(P, CELL.initial_state(P, (B,)), (ones(B, F), ones(B, F))), TE,
     r"must be one array .*got a tuple", None),
    ("cell-step-features", lambda: CELL.step(P, CELL.initial_state(P, (B,)), ones(B, F + 1)), V, r"must have 7 features.*got 8", None),
    ("cell-init-int-key", lambda: CELL.init(0), TE, r"key must be a jax.random key; got int", None),
    # -- unroll: xs -------------------------------------------------------------------
    ("xs-rank-2", lambda: unroll(xs=ones(B, T)), V, r"xs must have shape \(\*batch, time, \.\.\.\); got shape \(4, 10\)", (4, 10)),
    ("xs-rank-2-time-major", lambda: unroll(xs=ones(T, B), time_major=True), V, r"xs must have shape \(time, \*batch, \.\.\.\); got shape \(10, 4\)", (10, 4)),
    ("xs-rank-2-square", lambda: unroll(cell=rs.lstm(4, 16), params=rs.lstm(4, 16).init(KEY), xs=ones(4, 10)), V, r"xs must have shape .*got shape \(4, 10\)", (4, 10)),
    ("xs-rank-1", lambda: unroll(xs=ones(T)), V, r"xs must have shape .*got shape \(10,\)", (10,)),
    ("xs-scalar", lambda: unroll(xs=np.float32(1.0)), V, r"xs must have shape .*got shape \(\)", None),
    ("xs-str", lambda: unroll(xs="abc"), TE, r"xs must be an array or a pytree of arrays; got str", None),
    ("xs-none", lambda: unroll(xs=None), V, r"xs must hold at least one array; got None", None),
    ("xs-empty-dict", lambda: unroll(xs={}), V, r"xs must hold at least one array", None),
    ("xs-nested-list", lambda: unroll(xs=XS.tolist()), TE, r"xs must be an array or a pytree of arrays; got .*Python (numbers|float).*np.asarray", None),
    ("xs-tuple-for-lstm", lambda: unroll(xs=(XS, XS)), TE, r"(xs|input).* must be one array .*got a tuple of 2", None),
    ("xs-dict-leaf-rank-2", lambda: unroll(cell=lambda p, h, x: (h, h), params=None, xs={"a": XS, "b": ones(B)}, initial_state=jnp.zeros((B, H))),
     V, r"xs\['b'\] must have shape \(\*batch, time, \.\.\.\); got shape \(4,\)", (4,)),
    ("xs-dict-batch-differs", lambda: unroll(cell=lambda p, h, x: (h, h), params=None, xs={"a": XS, "b": ones(B + 1, T, F)}, initial_state=jnp.zeros((B, H))),
     V, r"share .*xs\['b'\] has shape \(5, 10, 7\)", (5, 10, 7)),
    ("xs-dict-time-differs-tm", lambda: unroll(cell=lambda p, h, x: (h, h), params=None, xs={"a": XS_TM, "b": ones(T + 1, B, F)}, initial_state=jnp.zeros((B, H)), time_major=True),
     V, r"share .*xs\['b'\] has shape \(11, 4, 7\)", (11, 4, 7)),
    ("xs-features", lambda: unroll(xs=ones(B, T, F + 1)), V, r"must have 7 features .*got 8", None),
    ("xs-features-time-major", lambda: unroll(xs=ones(T, B, F + 1), time_major=True), V, r"must have 7 features .*got 8", None),
    ("xs-complex", lambda: unroll(xs=XS.astype(np.complex64)), TE, r"xs.* must be real.*complex64", None),
    ("xs-complex-gru", lambda: unroll(cell=GRU, params=P_GRU, xs=XS.astype(np.complex64)), TE, r"must be real.*complex64", None),
    ("xs-complex-lru", lambda: unroll(cell=rs.lru(F, H), params=rs.lru(F, H).init(KEY), xs=XS.astype(np.complex64)), TE, r"must be real.*complex64", None),
    ("xs-complex-mingru", lambda: unroll(cell=MIN, params=P_MIN, xs=XS.astype(np.complex64), method="associative"), TE, r"must be real.*complex64", None),
    ("xs-features-mingru-associative", lambda: unroll(cell=MIN, params=P_MIN, xs=ones(B, T, 3), method="associative"), V, r"must have 7 features .*got 3", None),
    # -- unroll: lengths, resets, states --------------------------------------------------
    ("lengths-shape", lambda: unroll(lengths=np.array([1, 2, 3])), V, r"lengths must have shape \(batch,\) = \(4,\); got shape \(3,\)", (3,)),
    ("lengths-2d", lambda: unroll(lengths=np.ones((B, 1), np.int32)), V, r"lengths must have shape \(batch,\) = \(4,\); got shape \(4, 1\)", (4, 1)),
    ("lengths-scalar", lambda: unroll(lengths=5), V, r"lengths must have shape \(batch,\) = \(4,\); got shape \(\)", None),
    ("lengths-float", lambda: unroll(lengths=np.ones(B)), TE, r"lengths must have an integer dtype; got float", None),
    ("lengths-bool", lambda: unroll(lengths=np.ones(B, bool)), TE, r"lengths must have an integer dtype; got bool", None),
    ("lengths-above-time", lambda: unroll(lengths=np.array([1, 2, 3, T + 1])), V, r"lengths must lie in \[0, time\] = \[0, 10\]; got \[11\] at rows \[3\]", None),
    ("lengths-negative", lambda: unroll(lengths=np.array([-1, 2, 3, 4])), V, r"lengths must lie in \[0, time\]", None),
    ("lengths-list-float", lambda: unroll(lengths=[1.0, 2.0, 3.0, 4.0]), TE, r"lengths must have an integer dtype; got float", None),
    ("lengths-list-short", lambda: unroll(lengths=[1, 2]), V, r"lengths must have shape \(batch,\) = \(4,\); got shape \(2,\)", (2,)),
    ("lengths-list-above", lambda: unroll(lengths=[1, 2, 3, 40]), V, r"lengths must lie in \[0, time\] = \[0, 10\]; got \[40\]", None),
    ("lengths-str", lambda: unroll(lengths="4"), TE, r"lengths must be an (int )?array", None),
    ("resets-shape", lambda: unroll(resets=np.zeros((T, B), bool)), V, r"resets must have shape \(batch, time\) = \(4, 10\); got shape \(10, 4\)", None),
    ("resets-shape-time-major", lambda: unroll(xs=XS_TM, time_major=True, resets=np.zeros((B, T), bool)), V,
     r"resets must have shape \(time, batch\) = \(10, 4\); got shape \(4, 10\)", None),
    ("resets-float", lambda: unroll(resets=np.zeros((B, T), np.float32)), TE, r"resets must be a bool mask; got dtype float32", None),
    ("resets-list-int", lambda: unroll(resets=np.zeros((B, T), int).tolist()), TE, r"resets must be a bool mask; got dtype int", None),
    ("initial-state-structure", lambda: unroll(initial_state=jnp.zeros((B, H))), TE, r"initial_state must have the structure", None),
    ("initial-state-shape", lambda: unroll(initial_state=rs.LSTMState(jnp.zeros((B, H)), jnp.zeros((B, H + 1)))), V, r"initial_state must match .*float32\[4, 6\]", None),
    ("initial-state-batch", lambda: unroll(initial_state=rs.LSTMState(jnp.zeros((3, H)), jnp.zeros((3, H)))), V, r"initial_state must match", None),
    ("initial-state-dtype", lambda: unroll(initial_state=rs.LSTMState(jnp.zeros((B, H)), jnp.zeros((B, H), jnp.int32))), TE, r"initial_state must match the dtypes", None),
    ("initial-state-bare-missing", lambda: unroll(cell=lambda p, h, x: (h, h), params=None), V, r"initial_state is required", None),
    ("reset-state-shape", lambda: unroll(resets=np.zeros((B, T), bool), reset_state=rs.LSTMState(jnp.zeros((B, 2)), jnp.zeros((B, H)))), V, r"reset_state must match", None),
    ("step-grows-state", lambda: unroll(cell=lambda p, h, x: (jnp.concatenate([h, x], -1), h), params=None, initial_state=jnp.zeros((B, H))), V, r"the state returned by cell.step must match", None),
    ("step-no-pair", lambda: unroll(cell=lambda p, h, x: h, params=None, initial_state=jnp.zeros((B, H))), TE, r"cell.step must return a pair", None),
    # -- unroll: params -----------------------------------------------------------------
    ("params-missing-key", lambda: unroll(params=edit(P, b=None)), V, r"params .*missing \['b'\]", None),
    ("params-shape", lambda: unroll(params=edit(P, w_ih=np.zeros((F + 1, 4 * H), np.float32))), V, r"params\['w_ih'\] must have shape \(7, 20\); got shape \(8, 20\)", (8, 20)),
    ("params-bias-broadcasts", lambda: unroll(params=edit(P, b=np.zeros(1, np.float32))), V, r"params\['b'\] must have shape \(20,\); got shape \(1,\)", (1,)),
    ("params-recurrent-shape", lambda: unroll(params=edit(P, w_hh=np.zeros((H, 4 * H + 4), np.float32))), V, r"params\['w_hh'\] must have shape \(5, 20\); got shape \(5, 24\)", (5, 24)),
    ("params-not-a-dict", lambda: unroll(params=[P["w_ih"], P["w_hh"], P["b"]]), TE, r"params must have the structure", None),
    ("params-none", lambda: unroll(params=None), TE, r"params must have the structure", None),
    ("params-gru-missing-bhn", lambda: unroll(cell=GRU, params=edit(P_GRU, b_hn=None)), V, r"params .*missing \['b_hn'\]", None),
    ("params-mingru-shape", lambda: unroll(cell=MIN, params=edit(P_MIN, w_ih=np.zeros((F, H), np.float32)), method="associative"), V, r"params\['w_ih'\] must have shape \(7, 10\); got shape \(7, 5\)", (7, 5)),
    ("params-of-another-cell", lambda: unroll(params=BIG.init(KEY)), V, r"params\['b'\] must have shape \(20,\); got shape \(24,\)", None),
    ("recurrent-kernel-shape", lambda: unroll(cell=CELL._replace(step=CELL.step._replace(recurrent_kernel="b"))), V, r"recurrent_kernel='b' must name a matrix", None),
    # -- unroll: options --------------------------------------------------------------------
    ("cell-str", lambda: unroll(cell="lstm"), TE, r"cell must be an rnnscan.Cell or a function", None),
    ("reverse-str", lambda: unroll(reverse="yes"), TE, r"reverse must be a bool .*'yes'", None),
    ("reverse-int", lambda: unroll(reverse=1), TE, r"reverse must be a bool", None),
    ("time-major-none", lambda: unroll(time_major=None), TE, r"time_major must be a bool .*None", None),
    ("return-all-states-str", lambda: unroll(return_all_states="no"), TE, r"return_all_states must be a bool", None),
    ("unroll-0", lambda: unroll(unroll=0), V, r"unroll must be a positive int, True or None; got 0", None),
    ("unroll-str", lambda: unroll(unroll="8"), V, r"unroll must be a positive int, True or None; got '8'", None),
    ("unroll-float", lambda: unroll(unroll=2.5), V, r"unroll must be a positive int", None),
    ("remat-str", lambda: unroll(remat="everything"), V, r"remat must be False, True", None),
    ("remat-0", lambda: unroll(remat=0), V, r"remat must be a positive int; got 0", None),
    ("remat-negative", lambda: unroll(remat=-3), V, r"remat must be a positive int; got -3", None),
    ("remat-float", lambda: unroll(remat=2.5), V, r"remat must be False, True", None),
    ("method-unknown", lambda: unroll(method="fast"), V, r"method must be one of .*'fast'", None),
    ("method-int", lambda: unroll(method=3), V, r"method must be one of .*got 3", None),
    ("method-associative-lstm", lambda: unroll(method="associative"), V, r"method='associative' needs a cell that is linear", None),
    ("method-associative-unroll", lambda: unroll(cell=MIN, params=P_MIN, method="associative", unroll=4), V, r"unroll=4 .*method='associative'", None),
    ("method-associative-remat", lambda: unroll(cell=MIN, params=P_MIN, method="associative", remat=True), V, r"remat=True .*method='associative'", None),
    ("method-kernel-gru", lambda: unroll(cell=GRU, params=P_GRU, method="kernel"), V, r"method='kernel' cannot run this call", None),
    # -- truncated_unroll, dynamic_rnn, make_plan ---------------------------------------------
    ("truncated-chunk-0", lambda: rs.truncated_unroll(CELL, P, XS, 0), V, r"chunk_size must be a positive int; got 0", None),
    ("truncated-chunk-float", lambda: rs.truncated_unroll(CELL, P, XS, 2.5), TE, r"chunk_size must be a positive int", None),
    ("truncated-chunk-bool", lambda: rs.truncated_unroll(CELL, P, XS, True), TE, r"chunk_size must be a positive int", None),
    ("truncated-remat-int", lambda: rs.truncated_unroll(CELL, P, XS, 3, remat=2), V, r"remat must be False, True, 'carry' or 'dots' in truncated_unroll", None),
    ("truncated-xs-rank-2", lambda: rs.truncated_unroll(CELL, P, ones(B, T), 3), V, r"xs must have shape .*got shape \(4, 10\)", (4, 10)),
    ("truncated-reverse-str", lambda: rs.truncated_unroll(CELL, P, XS, 3, reverse="no"), TE, r"reverse must be a bool", None),
    ("truncated-params", lambda: rs.truncated_unroll(CELL, edit(P, b=None), XS, 3), V, r"params .*missing \['b'\]", None),
    ("dynamic-inputs-rank-2", lambda: rs.dynamic_rnn(CELL, P, ones(B, T)), V, r"inputs must have shape \(\*batch, time, \.\.\.\); got shape \(4, 10\)", (4, 10)),
    ("dynamic-inputs-rank-2-tm", lambda: rs.dynamic_rnn(CELL, P, ones(T, B), time_major=True), V, r"inputs must have shape \(time, \*batch, \.\.\.\); got shape \(10, 4\)", (10, 4)),
    ("dynamic-sequence-length-float", lambda: rs.dynamic_rnn(CELL, P, XS, sequence_length=np.ones(B)), TE, r"sequence_length must have an integer dtype", None),
    ("dynamic-sequence-length-above", lambda: rs.dynamic_rnn(CELL, P, XS, sequence_length=[1, 2, 3, 11]), V, r"sequence_length must lie in \[0, time\]", None),
    ("dynamic-time-major-str", lambda: rs.dynamic_rnn(CELL, P, XS, time_major="no"), TE, r"time_major must be a bool", None),
    ("plan-abstract-rank-2", lambda: make_plan(CELL, P, jax.ShapeDtypeStruct((B, T), jnp.float32)), V, r"xs must have shape .*got shape \(4, 10\)", (4, 10)),
    ("plan-method", lambda: make_plan(CELL, P, XS, method="newtonian"), V, r"method must be one of", None),
    ("plan-reverse", lambda: make_plan(CELL, P, XS, reverse="yes"), TE, r"reverse must be a bool", None),
    ("plan-params-shape", lambda: make_plan(CELL, edit(P, b=np.zeros(3, np.float32)), XS), V, r"params\['b'\] must have shape \(20,\); got shape \(3,\)", (3,)),
    # -- layers -------------------------------------------------------------------------------
    ("layer-reverse-str", lambda: rs.layer(CELL, reverse="yes"), TE, r"reverse must be a bool .*'yes'", None),
    ("layer-time-major-none", lambda: rs.layer(CELL, time_major=None), TE, r"time_major must be a bool .*None", None),
    ("layer-input-dropout-1", lambda: rs.layer(CELL, input_dropout=1.0), V, r"input_dropout must lie in \[0, 1\); got 1.0", None),
    ("layer-state-dropout-negative", lambda: rs.layer(CELL, state_dropout=-0.1), V, r"state_dropout must lie in \[0, 1\)", None),
    ("layer-output-dropout-str", lambda: rs.layer(CELL, output_dropout="0.5"), TE, r"output_dropout must be a float in \[0, 1\)", None),
    ("layer-unknown-option", lambda: rs.layer(CELL, foo=1), TE, r"unexpected keyword arguments \['foo'\]", None),
    ("layer-unroll-0", lambda: rs.layer(CELL, unroll=0), V, r"unroll must be a positive int", None),
    ("layer-remat-bad", lambda: rs.layer(CELL, remat="all"), V, r"remat must be False, True", None),
    ("layer-method-bad", lambda: rs.layer(CELL, method="fast"), V, r"method must be one of", None),
    ("layer-cell-int", lambda: rs.layer(3), TE, r"cell must be an rnnscan.Cell or a function", None),
    ("layer-bare-init", lambda: rs.layer(lambda p, h, x: (h, h)).init(KEY), TE, r"cell is a bare step function and has no init", None),
    ("layer-apply-rank-2", lambda: rs.layer(CELL).apply(P, ones(B, T)), V, r"xs must have shape \(\*batch, time, \.\.\.\); got shape \(4, 10\)", (4, 10)),
    ("layer-apply-rank-2-tm", lambda: rs.layer(CELL, time_major=True).apply(P, ones(T, B)), V, r"xs must have shape \(time, \*batch, \.\.\.\); got shape \(10, 4\)", (10, 4)),
    ("layer-apply-lengths", lambda: rs.layer(CELL).apply(P, XS, lengths=[1, 2]), V, r"lengths must have shape \(batch,\) = \(4,\); got shape \(2,\)", (2,)),
    ("layer-apply-params", lambda: rs.layer(CELL).apply(edit(P, w_ih=None), XS), V, r"params .*missing \['w_ih'\]", None),
    ("layer-dropout-params", lambda: rs.layer(CELL, input_dropout=0.5).apply(edit(P, b=np.zeros(1, np.float32)), XS, key=KEY), V, r"params\['b'\] must have shape \(20,\); got shape \(1,\)", (1,)),
    ("layer-dropout-key-int", lambda: rs.layer(CELL, input_dropout=0.5).apply(P, XS, key=0), TE, r"key must be a jax.random key; got int", None),
    ("layer-dropout-rank-2", lambda: rs.layer(CELL, state_dropout=0.5).apply(P, ones(B, T), key=KEY), V, r"xs must have shape .*got shape \(4, 10\)", (4, 10)),
    ("bi-merge", lambda: rs.bidirectional(CELL, CELL, merge="max"), V, r"merge must be one of .*'max'", None),
    ("bi-cell-bw", lambda: rs.bidirectional(CELL, 3), TE, r"cell_bw must be an rnnscan.Cell", None),
    ("bi-cell-fw", lambda: rs.bidirectional("lstm", CELL), TE, r"cell_fw must be an rnnscan.Cell", None),
    ("bi-time-major-str", lambda: rs.bidirectional(CELL, CELL, time_major="no"), TE, r"time_major must be a bool", None),
    ("bi-dropout", lambda: rs.bidirectional(CELL, CELL, input_dropout=2.0), V, r"input_dropout must lie in \[0, 1\)", None),
    ("bi-sum-sizes", lambda: rs.bidirectional(CELL, BIG, merge="sum").apply((P, BIG.init(KEY)), XS), V,
     r"merge='sum' .*same shape.*\(4, 10, 5\).*\(4, 10, 6\)", (4, 10, 5)),
    ("bi-params-not-pair", lambda: rs.bidirectional(CELL, CELL).apply(P, XS), TE, r"params of a bidirectional layer must be a pair", None),
    ("bi-state-not-pair", lambda: rs.bidirectional(CELL, CELL).apply((P, P), XS, initial_state=CELL.initial_state(P, (B,))), TE, r"initial_state of a bidirectional layer must be a pair", None),
    ("bi-bw-params", lambda: rs.bidirectional(CELL, BIG).apply((P, P), XS), V, r"^the backward direction: params\['b'\] must have shape \(24,\); got shape \(20,\)", None),
    ("bi-fw-features", lambda: rs.bidirectional(rs.lstm(F + 1, H), CELL).apply((rs.lstm(F + 1, H).init(KEY), P), XS), V, r"^the forward direction: .*must have 8 features .*got 7", None),
    ("bi-rank-2", lambda: rs.bidirectional(CELL, CELL).apply((P, P), ones(B, T)), V, r"xs must have shape .*got shape \(4, 10\)", (4, 10)),
    ("bi-layer-bw-rank-2", lambda: rs.bidirectional(CELL, rs.stack([CELL])).apply((P, (P,)), ones(B, T)), V, r"xs must have shape .*got shape \(4, 10\)", (4, 10)),
    ("stack-empty", lambda: rs.stack([]), V, r"layers_or_cells must hold at least one", None),
    ("stack-a-cell", lambda: rs.stack(CELL), TE, r"layers_or_cells must be a list or tuple", None),
    ("stack-item", lambda: rs.stack([CELL, "x"]), TE, r"layers_or_cells\[1\] must be an rnnscan.Cell", None),
    ("stack-residual-length", lambda: rs.stack([CELL, CELL], residual=[True]), V, r"residual must be a bool or a sequence of 2 bools", None),
    ("stack-dropout", lambda: rs.stack([CELL, CELL], dropout=1.5), V, r"dropout must lie in \[0, 1\); got 1.5", None),
    ("stack-time-major", lambda: rs.stack([CELL], time_major=1), TE, r"time_major must be a bool", None),
    ("stack-sizes", lambda: rs.stack([CELL, rs.lstm(H + 1, H)]).apply((P, rs.lstm(H + 1, H).init(KEY)), XS), V,
     r"^layer 1 of the stack: .*must have 6 features .*got 5", None),
    ("stack-params-count", lambda: rs.stack([CELL, CELL]).apply((P,), XS), V, r"params of a stack of 2 layers must be a tuple of 2 entries; got 1", None),
    ("stack-state-count", lambda: rs.stack([CELL, CELL]).apply((P, P), XS, initial_state=(None,)), V, r"initial_state of a stack of 2 layers", None),
    ("stack-params-shape", lambda: rs.stack([CELL, CELL]).apply((P, BIG.init(KEY)), XS), V, r"^layer 1 of the stack: params\['b'\] must have shape \(20,\); got shape \(24,\)", None),
    ("stack-rank-2", lambda: rs.stack([CELL]).apply((P,), ones(B, T)), V, r"xs must have shape .*got shape \(4, 10\)", (4, 10)),
    ("stack-residual-strict", lambda: rs.stack([CELL, CELL], residual=[True, False]).apply((P, P), XS), V, r"residual: layer 0's output", None),
    # -- interop ------------------------------------------------------------------------------
    ("torch-module-str", lambda: from_torch("lstm"), TE, r"module must be a torch.nn.Module; got str", None),
    ("torch-module-linear", lambda: from_torch(torch_module("Linear", 3, 4)), TE, r"module must be torch.nn.LSTM, GRU, RNN or their \*Cell variants; got Linear", None),
    ("sd-mode", lambda: sd_call(mode="lstm"), V, r"mode must be one of .*'lstm'", None),
    ("sd-not-mapping", lambda: sd_call(sd=[1, 2]), TE, r"state_dict must be a mapping", None),
    ("sd-input-size-0", lambda: sd_call(input_size=0), V, r"input_size must be a positive int; got 0", None),
    ("sd-hidden-str", lambda: sd_call(hidden_size="5"), TE, r"hidden_size must be a positive int", None),
    ("sd-num-layers-0", lambda: sd_call(num_layers=0), V, r"num_layers must be a positive int; got 0", None),
    ("sd-proj-negative", lambda: sd_call(proj_size=-1), V, r"proj_size must be a non-negative int; got -1", None),
    ("sd-proj-gru", lambda: sd_call(mode="GRU", proj_size=2), V, r"proj_size .*LSTM", None),
    ("sd-bidirectional-str", lambda: sd_call(bidirectional="yes"), TE, r"bidirectional must be a bool", None),
    ("sd-batch-first-none", lambda: sd_call(batch_first=None), TE, r"batch_first must be a bool", None),
    ("sd-bias-int", lambda: sd_call(bias=0), TE, r"bias must be a bool", None),
    ("sd-dropout", lambda: sd_call(dropout=2.0), V, r"dropout must lie in \[0, 1\)", None),
    ("sd-missing", lambda: sd_call(sd=edit(SD, weight_hh_l0=None)), V, r"state_dict has no 'weight_hh_l0'", None),
    ("sd-weight-shape", lambda: sd_call(sd=edit(SD, weight_ih_l0=np.zeros((4 * H, F + 1), np.float32))), V,
     r"state_dict\['weight_ih_l0'\] must have shape \(20, 7\); got shape \(20, 8\)", (20, 8)),
    ("sd-bias-shape", lambda: sd_call(sd=edit(SD, bias_hh_l0=np.zeros(4 * H + 1, np.float32))), V, r"state_dict\['bias_hh_l0'\] must have shape \(20,\); got shape \(21,\)", (21,)),
    ("sd-hidden-wrong", lambda: sd_call(hidden_size=H + 1), V, r"state_dict\['weight_ih_l0'\] must have shape \(24, 7\); got shape \(20, 7\)", (20, 7)),
    ("sd-bias-false-has-biases", lambda: sd_call(bias=False), V, r"state_dict has .*not .*\['bias_hh_l0', 'bias_ih_l0'\]", None),
    ("sd-extra-layer", lambda: sd_call(sd=SD | {"weight_ih_l1": np.zeros((4 * H, H))}), V, r"state_dict has .*\['weight_ih_l1'\]", None),
    ("sd-gru-shape", lambda: sd_call(mode="GRU"), V, r"state_dict\['weight_ih_l0'\] must have shape \(15, 7\); got shape \(20, 7\)", (20, 7)),
    ("tf1-kind", lambda: from_tf1("LSTM", TF_LSTM), V, r"kind must be one of .*'LSTM'", None),
    ("tf1-variables-list", lambda: from_tf1("lstm", [1, 2]), TE, r"variables must be a mapping", None),
    ("tf1-missing", lambda: from_tf1("lstm", edit(TF_LSTM, bias=None)), V, r"missing \['bias'\]", None),
    ("tf1-unknown", lambda: from_tf1("rnn", TF_RNN | {"extra": np.zeros(1)}), V, r"unexpected \['extra'\]", None),
    ("tf1-lstm-width", lambda: from_tf1("lstm", edit(TF_LSTM, kernel=np.zeros((F + H, 22), np.float32))), V, r"kernel must have 4 \* hidden_size columns .*got shape \(12, 22\)", (12, 22)),
    ("tf1-lstm-bias", lambda: from_tf1("lstm", edit(TF_LSTM, bias=np.zeros(4 * H - 4, np.float32))), V, r"bias must have shape \(20,\); got shape \(16,\)", (16,)),
    ("tf1-lstm-rows", lambda: from_tf1("lstm", edit(TF_LSTM, kernel=np.zeros((3, 4 * H), np.float32))), V, r"kernel must have .*rows.*got shape \(3, 20\)", (3, 20)),
    ("tf1-lstm-rank", lambda: from_tf1("lstm", edit(TF_LSTM, kernel=np.zeros(20, np.float32))), V, r"kernel must be a matrix; got shape \(20,\)", (20,)),
    ("tf1-lstm-partial-peepholes", lambda: from_tf1("lstm", TF_LSTM | {"w_i_diag": np.zeros(H)}), V, r"w_f_diag.*w_o_diag|peephole", None),
    ("tf1-lstm-peephole-shape", lambda: from_tf1("lstm", TF_LSTM | {g: np.zeros(H + 1) for g in ("w_i_diag", "w_f_diag", "w_o_diag")}), V, r"w_i_diag must have shape \(5,\); got shape \(6,\)", (6,)),
    ("tf1-lstm-projection-rows", lambda: from_tf1("lstm", edit(TF_LSTM, kernel=np.zeros((F + 3, 4 * H))) | {"projection/kernel": np.zeros((H + 1, 3))}), V,
     r"projection/kernel must have shape \(5, 3\); got shape \(6, 3\)", (6, 3)),
    ("tf1-lstm-cell-clip", lambda: from_tf1("lstm", TF_LSTM, cell_clip=-1.0), V, r"cell_clip must be a non-negative number", None),
    ("tf1-gru-shapes", lambda: from_tf1("gru", edit(TF_GRU, **{"candidate/kernel": np.zeros((F + H + 1, H))})), V, r"candidate/kernel must have shape \(12, 5\); got shape \(13, 5\)", (13, 5)),
    ("tf1-gru-rank", lambda: from_tf1("gru", edit(TF_GRU, **{"candidate/kernel": np.zeros(12)})), V, r"candidate/kernel must be a matrix; got shape \(12,\)", (12,)),
    ("tf1-gru-bias", lambda: from_tf1("gru", edit(TF_GRU, **{"gates/bias": np.zeros(3)})), V, r"gates/bias must have shape \(10,\); got shape \(3,\)", (3,)),
    ("tf1-rnn-square", lambda: from_tf1("rnn", edit(TF_RNN, kernel=np.zeros((H, H)))), V, r"kernel must have .*rows.*got shape \(5, 5\)", (5, 5)),
    ("tf1-rnn-bias", lambda: from_tf1("rnn", edit(TF_RNN, bias=np.zeros(H + 2))), V, r"bias must have shape \(5,\); got shape \(7,\)", (7,)),
    ("tf1-activation", lambda: from_tf1("rnn", TF_RNN, activation="swish"), V, r"activation must be one of", None),
    ("torch-state-rank", lambda: torch_state(np.zeros((B, H))), V, r"h0 must have shape \(num_layers \* num_directions, batch, size\).*got \(4, 5\)", (4, 5)),
    ("torch-state-layers", lambda: torch_state(np.zeros((1, B, H)), num_layers=2), V, r"h0 must have shape .*= 2; got \(1, 4, 5\)", (1, 4, 5)),
    ("torch-state-c0-batch", lambda: torch_state(np.zeros((1, B, H)), np.zeros((1, B + 1, H))), V, r"c0 must have shape \(1, 4, hidden_size\).*got \(1, 5, 5\)", (1, 5, 5)),
    ("torch-state-num-layers-0", lambda: torch_state(np.zeros((1, B, H)), num_layers=0), V, r"num_layers must be a positive int; got 0", None),
    ("torch-state-bidirectional-str", lambda: torch_state(np.zeros((2, B, H)), bidirectional="yes"), TE, r"bidirectional must be a bool", None),
    ("to-torch-state-layers", lambda: to_torch_state(CELL.initial_state(P, (B,)), num_layers=2), V, r"state must be a tuple of 2 entries \(one per layer\)", None),
    ("to-torch-state-pair", lambda: to_torch_state((CELL.initial_state(P, (B,)),), num_layers=1, bidirectional=True), V, r"state must be a \(fw, bw\) pair", None),
    ("to-torch-state-num-layers", lambda: to_torch_state(CELL.initial_state(P, (B,)), num_layers=-1), V, r"num_layers must be a positive int", None),
    # -- train, tasks ---------------------------------------------------------------------------
    ("init-state-key-int", lambda: train.init_state({"w": jnp.ones(2)}, optax.sgd(0.1), 0), TE, r"key must be a jax.random key.*got int", None),
    ("init-state-optimizer", lambda: train.init_state({"w": jnp.ones(2)}, "adam", KEY), TE, r"optimizer must be an optax.GradientTransformation.*got str", None),
    ("train-step-loss", lambda: train.make_train_step("loss", optax.sgd(0.1)), TE, r"loss_fn must be callable; got str", None),
    ("train-step-optimizer", lambda: train.make_train_step(lambda p, b, k: 0.0, optax.sgd), TE, r"optimizer must be an optax.GradientTransformation", None),
    ("train-step-clip-0", lambda: train.make_train_step(lambda p, b, k: 0.0, optax.sgd(0.1), clip_norm=0), V, r"clip_norm must be a positive finite number or None; got 0", None),
    ("train-step-clip-str", lambda: train.make_train_step(lambda p, b, k: 0.0, optax.sgd(0.1), clip_norm="1"), V, r"clip_norm must be a positive finite number or None", None),
    ("eval-step-loss", lambda: train.make_eval_step(None), TE, r"loss_fn must be callable; got NoneType", None),
    ("fit-steps-negative", lambda: fit(steps=-5), V, r"steps must be a non-negative integer, the total number of updates; got -5", None),
    ("fit-steps-float", lambda: fit(steps=2.5), V, r"steps must be a non-negative integer", None),
    ("fit-log-every-0", lambda: fit(log_every=0), V, r"log_every must be a positive int; got 0", None),
    ("fit-checkpoint-every-0", lambda: fit(checkpoint_every=0), V, r"checkpoint_every must be a positive int", None),
    ("fit-eval-every-negative", lambda: fit(eval_every=-1), V, r"eval_every must be a positive int", None),
    ("fit-batches-list", lambda: fit(batches=[{"x": 1}]), TE, r"batches must be callable", None),
    ("fit-train-step", lambda: fit(train_step=None), TE, r"train_step must be callable", None),
    ("fit-state", lambda: fit(state={"params": 1}), TE, r"state must be a TrainState", None),
    ("fit-eval-without-batches", lambda: fit(eval_step=lambda p, b: 0.0), V, r"eval_step needs eval_batches", None),
    ("fit-tokens", lambda: fit(tokens_per_step=0), V, r"tokens_per_step must be a positive int", None),
    ("model-input-size", lambda: train.sequence_model(CELL, 0, 3), V, r"input_size must be a positive int; got 0", None),
    ("model-output-size", lambda: train.sequence_model(CELL, F, -1), V, r"output_size must be a positive int; got -1", None),
    ("model-core", lambda: train.sequence_model("lstm", F, 3), TE, r"core must be an rnnscan.Cell", None),
    ("model-bare-step", lambda: train.sequence_model(lambda p, h, x: (h, x), F, 3), TE, r"sequence_model: core must be a Layer or a Cell with init and initial_state .* got a bare step function", None),
    ("model-cell-no-init", lambda: train.sequence_model(CELL._replace(init=None), F, 3), TE, r"core must be a Layer or a Cell with init .* got a Cell without init", None),
    ("model-input-mismatch", lambda: train.sequence_model(CELL, F + 1, 3).init(KEY), V, r"must have 7 features .*got 8", None),
    ("model-apply-rank-2", lambda: train.sequence_model(CELL, F, 3).apply(train.sequence_model(CELL, F, 3).init(KEY), ones(B, T)), V, r"xs must have shape .*got shape \(4, 10\)", (4, 10)),
    ("checkpoints-keep-1", lambda: train.Checkpoints("/tmp/rnnscan-bad-input-ckpt", max_to_keep=1), V, r"max_to_keep must be at least 2; got 1", None),
    ("checkpoints-keep-str", lambda: train.Checkpoints("/tmp/rnnscan-bad-input-ckpt", max_to_keep="3"), TE, r"max_to_keep must be an int", None),
    ("checkpoints-directory-none", lambda: train.Checkpoints(None), TE, r"directory must be a path; got NoneType", None),
    ("data-parallel-empty", lambda: train.data_parallel([]), V, r"devices must hold at least one device", None),
    ("data-parallel-str", lambda: train.data_parallel("cpu"), TE, r"devices must be a sequence of jax devices", None),
    ("shard-scalar", lambda: train.data_parallel().shard({"x": np.float32(1)}), V, r"batch size .*shape \(\)", None),
    ("tasks-get", lambda: tasks.get("nope"), V, r"unknown task 'nope'; expected one of \['adding', 'charlm', 'copy'\]", None),
    ("copy-seq-len", lambda: copy.batch(0, 0, B, 2), V, r"seq_len must be at least 3; got 2", None),
    ("copy-batch-size", lambda: copy.batch(0, 0, -1, 9), V, r"batch_size must be at least 1; got -1", None),
    ("adding-seq-len", lambda: adding.batch(0, 0, B, 1), V, r"seq_len must be at least 2; got 1", None),
    ("adding-seq-len-float", lambda: adding.batch(0, 0, B, 9.5), TE, r"seq_len must be an int", None),
    ("charlm-seq-len", lambda: charlm.batch(0, 0, B, 0), V, r"seq_len must be at least 1; got 0", None),
    ("charlm-split", lambda: charlm.batch(0, 0, B, 8, "test"), V, r"split must be one of \['eval', 'train'\]; got 'test'", None),
    ("charlm-seed", lambda: copy.batch(-1, 0, B, 9), V, r"seed must be at least 0; got -1", None),
    ("charlm-encode", lambda: charlm.encode("\u00e9t\u00e9"), V, r"string .*not in the charlm vocabulary", None),
    ("charlm-sample-length", lambda: charlm.sample(rs.rnn(4, 4), None, "E", 0, KEY), V, r"length must be a positive int; got 0", None),
    ("charlm-sample-prompt", lambda: charlm.sample(None, None, "", 5, KEY), V, r"prompt must hold at least one character", None),
]


def swapped(shape: tuple) -> tuple:
    return (shape[1], shape[0]) + shape[2:]


@pytest.mark.parametrize("call, error, match, shape", [r[1:] for r in ROWS], ids=[r[0] for r in ROWS])
def test_bad_input(call, error, match, shape):
    with pytest.raises((ValueError, TypeError, ModuleNotFoundError)) as info:
        call()
    if isinstance(info.value, ModuleNotFoundError):
        pytest.skip(f"needs {info.value.name}, not installed")
    message = str(info.value)
    assert isinstance(info.value, error), f"{info.type.__name__}: {message}"
    assert re.search(match, message), message
    if shape is not None:
        assert str(shape) in message, message
        if len(shape) >= 2 and swapped(shape) != shape:
            assert str(swapped(shape)) not in message, message


def corrupt_run_json(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "run.json").write_text("{not json")
    return ["train", "--out", str(out)]


def run_json_without_config(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "run.json").write_text(json.dumps({"command": []}))
    return ["train", "--out", str(out)]


def out_under_a_file(tmp_path):
    (tmp_path / "file").write_text("")
    return ["train", "--task", "copy", "--out", str(tmp_path / "file" / "run")]


def out_is_a_file(tmp_path):
    (tmp_path / "file").write_text("")
    return ["train", "--out", str(tmp_path / "file")]


def args(*argv):
    return lambda tmp_path: ["train", *argv, "--out", str(tmp_path / "run")]


CLI_ROWS = [
    ("cli-task", args("--task", "nope"), r"--task: invalid choice: 'nope'"),
    ("cli-cell", args("--cell", "transformer"), r"--cell: invalid choice"),
    ("cli-hidden-0", args("--hidden", "0"), r"--hidden: must be a positive integer, got 0"),
    ("cli-layers-negative", args("--layers", "-1"), r"--layers: must be a positive integer"),
    ("cli-batch-size-word", args("--batch-size", "many"), r"--batch-size: expected a positive integer"),
    ("cli-steps-0", args("--steps", "0"), r"--steps: must be a positive integer"),
    ("cli-lr-nan", args("--lr", "nan"), r"--lr: must be a positive finite number"),
    ("cli-seed-negative", args("--seed", "-1"), r"--seed: must be a non-negative integer"),
    ("cli-seq-len-copy", args("--task", "copy", "--seq-len", "2"), r"--task copy: seq_len must be at least 3"),
    ("cli-corrupt-run-json", corrupt_run_json, r"--out .*run.json .*not .*JSON"),
    ("cli-run-json-without-config", run_json_without_config, r"--out .*run.json .*config"),
    ("cli-out-cannot-create", out_under_a_file, r"--out .*cannot create the run directory"),
    ("cli-out-is-a-file", out_is_a_file, r"--out .* is a file, not a run directory"),
    ("cli-bench-dtype", lambda tmp_path: ["bench", "--dtype", "float7"], r"--dtype: invalid choice"),
    ("cli-bench-suite", lambda tmp_path: ["bench", "--suite", "nope"], r"--suite: invalid choice"),
]


@pytest.mark.parametrize("argv, match", [r[1:] for r in CLI_ROWS], ids=[r[0] for r in CLI_ROWS])
def test_bad_command_line(argv, match, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit:
        main(argv(tmp_path))
    err = capsys.readouterr().err
    assert exit.value.code == 2, err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("rnnscan") and ": error: " in last, err
    assert re.search(match, last), err


def test_the_table_has_at_least_150_rows():
    assert len(ROWS) + len(CLI_ROWS) >= 150
    assert len({r[0] for r in ROWS + CLI_ROWS}) == len(ROWS) + len(CLI_ROWS)


# -- valid inputs at the edges ------------------------------------------------------------


@pytest.mark.parametrize("run", [
    lambda xs: rs.unroll(CELL, P, xs, remat=3),
    lambda xs: rs.unroll(CELL, P, xs),
    lambda xs: rs.truncated_unroll(CELL, P, xs, 3),
    lambda xs: rs.layer(CELL, remat=3).apply(P, xs),
    lambda xs: rs.unroll(MIN, P_MIN, xs, method="associative"),
], ids=["remat-k", "scan", "truncated", "layer-remat-k", "associative"])
def test_an_empty_batch_gives_empty_outputs(run):
    ys, state = run(np.ones((0, T, F), np.float32))
    assert ys.shape[:2] == (0, T)
    assert all(leaf.shape[0] == 0 for leaf in jax.tree_util.tree_leaves(state))


def test_lengths_and_resets_may_be_lists():
    lengths, resets = [T, 3, 0, 5], np.zeros((B, T), bool)
    resets[1, 4] = True
    expected = unroll(lengths=np.array(lengths), resets=resets)
    got = unroll(lengths=lengths, resets=resets.tolist())
    jax.tree_util.tree_map(np.testing.assert_allclose, got, expected)


def test_a_tuple_xs_is_a_pytree_for_a_cell_that_reads_one():
    def step(params, h, x):
        a, b = x
        return h + a.sum(-1, keepdims=True) + b, h

    ys, h = rs.unroll(step, None, (XS, np.ones((B, T, 1), np.float32)), initial_state=jnp.zeros((B, 1)))
    np.testing.assert_allclose(h, np.full((B, 1), T * (F + 1)))


def test_a_leaf_with_extra_axes_is_accepted():
    # A pytree's leaf may have several feature axes: the batch axes are those of
    # its leaf with the fewest (here a per-step scalar, so one).
    step = lambda p, h, x: (h + x[0].sum((-1, -2))[:, None] + x[1][:, None], h)
    xs = (np.ones((B, T, 2, 3), np.float32), np.ones((B, T), np.float32))
    ys, h = rs.unroll(step, None, xs, initial_state=jnp.zeros((B, 1)))
    np.testing.assert_allclose(h, np.full((B, 1), T * 7))
