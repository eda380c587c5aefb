"""rnnscan's compiled CPU LSTM kernel (`rnnscan/kernels`), which `unroll` uses for
a plain float32 LSTM with a multiple of the variant's lanes as units on a CPU.

Every test runs once per kernel variant this CPU can execute (avx512, avx2,
baseline), chosen with `RNNSCAN_KERNEL_ISA`. References: the numpy LSTM
equations stepped by a plain Python loop (`tests.reference`) for values; for
derivatives, the same loop written with `jax.numpy` and differentiated by JAX,
and finite differences. Every test first checks that the variant's kernel, not
the scan, ran.
"""

import functools
import os
import re
import shutil
import shlex
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import rnnscan as rs
import rnnscan.kernels
from rnnscan.kernels import build, loader
from rnnscan.kernels import lstm as lstm_kernel
from tests import reference as ref
from tests.test_unroll import randomize

RUNNABLE = list(build.VARIANTS)[list(build.VARIANTS).index(loader.cpu_isa()):]
VARIANTS = [v for v in RUNNABLE if loader.library("lstm_cpu", v) is not None]
pytestmark = pytest.mark.skipif(jax.default_backend() != "cpu" or not VARIANTS,
                                reason="the kernels run on a CPU, once built")


@pytest.fixture(autouse=True, params=VARIANTS)
def variant(request, monkeypatch):
    """The variant every test runs; jit caches are cleared around it, as the
    variant is chosen when a function is traced."""
    monkeypatch.setenv("RNNSCAN_KERNEL_ISA", request.param)
    jax.clear_caches()
    yield request.param
    jax.clear_caches()


def uses_kernel(fn, *args, target="rnnscan_lstm_forward") -> bool:
    """Whether `fn` runs the kernel `target` (the forward: saving or not) of the
    variant under test."""
    variant = os.environ["RNNSCAN_KERNEL_ISA"]
    return re.search(f"@{target}(_saving)?_{variant}\\(", jax.jit(fn).lower(*args).as_text()) is not None


def problem(batch=5, time=7, features=6, hidden=32, seed=0):
    cell = rs.lstm(features, hidden)
    params = randomize(cell.init(jax.random.key(seed)), seed)
    rng = np.random.default_rng(seed)
    xs = rng.normal(size=(batch, time, features)).astype(np.float32)
    h0 = rs.LSTMState(*(rng.normal(size=(batch, hidden)).astype(np.float32) for _ in range(2)))
    return cell, params, xs, h0


def loop_in_jax(params, xs, h0, reverse=False):
    """The LSTM equations in a Python loop over time, with jax.numpy: `(ys, (h, c))`."""
    h, c = h0
    H = h.shape[-1]
    ys = [None] * xs.shape[1]
    for t in (reversed(range(xs.shape[1])) if reverse else range(xs.shape[1])):
        z = xs[:, t] @ params["w_ih"] + h @ params["w_hh"] + params["b"]
        i, f, g, o = (z[:, k * H:(k + 1) * H] for k in range(4))
        c = jax.nn.sigmoid(f + 1.0) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
        h = jax.nn.sigmoid(o) * jnp.tanh(c)
        ys[t] = h
    return jnp.stack(ys, axis=1), (h, c)


CASES = {
    "plain": dict(),
    "reverse": dict(reverse=True),
    "time_major": dict(time_major=True),
    "all_states_reverse": dict(return_all_states=True, reverse=True),
    "one_row_48_units": dict(batch=1, hidden=48),
    "13_rows_16_units": dict(batch=13, hidden=16, time=3),
}


@pytest.mark.parametrize("case", CASES)
def test_kernel_matches_python_loop(case):
    options = dict(CASES[case])
    sizes = {k: options.pop(k) for k in ("batch", "hidden", "time") if k in options}
    cell, params, xs, h0 = problem(**sizes)
    time_major = options.get("time_major", False)
    inputs = xs.transpose(1, 0, 2) if time_major else xs
    run = lambda params, xs, h0: rs.unroll(cell, params, xs, initial_state=h0, **options)
    assert uses_kernel(run, params, inputs, h0)

    out = run(params, inputs, h0)
    step = functools.partial(ref.lstm_step, jax.tree_util.tree_map(np.asarray, params))
    ys, final, states = ref.loop_unroll(step, xs, tuple(map(np.asarray, h0)),
                                        reverse=options.get("reverse", False))
    swap = (lambda a: np.swapaxes(a, 0, 1)) if time_major else np.asarray
    tol = dict(rtol=2e-5, atol=2e-5)
    np.testing.assert_allclose(swap(out[0]), ys, **tol)
    for got, want in zip(out[1], final):
        np.testing.assert_allclose(got, want, **tol)
    if options.get("return_all_states"):
        for got, want in zip(out[2], states):
            np.testing.assert_allclose(swap(got), want, **tol)


