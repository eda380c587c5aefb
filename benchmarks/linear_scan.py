"""Sequential vs associative scan for linear recurrences, forward and forward+backward.

    python benchmarks/linear_scan.py [--cells mingru,lru] [--batch 16] [--hidden 256]
                                     [--lengths 256,1024,4096,16384] [--repeats 5]

(from the repository root, with rnnscan installed or `PYTHONPATH=.`)

For each cell and sequence length, times `rs.unroll(..., method=...)` jitted, after
a warm-up call (compilation), as the median of `--repeats` runs with
`jax.block_until_ready`; the two methods alternate run by run so that both see the
same machine load. Writes `benchmarks/results/linear_scan_<backend>.json` and a
markdown table `.md` with the crossover: the shortest length from which the
associative scan is faster. `rnnscan.tuning.TABLE`'s `associative_min_time` is set from it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path

import jax
import jax.numpy as jnp

import rnnscan as rs
from rnnscan.bench.measure import time_alternating

METHODS = ("sequential", "associative")
MODES = ("fwd", "fwd+bwd")


def compiled(cell, method, mode):
    def forward(params, xs):
        return rs.unroll(cell, params, xs, method=method)[0]

    if mode == "fwd":
        return jax.jit(forward)
    return jax.jit(jax.grad(lambda params, xs: jnp.mean(forward(params, xs) ** 2)))


def crossover(rows, cell, mode):
    """The shortest length from which the associative scan is faster at every
    longer length measured; None if it never is."""
    rows = sorted((r for r in rows if r["cell"] == cell), key=lambda r: r["time"])
    first = None
    for r in rows:
        faster = r[mode]["associative_ms"] < r[mode]["sequential_ms"]
        first = (first or r["time"]) if faster else None
    return first


def markdown(meta, rows, crossovers):
    lines = [
        f"# Linear recurrences: sequential vs associative scan ({meta['backend']})",
        "",
        f"{meta['device']} ({meta['cpu_count']} cores); jax {meta['jax']}; batch "
        f"{meta['batch']}, input = hidden = {meta['hidden']}; median of {meta['repeats']} "
        f"runs after a warm-up; load average {meta['load_before']} before, "
        f"{meta['load_after']} after. Times in ms; speedup = sequential / associative.",
        "",
        "| cell | T | fwd seq | fwd assoc | speedup | fwd+bwd seq | fwd+bwd assoc | speedup |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        cols = [r["cell"], str(r["time"])]
        for mode in MODES:
            m = r[mode]
            cols += [f"{m['sequential_ms']:.1f}", f"{m['associative_ms']:.1f}",
                     f"{m['sequential_ms'] / m['associative_ms']:.2f}x"]
        lines.append("| " + " | ".join(cols) + " |")
    lines += ["", "Crossover (associative faster from this T on):", ""]
    for (cell, mode), t in crossovers.items():
        lines.append(f"- {cell}, {mode}: " + (f"T >= {t}" if t else "none: sequential is "
                                                 "faster at every T measured"))
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", default="mingru,lru")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--lengths", default="256,1024,4096,16384")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args()

    backend = jax.default_backend()
    meta = {
        "backend": backend, "device": jax.devices()[0].device_kind,
        "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
        "jax": jax.__version__, "batch": args.batch, "hidden": args.hidden,
        "repeats": args.repeats, "load_before": round(os.getloadavg()[0], 2),
    }
    rows = []
    for name in args.cells.split(","):
        cell = getattr(rs, name)(args.hidden, args.hidden)
        params = cell.init(jax.random.key(0))
        for length in map(int, args.lengths.split(",")):
            xs = jax.random.normal(jax.random.key(1), (args.batch, length, args.hidden))
            row = {"cell": name, "time": length}
            for mode in MODES:
                fns = [compiled(cell, method, mode) for method in METHODS]
                seconds = time_alternating(fns, (params, xs), args.repeats)
                row[mode] = {f"{m}_ms": 1e3 * s for m, s in zip(METHODS, seconds)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    meta["load_after"] = round(os.getloadavg()[0], 2)

    crossovers = {(c, m): crossover(rows, c, m) for c in args.cells.split(",") for m in MODES}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = {"meta": meta, "rows": rows,
              "crossover": [{"cell": c, "mode": m, "time": t} for (c, m), t in crossovers.items()]}
    (out / f"linear_scan_{backend}.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / f"linear_scan_{backend}.md").write_text(markdown(meta, rows, crossovers))
    print(markdown(meta, rows, crossovers))


if __name__ == "__main__":
    main()
