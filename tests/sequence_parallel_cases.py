"""Sequence-parallel `unroll` on 8 virtual CPU devices against the unsharded call.

Run as a script by tests/test_sequence_parallel.py, in a process started with
`XLA_FLAGS=--xla_force_host_platform_device_count=8` (the device count is fixed
when JAX starts): prints one JSON object, per case the largest differences of
the outputs, the final state and the gradients from `rs.unroll` on one device.
"""

from __future__ import annotations

import json
import sys

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

import rnnscan as rs
from rnnscan import sequence_parallel

BATCH, TIME, FEATURES, HIDDEN, DEVICES = 3, 32, 3, 4, 8
F64 = jnp.float64

# name: (cell, sharded method, reverse, with initial_state); each with lengths and resets.
CASES = {
    "mingru_reverse": (lambda: rs.mingru(FEATURES, HIDDEN, param_dtype=F64), "associative", True, True),
    "gru_newton": (lambda: rs.gru(FEATURES, HIDDEN, param_dtype=F64), "newton", False, True),
    "lstm_newton_reverse": (lambda: rs.lstm(FEATURES, HIDDEN, param_dtype=F64), "newton", True, True),
    "gru_pipeline_reverse": (lambda: rs.gru(FEATURES, HIDDEN, param_dtype=F64), "scan", True, True),
}
SLOW_CASES = {  # tests/test_sequence_parallel.py runs these with -m slow
    "mingru": (lambda: rs.mingru(FEATURES, HIDDEN, param_dtype=F64), "auto", False, True),
    "lru": (lambda: rs.lru(FEATURES, HIDDEN, param_dtype=F64), "auto", False, False),
    "gru_newton_reverse": (lambda: rs.gru(FEATURES, HIDDEN, param_dtype=F64), "newton", True, False),
    "lstm_newton": (lambda: rs.lstm(FEATURES, HIDDEN, param_dtype=F64), "newton", False, True),
    "lstm_pipeline": (lambda: rs.lstm(FEATURES, HIDDEN, param_dtype=F64), "sequential", False, True),
}


def inputs(cell, params, with_initial_state):
    rng = np.random.default_rng(0)
    xs = jnp.asarray(rng.normal(size=(BATCH, TIME, FEATURES)))
    # A full row, a row ending mid-shard, a row ending on a shard boundary.
    lengths = jnp.asarray([TIME, 13, 8], jnp.int32)
    resets = jnp.asarray(rng.random((BATCH, TIME)) < 0.1)
    h0 = None
    if with_initial_state:
        h0 = jax.tree_util.tree_map(
            lambda z: jnp.asarray(rng.normal(size=z.shape) * 0.5, z.dtype),
            cell.initial_state(params, (BATCH,)))
    return xs, lengths, resets, h0


def loss(ys, state):
    """A scalar that weighs every output and state number differently."""
    leaves = jax.tree_util.tree_leaves((ys, state))
    return sum(jnp.sum(jnp.real(a) * jnp.cos(jnp.arange(a.size).reshape(a.shape))) for a in leaves)


def compare(name):
    make, method, reverse, with_h0 = {**CASES, **SLOW_CASES}[name]
    cell = make()
    params = cell.init(jax.random.PRNGKey(1))
    xs, lengths, resets, h0 = inputs(cell, params, with_h0)
    mesh = jax.make_mesh((DEVICES,), ("seq",), axis_types=(AxisType.Auto,))
    on = lambda spec, a: jax.device_put(a, NamedSharding(mesh, spec))
    sharded_xs, sharded_resets = on(P(None, "seq"), xs), on(P(None, "seq"), resets)
    options = dict(lengths=lengths, resets=resets, reverse=reverse)

    def whole(params, xs, h0):
        return rs.unroll(cell, params, xs, initial_state=h0, method="scan", **options)

    def sharded(params, xs, h0, lengths, resets):
        return sequence_parallel.unroll(cell, params, xs, axis_name="seq", initial_state=h0,
                                        lengths=lengths, resets=resets, reverse=reverse,
                                        method=method)

    split = jax.jit(jax.shard_map(sharded, mesh=mesh,
                                  in_specs=(P(), P(None, "seq"), P(), P(), P(None, "seq")),
                                  out_specs=(P(None, "seq"), P())))
    run = lambda p, x, h: split(p, x, h, lengths, sharded_resets)
    # One compilation a side: the outputs and the gradient with respect to
    # params, xs and (where given) the initial state.
    argnums = (0, 1, 2) if h0 is not None else (0, 1)
    value_and_grad = lambda f, x: jax.jit(jax.grad(lambda p, x, h: (loss(*f(p, x, h)), f(p, x, h)),
                                                   argnums=argnums, has_aux=True))(params, x, h0)
    g_expected, expected = value_and_grad(whole, xs)
    g_got, got = value_and_grad(run, sharded_xs)
    err = lambda a, b: max(float(jnp.max(jnp.abs(jnp.asarray(x) - jnp.asarray(y))))
                           for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))
    return {"ys": err(expected[0], got[0]), "state": err(expected[1], got[1]),
            "grad": err(g_expected, g_got),
            "grad_scale": max(float(jnp.max(jnp.abs(g))) for g in jax.tree_util.tree_leaves(g_expected))}


if __name__ == "__main__":
    # float64: differences are the method's, not rounding's. Set here, not at import:
    # the test module imports CASES, and its pytest worker must stay float32.
    jax.config.update("jax_enable_x64", True)
    assert jax.device_count() == DEVICES, jax.devices()
    names = sys.argv[1:] or list(CASES)
    print(json.dumps({name: compare(name) for name in names}))
