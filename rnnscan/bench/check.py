"""Correctness before speed: rnnscan against the plain `lax.scan` reference, and
against torch when it is installed, on the default device.

`python -m rnnscan.bench.check` prints one line per comparison and exits non-zero
on any mismatch (benchmarks/gpu.sh runs it before timing anything).
"""

from __future__ import annotations

import sys
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

import rnnscan as rs
from rnnscan.bench.configs import Config
from rnnscan.bench.peers import lengths, on_gpu, plain_apply, plain_init
from rnnscan import tuning

# An odd length: the scan's unroll factor need not divide time.
SHAPE = (8, 37, 24, 64)


def _rnnscan_cell(config: Config, compute_dtype=None):
    if config.cell == "lstm":  # the plain reference has torch's LSTM: no forget bias
        return rs.lstm(config.input, config.hidden, forget_bias=0.0, compute_dtype=compute_dtype)
    return rs.gru(config.input, config.hidden, compute_dtype=compute_dtype)


def _close(name: str, got, want, tol: float, log) -> bool:
    """Compares two pytrees leaf by leaf, relative to the largest magnitude in `want`."""
    worst = 0.0
    for g, w in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
        g, w = np.asarray(g, np.float64), np.asarray(w, np.float64)
        worst = max(worst, float(np.max(np.abs(g - w)) / max(1.0, np.max(np.abs(w)))))
    ok = worst <= tol
    log(f"{'ok  ' if ok else 'FAIL'} {name}: max scaled error {worst:.2e} (tolerance {tol:.0e})")
    return ok


def against_plain(config: Config, compute_dtype, tol: float, log) -> bool:
    """Outputs and the gradient of a random projection of them, w.r.t. params and
    inputs (a `padded` config's rows of `peers.lengths`)."""
    key_x, key_p, key_ct = jax.random.split(jax.random.PRNGKey(1), 3)
    xs = jax.random.normal(key_x, (config.batch, config.time, config.input))
    ct = jax.random.normal(key_ct, (config.batch, config.time, config.hidden))
    params = plain_init(config, key_p)[0]
    cell = _rnnscan_cell(config, compute_dtype)
    n = lengths(config)
    mine = lambda p, x: rs.unroll(cell, p, x, lengths=n)[0]
    ref = lambda p, x: plain_apply(config.cell, [p], x, compute_dtype, n)

    def value_and_grads(apply):
        f = jax.jit(lambda p, x: (apply(p, x), jax.grad(lambda p, x: jnp.sum(apply(p, x) * ct),
                                                        argnums=(0, 1))(p, x)))
        return f(params, xs)

    name = f"{config.shape} {jnp.dtype(compute_dtype or jnp.float32).name} vs plain scan"
    return _close(name, value_and_grads(mine), value_and_grads(ref), tol, log)


def against_torch(config: Config, tol: float, log) -> bool:
    """Outputs against torch's own module (cuDNN on a GPU), weights via rnnscan.interop."""
    import torch

    device = "cuda" if on_gpu() else "cpu"
    torch.backends.cudnn.allow_tf32 = False
    torch.manual_seed(0)
    make = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[config.cell]
    module = make(config.input, config.hidden, batch_first=True)
    cell, params = rs.interop.from_torch(module)
    xs = np.random.default_rng(0).standard_normal(
        (config.batch, config.time, config.input), np.float32)
    with torch.no_grad():
        want = module.to(device)(torch.from_numpy(xs).to(device))[0].cpu().numpy()
    got = jax.jit(lambda p, x: rs.unroll(cell, p, x)[0])(params, xs)
    return _close(f"{config.shape} vs torch on {device}", got, want, tol, log)


def check(log: Callable[[str], None] = print, with_torch: bool = True) -> bool:
    """Runs every comparison; True when all pass."""
    log(f"device: {jax.devices()[0].device_kind}; rnnscan default unroll {tuning.for_backend().unroll}")
    ok = True
    for cell in ("lstm", "gru"):
        config = Config("check", cell, *SHAPE)
        with jax.default_matmul_precision("highest"):
            ok &= against_plain(config, None, 1e-4, log)
        ok &= against_plain(config, jnp.bfloat16, 3e-2, log)
        if with_torch:
            try:
                import torch  # noqa: F401
            except ImportError:
                log("skip torch: not installed")
                with_torch = False
            else:
                with jax.default_matmul_precision("highest"):
                    ok &= against_torch(config, 1e-4, log)
    log("all checks passed" if ok else "CHECKS FAILED")
    return ok


if __name__ == "__main__":
    sys.exit(0 if check(lambda line: print(line, flush=True)) else 1)
