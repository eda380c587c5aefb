"""rnnscan's compiled CPU LSTM kernel (`rnnscan/kernels`), through its adapter
`rnnscan.kernels.lstm.sequence` (called directly: the plan and the speed table are tested apart).

The kernel tests run on the best variant this CPU can execute, and the
`per_variant` ones on each other variant too (avx512, avx2, baseline, chosen
with `RNNSCAN_KERNEL_ISA`), over cases that take every path of the kernel;
`-m slow` runs every test on every variant. References: the numpy LSTM
equations stepped by a plain Python loop (`tests.reference`) for values; for
derivatives, the same loop written with `jax.numpy` and differentiated by JAX,
and finite differences. Every test first checks, in the lowered HLO, that the
variant's kernel ran.
"""

import functools
import os
import shlex
import shutil
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import rnnscan as rs
import rnnscan.kernels
from rnnscan.kernels import build, loader, speed
from rnnscan.kernels import lstm as lstm_kernel
from rnnscan.kernels import primitives
from rnnscan.unroll import make_plan
from tests import reference as ref
from tests.kernel_helpers import (RUNNABLE, TOL, built_variants, masks, skip_unless_built,
                                  uses_kernel, variant_fixture)
from tests.test_unroll import randomize

VARIANTS = built_variants("lstm_cpu")
pytestmark = skip_unless_built("lstm_cpu")
variant = variant_fixture("lstm_cpu", best_only=True)  # per_variant covers the others


def per_variant(names, cases, covering):
    """Parametrizes `variant` and a case's `names`: every case on the native variant
    (the first), and on each other variant the `covering` ones, chosen so that
    together they take every path of the kernel (layouts, reverse, lengths,
    resets, all states, partial panels, more than one row block)."""
    return pytest.mark.parametrize(
        ("variant", *names), [(variant, *(case if isinstance(case, tuple) else (case,)))
                              for variant in VARIANTS for case in cases
                              if variant == VARIANTS[0] or case in covering],
        indirect=["variant"])


def problem(batch=5, time=7, features=6, hidden=32, seed=0):
    cell = rs.lstm(features, hidden)
    params = randomize(cell.init(jax.random.key(seed)), seed)
    rng = np.random.default_rng(seed)
    xs = rng.normal(size=(batch, time, features)).astype(np.float32)
    h0 = rs.LSTMState(*(rng.normal(size=(batch, hidden)).astype(np.float32) for _ in range(2)))
    return cell, params, xs, h0


def kernel_run(params, xs, h0, **options):
    """`(ys, final_state, states)` from the kernel (time-major arrays with
    `time_major=True`)."""
    out = lstm_kernel.sequence(params, rs.LSTMState(*h0), xs, **options)
    assert out is not None
    final, ys, states = out
    return ys, final, states


def loop_in_jax(params, xs, h0, reverse=False, lengths=None, resets=None, reset_state=None):
    """The LSTM equations in a Python loop over time, with jax.numpy, batch-major:
    `(ys, (h, c))`, with the semantics of `rs.unroll`'s lengths and resets."""
    h, c = h0
    B, T = xs.shape[:2]
    H = h.shape[-1]
    h_r, c_r = reset_state if reset_state is not None else (jnp.zeros_like(h),) * 2
    lengths = np.full(B, T) if lengths is None else lengths
    ys = [None] * T
    for t in (reversed(range(T)) if reverse else range(T)):
        valid = jnp.asarray(t < lengths)[:, None]
        if resets is not None:
            reset = valid & resets[:, t][:, None]
            h, c = jnp.where(reset, h_r, h), jnp.where(reset, c_r, c)
        z = xs[:, t] @ params["w_ih"] + h @ params["w_hh"] + params["b"]
        i, f, g, o = (z[:, k * H:(k + 1) * H] for k in range(4))
        c_new = jax.nn.sigmoid(f + 1.0) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
        h_new = jax.nn.sigmoid(o) * jnp.tanh(c_new)
        h, c = jnp.where(valid, h_new, h), jnp.where(valid, c_new, c)
        ys[t] = jnp.where(valid, h_new, 0.0)
    return jnp.stack(ys, axis=1), (h, c)


