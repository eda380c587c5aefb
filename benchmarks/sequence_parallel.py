"""Sequence parallelism timed: `rs.unroll` on one device against
`rnnscan.sequence_parallel.unroll` with the time axis over every local device.

Forward+backward (the gradient of a loss with respect to params and inputs),
jit-compiled, compile excluded, median of `--reps` alternating runs. On one
device the sharded call measures the machinery's overhead; the relay is never
faster than one device (it runs the shards one after another). Time this only
on real parallel hardware: virtual CPU devices share the host's cores.

    PYTHONPATH=. python benchmarks/sequence_parallel.py --out $OUT/sequence_parallel.json
"""

from __future__ import annotations

import argparse
import json

import jax
import jax.numpy as jnp
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

import rnnscan as rs
from rnnscan import sequence_parallel
from rnnscan.bench.measure import time_alternating

# name -> (constructor, hidden size, method)
CASES = {
    "mingru, associative": (rs.mingru, 256, "associative"),
    "gru, Newton": (rs.gru, 16, "newton"),
    "lstm, relay": (rs.lstm, 256, "scan"),
}


def loss_gradient(f):
    return jax.jit(jax.grad(lambda p, x: sum(jnp.sum(a) for a in jax.tree_util.tree_leaves(f(p, x))),
                            argnums=(0, 1)))


def rows(time, batch, features, reps):
    devices = jax.device_count()
    mesh = jax.make_mesh((devices,), ("seq",), axis_types=(AxisType.Auto,))
    xs = jax.random.normal(jax.random.PRNGKey(1), (batch, time, features))
    sharded_xs = jax.device_put(xs, NamedSharding(mesh, P(None, "seq")))
    for name, (make, hidden, method) in CASES.items():
        cell = make(features, hidden)
        params = cell.init(jax.random.PRNGKey(0))
        whole = loss_gradient(lambda p, x: rs.unroll(cell, p, x, method=method))
        sharded = loss_gradient(jax.shard_map(
            lambda p, x: sequence_parallel.unroll(cell, p, x, axis_name="seq", method=method),
            mesh=mesh, in_specs=(P(), P(None, "seq")), out_specs=(P(None, "seq"), P())))
        one = time_alternating([lambda p, x: whole(p, xs)], (params, xs), reps)[0]
        split = time_alternating([lambda p, x: sharded(p, sharded_xs)], (params, xs), reps)[0]
        yield dict(case=name, time=time, batch=batch, devices=devices, one_device_ms=1e3 * one,
                   sharded_ms=1e3 * split)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--time", type=int, default=16384)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--features", type=int, default=64)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--out", help="write the rows to this JSON file")
    args = parser.parse_args()
    print(f"{jax.devices()}\n| case | T | devices | 1 device ms | sharded ms |\n|---|---:|---:|---:|---:|")
    found = []
    for row in rows(args.time, args.batch, args.features, args.reps):
        found.append(row)
        print(f"| {row['case']} | {row['time']} | {row['devices']} | {row['one_device_ms']:.2f} "
              f"| {row['sharded_ms']:.2f} |", flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(found, f, indent=1)


if __name__ == "__main__":
    main()
