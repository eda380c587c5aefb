"""Newton iterations (`rs.unroll(method=rs.Newton(...))`) against the sequential scan.

For each cell, weight set and sequence length: the iterations Newton took to
converge and the forward wall time of both (jit-compiled, compile excluded,
median of `--reps` runs after a warm-up, one run from T = 4096). The sequential time is `rs.unroll`'s
default strategy (the scan, or the native kernel where it runs).

Weights: `random` is the cell's own initialisation (contractive in practice);
`x3` multiplies the recurrent weights by 3 (expansive, saturating gates: the
hard case for Newton). No trained weights are measured.

  PYTHONPATH=. python benchmarks/newton.py --out benchmarks/results/newton_cpu
  PYTHONPATH=. python benchmarks/newton.py --quick --out $OUT/newton_gpu   # on a GPU
"""

from __future__ import annotations

import argparse
import json

import jax
import jax.numpy as jnp

import rnnscan as rs
from rnnscan.bench.measure import time_alternating
from rnnscan.bench.run import machine, versions
from rnnscan.newton import Newton

CELLS = {  # name -> (constructor, hidden size, recurrent params)
    "gru": (rs.gru, 32, ("w_hh",)),
    "lstm": (rs.lstm, 32, ("w_hh",)),
    "paragru": (rs.paragru, 64, ("a",)),
    "paralstm": (rs.paralstm, 64, ("a",)),
}
INPUT, BATCH = 16, 8


def setup(name, weights, time_steps, seed=0):
    make, hidden, recurrent = CELLS[name]
    cell = make(INPUT, hidden)
    params = cell.init(jax.random.key(seed))
    if weights == "x3":
        params = {k: 3 * v if k in recurrent else v for k, v in params.items()}
    xs = jax.random.normal(jax.random.key(seed + 1), (BATCH, time_steps, INPUT))
    return cell, params, xs


def newton_fn(cell, jacobian):
    options = Newton(jacobian=jacobian, return_info=True)

    @jax.jit
    def run(params, xs):
        return rs.unroll(cell, params, xs, method=options)

    return run


def timed(fn, *args, reps):
    """`fn(*args)`'s median wall seconds over `reps` runs after a warm-up, and its result."""
    return time_alternating([fn], args, reps)[0], jax.block_until_ready(fn(*args))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="path prefix of the .json and .md")
    parser.add_argument("--quick", action="store_true", help="T = 1024 and 16384, random weights")
    parser.add_argument("--times", type=int, nargs="+", default=[256, 1024, 4096, 16384])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--budget", type=float, default=30.0,
                        help="seconds per Newton run beyond which longer T are skipped")
    parser.add_argument("--cells", nargs="+", default=list(CELLS))
    args = parser.parse_args()
    times = [1024, 16384] if args.quick else args.times
    weight_sets = ["random"] if args.quick else ["random", "x3"]
    rows, skipped = [], []
    sequential = jax.jit(lambda cell, params, xs: rs.unroll(cell, params, xs), static_argnums=0)
    for name in args.cells:
        for weights in weight_sets:
            too_slow = set()
            for T in times:
                cell, params, xs = setup(name, weights, T)
                reps = args.reps if T <= 1024 else 1
                t_seq, (ys_seq, _) = timed(sequential, cell, params, xs, reps=reps)
                jacobians = ["auto"] if name.startswith("para") else ["full", "diagonal"]
                for jacobian in jacobians:
                    if jacobian in too_slow or (jacobian == "full" and name == "lstm"
                                                and T * BATCH * 64 * 64 * 4 > 2 ** 30):
                        skipped.append(f"{name} {weights} {jacobian} T={T}")
                        continue
                    t_new, (ys, _, info) = timed(newton_fn(cell, jacobian), params, xs,
                                                 reps=reps)
                    rows.append({
                        "cell": name, "hidden": CELLS[name][1], "weights": weights,
                        "jacobian": jacobian, "T": T, "batch": BATCH,
                        "iterations": int(info.iterations), "converged": bool(info.converged),
                        "residual": float(info.residual),
                        "max_abs_diff": float(jnp.max(jnp.abs(ys - ys_seq))),
                        "newton_ms": 1e3 * t_new, "sequential_ms": 1e3 * t_seq,
                        "ratio": t_new / t_seq,
                    })
                    print(json.dumps(rows[-1]), flush=True)
                    write(args.out, rows, skipped)  # what finished survives a timeout
                    if t_new > args.budget:
                        too_slow.add(jacobian)
    write(args.out, rows, skipped)


def write(out, rows, skipped):
    result = {"machine": machine(), "versions": versions(), "rows": rows, "skipped": skipped}
    with open(out + ".json", "w") as f:
        json.dump(result, f, indent=1)
    with open(out + ".md", "w") as f:
        f.write(markdown(result))


def markdown(result):
    m = result["machine"]
    lines = [
        "# Newton (parallel over time) vs the sequential scan, forward pass",
        "",
        f"Device {m['device']}; {m['cpu']} ({m['cores']} logical cores; ISA {m['isa']}, "
        f"kernel variant {m['kernel_variant']}); jax {result['versions']['jax']}. "
        f"Batch {BATCH}, input {INPUT}; median wall time, compile excluded.",
        "",
        "| cell (H) | weights | jacobian | T | iterations | converged | max abs diff "
        "| newton ms | sequential ms | newton / sequential |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['cell']} ({r['hidden']}) | {r['weights']} | {r['jacobian']} | {r['T']} "
            f"| {r['iterations']} | {r['converged']} | {r['max_abs_diff']:.1e} "
            f"| {r['newton_ms']:.1f} | {r['sequential_ms']:.1f} | {r['ratio']:.1f}x |")
    if result["skipped"]:
        lines += ["", "Skipped (memory or time budget): " + "; ".join(result["skipped"]) + "."]
    if m["cpu_flags"]:
        lines += ["", f"CPU flags: `{' '.join(m['cpu_flags'])}`"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
