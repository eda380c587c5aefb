"""rnnscan's compiled CPU GRU kernel (`rnnscan/kernels/gru_cpu.cc`, torch's
`reset_after` GRU), through its adapter `rnnscan.kernels.gru.sequence` (called directly:
the speed table is tested apart) and `rs.unroll(method="kernel")`.

As `test_kernels.py` does for the LSTM: every test runs once per variant this
CPU can execute and first checks, in the lowered HLO, that the variant's GRU
kernel ran. To keep the default run short, the core cases run on every variant
(`each_variant`) and the rest on the best one (`variant`: the others with
`-m slow`). References: the numpy GRU stepped by a Python loop
(`tests.reference`) for values; the same loop in `jax.numpy`, differentiated
by JAX, and finite differences for derivatives; torch's `nn.GRU` (a golden
file) on the variant whose lanes fit its 4 units.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import rnnscan as rs
from rnnscan.kernels import gru as gru_kernel
from rnnscan.kernels import loader, primitives, speed
from tests import reference as ref
from tests.kernel_helpers import (TOL, close, masks, skip_unless_built,
                                  uses_kernel, variant_fixture)
from tests.test_unroll import randomize

pytestmark = skip_unless_built("gru_cpu")
variant = variant_fixture("gru_cpu", best_only=True)
each_variant = variant_fixture("gru_cpu", name="each_variant")
FORWARD, BACKWARD = "rnnscan_gru_forward", "rnnscan_gru_backward"


def problem(batch=5, time=6, features=6, hidden=32, seed=0, use_bias=True):
    cell = rs.gru(features, hidden, use_bias=use_bias)
    params = randomize(cell.init(jax.random.key(seed)), seed)
    rng = np.random.default_rng(seed)
    xs = rng.normal(size=(batch, time, features)).astype(np.float32)
    h0 = rng.normal(size=(batch, hidden)).astype(np.float32)
    return cell, params, xs, h0


def fits(hidden) -> bool:
    """Whether the variant under test runs `hidden` units (a multiple of its lanes)."""
    return hidden % loader.load("gru_cpu").lanes == 0


def kernel_run(params, xs, h0, use_bias=True, **options):
    """`(ys, final_h, states)` from the kernel (time-major with `time_major=True`)."""
    out = gru_kernel.sequence(params, h0, xs, use_bias=use_bias, **options)
    assert out is not None
    final, ys, states = out
    return ys, final, states


def loop_in_jax(params, xs, h, reverse=False, lengths=None, resets=None, reset_state=None):
    """The GRU equations in a Python loop over time, with jax.numpy, batch-major:
    `(ys, h)`, with the semantics of `rs.unroll`'s lengths and resets."""
    B, T = xs.shape[:2]
    H = h.shape[-1]
    h_r = jnp.zeros_like(h) if reset_state is None else reset_state
    lengths = np.full(B, T) if lengths is None else lengths
    b, b_hn = params.get("b", jnp.zeros(3 * H)), params.get("b_hn", jnp.zeros(H))
    ys = [None] * T
    for t in (reversed(range(T)) if reverse else range(T)):
        valid = jnp.asarray(t < lengths)[:, None]
        if resets is not None:
            h = jnp.where(valid & resets[:, t][:, None], h_r, h)
        xp, hp = xs[:, t] @ params["w_ih"] + b, h @ params["w_hh"]
        r = jax.nn.sigmoid(xp[:, :H] + hp[:, :H])
        z = jax.nn.sigmoid(xp[:, H:2 * H] + hp[:, H:2 * H])
        n = jnp.tanh(xp[:, 2 * H:] + r * (hp[:, 2 * H:] + b_hn))
        h_new = (1 - z) * n + z * h
        h = jnp.where(valid, h_new, h)
        ys[t] = jnp.where(valid, h_new, 0.0)
    return jnp.stack(ys, axis=1), h