@pytest.mark.parametrize("threads,time_major", [(2, False), (3, True), (13, False)])
def test_rows_split_over_threads_change_nothing(monkeypatch, threads, time_major):
    """Each thread steps its own block of rows; 13 rows in 2, 3 or 13 blocks."""
    cell, params, xs, h0 = problem(batch=13, hidden=16)
    xs = xs.transpose(1, 0, 2) if time_major else xs
    run = lambda p, x, **kw: rs.unroll(cell, p, x, initial_state=h0, time_major=time_major, **kw)
    loss = lambda p, **kw: jnp.sum(run(p, xs, **kw)[0] ** 2) + jnp.sum(run(p, xs, **kw)[1].c)
    expected = run(params, xs, remat=True), jax.grad(functools.partial(loss, remat=True))(params)
    monkeypatch.setattr(lstm_kernel, "_threads", lambda *sizes: threads)
    jax.clear_caches()
    assert uses_kernel(run, params, xs)
    got = run(params, xs), jax.grad(loss)(params)
    for g, w in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(expected)):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4)
    jax.clear_caches()


@pytest.mark.parametrize("hidden,time_major,reverse,reads_c", [
    (32, False, False, False), (32, False, True, True), (80, True, False, True),
    (112, True, True, False), (112, False, False, True),
])
def test_gradients_match_the_loop(hidden, time_major, reverse, reads_c):
    """Reverse mode runs the backward kernel (its product in panels of 64 units:
    80 and 112 end on a partial one); a loss that ignores the final c gives it
    no cotangent for c at all (a separate path)."""
    cell, params, xs, h0 = problem(batch=6, hidden=hidden, seed=1)
    cot = np.random.default_rng(2).normal(size=(6, 7, hidden)).astype(np.float32)
    swap = (lambda a: jnp.swapaxes(a, 0, 1)) if time_major else (lambda a: a)

    def loss(run, params, xs, h0):
        ys, (h, c) = run(params, xs, h0)
        return jnp.sum(ys * cot) + (jnp.sum(jnp.sin(c)) if reads_c else 0.0)

    def kernel(p, x, h0):
        ys, final = rs.unroll(cell, p, swap(x), initial_state=h0, reverse=reverse,
                              time_major=time_major)
        return swap(ys), final

    loop = functools.partial(loop_in_jax, reverse=reverse)
    grad = lambda run: jax.grad(functools.partial(loss, run), argnums=(0, 1, 2))
    assert uses_kernel(grad(kernel), params, xs, h0, target="rnnscan_lstm_backward")
    got = grad(kernel)(params, xs, h0)
    want = grad(loop)(params, xs, tuple(h0))
    for g, w in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4)


def test_gradients_match_finite_differences():
    cell, params, xs, h0 = problem(batch=3, time=4, features=3, hidden=16, seed=3)
    f = lambda p, x: jnp.mean(jnp.tanh(rs.unroll(cell, p, x, initial_state=h0)[0]))
    assert uses_kernel(f, params, xs)
    # float32: differences of a mean over 192 outputs with a step of 1e-2.
    check_grads(f, (params, xs), order=1, modes=("rev", "fwd"), eps=1e-2, atol=2e-3, rtol=2e-3)


def test_forward_mode_second_order_and_vmap():
    """jvp runs the tangent as a scan; jvp of grad (Hessian-vector products)
    differentiates the kernels' plain-JAX twins; vmap maps the kernels."""
    cell, params, xs, h0 = problem(batch=4, time=5, hidden=16, seed=4)
    h0 = tuple(h0)
    state = rs.LSTMState(*h0)
    kernel = lambda p, x: jnp.sum(jnp.sin(rs.unroll(cell, p, x, initial_state=state)[0]))
    loop = lambda p, x: jnp.sum(jnp.sin(loop_in_jax(p, x, h0)[0]))
    assert uses_kernel(kernel, params, xs)
    tangent = randomize(params, seed=5)
    close = lambda got, want: [
        np.testing.assert_allclose(g, w, rtol=2e-4, atol=2e-4)
        for g, w in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want))]

    close(jax.jvp(lambda p: kernel(p, xs), (params,), (tangent,)),
          jax.jvp(lambda p: loop(p, xs), (params,), (tangent,)))
    hvp = lambda f: jax.jvp(jax.grad(lambda p: f(p, xs)), (params,), (tangent,))[1]
    close(hvp(kernel), hvp(loop))
    batch_of_xs = np.stack([xs, -xs, 2 * xs])
    per_example = lambda f: jax.vmap(jax.grad(f), in_axes=(None, 0))(params, batch_of_xs)
    close(per_example(kernel), per_example(loop))


