"""One kernel path. `rs.unroll` plans once: the kernel's eligibility
(`primitives.why_not`, behind every adapter's `why_not`) is asked once per call,
by the plan, and the kernel then runs without asking again (results against a
plain numpy loop). The variants are one table, `build.VARIANTS`, which the
loader and the benchmark's emulation read, and the C++ names its FFI targets."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnscan as rs
from rnnscan.bench.run import EMULATION
from rnnscan.kernels import build, loader, primitives
from tests import reference as ref

B, T, F, H = 3, 5, 4, 16
XS = np.random.RandomState(0).standard_normal((B, T, F)).astype(np.float32)
LENGTHS = np.array([5, 1, 3], np.int32)


@pytest.mark.skipif(loader.load("lstm_cpu") is None, reason="no kernel built here")
@pytest.mark.parametrize("name", ["lstm", "gru"])
@pytest.mark.parametrize("method", ["kernel", "auto", "sequential"])
def test_one_eligibility_check_per_call(name, method, monkeypatch):
    cell = rs.lstm(F, H) if name == "lstm" else rs.gru(F, H)
    rng = np.random.RandomState(1)
    params = jax.tree_util.tree_map(lambda a: (0.5 * rng.standard_normal(a.shape)).astype(
        a.dtype), jax.eval_shape(cell.init, jax.random.key(0)))
    calls = []
    real = primitives.why_not
    monkeypatch.setattr(primitives, "why_not", lambda *a: calls.append(a) or real(*a))
    ys = rs.unroll(cell, params, XS, lengths=LENGTHS, method=method)[0]
    assert len(calls) == 1
    grads = jax.grad(lambda p: jnp.sum(rs.unroll(cell, p, XS, method=method)[0]))(params)
    assert len(calls) == 2 and jax.tree_util.tree_structure(grads) == \
        jax.tree_util.tree_structure(params)
    numpy_p = jax.tree_util.tree_map(np.asarray, params)
    step = functools.partial(ref.lstm_step if name == "lstm" else ref.gru_step, numpy_p)
    zeros = np.zeros((B, H), np.float32)
    want = ref.loop_unroll(step, XS, (zeros, zeros) if name == "lstm" else zeros,
                           lengths=LENGTHS)[0]
    np.testing.assert_allclose(np.asarray(ys), want, rtol=1e-5, atol=1e-5)


def test_the_variant_table_is_what_the_loader_and_the_benchmark_read(monkeypatch):
    if not build.X86:
        pytest.skip("the x86 variants")
    v4 = {"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl", "avx2", "fma", "bmi2",
          "bmi1", "f16c", "movbe", "abm"}
    for flags, best in ((v4, "avx512"), (v4 - {"avx512bw"}, "avx2"), ({"sse2"}, "baseline")):
        monkeypatch.setattr(loader, "cpu_flags", lambda: flags)
        assert loader.cpu_isa() == best
    assert EMULATION["avx2"]["RNNSCAN_KERNEL_ISA"] == "avx2" and EMULATION["native"] == {}


@pytest.mark.skipif(loader.load("lstm_cpu") is None, reason="no kernel built here")
def test_the_cpp_lists_the_targets_it_defines():
    for source, cell in (("lstm_cpu", "lstm"), ("gru_cpu", "gru")):
        kernel = loader.load(source)
        assert kernel.lanes == build.VARIANTS[kernel.variant].lanes
        assert set(kernel.targets) == {f"rnnscan_{cell}_{k}"
                                      for k in ("forward", "forward_saving", "backward")}
    assert {c.is_custom_call() for c in rs.export_checks()} >= {
        loader.load("gru_cpu").target("rnnscan_gru_backward")}