CASES = {
    "plain": dict(),
    "reverse_time_major": dict(reverse=True, time_major=True),
    "all_states_reverse": dict(all_states=True, reverse=True),
    "one_row_48_units": dict(batch=1, hidden=48),
    "lengths_all_states": dict(lengths=True, all_states=True),
    "lengths_resets_reverse_all_states": dict(lengths=True, resets=True, reverse=True,
                                              all_states=True),
    "lengths_resets_reset_state_reverse": dict(lengths=True, resets=True, reset_state=True,
                                               reverse=True),
    "lengths_resets_time_major_13_rows": dict(lengths=True, resets=True, reset_state=True,
                                              time_major=True, batch=13, hidden=16),
}


# Together: both layouts, reverse, lengths, resets to a state, all states, one
# row and 13 (more than one row block), 48 units (a partial panel on avx512).
COVERING = {"one_row_48_units", "lengths_resets_reverse_all_states",
            "lengths_resets_time_major_13_rows"}


@per_variant(["case"], CASES, COVERING)
def test_kernel_matches_python_loop(variant, case):
    options = dict(CASES[case])
    sizes = {k: options.pop(k) for k in ("batch", "hidden", "time") if k in options}
    cell, params, xs, h0 = problem(**sizes)
    batch, time = xs.shape[:2]
    lengths, resets = masks(batch, time)
    lengths = lengths if options.pop("lengths", False) else None
    resets = resets if options.pop("resets", False) else None
    rng = np.random.default_rng(7)
    reset_state = (rs.LSTMState(*(rng.normal(size=h0.h.shape).astype(np.float32)
                                  for _ in range(2))) if options.pop("reset_state", False)
                   else None)
    time_major = options.get("time_major", False)
    swap = (lambda a: np.swapaxes(a, 0, 1)) if time_major else np.asarray
    inputs = (swap(xs), None if resets is None else swap(resets))
    run = lambda p, x, h, r, rs_: kernel_run(p, x, h, lengths=lengths, resets=r,
                                             reset_state=rs_, **options)
    assert uses_kernel(run, params, *inputs[:1], h0, inputs[1], reset_state)
    ys, final, states = jax.jit(run)(params, inputs[0], h0, inputs[1], reset_state)

    step = functools.partial(ref.lstm_step, jax.tree_util.tree_map(np.asarray, params))
    zeros = tuple(np.zeros_like(a) for a in h0)
    want_ys, want_final, want_states = ref.loop_unroll(
        step, xs, tuple(map(np.asarray, h0)), lengths=lengths, resets=resets,
        reverse=options.get("reverse", False),
        reset_state=tuple(map(np.asarray, reset_state)) if reset_state else zeros)
    np.testing.assert_allclose(swap(ys), want_ys, **TOL)
    for got, want in zip(final, want_final):
        np.testing.assert_allclose(got, want, **TOL)
    if options.get("all_states"):
        for got, want in zip(states, want_states):
            np.testing.assert_allclose(swap(got), want, **TOL)


def gradient_problem(hidden, reads_c, padded):
    """`(params, xs, h0, reset_state, lengths, resets, loss)`: `loss(run, params, xs,
    h0, reset_state)` of the outputs (and of the final c when `reads_c`)."""
    cell, params, xs, h0 = problem(batch=6, hidden=hidden, seed=1)
    cot = np.random.default_rng(2).normal(size=(6, 7, hidden)).astype(np.float32)
    lengths, resets = masks(6, 7, seed=1) if padded else (None, None)
    reset_state = tuple(h0[::-1]) if padded else None  # any state will do

    def loss(run, params, xs, h0, reset_state):
        ys, (h, c) = run(params, xs, h0, reset_state)
        return jnp.sum(ys * cot) + (jnp.sum(jnp.sin(c)) if reads_c else 0.0)

    return params, xs, h0, reset_state, lengths, resets, loss