EVERY_VARIANT_CASES = {
    "40_units": dict(hidden=40),  # a multiple of 8, not 16: not on avx512
    "lengths_resets_reset_state_reverse_all_states": dict(
        lengths=True, resets=True, reset_state=True, reverse=True, all_states=True),
}
CASES = {
    "reverse_time_major": dict(reverse=True, time_major=True),
    "lengths_resets_time_major_13_rows": dict(lengths=True, resets=True, reset_state=True,
                                              time_major=True, batch=13, hidden=16),
    "one_row_48_units": dict(batch=1, hidden=48),
}
SLOW_CASES = {
    "plain": dict(),
    "all_states_no_bias": dict(all_states=True, use_bias=False),
    "lengths_all_states": dict(lengths=True, all_states=True),
    "lengths_resets_reverse_no_bias": dict(lengths=True, resets=True, reverse=True,
                                           use_bias=False),
    # 40 steps: float32 rounding grows to ~3e-5 (the scan's to ~1.5e-5, against float64).
    "long_lengths_time_major_reverse_13_rows": dict(lengths=True, time_major=True, reverse=True,
                                                    batch=13, hidden=64, time=40, tol=1e-4),
}


@pytest.mark.parametrize("case", EVERY_VARIANT_CASES)
def test_kernel_matches_python_loop_on_every_variant(each_variant, case):
    check_values(each_variant, EVERY_VARIANT_CASES[case])


@pytest.mark.parametrize("case", list(CASES) + [
    pytest.param(c, marks=pytest.mark.slow) for c in SLOW_CASES])
def test_kernel_matches_python_loop(variant, case):
    check_values(variant, {**CASES, **SLOW_CASES}[case])


def check_values(variant, options):
    options = dict(options)
    tol = options.pop("tol", None)
    tol = TOL if tol is None else dict(rtol=tol, atol=tol)
    sizes = {k: options.pop(k) for k in ("batch", "hidden", "time", "use_bias") if k in options}
    cell, params, xs, h0 = problem(**sizes)
    if not fits(h0.shape[-1]):
        assert "multiple of" in gru_kernel.why_not(params, h0, xs)
        pytest.skip(f"{h0.shape[-1]} units do not fit {variant}'s vectors")
    use_bias = sizes.get("use_bias", True)
    batch, time = xs.shape[:2]
    lengths, resets = masks(batch, time)
    lengths = lengths if options.pop("lengths", False) else None
    resets = resets if options.pop("resets", False) else None
    reset_state = (np.random.default_rng(7).normal(size=h0.shape).astype(np.float32)
                   if options.pop("reset_state", False) else None)
    time_major = options.get("time_major", False)
    swap = (lambda a: np.swapaxes(a, 0, 1)) if time_major else np.asarray
    inputs = (swap(xs), None if resets is None else swap(resets))
    run = lambda p, x, h, r, r_state: kernel_run(p, x, h, use_bias, lengths=lengths, resets=r,
                                                 reset_state=r_state, **options)
    assert uses_kernel(run, params, inputs[0], h0, inputs[1], reset_state, target=FORWARD)
    ys, final, states = jax.jit(run)(params, inputs[0], h0, inputs[1], reset_state)

    step = functools.partial(ref.gru_step, jax.tree_util.tree_map(np.asarray, params))
    want_ys, want_final, want_states = ref.loop_unroll(
        step, xs, h0, lengths=lengths, resets=resets, reverse=options.get("reverse", False),
        reset_state=np.zeros_like(h0) if reset_state is None else reset_state)
    np.testing.assert_allclose(swap(ys), want_ys, **tol)
    np.testing.assert_allclose(final, want_final, **tol)
    if options.get("all_states"):
        np.testing.assert_allclose(swap(states), want_states, **tol)
    else:
        assert states is None


@pytest.mark.parametrize("hidden,time_major,reverse,padded,use_bias", [
    (80, True, True, True, True),
    pytest.param(32, False, False, False, True, marks=pytest.mark.slow),
    pytest.param(40, False, True, True, False, marks=pytest.mark.slow)])
