"""Linear recurrences: minGRU, minLSTM and the LRU against their published
equations, and `unroll(method="associative")` against the sequential scan."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import rnnscan as rs
from rnnscan.cell import LinearRecurrence
from rnnscan.cells.linear_recurrent import linear_cell
from rnnscan.tuning import TABLE
from rnnscan.unroll import make_plan

B, T, F, H = 4, 9, 3, 5
LENGTHS = np.array([T, 0, 4, 1], np.int32)
RESETS = np.zeros((B, T), bool)
RESETS[0, [0, T - 1]] = True  # the first and last steps of a full row
RESETS[2, [2, T - 1]] = True  # the last step is past row 2's length: changes nothing
RESETS[3, T - 1] = True  # past row 3's length: changes nothing
RESETS[1, 3] = True  # on a row of length 0: changes nothing


# ---- the published equations, in numpy -------------------------------------

def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def g(x):
    """Feng et al. 2024, appendix B: keeps the candidate state positive."""
    return np.where(x >= 0, x + 0.5, sigmoid(x))


def mingru_step(p, h, x):
    """Feng et al. 2024, section 3.1, with appendix B's g for the log-space version:
    z = σ(Linear(x)), h̃ = g(Linear(x)), h = (1 - z) h + z h̃."""
    k_z, k_h = np.split(x @ p["w_ih"] + p["b"], 2, axis=-1)
    z = sigmoid(k_z)
    h = (1 - z) * h + z * g(k_h)
    return h, h


def minlstm_step(p, h, x):
    """Feng et al. 2024, section 3.2 (length independence), with appendix B's g:
    f, i = σ(Linear(x)), h̃ = g(Linear(x)), h = f / (f + i) h + i / (f + i) h̃."""
    k_f, k_i, k_h = np.split(x @ p["w_ih"] + p["b"], 3, axis=-1)
    f, i = sigmoid(k_f), sigmoid(k_i)
    h = f / (f + i) * h + i / (f + i) * g(k_h)
    return h, h


def lru_step(p, h, x):
    """Orvieto et al. 2023, eq. (1) with the exponential parameterisation of §3.3:
    λ = exp(-exp(ν) + i exp(θ)), h = λ h + γ B x, y = Re(C h) + D x."""
    lam = np.exp(-np.exp(p["nu_log"]) + 1j * np.exp(p["theta_log"]))
    b_mat = (p["B_re"] + 1j * p["B_im"]).T  # (N, H_in): B x
    c_mat = (p["C_re"] + 1j * p["C_im"]).T  # (H_out, N): C h
    h = lam * h + np.exp(p["gamma_log"]) * (b_mat @ x)
    return h, (c_mat @ h).real + p["D"] * x


# One cell object per configuration: tests that run it on the same shapes and
# options then share the compiled scan.
CELLS = {
    "mingru": (functools.cache(lambda **kw: rs.mingru(F, H, **kw)), mingru_step),
    "minlstm": (functools.cache(lambda **kw: rs.minlstm(F, H, **kw)), minlstm_step),
    "lru": (functools.cache(lambda **kw: rs.lru(F, H, **kw)), lru_step),
}


def randomize(tree, seed, scale=0.5):
    """Every leaf random, so each param (and each state entry, of either sign) matters."""
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    keys = jax.random.split(jax.random.key(seed), len(leaves))

    def draw(k, x):
        if jnp.iscomplexobj(x):
            re, im = (jax.random.normal(k, x.shape) for k in jax.random.split(k))
            return (scale * (re + 1j * im)).astype(x.dtype)
        return scale * jax.random.normal(k, x.shape, x.dtype)

    return jax.tree_util.tree_unflatten(treedef, [draw(k, x) for k, x in zip(keys, leaves)])


def setup(name, seed=0, time=T, batch=B, **cell_kwargs):
    cell = CELLS[name][0](**cell_kwargs)
    params = randomize(cell.init(jax.random.key(seed)), seed)
    xs = np.random.default_rng(seed).normal(size=(batch, time, F)).astype(np.float32)
    h0 = randomize(cell.initial_state(params, (batch,)), seed + 1, scale=1.0)
    return cell, params, xs, h0


def assert_close(got, expected, tol=2e-5):
    got, expected = jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(expected)
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=tol, atol=tol)


# ---- the cells against their equations --------------------------------------

def python_loop(step, params, xs, h0):
    """The equations one row and one step at a time, in float64/complex128."""
    p = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), params)
    ys, finals = [], []
    for x_row, h in zip(np.asarray(xs, np.float64), np.asarray(h0)):
        h = h.astype(np.complex128 if np.iscomplexobj(h) else np.float64)
        row = []
        for x in x_row:
            h, y = step(p, h, x)
            row.append(y)
        ys.append(row)
        finals.append(h)
    return np.array(ys), np.array(finals)


@pytest.mark.parametrize("method", ["sequential", "associative"])
@pytest.mark.parametrize("name", list(CELLS))
def test_cell_matches_published_equations(name, method):
    cell, params, xs, h0 = setup(name)
    ys, final = rs.unroll(cell, params, xs, initial_state=h0, method=method)
    e_ys, e_final = python_loop(CELLS[name][1], params, xs, h0)
    assert_close(ys, e_ys, tol=1e-5)
    assert_close(final, e_final, tol=1e-5)


# ---- associative == sequential ---------------------------------------------

# Both with a random initial state, lengths 0 and T, and resets on the first and last steps.
OPTIONS = {
    "reverse": {"reverse": True, "lengths": LENGTHS, "resets": RESETS, "return_all_states": True},
    "time_major": {"time_major": True, "lengths": LENGTHS, "resets": RESETS,
                   "return_all_states": True},
}


def run(cell, params, xs, h0, method, option):
    kwargs = dict(option)
    if kwargs.get("time_major"):
        xs = np.swapaxes(xs, 0, 1)
        if "resets" in kwargs:
            kwargs["resets"] = kwargs["resets"].T
    return rs.unroll(cell, params, xs, initial_state=h0, method=method, **kwargs)


@pytest.mark.parametrize("option", list(OPTIONS))
@pytest.mark.parametrize("name", list(CELLS))
def test_associative_equals_sequential(name, option):
    cell, params, xs, h0 = setup(name)
    sequential = run(cell, params, xs, h0, "sequential", OPTIONS[option])
    associative = run(cell, params, xs, h0, "associative", OPTIONS[option])
    assert_close(associative, sequential, tol=1e-5)
    ys, final = associative[:2]
    ys = np.swapaxes(ys, 0, 1) if option == "time_major" else np.asarray(ys)
    assert not ys[1].any() and not ys[2, 4:].any()  # zero past the length
    np.testing.assert_array_equal(final[1], h0[1])  # length 0: the initial state


@pytest.mark.parametrize("name", list(CELLS))
def test_associative_gradients_equal_sequential(name):
    cell, params, xs, h0 = setup(name)

    def grads(method):
        def f(p, x, h):
            ys, final = rs.unroll(cell, p, x, initial_state=h, lengths=LENGTHS, resets=RESETS,
                                  reverse=True, method=method)
            return jnp.sum(jnp.sin(ys)) + jnp.sum(final.real + final.imag)
        return jax.jit(jax.grad(f, argnums=(0, 1, 2)))(params, xs, h0)

    assert_close(grads("associative"), grads("sequential"), tol=1e-5)


def test_log_space_gradients_numerically():
    """Reverse mode through the log-space scan (its custom logaddexp gradient
    included) against finite differences, in float64."""
    with jax.enable_x64(True):
        cell, params, xs, h0 = setup("mingru", time=5, param_dtype=jnp.float64)
        xs = xs.astype(np.float64)
        lengths, resets = np.array([5, 0, 2, 4]), np.zeros((B, 5), bool)
        resets[0, 2] = resets[3, 0] = True

        def f(p, x, h):
            ys, final = rs.unroll(cell, p, x, initial_state=h, lengths=lengths, resets=resets,
                                  method="associative")
            return jnp.sum(jnp.sin(ys)) + jnp.sum(final.real + final.imag)

        check_grads(f, (params, xs, h0), order=1, modes=("rev",), atol=1e-5, rtol=1e-5)


# ---- long sequences ----------------------------------------------------------

def long_run(name, grad=False, **dtypes):
    """minGRU / minLSTM / LRU at their own init over 16384 steps, associatively."""
    cell = CELLS[name][0](**dtypes)
    params = cell.init(jax.random.key(0))
    xs = jax.random.normal(jax.random.key(1), (2, 16384, F))

    def f(p):
        ys, final = rs.unroll(cell, p, xs, method="associative")
        return jnp.mean(ys.astype(jnp.float32) ** 2), (ys, final)

    out = jax.grad(f, has_aux=True)(params) if grad else f(params)[1]
    for leaf in jax.tree_util.tree_leaves(out):
        assert jnp.all(jnp.isfinite(leaf))
    return cell, params, xs, out


# minLSTM runs minGRU's scan code, with other gates: it is in the slow test below.
@pytest.mark.parametrize("name", ["mingru", "lru"])
def test_long_sequence_stays_finite(name):
    cell, params, xs, (ys, final) = long_run(name)
    ys_seq, final_seq = rs.unroll(cell, params, xs, method="sequential")
    assert_close((ys[:, -64:], final), (ys_seq[:, -64:], final_seq), tol=1e-4)
    _, _, _, (ys16, _) = long_run(name, compute_dtype=jnp.bfloat16)
    np.testing.assert_allclose(ys16[:, -64:], ys[:, -64:], atol=0.1, rtol=0.1)


@pytest.mark.slow
@pytest.mark.parametrize("dtypes", [{}, {"compute_dtype": jnp.bfloat16},
                                    {"param_dtype": jnp.bfloat16}])
@pytest.mark.parametrize("name", list(CELLS))
def test_long_sequence_gradients_stay_finite(name, dtypes):
    long_run(name, grad=True, **dtypes)


# ---- method ------------------------------------------------------------------

def test_method_errors():
    cell, params, xs, _ = setup("mingru")
    for bad in ("parallel", None, "Sequential"):
        with pytest.raises(ValueError, match="method"):
            rs.unroll(cell, params, xs, method=bad)
    gru = rs.gru(F, H)
    with pytest.raises(ValueError, match="method='associative'.*linear set"):
        rs.unroll(gru, gru.init(jax.random.key(0)), xs, method="associative")
    with pytest.raises(ValueError, match="remat"):
        rs.unroll(cell, params, xs, method="associative", remat=True)


def test_auto_picks_by_backend_and_length():
    linear, gru = rs.mingru(F, H), rs.gru(F, H)

    def strategy(cell, time, backend, method="auto", remat=False):
        params = jax.eval_shape(cell.init, jax.random.key(0))
        xs = jax.ShapeDtypeStruct((B, time, F), jnp.float32)
        return make_plan(cell, params, xs, method=method, remat=remat, backend=backend).strategy

    for backend, tuned in TABLE.items():
        threshold = tuned.associative_min_time
        if threshold is None:  # the sequential scan was faster at every length measured
            assert strategy(linear, 10**6, backend) == "scan"
            continue
        assert strategy(linear, threshold, backend) == "associative"
        assert strategy(linear, threshold - 1, backend) == "scan"
        assert strategy(linear, threshold, backend, remat=1) == "chunked"
        assert strategy(gru, threshold, backend) == "scan"
    assert strategy(linear, 10**6, None, method="sequential") == "scan"


def test_jit_and_vmap_compose():
    cell, params, xs, _ = setup("lru")
    f = jax.jit(jax.vmap(lambda x: rs.unroll(cell, params, x, lengths=LENGTHS,
                                            method="associative")[0]))
    assert_close(f(xs[None])[0], rs.unroll(cell, params, xs, lengths=LENGTHS)[0], tol=1e-5)


# ---- a user's own linear recurrence -------------------------------------------

def two_leaf_cell(wrong_shape=False):
    """A diagonal linear RNN with a pytree state of two leaves of different sizes."""

    def coefficients(p, x):
        a = (jax.nn.sigmoid(x[..., :2] * p["a"]), jnp.broadcast_to(p["decay"], x.shape))
        b = (x[..., :2], jnp.tanh(x) * p["w"])
        return a, ((b[0][..., :1], b[1]) if wrong_shape else b)

    def readout(p, hs, x):
        return jnp.concatenate(hs, axis=-1) + x.sum(-1, keepdims=True)

    init = lambda key: {"a": jnp.ones(2), "decay": jnp.full((F,), 0.9), "w": jnp.arange(F) + 1.0}
    initial_state = lambda p, shape: (jnp.zeros(shape + (2,)), jnp.zeros(shape + (F,)))
    return linear_cell(init, initial_state, LinearRecurrence(coefficients, readout))


def test_user_linear_cell_with_pytree_state():
    cell = two_leaf_cell()
    params = cell.init(None)
    xs = np.random.default_rng(0).normal(size=(B, T, F)).astype(np.float32)
    h0 = randomize(cell.initial_state(params, (B,)), 1)
    option = OPTIONS["reverse"]
    assert_close(run(cell, params, xs, h0, "associative", option),
                 run(cell, params, xs, h0, "sequential", option), tol=1e-5)
    with pytest.raises(ValueError, match="cell.step.linear.coefficients"):
        rs.unroll(two_leaf_cell(wrong_shape=True), params, xs, method="associative")


# ---- constructors --------------------------------------------------------------

def test_lru_init_is_on_the_ring():
    cell = rs.lru(F, 256, r_min=0.4, r_max=0.9, max_phase=np.pi / 4)
    p = jax.jit(cell.init)(jax.random.key(0))
    lam = np.exp(-np.exp(p["nu_log"]) + 1j * np.exp(p["theta_log"]))
    assert np.all((np.abs(lam) >= 0.4 - 1e-6) & (np.abs(lam) <= 0.9 + 1e-6))
    assert np.all((np.angle(lam) >= 0) & (np.angle(lam) <= np.pi / 4 + 1e-6))
    np.testing.assert_allclose(np.exp(p["gamma_log"]), np.sqrt(1 - np.abs(lam) ** 2), rtol=1e-5)
    assert p["B_re"].shape == (F, 256) and p["C_im"].shape == (256, F) and p["D"].shape == (F,)


def test_constructor_errors():
    with pytest.raises(ValueError, match="hidden_size"):
        rs.mingru(F, 0)
    with pytest.raises(TypeError, match="input_size"):
        rs.minlstm(2.5, H)
    with pytest.raises(ValueError, match="r_min"):
        rs.lru(F, H, r_min=0.9, r_max=0.5)
    with pytest.raises(ValueError, match="max_phase"):
        rs.lru(F, H, max_phase=0.0)
    with pytest.raises(ValueError, match="input_size=3"):
        cell = rs.mingru(F, H)
        rs.unroll(cell, cell.init(jax.random.key(0)), np.zeros((B, T, F + 1)), method="associative")