@functools.cache  # the same for every variant
def loop_gradients(hidden, reverse, reads_c, padded):
    params, xs, h0, reset_state, lengths, resets, loss = gradient_problem(hidden, reads_c, padded)

    def loop(p, x, h0, reset_state):
        return loop_in_jax(p, x, h0, reverse, lengths, resets, reset_state)

    grad = jax.grad(functools.partial(loss, loop), argnums=(0, 1, 2, 3))
    return [np.asarray(w) for w in jax.tree_util.tree_leaves(grad(params, xs, tuple(h0), reset_state))]


# (32, batch-major, forward, ignores c, unpadded) is the union of the other three.
@per_variant(["hidden", "time_major", "reverse", "reads_c", "padded"], [
    (32, False, False, False, False), (112, True, True, True, False),
    (32, False, False, True, True), (80, True, True, False, True),
], covering={(112, True, True, True, False), (32, False, False, True, True), (80, True, True, False, True)})
def test_gradients_match_the_loop(variant, hidden, time_major, reverse, reads_c, padded):
    """Reverse mode runs the backward kernel (its product in panels of 4 vectors
    of units: 80 and 112 end on a partial one); a loss that ignores the final c
    gives it no cotangent for c at all (a separate path). Padded: with lengths,
    resets and a reset state, which gets its gradient too."""
    params, xs, h0, reset_state, lengths, resets, loss = gradient_problem(hidden, reads_c, padded)
    swap = (lambda a: jnp.swapaxes(a, 0, 1)) if time_major else (lambda a: a)

    def kernel(p, x, h0, reset_state):
        ys, final, _ = kernel_run(p, swap(x), h0, reverse=reverse, time_major=time_major,
                                  lengths=lengths, resets=None if resets is None else swap(resets),
                                  reset_state=None if reset_state is None
                                  else rs.LSTMState(*reset_state))
        return swap(ys), final

    grad = jax.grad(functools.partial(loss, kernel), argnums=(0, 1, 2, 3))
    assert uses_kernel(grad, params, xs, h0, reset_state, target="rnnscan_lstm_backward")
    got = grad(params, xs, h0, reset_state)
    want = loop_gradients(hidden, reverse, reads_c, padded)
    assert len(jax.tree_util.tree_leaves(got)) == len(want)
    for g, w in zip(jax.tree_util.tree_leaves(got), want):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4)


def test_gradients_match_finite_differences(variant):
    cell, params, xs, h0 = problem(batch=3, time=4, features=3, hidden=16, seed=3)
    lengths, resets = np.array([0, 2, 4], np.int32), np.array([[0, 1, 0, 0]] * 3, bool)
    f = lambda p, x, r: jnp.mean(jnp.tanh(kernel_run(
        p, x, h0, lengths=lengths, resets=resets, reset_state=rs.LSTMState(*r))[0]))
    r = tuple(h0[::-1])
    assert uses_kernel(f, params, xs, r)
    # float32: differences of a mean over 192 outputs with a step of 1e-2.
    check_grads(f, (params, xs, r), order=1, modes=("rev", "fwd"), eps=1e-2, atol=2e-3,
                rtol=2e-3)


