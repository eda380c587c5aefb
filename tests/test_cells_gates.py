"""Cell options that TF1 and Keras users reach for: `cell_clip=0` (TF1's
testCellClipping) and the gates' activation (`gate_activation`, Keras's
`recurrent_activation`), against the equations in numpy unrolled in a loop."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnscan as rs
from rnnscan.cell import split_step
from tests import reference as ref
from tests.test_unroll import LENGTHS, randomize, to_numpy

B, T, F, H = 4, 7, 3, 5
XS = np.random.default_rng(0).normal(size=(B, T, F)).astype(np.float32) * 2


def unrolled_against_loop(cell, step, **options):
    params = randomize(cell.init(jax.random.key(0)), scale=1.0)
    ys, state = rs.unroll(cell, params, XS, lengths=LENGTHS, **options)
    h0 = to_numpy(cell.initial_state(params, (B,)))
    h0 = tuple(h0) if isinstance(h0, tuple) else h0
    want_ys, want_state, _ = ref.loop_unroll(functools.partial(step, to_numpy(params)), XS, h0,
                                             lengths=LENGTHS, reverse=options.get("reverse", False))
    np.testing.assert_allclose(ys, want_ys, rtol=2e-6, atol=2e-6)
    for got, want in zip(jax.tree_util.tree_leaves(state), jax.tree_util.tree_leaves(want_state)):
        np.testing.assert_allclose(got, want, rtol=2e-6, atol=2e-6)
    return ys, state


@pytest.mark.parametrize("proj", [False, True])
def test_cell_clip_zero_clips_to_zero(proj):
    """TF1 accepts cell_clip=0 (its testCellClipping expects all zeros): c is clipped to
    [0, 0], so every output is 0 (and the projection too)."""
    extra = dict(proj_size=2, proj_clip=0.0) if proj else {}
    cell = rs.lstm(F, H, cell_clip=0.0, **extra)
    ys, state = unrolled_against_loop(cell, functools.partial(
        ref.lstm_step, cell_clip=0.0, proj_clip=0.0 if proj else None))
    assert not np.any(ys) and not np.any(state.c) and not np.any(state.h)


@pytest.mark.parametrize("gate", ["hard_sigmoid", "sigmoid"])
@pytest.mark.parametrize("kind", ["lstm", "gru", "gru_tf1"])
def test_gate_activation_matches_a_loop(kind, gate):
    if kind == "lstm":
        cell = rs.lstm(F, H, gate_activation=gate)
        step = functools.partial(ref.lstm_step, gate=gate)
    else:
        reset_after = kind == "gru"
        cell = rs.gru(F, H, reset_after=reset_after, gate_activation=gate)
        step = functools.partial(ref.gru_step, reset_after=reset_after, gate=gate)
    unrolled_against_loop(cell, step)
    unrolled_against_loop(cell, step, reverse=True, method="scan")


def test_hard_sigmoid_is_keras_3s():
    """relu6(x + 3) / 6: 0 at -3 and below, 1 at 3 and above, x / 6 + 1/2 between."""
    x = np.array([-5.0, -3.0, -1.5, 0.0, 2.0, 3.0, 4.0], np.float32)
    cell = rs.gru(1, 1, gate_activation="hard_sigmoid")
    # w_ih's r and z columns carry x; n's pre-activation is 0 (tanh 0 = 0): h' = z * h.
    params = {"w_ih": jnp.array([[0.0, 1.0, 0.0]]), "w_hh": jnp.zeros((1, 3)),
              "b": jnp.zeros(3), "b_hn": jnp.zeros(1)}
    h, _ = cell.step(params, jnp.ones((7, 1)), x[:, None])
    np.testing.assert_allclose(h[:, 0], np.clip(x / 6 + 0.5, 0, 1), atol=1e-7)


@pytest.mark.parametrize("make", [rs.lstm, rs.gru])
def test_other_gates_never_take_the_kernel(make):
    # 8 units: a size the kernel takes with sigmoid gates.
    assert split_step(make(F, 8)).kernel is not None
    cell = make(F, 8, gate_activation="hard_sigmoid")
    assert split_step(cell).kernel is None
    with pytest.raises(ValueError, match="method='kernel' cannot run this call: the cell has no "
                                         "compiled kernel"):
        rs.unroll(cell, cell.init(jax.random.key(0)), jnp.ones((B, T, F)), method="kernel")


def test_gate_activation_is_part_of_the_cell():
    hard = dict(gate_activation="hard_sigmoid")
    assert rs.lstm(F, H, **hard) is rs.lstm(F, H, **hard)
    assert rs.gru(F, H, gate_activation="hard_sigmoid") != rs.gru(F, H)


@pytest.mark.parametrize("make", [rs.lstm, rs.gru])
@pytest.mark.parametrize("value", ["hard_tanh_ish", jax.nn.sigmoid, None])
def test_gate_activation_must_be_a_known_name(make, value):
    with pytest.raises(ValueError, match=r"gate_activation must be one of .*'hard_sigmoid'.*got"):
        make(F, H, gate_activation=value)
