"""Reverse-mode memory and time of `rs.unroll`'s `remat` options: an LSTM, fwd + bwd.

Memory: each (time, remat) case runs in a fresh subprocess, so its peak RSS is
its own. It records XLA's compiled `memory_analysis()` (temp bytes: the
activations and scratch of the jitted fwd+bwd, without the arguments and the
outputs) and the process's peak RSS above its RSS before compiling (the same
buffers as the OS sees them, plus compile-time memory).

Time: one subprocess per sequence length compiles every remat option and runs
them in turn, `--rounds` times; each option's median is reported. Interleaving
makes load from other processes hit every option alike.

    python benchmarks/remat_memory.py                     # long config: batch 16, time 4096 and 16384
    python benchmarks/remat_memory.py --time 4096 --remat false 64

Writes benchmarks/results/remat_<backend>.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import resource
import subprocess
import sys

RESULTS = pathlib.Path(__file__).parent / "results"
DEFAULT_REMATS = ["false", "carry", "dots", "32", "64", "128", "256"]


def parse_remat(text: str):
    """`false`/`true`/`carry`/`dots`/an int, as `rs.unroll`'s `remat`."""
    return {"false": False, "true": True}.get(text.lower(), int(text) if text.isdigit() else text)


def fwd_bwd(case: dict, remat):
    """The jitted LSTM fwd+bwd step of `case` and its arguments."""
    import jax
    import jax.numpy as jnp

    import rnnscan as rs

    cell = rs.lstm(case["input"], case["hidden"])
    params = cell.init(jax.random.PRNGKey(0))
    xs = jax.random.normal(jax.random.PRNGKey(1), (case["batch"], case["time"], case["input"]))

    def loss(params, xs):
        ys, _ = rs.unroll(cell, params, xs, remat=remat)
        return jnp.sum(ys)

    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1))), (params, jax.block_until_ready(xs))


def memory_child(case: dict) -> dict:
    """Compiles and runs one case in this (fresh) process; its memory."""
    import jax

    step, args = fwd_bwd(case, parse_remat(case["remat"]))
    rss_before = _rss_mb()
    compiled = step.lower(*args).compile()
    memory = compiled.memory_analysis()
    jax.block_until_ready(compiled(*args))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return dict(
        case,
        temp_mb=memory.temp_size_in_bytes / 2**20,
        argument_mb=memory.argument_size_in_bytes / 2**20,
        output_mb=memory.output_size_in_bytes / 2**20,
        peak_rss_mb=peak,
        rss_over_start_mb=peak - rss_before,
        backend=jax.default_backend(),
        device=str(jax.devices()[0].device_kind),
    )


def timing_child(case: dict) -> dict:
    """Median seconds per fwd+bwd for each of `case["remats"]`, run in turn."""
    from rnnscan.bench.measure import time_alternating

    steps = {}
    for remat in case["remats"]:
        step, args = fwd_bwd(case, parse_remat(remat))
        steps[remat] = step.lower(*args).compile()
    return dict(zip(steps, time_alternating(list(steps.values()), args, case["rounds"])))


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def run_child(kind: str, case: dict) -> dict:
    env = dict(os.environ, PYTHONPATH=str(pathlib.Path(__file__).resolve().parents[1]))
    out = subprocess.run(
        [sys.executable, __file__, f"--{kind}", json.dumps(case)],
        check=True, capture_output=True, text=True, env=env,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def table(rows: list[dict]) -> str:
    lines = [
        "| time | remat | XLA temp MiB | plain / this | peak RSS − start MiB | plain / this | peak RSS MiB | s / fwd+bwd | time / plain |",
        "| ---: | :--- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        base = next(b for b in rows if b["time"] == r["time"] and b["remat"] == "false")
        lines.append(
            f"| {r['time']} | {r['remat']} | {r['temp_mb']:.0f} | "
            f"{base['temp_mb'] / r['temp_mb']:.1f}x | {r['rss_over_start_mb']:.0f} | "
            f"{base['rss_over_start_mb'] / r['rss_over_start_mb']:.1f}x | "
            f"{r['peak_rss_mb']:.0f} | {r['seconds']:.2f} | {r['seconds'] / base['seconds']:.2f}x |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--memory", help=argparse.SUPPRESS)
    parser.add_argument("--timing", help=argparse.SUPPRESS)
    parser.add_argument("--time", type=int, nargs="+", default=[4096, 16384])
    parser.add_argument("--remat", nargs="+", default=DEFAULT_REMATS)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--input", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=5, help="timed runs of each option")
    args = parser.parse_args()
    if args.memory or args.timing:
        child = memory_child if args.memory else timing_child
        print(json.dumps(child(json.loads(args.memory or args.timing))))
        return
    if "false" not in args.remat:
        parser.error("--remat must include false, the baseline")

    shape = dict(batch=args.batch, hidden=args.hidden, input=args.input)
    rows = []
    for t in args.time:
        seconds = run_child("timing", dict(shape, time=t, remats=args.remat, rounds=args.rounds))
        for remat in args.remat:
            row = dict(run_child("memory", dict(shape, time=t, remat=remat)), seconds=seconds[remat])
            print(f"time={t} remat={remat}: temp {row['temp_mb']:.0f} MiB, "
                  f"rss +{row['rss_over_start_mb']:.0f} MiB, {row['seconds']:.2f} s", flush=True)
            rows.append(row)

    backend = rows[0]["backend"]
    RESULTS.mkdir(exist_ok=True)
    meta = dict(
        model="rs.lstm(input, hidden), loss = sum(ys), grad w.r.t. params and xs",
        machine=f"{platform.machine()} {os.cpu_count()} cores, {rows[0]['device']}",
        rounds=args.rounds,
    )
    (RESULTS / f"remat_{backend}.json").write_text(json.dumps(dict(meta, rows=rows), indent=1))
    (RESULTS / f"remat_{backend}.md").write_text(
        f"# remat: reverse-mode memory and time ({backend})\n\n"
        f"`python benchmarks/remat_memory.py`: {meta['model']}; batch {args.batch}, hidden "
        f"{args.hidden}, input {args.input}; {meta['machine']}. Memory: each case in a fresh "
        f"process. Time: the median of {args.rounds} runs, the options interleaved in one "
        "process per length. "
        "XLA temp = `compiled.memory_analysis().temp_size_in_bytes` (activations and "
        "scratch, not the params, xs or gradients); peak RSS − start = the process's peak "
        "RSS above its RSS just before compiling.\n\n"
        "remat: `false` plain scan; `carry` (= `True`) keeps only the carry per step; "
        "`dots` keeps the matmul outputs too; an int `k` checkpoints every k steps (two-level "
        "scan, projection recomputed per chunk).\n\n" + table(rows) + "\n"
    )
    print(table(rows))


if __name__ == "__main__":
    main()
