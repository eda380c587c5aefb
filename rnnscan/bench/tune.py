"""`rnnscan tune`: the CPU kernel against the scan for the shapes a user names,
on this CPU, written to the cache `method="auto"` reads first
(`rnnscan.kernels.speed`: keyed by CPU model and rnnscan version).

    rnnscan tune --cell lstm --shape 1x1024x256x256 --shape 64x100x512x512

Per shape (`BATCHxTIMExINPUTxHIDDEN`) and mode (forward; forward+backward of
a sum of the outputs, w.r.t. params and inputs), the kernel and the scan take
turns, the first of each pair alternating, `--rounds` times after a warm-up;
the kernel wins a mode where its median time is below the scan's.
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

import rnnscan as rs
from rnnscan.arguments import positive_int
from rnnscan.kernels import loader, speed

CELLS = {"lstm": (rs.lstm, "lstm_cpu"), "gru": (rs.gru, "gru_cpu")}


def shape(text: str) -> tuple[int, int, int, int]:
    """`BATCHxTIMExINPUTxHIDDEN`, four positive integers."""
    parts = text.lower().split("x")
    if len(parts) != 4 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise argparse.ArgumentTypeError(
            f"--shape must be BATCHxTIMExINPUTxHIDDEN, four positive integers; got {text!r}")
    return tuple(int(p) for p in parts)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cell", choices=sorted(CELLS), default="lstm")
    parser.add_argument("--shape", type=shape, action="append", required=True,
                        help="BATCHxTIMExINPUTxHIDDEN (repeat for several shapes)")
    parser.add_argument("--rounds", type=positive_int, default=7,
                        help="timed pairs per shape and mode (default 7)")


def programs(cell_name: str, batch: int, time_: int, features: int, hidden: int,
             derivatives: bool) -> dict:
    """`{"kernel": call, "scan": call}`, each running one compiled program once."""
    cell = CELLS[cell_name][0](features, hidden)
    params = cell.init(jax.random.key(0))
    xs = np.random.default_rng(0).normal(size=(batch, time_, features)).astype(np.float32)
    calls = {}
    for method in ("kernel", "scan"):
        apply = lambda p, x, method=method: rs.unroll(cell, p, x, method=method)[0]
        fn = jax.jit(jax.grad(lambda p, x: jnp.sum(apply(p, x)), argnums=(0, 1))
                     if derivatives else apply)
        calls[method] = lambda fn=fn: jax.block_until_ready(fn(params, xs))
    return calls


def median_ms(calls: dict, rounds: int) -> dict:
    """Median milliseconds per program, the programs taking turns (the first of
    each round alternating) after one warm-up call each."""
    for call in calls.values():
        call()
    times = {name: [] for name in calls}
    for i in range(rounds):
        for name in list(calls)[::1 if i % 2 else -1]:
            start = time.perf_counter()
            calls[name]()
            times[name].append(time.perf_counter() - start)
    return {name: 1e3 * statistics.median(t) for name, t in times.items()}


def run(args: argparse.Namespace) -> int:
    """Times the kernel against the scan for each --shape on this CPU and
    records which is faster, forward and forward+backward, in the cache that
    `method="auto"` reads before the shipped table."""
    if jax.default_backend() != "cpu":
        print(f"rnnscan tune: the kernels run on a CPU; the backend is {jax.default_backend()}")
        return 1
    lib = loader.load(CELLS[args.cell][1])
    if lib is None:
        print("rnnscan tune: the kernel is unavailable here: " + loader.info()["why"])
        return 1
    entries = []
    for batch, time_, features, hidden in args.shape:
        if hidden % lib.lanes:
            print(f"{batch}x{time_}x{features}x{hidden}: skipped, the {lib.variant} kernel needs "
                  f"a multiple of {lib.lanes} units")
            continue
        ms = {mode: median_ms(programs(args.cell, batch, time_, features, hidden, mode == "fwd+bwd"),
                              args.rounds) for mode in ("fwd", "fwd+bwd")}
        faster = [ms[m]["kernel"] < ms[m]["scan"] for m in ("fwd", "fwd+bwd")]
        entries.append(dict(kernel=args.cell, variant=lib.variant,
                            shape=(batch, time_, features, hidden), faster=faster, ms=ms))
        print(f"{args.cell} {batch}x{time_}x{features}x{hidden} ({lib.variant}): "
              + ", ".join(f"{m} kernel {ms[m]['kernel']:.2f} ms, scan {ms[m]['scan']:.2f} ms"
                          for m in ms), flush=True)
    if entries:
        print(f"recorded in {speed.record(entries)} for {speed.cache_key()}")
    return 0
