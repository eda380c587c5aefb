"""The CPU kernel on a few rows, its threads splitting each step's units against
one thread alone (what it did before), and the scan; LSTM or GRU.

    python benchmarks/kernel_split.py [--cell gru] [--batches 1,2,4,8] [--rounds 15]

Per batch (time 1024, 256 inputs and units: the latency row) and mode, the
programs take turns, the first of each round alternating; prints the median
ms of each and the load average. One thread is had by tracing the kernel
with `rnnscan.kernels.primitives.threads` returning 1.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import rnnscan as rs  # noqa: E402
from rnnscan.kernels import primitives  # noqa: E402


def programs(cell_name, batch, time_, size, derivatives):
    cell = (rs.gru if cell_name == "gru" else rs.lstm)(size, size)
    params = cell.init(jax.random.key(0))
    xs = np.random.default_rng(0).normal(size=(batch, time_, size)).astype(np.float32)
    default = primitives.threads
    calls = {}
    for name, method, threads in (("split", "kernel", default), ("one thread", "kernel", None),
                                  ("scan", "scan", default)):
        primitives.threads = threads or (lambda *sizes: 1)
        apply = lambda p, x, method=method: rs.unroll(cell, p, x, method=method)[0]
        fn = jax.jit(jax.grad(lambda p, x: jnp.sum(apply(p, x)), argnums=(0, 1))
                     if derivatives else apply)
        jax.block_until_ready(fn(params, xs))  # traced (with these threads) and compiled
        calls[name] = lambda fn=fn: jax.block_until_ready(fn(params, xs))
    primitives.threads = default
    return calls


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cell", choices=("lstm", "gru"), default="lstm")
    parser.add_argument("--batches", default="1,2,4,8")
    parser.add_argument("--time", type=int, default=1024)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    for batch in map(int, args.batches.split(",")):
        for mode in ("fwd", "fwd+bwd"):
            calls = programs(args.cell, batch, args.time, args.size, mode == "fwd+bwd")
            times = {name: [] for name in calls}
            for i in range(args.rounds):
                for name in list(calls)[::1 if i % 2 else -1]:
                    start = time.perf_counter()
                    calls[name]()
                    times[name].append(time.perf_counter() - start)
            ms = {name: round(1e3 * statistics.median(t), 2) for name, t in times.items()}
            print(json.dumps(dict(cell=args.cell, batch=batch, time=args.time, size=args.size,
                                  mode=mode, ms=ms, load=os.getloadavg()[0])), flush=True)


if __name__ == "__main__":
    main()