def test_forward_mode_second_order_and_vmap(variant):
    """jvp runs the tangent as a scan; jvp of grad (Hessian-vector products)
    differentiates the kernels' plain-JAX twins; vmap maps the kernels."""
    if variant != VARIANTS[0]:
        pytest.skip("the plain-JAX twins are the same for every variant")
    cell, params, xs, h0 = problem(batch=4, time=5, hidden=16, seed=4)
    lengths, resets = masks(4, 5, seed=4)
    h0 = tuple(h0)
    kernel = lambda p, x: jnp.sum(jnp.sin(kernel_run(p, x, h0, lengths=lengths,
                                                     resets=resets)[0]))
    loop = lambda p, x: jnp.sum(jnp.sin(loop_in_jax(p, x, h0, False, lengths, resets)[0]))
    assert uses_kernel(kernel, params, xs)
    tangent = randomize(params, seed=5)
    close = lambda got, want: [
        np.testing.assert_allclose(g, w, rtol=2e-4, atol=2e-4)
        for g, w in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want))]

    close(jax.jvp(lambda p: kernel(p, xs), (params,), (tangent,)),
          jax.jvp(lambda p: loop(p, xs), (params,), (tangent,)))
    hvp = lambda f: jax.jvp(jax.grad(lambda p: f(p, xs)), (params,), (tangent,))[1]
    close(hvp(kernel), hvp(loop))
    batch_of_xs = np.stack([xs, -xs])
    per_example = lambda f: jax.vmap(jax.grad(f), in_axes=(None, 0))(params, batch_of_xs)
    close(per_example(kernel), per_example(loop))


@pytest.mark.parametrize("threads,time_major", [(13, True)])
def test_rows_split_over_threads_change_nothing(variant, monkeypatch, threads, time_major):
    """Each thread steps its own block of rows (of 4 at least): 13 in 3 blocks, padded."""
    cell, params, xs, h0 = problem(batch=13, hidden=16)
    lengths, resets = masks(13, 7)
    swap = (lambda a: jnp.swapaxes(a, 0, 1)) if time_major else (lambda a: a)
    run = lambda p: kernel_run(p, swap(xs), h0, lengths=lengths, resets=swap(resets),
                               time_major=time_major)
    loss = lambda p: jnp.sum(run(p)[0] ** 2) + jnp.sum(run(p)[1].c)
    one = jax.jit(lambda p: (run(p)[:2], jax.grad(loss)(p)))(params)
    monkeypatch.setattr(primitives, "threads", lambda *sizes: threads)
    jax.clear_caches()
    assert uses_kernel(run, params)
    split = jax.jit(lambda p: (run(p)[:2], jax.grad(loss)(p)))(params)
    for g, w in zip(jax.tree_util.tree_leaves(split), jax.tree_util.tree_leaves(one)):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)


# (batch, hidden, threads, time_major, reverse, padded): a few rows, so the
# threads split the units of every step; hidden sizes that split unevenly in
# lanes (forward) and in panels of 4 lanes (backward) on avx2 and baseline.
SMALL_BATCHES = [(1, 40, 2, False, False, False), (2, 72, 3, True, True, True),
                 (3, 40, 2, False, True, True)]


@per_variant(["batch", "hidden", "threads", "time_major", "reverse", "padded"], SMALL_BATCHES,
             covering=set(SMALL_BATCHES))
def test_units_split_over_threads_on_few_rows(variant, monkeypatch, batch, hidden, threads,
                                              time_major, reverse, padded):
    """Values and gradients (inputs, weights, both states, the reset state)
    against the loop in jax.numpy when the threads share each step's units."""
    cell, params, xs, h0 = problem(batch=batch, time=9, hidden=hidden, seed=5)
    lengths, resets = masks(batch, 9, seed=5) if padded else (None, None)
    reset_state = tuple(h0[::-1]) if padded else None
    cot = np.random.default_rng(6).normal(size=(batch, 9, hidden)).astype(np.float32)
    swap = (lambda a: jnp.swapaxes(a, 0, 1)) if time_major else (lambda a: a)

    def kernel(p, x, h0, reset_state):
        ys, final, _ = kernel_run(p, swap(x), h0, reverse=reverse, time_major=time_major,
                                  lengths=lengths, resets=None if resets is None else swap(resets),
                                  reset_state=None if reset_state is None
                                  else rs.LSTMState(*reset_state))
        return swap(ys), tuple(final)

    loop = lambda p, x, h0, r: loop_in_jax(p, x, h0, reverse, lengths, resets, r)
    both = lambda run: jax.jit(lambda *a: (run(*a), jax.grad(
        lambda *a: jnp.sum(run(*a)[0] * cot) + jnp.sum(jnp.sin(run(*a)[1][1])),
        argnums=(0, 1, 2, 3))(*a)))
    monkeypatch.setattr(primitives, "threads", lambda *sizes: threads)
    jax.clear_caches()
    args = (params, xs, tuple(h0), reset_state)
    assert uses_kernel(kernel, *args) and uses_kernel(
        jax.grad(lambda *a: jnp.sum(kernel(*a)[0])), *args, target="rnnscan_lstm_backward")
    for g, w in zip(jax.tree_util.tree_leaves(both(kernel)(*args)),
                    jax.tree_util.tree_leaves(both(loop)(*args))):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4)


