"""`rnnscan bench`: rnnscan against its peers, side by side in one run.

Per config, every peer's programs are compiled first (compile time is recorded
apart), then timed in interleaved rounds (each round runs every program in turn)
so that a noisy shared machine slows all of them alike; the reported time is the
median over every timed call. See BENCHMARKS.md for the protocol.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import time
from typing import Callable, Optional, Sequence

import jax
import numpy as np

from rnnscan.bench import measure, peers, report
from rnnscan.kernels.build import VARIANTS
from rnnscan.bench.configs import CONFIGS, SUITES, Config

_PACKAGES = ("rnnscan", "jax", "jaxlib", "torch", "flax", "dm-haiku", "numpy")

# `--isa avx2` on a better CPU: the environment that holds XLA:CPU, torch
# (ATen, oneDNN) and rnnscan's kernels to AVX2, so that one machine measures
# both instruction-set levels. Read at start-up, so the run is a fresh process.
# Not held: the YNNPACK dot kernels XLA:CPU calls pick their instructions from
# CPUID (`perf` shows `ynn::dot_fp32_*_avx512` under this emulation), so XLA's
# large products (the scan's, the kernels' weight gradients) stay AVX-512.
EMULATION = {"native": {}, **{name: variant.emulation for name, variant in VARIANTS.items()
                              if variant.emulation}}
# Variables that change which instructions run: recorded with every run.
_ISA_VARIABLES = ("XLA_FLAGS", "RNNSCAN_KERNEL_ISA", "RNNSCAN_NATIVE", "ATEN_CPU_CAPABILITY",
                  "ONEDNN_MAX_CPU_ISA")


def machine() -> dict:
    """What ran the benchmark: the JAX device, the CPU (model, flags, the
    instruction-set level and rnnscan's kernel variant in use, and why), the
    environment variables that change which instructions run, the OS."""
    from rnnscan.kernels import loader

    device = jax.devices()[0]
    kernels = loader.info()
    return {
        "device": f"{device.platform} ({device.device_kind})",
        "cpu": loader.cpu_model(),
        "cpu_flags": sorted(loader.cpu_flags()),
        "isa": kernels["isa"],
        "kernel_variant": kernels["variant"],
        "kernel_why": kernels["why"],
        "isa_environment": {k: os.environ[k] for k in _ISA_VARIABLES if k in os.environ},
        "cores": os.cpu_count(),
        "os": platform.platform(),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
    }


def versions() -> dict:
    """Installed versions of rnnscan and the peers (None: not installed), and the
    git commit of the rnnscan checkout when there is one."""
    found = {}
    for package in _PACKAGES:
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            found[package] = None
    try:
        found["rnnscan_commit"] = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True,
            cwd=os.path.dirname(os.path.abspath(__file__)),
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        found["rnnscan_commit"] = None
    return found


def run(
    configs: Sequence[Config],
    peer_names: Sequence[str] = peers.PEERS,
    modes: Sequence[str] = peers.MODES,
    *,
    dtype: str = "float32",
    rounds: int = 5,
    reps: int = 10,
    case_budget_s: float = 20.0,
    memory: bool = False,
    deadline_s: Optional[float] = None,
    out_dir: Optional[str] = None,
    name: str = "bench",
    torch_threads: Optional[int] = None,
    clock: str = "wall",
    log: Callable[[str], None] = print,
) -> dict:
    """Benchmarks `peer_names` on `configs`; returns the results document.

    Args:
      configs: the shapes to run.
      peer_names, modes: which peers (see `peers.PEERS`), and `"forward"` and/or
        `"train"` (forward+backward).
      dtype: matmul operand dtype, `"float32"` or `"bfloat16"`.
      rounds, reps: interleaved rounds, and calls per program per round.
      case_budget_s: timing seconds per program over all rounds; a slow program
        makes fewer calls (at least one per round).
      memory: also measure each `"train"` program's peak memory, in a fresh
        subprocess per case.
      deadline_s: stop starting new work after this many seconds (the rest is
        listed as skipped).
      out_dir: if given, the JSON, markdown and plot are (re)written there after
        every config, so an interrupted run keeps what it measured.
      name: the file name stem of the outputs.
      torch_threads: torch's intra-op threads (default: one per core).
      clock: `"wall"` (latency) or `"cpu"` (process CPU time: the work, for
        shared machines); see `measure.CLOCKS`.
      log: progress messages.
    """
    start = time.perf_counter()
    out_of_time = lambda: deadline_s is not None and time.perf_counter() - start > deadline_s
    if "torch" in peer_names:
        torch_threads = _set_torch_threads(torch_threads or os.cpu_count())
    doc = {
        "name": name,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "versions": versions(),
        "settings": {
            "dtype": dtype,
            "precision": "each library's default (on GPUs both XLA and cuDNN may use TF32)",
            "loss": "sum of the top layer's outputs; gradient w.r.t. params and inputs",
            "clock": clock,
            "rounds": rounds,
            "reps_per_round": reps,
            "case_budget_s": case_budget_s,
            "torch_threads": torch_threads,
            "rnnscan_default_unroll": _rnnscan_unroll(),
            "XLA_FLAGS": os.environ.get("XLA_FLAGS", ""),
        },
        "results": [],
        "skipped": [],
    }
    for config in configs:
        if dtype != "float32":  # its rows must not merge with float32 ones of the config
            config = config._replace(name=f"{config.name}-{dtype}")
        programs = {}
        for peer in peer_names:
            for mode in modes:
                reason = "out of time (deadline)" if out_of_time() else None
                if reason is None:
                    try:
                        programs[peer, mode] = peers.build(peer, config, mode, dtype)
                        programs[peer, mode].call()  # warm-up
                    except peers.Unavailable as e:
                        reason = str(e)
                    except Exception as e:  # a failing peer must not end the run
                        reason = f"error: {type(e).__name__}: {str(e)[:300]}"
                if reason is not None:
                    doc["skipped"].append({"config": config.name, "peer": peer, "mode": mode,
                                           "reason": reason})
                    programs.pop((peer, mode), None)
                    log(f"{config.name:>12} {peer:>10} {mode:>7}: skipped ({reason})")
        times = {key: [] for key in programs}
        for round_ in range(rounds):
            if round_ and out_of_time():
                break
            for key, program in programs.items():
                times[key] += measure.time_calls(program.call, reps, case_budget_s / rounds, clock)
        for (peer, mode), program in programs.items():
            row = _result_row(config, peer, mode, program, times[peer, mode])
            if memory and mode == "train" and not out_of_time():
                row.update(measure.peak_memory(peer, config, mode, dtype, timeout_s=600))
            doc["results"].append(row)
            log(f"{config.name:>12} {peer:>10} {mode:>7}: {row['median_ms']:9.3f} ms "
                f"(n={row['n']}, compile {row['compile_s'] or 0:.1f} s)")
        del programs
        doc["machine"]["load_average_1m_at_end"] = round(os.getloadavg()[0], 2)
        if out_dir:
            report.write(doc, out_dir, name)
    return doc


def _result_row(config: Config, peer: str, mode: str, program: peers.Program, times) -> dict:
    ms = np.asarray(times) * 1e3
    median = float(np.median(ms))
    return {
        "config": config.name, "shape": config.shape, **config._asdict(),
        "peer": peer, "mode": mode,
        "median_ms": median, "min_ms": float(ms.min()),
        "p25_ms": float(np.percentile(ms, 25)), "p75_ms": float(np.percentile(ms, 75)),
        "n": len(ms), "tokens_per_s": config.tokens / (median / 1e3),
        "compile_s": program.compile_s, "xla_bytes": program.xla_bytes,
    }


def _set_torch_threads(threads: int) -> Optional[int]:
    """Sets torch's intra-op threads; returns the count, None without torch."""
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(threads)
    return torch.get_num_threads()


def _rnnscan_unroll() -> int:
    from rnnscan import tuning

    return tuning.for_backend().unroll


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `rnnscan bench`."""
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--full", action="store_true", help="every config of BENCHMARKS.md")
    what.add_argument("--suite", choices=sorted(SUITES), help="a named suite (default: quick)")
    what.add_argument("--configs", help=f"comma-separated configs, from {', '.join(CONFIGS)}")
    what.add_argument("--report", nargs="+", metavar="JSON",
                      help="no run: merge these results files and write markdown and a plot")
    parser.add_argument("--peers", default=",".join(peers.PEERS), help="comma-separated peers")
    parser.add_argument("--modes", default=",".join(peers.MODES), help="forward,train")
    parser.add_argument("--dtype", default="float32", choices=peers.DTYPES)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--reps", type=int, default=10, help="calls per program per round")
    parser.add_argument("--case-budget", type=float, default=None,
                        help="timing seconds per program (default 10, 30 with --full)")
    parser.add_argument("--memory", action=argparse.BooleanOptionalAction, default=None,
                        help="peak memory of each forward+backward in a fresh subprocess "
                             "(default: on with --full)")
    parser.add_argument("--deadline", type=float, default=None,
                        help="seconds after which no new case starts")
    parser.add_argument("--torch-threads", type=int, default=None,
                        help="torch's intra-op threads (default: one per core)")
    parser.add_argument("--clock", default="wall", choices=sorted(measure.CLOCKS),
                        help="wall: latency (the protocol); cpu: process CPU time, the work "
                             "done (for a machine shared with other jobs)")
    parser.add_argument("--isa", default="native", choices=sorted(EMULATION),
                        help="avx2: hold XLA:CPU, torch and rnnscan's kernels to AVX2 on a "
                             "better CPU (the run restarts in a fresh process)")
    parser.add_argument("--out", default="bench-results", help="output directory")
    parser.add_argument("--name", default=None, help="output file stem")


def run_command(args: argparse.Namespace) -> int:
    """`rnnscan bench`: the quick suite by default, `--full` for every config.
    (`args.argv`, the command's arguments as given, start `--isa`'s fresh process.)"""
    wanted = EMULATION[args.isa]
    if any(os.environ.get(k) != v for k, v in wanted.items()):
        argv = args.argv
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env = {**os.environ, **wanted, "PYTHONPATH": os.pathsep.join(
            filter(None, [root, os.environ.get("PYTHONPATH")]))}
        return subprocess.run([sys.executable, "-m", "rnnscan.bench", *argv], env=env).returncode

    if args.report:
        docs = []
        for path in args.report:
            with open(path) as f:
                docs.append(json.load(f))
        name = args.name or os.path.splitext(os.path.basename(args.report[0]))[0] + "-merged"
        for path in report.write(report.merge(docs, name), args.out, name):
            print(path)
        return 0

    suite = "full" if args.full else (args.suite or "quick")
    names = args.configs.split(",") if args.configs else SUITES[suite]
    unknown = [n for n in names if n not in CONFIGS]
    unknown += [p for p in args.peers.split(",") if p not in peers.PEERS]
    unknown += [m for m in args.modes.split(",") if m not in peers.MODES]
    if unknown:
        print(f"rnnscan bench: error: unknown config, peer or mode: {', '.join(unknown)}",
              file=sys.stderr)
        return 2
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    name = args.name or f"{jax.default_backend()}-{'custom' if args.configs else suite}-{stamp}"
    run(
        [CONFIGS[n] for n in names], args.peers.split(","), args.modes.split(","),
        dtype=args.dtype, rounds=args.rounds, reps=args.reps,
        case_budget_s=args.case_budget or (30.0 if args.full else 10.0),
        memory=args.full if args.memory is None else args.memory,
        deadline_s=args.deadline, out_dir=args.out, name=name, torch_threads=args.torch_threads,
        clock=args.clock,
        log=lambda message: print(message, flush=True),
    )
    print(f"wrote {os.path.join(args.out, name)}.{{json,md,png}}")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """`rnnscan bench` as a function: parses `argv` and runs it; the exit status."""
    parser = argparse.ArgumentParser(prog="rnnscan bench", description=__doc__.splitlines()[0])
    add_arguments(parser)
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv
    return run_command(args)


if __name__ == "__main__":
    sys.exit(main())
