"""`jax.export` of every strategy for every platform from this CPU-only process:
the kernels lower to their FFI call on the CPU and to the scan elsewhere; a
multi-platform module and a serialized CPU module give the live call's numbers,
and those of a plain numpy loop (tests/reference.py)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnscan as rs
from rnnscan.kernels import loader
from tests import reference as ref

B, T, F, H = 3, 6, 4, 16
LENGTHS = np.array([6, 2, 4], np.int32)
XS = np.random.RandomState(0).standard_normal((B, T, F)).astype(np.float32)
CELLS = {"lstm": lambda: rs.lstm(F, H), "gru": lambda: rs.gru(F, H),
         "mingru": lambda: rs.mingru(F, H)}
# (cell, unroll options): every strategy of the planner.
STRATEGIES = [(c, o) for c in ("lstm", "gru") for o in (
    dict(method="auto"), dict(method="scan"), dict(method="kernel"), dict(method="newton"),
    dict(method="scan", remat=2))] + [("mingru", dict(method="associative"))]
KERNEL = loader.load("lstm_cpu") is not None


def params(cell):
    rng = np.random.RandomState(1)
    return jax.tree_util.tree_map(
        lambda a: (0.5 * rng.standard_normal(a.shape)).astype(a.dtype),
        jax.eval_shape(cell.init, jax.random.key(0)))


def model(name, options, grad):
    cell = CELLS[name]()
    if options.get("method") == "kernel" and not KERNEL:
        pytest.skip("no kernel built here")
    forward = lambda p, xs: rs.unroll(cell, p, xs, lengths=LENGTHS, **options)[0]
    if grad:
        return cell, jax.jit(jax.grad(lambda p, xs: jnp.sum(jnp.sin(forward(p, xs)))))
    return cell, jax.jit(forward)


@pytest.mark.parametrize("grad", [False, True], ids=["forward", "grad"])
@pytest.mark.parametrize("platform", ["cpu", "cuda", "tpu"])
@pytest.mark.parametrize("name,options", STRATEGIES, ids=lambda x: str(x))
def test_every_strategy_exports_for_every_platform(name, options, platform, grad):
    cell, f = model(name, options, grad)
    p = params(cell)
    checks = rs.export_checks() if platform == "cpu" else ()
    exported = jax.export.export(f, platforms=[platform], disabled_checks=checks)(p, XS)
    text = exported.mlir_module()
    if platform != "cpu":  # no CPU kernel in an accelerator's module
        assert "custom_call @rnnscan_" not in text
    elif options.get("method") == "kernel":
        assert f"custom_call @rnnscan_{name}_" in text


@pytest.mark.parametrize("grad", [False, True], ids=["forward", "grad"])
@pytest.mark.parametrize("name", ["lstm", "gru"])
def test_multi_platform_export_runs_the_kernel_here(name, grad):
    cell, f = model(name, dict(method="kernel"), grad)
    p = params(cell)
    exported = jax.export.export(f, platforms=("cpu", "cuda", "tpu"),
                                 disabled_checks=rs.export_checks())(p, XS)
    assert f"custom_call @rnnscan_{name}_" in exported.mlir_module()
    got, live = exported.call(p, XS), f(p, XS)
    for g, w in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(live)):
        np.testing.assert_array_equal(np.asarray(g), np.asarray(w))


@pytest.mark.parametrize("name", ["lstm", "gru"])
def test_serialized_cpu_module_gives_the_live_results(name):
    pytest.importorskip("flatbuffers")  # jax.export's serialization
    cell, f = model(name, dict(method="kernel"), grad=False)
    p = params(cell)
    blob = jax.export.export(f, platforms=["cpu"], disabled_checks=rs.export_checks())(
        p, XS).serialize()
    got = jax.export.deserialize(blob).call(p, XS)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(f(p, XS)))
    # ... and a plain numpy loop's.
    numpy_p = jax.tree_util.tree_map(np.asarray, p)
    step = functools.partial(ref.lstm_step if name == "lstm" else ref.gru_step, numpy_p)
    zeros = np.zeros((B, H), np.float32)
    ys = ref.loop_unroll(step, XS, (zeros, zeros) if name == "lstm" else zeros,
                         lengths=LENGTHS)[0]
    np.testing.assert_allclose(np.asarray(got), ys, rtol=1e-5, atol=1e-5)