def test_nan_propagates(variant):
    """A NaN input gives NaN outputs from its step on, as the scan does (the
    kernel's exp clamps its argument, in a way that lets NaN through)."""
    cell, params, xs, h0 = problem(hidden=16)
    xs[2, 3, 0] = np.nan
    ys, final, _ = jax.jit(kernel_run)(params, xs, h0)
    assert np.isnan(ys[2, 3:]).all() and np.isnan(final.c[2]).all()
    assert not np.isnan(ys[2, :3]).any() and not np.isnan(np.delete(ys, 2, axis=0)).any()


def test_the_scan_runs_where_the_kernel_cannot(variant, monkeypatch):
    """18 units (not a multiple of any variant's lanes), peepholes, bfloat16
    products and float64 params take the scan, and `why_not` says why; so does
    everything with `RNNSCAN_NATIVE=0`."""
    for cell in [rs.lstm(6, 18), rs.lstm(6, 16, peephole=True),
                 rs.lstm(6, 16, compute_dtype=jnp.bfloat16)]:
        params = cell.init(jax.random.key(0))
        assert not uses_kernel(lambda p, x: rs.unroll(cell, p, x), params, problem()[2])
    cell, params, xs, h0 = problem(hidden=16)
    assert "multiple of" in lstm_kernel.why_not(params, rs.LSTMState(h0.h[:, :6], h0.c), xs)
    with jax.enable_x64(True):
        as64 = lambda t: jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), t)
        assert "float32" in lstm_kernel.why_not(as64(params), as64(h0), as64(xs))
    assert lstm_kernel.why_not(params, h0, xs) is None
    monkeypatch.setenv("RNNSCAN_NATIVE", "0")
    assert "RNNSCAN_NATIVE=0" in lstm_kernel.why_not(params, h0, xs)
    with pytest.raises(ValueError, match="method='kernel' cannot run this call: .*RNNSCAN_NATIVE"):
        rs.unroll(cell, params, xs, method="kernel")


def test_dispatch_follows_the_measured_table(variant, monkeypatch):
    """Unforced, the kernel runs only for a shape whose nearest measured row it
    won; a variant with no figures gets the scan."""
    cell, params, xs, h0 = problem(hidden=16)
    monkeypatch.setattr(speed, "MEASURED", {"lstm": {variant: [((5, 128, 6, 16), (True, True)),
                                                               ((5, 128, 6, 128), (False, False))]}})
    assert speed.kernel_is_faster("lstm", variant, 5, 7, 6, 16)
    assert speed.kernel_is_faster("lstm", variant, 5, 7, 6, 16, derivatives=True)
    assert not speed.kernel_is_faster("gru", variant, 5, 7, 6, 16)  # the LSTM's figures
    assert not speed.kernel_is_faster("lstm", variant, 5, 7, 6, 128)
    assert not speed.kernel_is_faster("lstm", variant, 5, 7, 6, 1024)  # beyond the figures
    assert not speed.kernel_is_faster("lstm", "sve", 5, 7, 6, 16)
    assert uses_kernel(lambda p, x: rs.unroll(cell, p, x, initial_state=h0), params, xs)
    monkeypatch.setattr(speed, "MEASURED", {})
    jax.clear_caches()  # unroll's trace of this cell read the table
    assert not uses_kernel(lambda p, x: rs.unroll(cell, p, x, initial_state=h0), params, xs)


