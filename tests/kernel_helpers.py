"""What the kernel tests (`test_kernels.py`, `test_kernels_gru.py`) share: the
variants this CPU can execute, the `variant` fixture that runs a test once per
variant, the check in the lowered HLO that a kernel ran, and the lengths and
resets of a padded problem."""

import os
import re

import jax
import numpy as np
import pytest

from rnnscan.kernels import build, loader

RUNNABLE = list(build.VARIANTS)[list(build.VARIANTS).index(loader.cpu_isa()):]
TOL = dict(rtol=2e-5, atol=2e-5)


def built_variants(source: str) -> list[str]:
    """The variants of kernel `source` this CPU can execute and the build made."""
    return [v for v in RUNNABLE if loader.library(source, v) is not None]


def skip_unless_built(source: str):
    return pytest.mark.skipif(jax.default_backend() != "cpu" or not built_variants(source),
                              reason="the kernels run on a CPU, once built")


def variant_fixture(source: str, name: str = "variant", best_only: bool = False):
    """A fixture `name` over `source`'s built variants: the variant a test
    runs; jit caches are cleared around it, as the variant is chosen when a
    function is traced. With `best_only`, the default run has the best variant
    alone (the others are marked slow)."""
    built = built_variants(source)
    params = [pytest.param(v, marks=pytest.mark.slow) if best_only and i else v
              for i, v in enumerate(built)]

    @pytest.fixture(params=params, name=name)
    def variant(request, monkeypatch):
        monkeypatch.setenv("RNNSCAN_KERNEL_ISA", request.param)
        jax.clear_caches()
        yield request.param
        jax.clear_caches()

    return variant


def uses_kernel(fn, *args, target="rnnscan_lstm_forward") -> bool:
    """Whether `fn` runs the kernel `target` (a forward: saving or not) of the
    variant under test."""
    variant = os.environ["RNNSCAN_KERNEL_ISA"]
    text = jax.jit(fn).lower(*args).as_text()
    return re.search(f"@{target}(_saving)?_{variant}\\(", text) is not None


def masks(batch, time, seed=0):
    """Lengths with a 0 and a full row, and resets, some of them past a length."""
    rng = np.random.default_rng(seed + 10)
    lengths = rng.integers(0, time + 1, size=batch)
    lengths[0], lengths[-1] = 0, time
    resets = rng.random((batch, time)) < 0.3
    resets[-1, time - 1] = resets[0, 0] = True
    return lengths.astype(np.int32), resets


def close(got, want, rtol=2e-4, atol=2e-4):
    """Every leaf of `got` near the one of `want`."""
    for g, w in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
        np.testing.assert_allclose(g, w, rtol=rtol, atol=atol)
