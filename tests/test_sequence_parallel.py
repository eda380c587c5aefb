"""`rnnscan.sequence_parallel.unroll` against `rs.unroll` on one device.

The comparisons need 8 devices, which JAX fixes when it starts: they run in a
subprocess with 8 virtual CPU devices (tests/sequence_parallel_cases.py), for
a linear cell, a GRU and an LSTM by Newton and the relay, each with lengths
(ending mid-shard and on a shard boundary) and resets, forward and gradient.
The bad-input tests run here, on a mesh of this process's one device.
"""

import json
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType
from jax.sharding import PartitionSpec as P

import rnnscan as rs
from rnnscan import sequence_parallel
from tests.sequence_parallel_cases import CASES, SLOW_CASES

REPO = pathlib.Path(__file__).resolve().parents[1]


def run_cases(names):
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
               PYTHONPATH=str(REPO))
    out = subprocess.run([sys.executable, "-m", "tests.sequence_parallel_cases", *names],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.splitlines()[-1])


@pytest.fixture(scope="module")
def results():
    return run_cases(list(CASES))


def check(found):
    # float64: the sharded methods agree with the sequential scan to rounding.
    assert found["ys"] < 1e-12 and found["state"] < 1e-12, found
    assert found["grad"] < 1e-12 * max(1.0, found["grad_scale"]), found


@pytest.mark.parametrize("name", list(CASES))
def test_sharded_over_8_devices_matches_one_device(results, name):
    check(results[name])


@pytest.mark.slow
def test_more_cells_and_directions_sharded_over_8_devices():
    for name, found in run_cases(list(SLOW_CASES)).items():
        check(found)


def one_device(f, *args):
    """`f` under `shard_map` on a mesh of this process's one device, axis "seq"."""
    mesh = jax.make_mesh((1,), ("seq",), axis_types=(AxisType.Auto,))
    return jax.shard_map(f, mesh=mesh, in_specs=P(), out_specs=P())(*args)


CELL = rs.gru(3, 4)
PARAMS = CELL.init(jax.random.PRNGKey(0))
XS = jnp.ones((2, 5, 3))


def test_outside_shard_map_is_refused():
    with pytest.raises(ValueError, match="axis_name='seq' is not an axis of an enclosing shard_map"):
        sequence_parallel.unroll(CELL, PARAMS, XS, axis_name="seq")


def test_bad_axis_name_method_and_lengths_are_refused():
    with pytest.raises(TypeError, match="axis_name must be a str"):
        one_device(lambda xs: sequence_parallel.unroll(CELL, PARAMS, xs, axis_name=0), XS)
    with pytest.raises(ValueError, match="method must be"):
        one_device(lambda xs: sequence_parallel.unroll(CELL, PARAMS, xs, axis_name="seq",
                                                       method="chunked"), XS)
    with pytest.raises(ValueError, match=r"lengths must lie in \[0, time\] = \[0, 5\]"):
        one_device(lambda xs: sequence_parallel.unroll(CELL, PARAMS, xs, axis_name="seq",
                                                       lengths=np.array([6, 1])), XS)
    with pytest.raises(ValueError, match="method='kernel' cannot run inside shard_map"):
        one_device(lambda xs: sequence_parallel.unroll(CELL, PARAMS, xs, axis_name="seq",
                                                       method="kernel"), XS)
    with pytest.raises(ValueError, match="method='associative' needs a cell that is linear"):
        one_device(lambda xs: sequence_parallel.unroll(CELL, PARAMS, xs, axis_name="seq",
                                                       method="associative"), XS)


def test_newton_with_a_sequential_adjoint_is_refused():
    cell = rs.lstm(3, 40)  # 80 state numbers a row: the diagonal's adjoint is a scan
    params = cell.init(jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="no sequence-parallel form"):
        one_device(lambda xs: sequence_parallel.unroll(cell, params, xs, axis_name="seq",
                                                       method=rs.Newton(jacobian="diagonal")), XS)
