"""Memory per device of one long sequence: `rs.unroll` on one device against
`rnnscan.sequence_parallel.unroll` with the time axis over 8 devices.

XLA's own accounting of the compiled program (`memory_analysis()`: arguments,
outputs and temporaries of one device's program), for the forward pass and for
forward+backward (the gradient of a loss with respect to params and inputs).
No timings: on virtual CPU devices the 8 shards share the host's cores.

    XLA_FLAGS=--xla_force_host_platform_device_count=8 PYTHONPATH=. python benchmarks/sequence_parallel_memory.py
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

import rnnscan as rs
from rnnscan import sequence_parallel

DEVICES = 8


def megabytes(compiled):
    m = compiled.memory_analysis()
    return (m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
            - m.alias_size_in_bytes) / 2**20


def rows(time, features, batch):
    mesh = jax.make_mesh((DEVICES,), ("seq",), axis_types=(AxisType.Auto,))
    xs = jax.ShapeDtypeStruct((batch, time, features), jnp.float32)
    xs_sharded = jax.ShapeDtypeStruct(xs.shape, xs.dtype,
                                      sharding=NamedSharding(mesh, P(None, "seq")))
    cases = [("mingru 256, associative", rs.mingru(features, 256), "associative"),
             ("lstm 256, relay (scan)", rs.lstm(features, 256), "scan"),
             ("gru 16, Newton", rs.gru(features, 16), "newton")]
    for name, cell, method in cases:
        params = cell.init(jax.random.PRNGKey(0))
        whole = lambda p, x: rs.unroll(cell, p, x, method=method)
        sharded = jax.shard_map(
            lambda p, x: sequence_parallel.unroll(cell, p, x, axis_name="seq", method=method),
            mesh=mesh, in_specs=(P(), P(None, "seq")), out_specs=(P(None, "seq"), P()))
        for mode in ("forward", "train"):
            figures = []
            for f, x in ((whole, xs), (sharded, xs_sharded)):
                if mode == "train":
                    f = jax.grad(lambda p, x, f=f: sum(jnp.sum(a) for a in
                                                     jax.tree_util.tree_leaves(f(p, x))),
                                 argnums=(0, 1))
                figures.append(megabytes(jax.jit(f).lower(params, x).compile()))
            yield name, mode, *figures


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--time", type=int, default=65536)
    parser.add_argument("--features", type=int, default=64)
    parser.add_argument("--batch", type=int, default=1)
    args = parser.parse_args()
    if jax.device_count() != DEVICES:
        raise SystemExit(f"needs {DEVICES} devices: XLA_FLAGS=--xla_force_host_platform_device_count=8")
    print(f"time {args.time}, batch {args.batch}, features {args.features}, float32; "
          f"MiB per device (XLA memory_analysis: arguments + outputs + temporaries)\n")
    print("| cell, method | pass | 1 device | 8 devices, each | ratio |")
    print("|---|---|---:|---:|---:|")
    for name, mode, one, eight in rows(args.time, args.features, args.batch):
        print(f"| {name} | {mode} | {one:.1f} | {eight:.1f} | {one / eight:.2f} |", flush=True)


if __name__ == "__main__":
    main()
