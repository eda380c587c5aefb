"""A CPU kernel (LSTM or GRU) against the scan it replaces and torch, per instruction set.

    python benchmarks/kernel_isa.py --name kernel_isa_cpu [--rounds 7] [--isas avx512,avx2]
    python benchmarks/kernel_isa.py --cell gru --name kernel_isa_gru_cpu [--rows 1]

`--cell gru` times `rs.gru`'s kernel (reset_after, torch's `nn.GRU`) on the same
rows; its figures fill `rnnscan.kernels.speed.GRU`.

    python benchmarks/kernel_isa.py --isas avx2 --rows 4,5,6,7,8,9   # an AVX2 CPU

Each instruction set runs in its own process: `avx512` natively; `avx2`
natively on an AVX2 CPU, else emulated on an AVX-512 CPU, with the kernel's AVX2 variant
(`RNNSCAN_KERNEL_ISA=avx2`), XLA:CPU held to AVX2 (`XLA_FLAGS=--xla_cpu_max_isa=AVX2`)
and torch too (`ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2`). Per row and
mode the three take turns, round by round (`--reps` calls each, after a warm-up:
torch's threads spin for a while after its call, so the first call after it
is slowed), so all see the same load on a shared machine; the table gives the
medians over every call and the median of the per-round ratios of the
per-round medians (scan / kernel, torch / kernel: above 1, the kernel is faster),
the share of the CPU's peak FLOP/s each reached, and the load average then.
Writes benchmarks/results/NAME.json and NAME.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from rnnscan.bench.run import EMULATION as BENCH_EMULATION  # noqa: E402

# (batch, time, input, hidden, padded): padded rows have lengths in [time/2, time].
# 0-3: BENCHMARKS.md's small, mid, mid padded, medium; 4-8: batches 1 to 8 of
# the latency row (one row per core and fewer: the threads split the units);
# 9: DeepBench's LSTM; 10: large (matmul-bound, slow: name it with --rows).
ROWS = [(16, 128, 128, 128, False), (32, 128, 256, 256, False), (32, 128, 256, 256, True),
        (64, 256, 512, 512, False),
        (1, 1024, 256, 256, False), (2, 1024, 256, 256, False), (4, 1024, 256, 256, False),
        (6, 1024, 256, 256, False), (8, 1024, 256, 256, False),
        (128, 25, 1024, 1024, False), (128, 512, 1024, 1024, False)]
DEFAULT_ROWS = "0,1,2,3,4,5,6,7,8,9"
# The native run, and AVX2 emulated as `rnnscan bench --isa avx2` does.
EMULATION = {"avx512": BENCH_EMULATION["native"], "avx2": BENCH_EMULATION["avx2"]}
RESULTS = Path(__file__).parent / "results"


def programs(batch, time_, features, hidden, padded, mode, cell_name="lstm"):
    """`{name: zero-argument callable}` for the kernel, the scan and torch."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import torch

    import rnnscan as rs

    rng = np.random.default_rng(0)
    xs = rng.normal(size=(batch, time_, features)).astype(np.float32)
    lengths = (rng.integers(time_ // 2, time_ + 1, size=batch).astype(np.int32) if padded
               else None)
    gru = cell_name == "gru"
    cell = rs.gru(features, hidden) if gru else rs.lstm(features, hidden, forget_bias=0.0)
    params = cell.init(jax.random.key(0))
    h0 = cell.initial_state(params, (batch,))

    def kernel(p, x):
        return rs.unroll(cell, p, x, initial_state=h0, lengths=lengths, method="kernel")[0]

    def scan(p, x):  # the same cell on unroll's lax.scan
        return rs.unroll(cell, p, x, initial_state=h0, lengths=lengths, method="scan")[0]

    def jax_program(apply):
        if mode == "fwd":
            fn = jax.jit(apply)
        else:
            fn = jax.jit(jax.grad(lambda p, x: jnp.sum(apply(p, x)), argnums=(0, 1)))
        return lambda: jax.block_until_ready(fn(params, xs))

    torch.manual_seed(0)
    module = (torch.nn.GRU if gru else torch.nn.LSTM)(features, hidden, batch_first=True)
    x_t = torch.from_numpy(xs).requires_grad_(mode != "fwd")

    def torch_forward():
        if lengths is None:
            return module(x_t)[0]
        packed = torch.nn.utils.rnn.pack_padded_sequence(
            x_t, torch.from_numpy(lengths).long(), batch_first=True, enforce_sorted=False)
        return torch.nn.utils.rnn.pad_packed_sequence(module(packed)[0], batch_first=True,
                                                      total_length=time_)[0]

    def torch_program():
        if mode == "fwd":
            with torch.no_grad():
                torch_forward()
        else:
            module.zero_grad()
            torch_forward().sum().backward()

    return {"kernel": jax_program(kernel), "scan": jax_program(scan), "torch": torch_program}


def measure(isa: str, rounds: int, reps: int, rows, cell_name: str = "lstm") -> list[dict]:
    """This process's figures (its environment set for `isa`)."""
    import torch

    torch.set_num_threads(len(os.sched_getaffinity(0)))
    out = []
    for batch, time_, features, hidden, padded in rows:
        for mode in ("fwd", "fwd+bwd"):
            fns = programs(batch, time_, features, hidden, padded, mode, cell_name)
            compile_s = {}
            for name, fn in fns.items():
                start = time.perf_counter()
                fn()
                compile_s[name] = time.perf_counter() - start
            times = {name: [] for name in fns}  # per round, its calls
            for round_ in range(rounds):  # the order alternates round by round
                for name, fn in list(fns.items())[::1 if round_ % 2 else -1]:
                    calls = []
                    for _ in range(reps):
                        start = time.perf_counter()
                        fn()
                        calls.append(time.perf_counter() - start)
                    times[name].append(calls)
            ms = {name: 1e3 * statistics.median(sum(t, [])) for name, t in times.items()}
            ratio = lambda peer: statistics.median(
                statistics.median(a) / statistics.median(b)
                for a, b in zip(times[peer], times["kernel"]))
            flops = (2 if mode == "fwd" else 6) * batch * time_ * gates(cell_name) * hidden * (
                features + hidden)  # backward: twice the forward's products
            out.append(dict(isa=isa, cell=cell_name, batch=batch, time=time_, input=features, hidden=hidden,
                            padded=padded, mode=mode, ms=ms, scan_over_kernel=ratio("scan"),
                            torch_over_kernel=ratio("torch"), first_call_s=compile_s,
                            rounds=rounds, reps=reps, load=os.getloadavg(),
                            gflops={k: flops / v / 1e6 for k, v in ms.items()}))
            print(json.dumps(out[-1]), file=sys.stderr, flush=True)
    return out


def gates(cell_name: str) -> int:
    return 3 if cell_name == "gru" else 4


def cpu() -> dict:
    """The CPU: model, flags, cores, clock (/proc/cpuinfo's MHz) and its peak
    float32 FLOP/s (2 FMA units x lanes x 2 flops a cycle per core; lanes 8 with
    AVX2, 16 with AVX-512: Zen 4's 512-bit FMAs are double-pumped, so an
    AVX-512 peak is an upper bound there)."""
    from rnnscan.kernels import loader

    flags, cores = loader.cpu_flags(), len(os.sched_getaffinity(0))
    mhz = next((float(line.split(":")[1]) for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("cpu MHz")), 0.0) if Path("/proc/cpuinfo").exists() else 0.0
    lanes = 16 if "avx512f" in flags else 8 if "fma" in flags else 4
    return {"model": loader.cpu_model(), "flags": sorted(flags), "cores": cores, "mhz": mhz,
            "peak_gflops": cores * 2 * lanes * 2 * mhz / 1e3}


def table(results: list[dict], peak: float) -> str:
    """Markdown: times, ratios, the kernel's and torch's share of the CPU's peak, the load."""
    lines = ["| isa | row | mode | kernel ms | scan ms | torch ms | scan/kernel | torch/kernel "
             "| kernel, torch % of peak | load |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        row = (f"{r.get('cell', 'lstm').upper()} "
               f"{r['batch']}x{r['time']}x{r['input']}->{r['hidden']}")
        row += " lengths [T/2, T]" if r["padded"] else ""
        lines.append(f"| {r['isa']} | {row} | {r['mode']} | {r['ms']['kernel']:.2f} | "
                     f"{r['ms']['scan']:.2f} | {r['ms']['torch']:.2f} | "
                     f"{r['scan_over_kernel']:.2f} | {r['torch_over_kernel']:.2f} | "
                     f"{100 * r['gflops']['kernel'] / peak:.0f}, "
                     f"{100 * r['gflops']['torch'] / peak:.0f} | {r['load'][0]:.1f} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cell", choices=("lstm", "gru"), default="lstm")
    parser.add_argument("--name", help="default kernel_isa_cpu (lstm), kernel_isa_gru_cpu (gru)")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--reps", type=int, default=5, help="calls per program per round")
    parser.add_argument("--isas", default="avx512,avx2")
    parser.add_argument("--rows", default=DEFAULT_ROWS,
                        help=f"comma-separated indices into ROWS, or all (default {DEFAULT_ROWS})")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.name = args.name or ("kernel_isa_cpu" if args.cell == "lstm" else "kernel_isa_gru_cpu")
    rows = ROWS if args.rows == "all" else [ROWS[int(i)] for i in args.rows.split(",")]
    if args.worker:
        print(json.dumps(measure(args.worker, args.rounds, args.reps, rows, args.cell)))
        return
    results = []
    for isa in args.isas.split(","):
        env = {**os.environ, **EMULATION[isa]}
        done = subprocess.run([sys.executable, __file__, "--worker", isa, "--rounds",
                               str(args.rounds), "--reps", str(args.reps), "--rows", args.rows,
                               "--cell", args.cell],
                              env=env,
                              stdout=subprocess.PIPE, text=True, check=True)
        results += json.loads(done.stdout.strip().splitlines()[-1])
    import jax
    import torch

    record = {"cpu": cpu(), "versions": {"jax": jax.__version__, "torch": torch.__version__},
              "command": " ".join([Path(sys.executable).name] + sys.argv),
              "emulation": EMULATION, "results": results}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(record, indent=1))
    peak = record["cpu"]["peak_gflops"] or float("nan")
    (RESULTS / f"{args.name}.md").write_text(
        f"# {args.name}\n\nCPU: {record['cpu']['model']}, {record['cpu']['cores']} cores at "
        f"{record['cpu']['mhz']:.0f} MHz (peak {peak:.0f} GFLOP/s float32); jax "
        f"{jax.__version__}, torch {torch.__version__}. Load: 1-minute load average when the "
        f"row was timed.\n\n{table(results, peak)}\n")
    print(table(results, peak))


if __name__ == "__main__":
    main()
