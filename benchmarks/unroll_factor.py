"""The scan's `unroll` factor against time, forward and forward+backward, per config.

    python benchmarks/unroll_factor.py [--factors 1,2,4,8] [--repeats 15]

(from the repository root, with rnnscan installed or `PYTHONPATH=.`)

Per shape, every factor's jitted program is timed after a warm-up call, the
factors taking turns run by run (`time_alternating`); the median is reported.
Writes `benchmarks/results/unroll_<backend>.json` and `.md`, from which
`rnnscan.unroll.default_unroll` is chosen per backend.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import jax

import rnnscan as rs
from rnnscan.bench.configs import CONFIGS
from rnnscan.bench.measure import time_alternating
from rnnscan.bench.peers import MODES, inputs, jax_program
from rnnscan.bench.run import machine, versions


def markdown(doc) -> str:
    factors = doc["factors"]
    lines = [
        f"# Time against the scan's unroll factor ({jax.default_backend()})",
        "",
        f"{doc['machine']['cpu']}, {doc['machine']['cores']} cores; jax {doc['versions']['jax']}; "
        f"median of {doc['repeats']} runs per factor, factors alternating; ms, and in "
        "brackets the time relative to unroll=1 (below 1 is faster).",
        "",
        "| shape | mode | " + " | ".join(f"unroll={u}" for u in factors) + " |",
        "| --- | --- |" + " ---: |" * len(factors),
    ]
    for row in doc["rows"]:
        base = row["ms"][str(factors[0])]
        cells = [f"{row['ms'][str(u)]:.2f} ({row['ms'][str(u)] / base:.2f})" for u in factors]
        lines.append(f"| {row['shape']} | {row['mode']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="small,mid,latency")
    parser.add_argument("--factors", default="1,2,4,8")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args()

    factors = [int(u) for u in args.factors.split(",")]
    doc = {"machine": machine(), "versions": versions(), "factors": factors,
           "repeats": args.repeats, "rows": []}
    for name in args.configs.split(","):
        config = CONFIGS[name]
        if config.layers != 1:
            parser.error(f"{name}: one layer only (it has {config.layers})")
        cell = getattr(rs, config.cell)(config.input, config.hidden)
        params = cell.init(jax.random.key(0))
        for mode in MODES:
            programs = [
                jax_program(lambda p, x, u=u: rs.unroll(cell, p, x, unroll=u)[0], params,
                            inputs(config), mode)
                for u in factors
            ]
            seconds = time_alternating([program.call for program in programs], (), args.repeats)
            row = {"config": name, "shape": config.shape, "mode": mode,
                   "ms": {str(u): s * 1e3 for u, s in zip(factors, seconds)}}
            doc["rows"].append(row)
            print(row, flush=True)
    doc["machine"]["load_average_1m_at_end"] = round(os.getloadavg()[0], 2)
    stem = Path(args.out) / f"unroll_{jax.default_backend()}"
    stem.with_suffix(".json").write_text(json.dumps(doc, indent=1))
    stem.with_suffix(".md").write_text(markdown(doc))
    print(f"wrote {stem}.{{json,md}}")


if __name__ == "__main__":
    main()