def test_gradients_match_the_loop(each_variant, hidden, time_major, reverse, padded, use_bias):
    """Reverse mode runs the backward kernel (its product in panels of 4 vectors
    of units: 80 and 40 end on a partial one). Padded: with lengths, resets and
    a reset state, which gets its gradient too."""
    cell, params, xs, h0 = problem(batch=6, hidden=hidden, seed=1, use_bias=use_bias)
    if not fits(hidden):
        pytest.skip(f"{hidden} units do not fit {each_variant}'s vectors")
    cot = np.random.default_rng(2).normal(size=(6, 6, hidden)).astype(np.float32)
    lengths, resets = masks(6, 6, seed=1) if padded else (None, None)
    swap = (lambda a: jnp.swapaxes(a, 0, 1)) if time_major else (lambda a: a)
    reset_state = h0[::-1].copy() if padded else None

    def loss(run, params, xs, h0, reset_state):
        ys, h = run(params, xs, h0, reset_state)
        return jnp.sum(ys * cot) + jnp.sum(jnp.sin(h))

    def kernel(p, x, h0, reset_state):
        ys, final, _ = kernel_run(p, swap(x), h0, use_bias, reverse=reverse,
                                  time_major=time_major, lengths=lengths,
                                  resets=None if resets is None else swap(resets),
                                  reset_state=reset_state)
        return swap(ys), final

    def loop(p, x, h0, reset_state):
        return loop_in_jax(p, x, h0, reverse, lengths, resets, reset_state)

    grad = lambda run: jax.grad(functools.partial(loss, run), argnums=(0, 1, 2, 3))
    assert uses_kernel(grad(kernel), params, xs, h0, reset_state, target=BACKWARD)
    close(grad(kernel)(params, xs, h0, reset_state), grad(loop)(params, xs, h0, reset_state),
          rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_gradients_match_finite_differences(variant):
    cell, params, xs, h0 = problem(batch=3, time=4, features=3, hidden=16, seed=3)
    lengths, resets = np.array([0, 2, 4], np.int32), np.array([[0, 1, 0, 0]] * 3, bool)
    f = lambda p, x, r: jnp.mean(jnp.tanh(kernel_run(
        p, x, h0, lengths=lengths, resets=resets, reset_state=r)[0]))
    r = h0[::-1].copy()
    assert uses_kernel(f, params, xs, r, target=FORWARD)
    check_grads(f, (params, xs, r), order=1, modes=("rev", "fwd"), eps=1e-2, atol=2e-3,
                rtol=2e-3)


@pytest.mark.parametrize("second_order", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_forward_mode_second_order_and_vmap(variant, second_order):
    """jvp runs the tangent as a scan; jvp of grad (Hessian-vector products)
    differentiates the kernels' plain-JAX twins; vmap maps the kernels."""
    cell, params, xs, h0 = problem(batch=4, time=5, hidden=16, seed=4)
    lengths, resets = masks(4, 5, seed=4)
    kernel = lambda p, x: jnp.sum(jnp.sin(kernel_run(p, x, h0, lengths=lengths,
                                                     resets=resets)[0]))
    loop = lambda p, x: jnp.sum(jnp.sin(loop_in_jax(p, x, h0, False, lengths, resets)[0]))
    assert uses_kernel(kernel, params, xs, target=FORWARD)
    tangent = randomize(params, seed=5)
    close(jax.jvp(lambda p: kernel(p, xs), (params,), (tangent,)),
          jax.jvp(lambda p: loop(p, xs), (params,), (tangent,)))
    if second_order:
        hvp = lambda f: jax.jvp(jax.grad(lambda p: f(p, xs)), (params,), (tangent,))[1]
        close(hvp(kernel), hvp(loop))
        return
    batch_of_xs = np.stack([xs, -xs])
    per_example = lambda f, x: jax.vmap(jax.grad(f), in_axes=(None, 0))(params, x)
    assert uses_kernel(functools.partial(per_example, kernel), batch_of_xs, target=BACKWARD)
    close(per_example(kernel, batch_of_xs), per_example(loop, batch_of_xs))


@pytest.mark.slow
def test_rows_split_over_threads_change_nothing(variant, monkeypatch):
    """Each thread steps its own block of rows (of 4 at least): 13 in 3 blocks, padded."""
    cell, params, xs, h0 = problem(batch=13, hidden=16)
    lengths, resets = masks(13, 6)
    run = lambda p: kernel_run(p, xs, h0, lengths=lengths, resets=resets)
    both = jax.jit(lambda p: (run(p)[:2], jax.grad(lambda p: jnp.sum(run(p)[0] ** 2))(p)))
    one = both(params)
    monkeypatch.setattr(primitives, "threads", lambda *sizes: 13)
    jax.clear_caches()
    assert uses_kernel(run, params, target=FORWARD)
    close(both(params), one, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("batch, hidden, threads, reverse, padded",
                         [(1, 40, 2, False, False), (3, 72, 3, True, True)])
def test_units_split_over_threads_on_few_rows(each_variant, monkeypatch, batch, hidden, threads,
                                              reverse, padded):
    """Values and gradients against the loop in jax.numpy when the threads share
    each step's units (a few rows; unit counts that split unevenly)."""
    cell, params, xs, h0 = problem(batch=batch, time=9, hidden=hidden, seed=5)
    lengths, resets = masks(batch, 9, seed=5) if padded else (None, None)
    reset_state = h0[::-1].copy() if padded else None
    cot = np.random.default_rng(6).normal(size=(batch, 9, hidden)).astype(np.float32)

    def kernel(p, x, h0, reset_state):
        ys, final, _ = kernel_run(p, x, h0, reverse=reverse, lengths=lengths, resets=resets,
                                  reset_state=reset_state)
        return ys, final

    loop = lambda p, x, h0, r: loop_in_jax(p, x, h0, reverse, lengths, resets, r)
    both = lambda run: jax.jit(lambda *a: (run(*a), jax.grad(
        lambda *a: jnp.sum(run(*a)[0] * cot) + jnp.sum(jnp.sin(run(*a)[1])),
        argnums=(0, 1, 2, 3))(*a)))
    monkeypatch.setattr(primitives, "threads", lambda *sizes: threads)
    jax.clear_caches()
    args = (params, xs, h0, reset_state)
    assert uses_kernel(kernel, *args, target=FORWARD) and uses_kernel(
        jax.grad(lambda *a: jnp.sum(kernel(*a)[0])), *args, target=BACKWARD)
    close(both(kernel)(*args), both(loop)(*args), rtol=1e-4, atol=1e-4)


def test_unroll_runs_the_kernel_as_the_scan_does(variant):
    """`rs.unroll(method="kernel")` against `method="scan"`, values and
    gradients, with lengths, resets and a reset state; unforced (`"auto"`),
    the scan runs while the table has no GRU figures."""
    cell, params, xs, h0 = problem(batch=4, hidden=16, seed=6)
    lengths, resets = masks(4, 6, seed=6)
    reset_state = h0[::-1].copy()

    def run(method, p, x, h):
        ys, final = rs.unroll(cell, p, x, initial_state=h, lengths=lengths, resets=resets,
                              reset_state=reset_state, method=method)
        return ys, final

    loss = lambda method: jax.grad(
        lambda p, x, h: jnp.sum(jnp.tanh(run(method, p, x, h)[0])) + jnp.sum(run(method, p, x, h)[1]),
        argnums=(0, 1, 2))
    assert uses_kernel(functools.partial(run, "kernel"), params, xs, h0, target=FORWARD)
    assert uses_kernel(loss("kernel"), params, xs, h0, target=BACKWARD)
    close(jax.jit(functools.partial(run, "kernel"))(params, xs, h0),
          jax.jit(functools.partial(run, "scan"))(params, xs, h0), **TOL)
    close(jax.jit(loss("kernel"))(params, xs, h0), jax.jit(loss("scan"))(params, xs, h0),
          rtol=1e-4, atol=1e-4)
    assert not uses_kernel(functools.partial(run, "auto"), params, xs, h0, target=FORWARD)


@pytest.mark.slow
def test_nan_propagates(variant):
    """A NaN input gives NaN outputs from its step on, as the scan does."""
    cell, params, xs, h0 = problem(hidden=16)
    xs[2, 3, 0] = np.nan
    ys, final, _ = jax.jit(kernel_run)(params, xs, h0)
    assert np.isnan(ys[2, 3:]).all() and np.isnan(final[2]).all()
    assert not np.isnan(ys[2, :3]).any() and not np.isnan(np.delete(ys, 2, axis=0)).any()


@pytest.mark.slow
def test_dispatch_follows_the_measured_table(variant, monkeypatch):
    cell, params, xs, h0 = problem(hidden=16)
    monkeypatch.setattr(speed, "MEASURED", {"gru": {variant: [((5, 128, 6, 16), (True, True))]}})
    assert speed.kernel_is_faster("gru", variant, 5, 7, 6, 16)
    assert not speed.kernel_is_faster("lstm", variant, 5, 7, 6, 16)
    assert uses_kernel(lambda p, x: rs.unroll(cell, p, x, initial_state=h0), params, xs,
                       target=FORWARD)
    monkeypatch.setattr(speed, "MEASURED", {"gru": {}})
    jax.clear_caches()
    assert not uses_kernel(lambda p, x: rs.unroll(cell, p, x, initial_state=h0), params, xs,
                           target=FORWARD)


def test_the_scan_runs_where_the_kernel_cannot(variant, monkeypatch):
    """TF1's reset_before GRU, the layer-norm GRU, another activation, bfloat16
    products and 18 units have no kernel (or cannot run it): the scan runs."""
    xs = problem()[2]
    for cell in [rs.gru(6, 16, reset_after=False), rs.gru(6, 16, layer_norm=True),
                 rs.gru(6, 16, activation="relu"), rs.gru(6, 16, compute_dtype=jnp.bfloat16),
                 rs.gru(6, 18)]:
        params = cell.init(jax.random.key(0))
        assert not uses_kernel(lambda p, x: rs.unroll(cell, p, x, method="sequential"), params,
                               xs, target=FORWARD)
    before = rs.gru(6, 16, reset_after=False)
    with pytest.raises(ValueError, match="method='kernel' cannot run this call"):
        rs.unroll(before, before.init(jax.random.key(0)), xs, method="kernel")
    cell, params, xs, h0 = problem(hidden=16)
    assert "multiple of" in gru_kernel.why_not(params, h0[:, :6], xs)
    assert gru_kernel.why_not(params, h0, xs) is None
    monkeypatch.setenv("RNNSCAN_NATIVE", "0")
    assert "RNNSCAN_NATIVE=0" in gru_kernel.why_not(params, h0, xs)
    with pytest.raises(ValueError, match="method='kernel' cannot run this call: .*RNNSCAN_NATIVE"):
        rs.unroll(cell, params, xs, method="kernel")


def test_torch_golden_3_layers(each_variant):
    """torch's 3-layer `nn.GRU` (4 units, `tests/golden/torch_gru_3layer.npz`):
    each layer through the kernel, outputs, final states and the gradients of
    `sum(y * cot)` with respect to x and h0. Only a variant of 4 lanes
    (baseline) fits 4 units."""
    meta, a = ref.golden("torch_gru_3layer")
    H = meta["hidden_size"]
    if not fits(H):
        pytest.skip(f"{H} units do not fit {each_variant}'s vectors")

    def layer_params(k):
        w_ih, w_hh = a[f"param/weight_ih_l{k}"].T, a[f"param/weight_hh_l{k}"].T
        b_ih, b_hh = a[f"param/bias_ih_l{k}"], a[f"param/bias_hh_l{k}"]
        b = b_ih + np.concatenate([b_hh[:2 * H], np.zeros(H, np.float32)])
        return {"w_ih": w_ih, "w_hh": w_hh, "b": b, "b_hn": b_hh[2 * H:]}

    layers = [layer_params(k) for k in range(meta["num_layers"])]

    def stack(x, h0):
        finals = []
        for k, p in enumerate(layers):
            x, final, _ = kernel_run(p, x, h0[k])
            finals.append(final)
        return x, jnp.stack(finals)

    assert uses_kernel(stack, a["x"], a["h0"], target=FORWARD)
    y, h_n = jax.jit(stack)(a["x"], a["h0"])
    close((y, h_n), (a["y"], a["h_n"]), rtol=1e-5, atol=1e-5)
    grads = jax.grad(lambda x, h: jnp.sum(stack(x, h)[0] * a["cot"]), argnums=(0, 1))
    assert uses_kernel(grads, a["x"], a["h0"], target=BACKWARD)
    close(jax.jit(grads)(a["x"], a["h0"]), (a["dx"], a["dh0"]), rtol=1e-4, atol=1e-5)