def test_the_scan_runs_where_the_kernel_cannot(monkeypatch):
    """18 units (not a multiple of any variant's lanes), peepholes, bfloat16 products, float64
    params, lengths, resets and remat take the scan; so does everything with
    `RNNSCAN_NATIVE=0`, with the kernel's numbers."""
    for cell in [rs.lstm(6, 18), rs.lstm(6, 16, peephole=True),
                 rs.lstm(6, 16, compute_dtype=jnp.bfloat16)]:
        params = cell.init(jax.random.key(0))
        assert not uses_kernel(lambda p, x: rs.unroll(cell, p, x), params, problem()[2])
    cell, params, xs, h0 = problem(hidden=16)
    run = lambda p, x, **kw: rs.unroll(cell, p, x, initial_state=h0, **kw)
    assert not uses_kernel(functools.partial(run, lengths=np.full(5, 7)), params, xs)
    assert not uses_kernel(functools.partial(run, resets=np.ones((5, 7), bool)), params, xs)
    assert not uses_kernel(functools.partial(run, remat=True), params, xs)
    with jax.enable_x64(True):
        cell64 = rs.lstm(6, 16, param_dtype=jnp.float64)
        p64 = cell64.init(jax.random.key(0))
        assert not uses_kernel(lambda p, x: rs.unroll(cell64, p, x), p64, xs.astype(np.float64))
    expected = run(params, xs)
    monkeypatch.setenv("RNNSCAN_NATIVE", "0")
    jax.clear_caches()
    assert lstm_kernel.kernel(xs, h0.h) is None and not uses_kernel(run, params, xs)
    np.testing.assert_allclose(run(params, xs)[0], expected[0], rtol=2e-5, atol=2e-5)
    jax.clear_caches()


def test_nan_propagates():
    """A NaN input gives NaN outputs from its step on, as the scan does (the
    kernel's exp clamps its argument, in a way that lets NaN through)."""
    cell, params, xs, h0 = problem(hidden=16)
    xs[2, 3, 0] = np.nan
    ys, final = rs.unroll(cell, params, xs, initial_state=h0)
    assert uses_kernel(lambda p, x: rs.unroll(cell, p, x), params, xs)
    assert np.isnan(ys[2, 3:]).all() and np.isnan(final.c[2]).all()
    assert not np.isnan(ys[2, :3]).any() and not np.isnan(np.delete(ys, 2, axis=0)).any()


def test_the_install_built_every_variant(variant):
    """`pip install` (or `python -m rnnscan.kernels` in a source tree) builds every
    variant; a missing one would leave its CPUs on the scan."""
    if shutil.which(shlex.split(os.environ.get("CXX", "c++"))[0]) is None:
        pytest.skip("no C++ compiler: the install is pure JAX")
    assert [v for v in build.VARIANTS if loader.library("lstm_cpu", v) is None] == []


def test_info_names_the_variant_in_use_or_why_none(variant, monkeypatch):
    info = rnnscan.kernels.info()
    assert info["backend"] == "cpu" and info["isa"].startswith(("x86-64", "baseline"))
    assert info["variant"] == variant and variant in info["built"]
    monkeypatch.setenv("RNNSCAN_NATIVE", "0")
    assert loader.info()["variant"] is None and "RNNSCAN_NATIVE" in loader.info()["why"]


def test_a_missing_library_warns_once_and_the_scan_runs(monkeypatch):
    monkeypatch.setattr(loader, "library", lambda source, variant: None)
    monkeypatch.setattr(loader, "_loaded", {})
    cell, params, xs, h0 = problem(hidden=16)
    with pytest.warns(RuntimeWarning, match="kernel 'lstm_cpu' .* is unavailable"):
        assert lstm_kernel.kernel(xs, h0.h) is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not uses_kernel(lambda p, x: rs.unroll(cell, p, x), params, xs)
