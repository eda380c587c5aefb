"""Kernel against scan for one LSTM shape, wall and CPU time (every thread of
the process), and the share of one core's peak float32 FLOP/s per CPU second:
how well the FMA units are used, a figure a loaded machine does not hide.

    python benchmarks/kernel_cputime.py 128 25 1024 1024 fwd+bwd [ROUNDS]

Arguments: batch time input hidden, fwd or fwd+bwd, rounds (default 5). The
peak assumes AVX2's 8 lanes, 2 FMA units and /proc/cpuinfo's clock.
"""
import time, statistics, os, sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import jax, jax.numpy as jnp, numpy as np
import rnnscan as rs
B, T, I, H, mode = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
cell = rs.lstm(I, H)
p = cell.init(jax.random.key(0))
xs = np.random.default_rng(0).normal(size=(B, T, I)).astype(np.float32)
fns = {}
for m in ("kernel", "scan"):
    ap = lambda p, x, m=m: rs.unroll(cell, p, x, method=m)[0]
    f = jax.jit(ap if mode == "fwd" else jax.grad(lambda p, x: jnp.sum(ap(p, x)), argnums=(0, 1)))
    jax.block_until_ready(f(p, xs)); fns[m] = f
res = {k: ([], []) for k in fns}
for r in range(int(sys.argv[6]) if len(sys.argv) > 6 else 5):
    for k in (list(fns) if r % 2 else list(fns)[::-1]):
        w0, c0 = time.perf_counter(), time.process_time(); jax.block_until_ready(fns[k](p, xs))
        res[k][0].append(time.perf_counter() - w0); res[k][1].append(time.process_time() - c0)
flops = (2 if mode == "fwd" else 6) * B * T * 4 * H * (I + H)
mhz = next(float(line.split(":")[1]) for line in open("/proc/cpuinfo") if line.startswith("cpu MHz"))
core_peak = 2 * 8 * 2 * mhz * 1e6
out = {k: dict(wall_ms=round(1e3*statistics.median(w), 1), cpu_ms=round(1e3*statistics.median(c), 1),
               pct_core_peak_per_cpu_s=round(100 * flops / statistics.median(c) / core_peak, 1)) for k, (w, c) in res.items()}
print(dict(shape=(B, T, I, H), mode=mode, **out, load=os.getloadavg()[0]))
