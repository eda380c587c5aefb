"""The exported module timed: `jax.export` of an `rs.unroll` LSTM, serialized,
deserialized and called, against the live jit-compiled call.

The export names rnnscan's CPU kernels' custom calls as allowed
(`disabled_checks`): they have no compatibility guarantee, and a deserialized
module runs them only in a process where rnnscan has registered them (import
rnnscan). Checks that the round trip gives the live call's numbers.

    PYTHONPATH=. python benchmarks/export_roundtrip.py --out $OUT/export.json
"""

from __future__ import annotations

import argparse
import json

import jax
import numpy as np
from jax import export

import rnnscan as rs
from rnnscan.bench.measure import time_alternating
from rnnscan.kernels.build import VARIANTS
from rnnscan.kernels.loader import TARGETS


def allowed_custom_calls():
    """`DisabledSafetyCheck`s for every rnnscan kernel target, in every ISA variant."""
    return [export.DisabledSafetyCheck.custom_call(f"{name}_{variant}")
            for names in TARGETS.values() for name in names for variant in VARIANTS]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--time", type=int, default=512)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--out", help="write the row to this JSON file")
    args = parser.parse_args()
    cell = rs.lstm(args.hidden, args.hidden)
    params = cell.init(jax.random.PRNGKey(0))
    xs = jax.random.normal(jax.random.PRNGKey(1), (args.batch, args.time, args.hidden))
    # The state as a plain tuple: a serialized module's pytrees hold no rs.LSTMState.
    live = jax.jit(lambda p, x: (lambda ys, state: (ys, tuple(state)))(*rs.unroll(cell, p, x)))
    blob = export.export(live, disabled_checks=allowed_custom_calls())(params, xs).serialize()
    loaded = export.deserialize(blob)
    np.testing.assert_allclose(loaded.call(params, xs)[0], live(params, xs)[0], rtol=1e-6, atol=1e-6)
    live_s, loaded_s = time_alternating([live, jax.jit(loaded.call)], (params, xs), args.reps)
    row = dict(case=f"lstm {args.hidden}, T {args.time}, batch {args.batch}",
               platform=jax.default_backend(), serialized_bytes=len(blob),
               live_ms=1e3 * live_s, exported_ms=1e3 * loaded_s)
    print(json.dumps(row))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(row, f, indent=1)


if __name__ == "__main__":
    main()