@pytest.mark.parametrize("forward, derivatives", [(False, True), (True, False)])
def test_values_and_derivatives_each_from_where_they_were_measured_faster(
        forward, derivatives, monkeypatch):
    """Where the kernel won forward+backward but not forward (or the reverse),
    the values come from one strategy and every derivative from the other; both
    agree with the scan, reverse mode, forward mode and under vmap."""
    variant = loader.load("lstm_cpu").variant
    monkeypatch.setattr(speed, "MEASURED",
                        {"lstm": {variant: [((5, 7, 6, 16), (forward, derivatives))]}})
    jax.clear_caches()
    cell, params, xs, h0 = problem(hidden=16)
    lengths = jnp.array([7, 3, 5, 0, 6])
    plan = make_plan(cell, params, xs, lengths=lengths)
    values, other = ("kernel", "scan") if forward else ("scan", "kernel")
    assert (plan.strategy, plan.derivatives) == (values, other)
    f = lambda p, x: rs.unroll(cell, p, x, lengths=lengths)[0]
    scan = lambda p, x: rs.unroll(cell, p, x, lengths=lengths, method="scan")[0]
    loss = lambda fn: lambda p, x: jnp.sum(jnp.sin(fn(p, x)))
    monkeypatch.setenv("RNNSCAN_KERNEL_ISA", variant)  # the one uses_kernel looks for
    assert uses_kernel(f, params, xs) == forward
    assert uses_kernel(jax.grad(loss(f), argnums=(0, 1)), params, xs,
                       target="rnnscan_lstm_backward") == derivatives
    np.testing.assert_allclose(f(params, xs), scan(params, xs), **TOL)
    for got, want in [(jax.grad(loss(f), argnums=(0, 1))(params, xs),
                       jax.grad(loss(scan), argnums=(0, 1))(params, xs)),
                      (jax.jvp(f, (params, xs), (params, xs)),
                       jax.jvp(scan, (params, xs), (params, xs))),
                      (jax.vmap(jax.grad(loss(f)), (None, 0))(params, jnp.stack([xs, -xs])),
                       jax.vmap(jax.grad(loss(scan)), (None, 0))(params, jnp.stack([xs, -xs])))]:
        jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4,
                                                                       atol=2e-5), got, want)


def test_the_install_built_every_variant():
    """`pip install` (or `python -m rnnscan.kernels` in a source tree) builds every
    variant; a missing one would leave its CPUs on the scan."""
    if shutil.which(shlex.split(os.environ.get("CXX", "c++"))[0]) is None:
        pytest.skip("no C++ compiler: the install is pure JAX")
    assert [(s, v) for s in build.SOURCES for v in build.VARIANTS
            if loader.library(s, v) is None] == []


def test_info_names_the_variant_in_use_or_why_none(variant, monkeypatch):
    info = rnnscan.kernels.info()
    assert info["backend"] == "cpu" and info["isa"] == build.VARIANTS[RUNNABLE[0]].level
    assert info["variant"] == variant and variant in info["built"]
    monkeypatch.setenv("RNNSCAN_NATIVE", "0")
    assert loader.info()["variant"] is None and "RNNSCAN_NATIVE" in loader.info()["why"]
    monkeypatch.setenv("RNNSCAN_NATIVE", "1")
    monkeypatch.setenv("RNNSCAN_KERNEL_ISA", "none")
    assert loader.info()["variant"] is None


def test_a_missing_library_warns_once_and_the_scan_runs(variant, monkeypatch):
    monkeypatch.setattr(loader, "library", lambda source, variant: None)
    monkeypatch.setattr(loader, "_loaded", {})
    cell, params, xs, h0 = problem(hidden=16)
    with pytest.warns(RuntimeWarning, match="kernel 'lstm_cpu' .* is unavailable"):
        assert "unavailable" in lstm_kernel.why_not(params, h0, xs)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert lstm_kernel.why_not(params, h0, xs) is not None
