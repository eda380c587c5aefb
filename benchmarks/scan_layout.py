"""How the scan is laid out on the backend against time: unroll factor, time
segments and batch groups, forward and forward+backward, per config.

    python benchmarks/scan_layout.py [--configs small,mid,32x128x512x512]
        [--layouts u4s4g1,u4s4g2] [--repeats 11] [--name layout_cpu]

(from the repository root, with rnnscan installed or `PYTHONPATH=.`)

A layout `u<U>s<S>g<G>` runs `rs.unroll`'s scan with `unroll=U`, the time axis in
`S` consecutive scans (`rnnscan.tuning.Tuning.time_segments`) and each step's batch in
`G` groups of rows (`rnnscan.tuning.batch_groups`). Per shape, every layout's
jitted program is timed after a warm-up call, the layouts taking turns run by run
(`time_alternating`); the median is reported. A config is a name of
`rnnscan.bench.configs` or an LSTM shape `BATCHxTIMExINPUTxHIDDEN`. Writes
`benchmarks/results/layout_<backend>.json` and `.md` (or `--name`); the CPU
defaults in `rnnscan.unroll` (`default_unroll`, `time_segments`, `batch_groups`)
were read off such runs.
"""

from __future__ import annotations

import argparse
import json
import os
import re
from pathlib import Path

import jax

import rnnscan as rs
from rnnscan.bench.configs import CONFIGS, Config
from rnnscan.bench.measure import time_alternating
from rnnscan.bench.peers import MODES, inputs, jax_program
from rnnscan.bench.run import machine, versions
from rnnscan.unroll import execute, make_plan

LAYOUT = re.compile(r"u([1-9]\d*)s([1-9]\d*)g([1-9]\d*)")
SHAPE = re.compile(r"(\d+)x(\d+)x(\d+)x(\d+)")


def parse_layout(text: str) -> tuple[int, int, int]:
    match = LAYOUT.fullmatch(text)
    if match is None:
        raise argparse.ArgumentTypeError(
            f"a layout is u<unroll>s<segments>g<groups>, each a positive int; got {text!r}")
    return tuple(int(n) for n in match.groups())


def parse_config(text: str) -> Config:
    if text in CONFIGS:
        return CONFIGS[text]
    match = SHAPE.fullmatch(text)
    if match is None:
        raise argparse.ArgumentTypeError(
            f"a config is one of {', '.join(CONFIGS)} or BATCHxTIMExINPUTxHIDDEN; got {text!r}")
    return Config(text, "lstm", *(int(n) for n in match.groups()))


def markdown(doc) -> str:
    layouts = doc["layouts"]
    lines = [
        f"# Time against the scan's layout ({jax.default_backend()})",
        "",
        f"{doc['machine']['cpu']}, {doc['machine']['cores']} cores; jax {doc['versions']['jax']}; "
        f"median of {doc['repeats']} runs per layout, layouts alternating; ms, and in "
        f"brackets the time relative to {layouts[0]} (below 1 is faster). `uUsSgG`: "
        "unroll U, S time segments, G batch groups.",
        "",
        "| shape | mode | " + " | ".join(layouts) + " |",
        "| --- | --- |" + " ---: |" * len(layouts),
    ]
    for row in doc["rows"]:
        base = row["ms"][layouts[0]]
        cells = [f"{row['ms'][name]:.2f} ({row['ms'][name] / base:.2f})" for name in layouts]
        lines.append(f"| {row['shape']} | {row['mode']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="small,mid,medium")
    parser.add_argument("--layouts", default="u4s4g1,u4s4g2,u4s8g1,u4s8g2,u8s8g2")
    parser.add_argument("--repeats", type=int, default=11)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    parser.add_argument("--name", default=f"layout_{jax.default_backend()}")
    args = parser.parse_args()

    names = args.layouts.split(",")
    layouts = [parse_layout(name) for name in names]
    doc = {"machine": machine(), "versions": versions(), "layouts": names,
           "repeats": args.repeats, "rows": []}
    for config in map(parse_config, args.configs.split(",")):
        if config.layers != 1:
            parser.error(f"{config.name}: one layer only (it has {config.layers})")
        cell = getattr(rs, config.cell)(config.input, config.hidden)
        params = cell.init(jax.random.key(0))
        scan = make_plan(cell, params, inputs(config), method="scan")
        for mode in MODES:
            programs = [
                jax_program(
                    lambda p, x, _, plan=scan._replace(unroll=u, segments=s, groups=g):
                        execute(plan, p, x)[0],
                    params, inputs(config), mode,
                )
                for u, s, g in layouts
            ]
            seconds = time_alternating([program.call for program in programs], (), args.repeats)
            row = {"config": config.name, "shape": config.shape, "mode": mode,
                   "ms": {name: s * 1e3 for name, s in zip(names, seconds)},
                   "compile_s": {name: p.compile_s for name, p in zip(names, programs)}}
            doc["rows"].append(row)
            print(row, flush=True)
    doc["machine"]["load_average_1m_at_end"] = round(os.getloadavg()[0], 2)
    stem = Path(args.out) / args.name
    stem.with_suffix(".json").write_text(json.dumps(doc, indent=1))
    stem.with_suffix(".md").write_text(markdown(doc))
    print(f"wrote {stem}.{{json,md}}")


if __name__ == "__main__":
    main()
