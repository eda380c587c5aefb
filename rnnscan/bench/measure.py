"""Timing and peak memory of a `Program`.

Peak memory is measured in a fresh subprocess per case (`python -m
rnnscan.bench.measure SPEC`), so no earlier case's allocations count: on a CPU the
growth of the resident set during the first call after compiling (a warm-up call
would leave freed pages resident, hiding them), on a GPU the device's `peak_bytes_in_use` (JAX) or `max_memory_allocated` (torch).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from typing import Callable, Sequence

import jax

from rnnscan.bench.configs import Config


CLOCKS = {
    # Latency: what a user waits for.
    "wall": time.perf_counter,
    # The CPU time of every thread of the process: the work done, robust to other
    # processes on a shared machine (but it counts threads that spin while they wait).
    "cpu": time.process_time,
}


def time_calls(call: Callable[[], None], reps: int, budget_s: float, clock: str = "wall") -> list[float]:
    """Seconds per call of `call` on `clock` (see `CLOCKS`), `reps` times, or fewer
    (at least one) once `budget_s` seconds of wall time are spent."""
    times = []
    now = CLOCKS[clock]
    deadline = time.perf_counter() + budget_s
    while len(times) < reps:
        start = now()
        call()
        times.append(now() - start)
        if time.perf_counter() > deadline:
            break
    return times


def time_alternating(fns: Sequence[Callable], args: tuple, repeats: int) -> list[float]:
    """Median wall seconds of each function in `fns` on `args`, after a warm-up
    call each; the functions take turns, run by run, so all see the same load."""
    for fn in fns:
        jax.block_until_ready(fn(*args))
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, seconds in zip(fns, times):
            start = time.perf_counter()
            jax.block_until_ready(fn(*args))
            seconds.append(time.perf_counter() - start)
    return [statistics.median(seconds) for seconds in times]


def peak_memory(peer: str, config: Config, mode: str, dtype: str, timeout_s: float) -> dict:
    """Runs one case in a fresh Python process and returns its peak memory.

    Returns:
      `{"peak_bytes": int, "how": str}`, or `{"error": str}` when the subprocess
      failed or ran past `timeout_s`.
    """
    spec = json.dumps({"peer": peer, "config": config._asdict(), "mode": mode, "dtype": dtype})
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
    try:
        done = subprocess.run(
            [sys.executable, "-m", "rnnscan.bench.measure", spec],
            capture_output=True, text=True, timeout=timeout_s, env=env,
        )
    except subprocess.TimeoutExpired:
        return {"error": f"memory probe ran past {timeout_s:.0f} s"}
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        return {"error": f"memory probe failed: {done.stderr.strip()[-300:]}"}
    return json.loads(lines[-1])


def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise OSError(f"{field} not in /proc/self/status")


def _probe(peer: str, config: Config, mode: str, dtype: str) -> dict:
    """The subprocess side of `peak_memory`."""
    from rnnscan.bench import peers

    program = peers.build(peer, config, mode, dtype)
    if peers.on_gpu():
        program.call()  # warm-up: cuDNN plans and autotuning are not the case's
        if peer == "torch":
            import torch

            torch.cuda.reset_peak_memory_stats()
            program.call()
            return {"peak_bytes": int(torch.cuda.max_memory_allocated()),
                    "how": "torch.cuda.max_memory_allocated"}
        program.call()
        return {"peak_bytes": int(jax.devices()[0].memory_stats()["peak_bytes_in_use"]),
                "how": "device peak_bytes_in_use, fresh process"}
    # Writing 5 to clear_refs resets the peak RSS (VmHWM) to the current RSS.
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")
    before = _rss_kib("VmRSS")
    program.call()
    return {"peak_bytes": (_rss_kib("VmHWM") - before) * 1024,
            "how": "peak RSS growth during one call, fresh process"}


if __name__ == "__main__":
    _spec = json.loads(sys.argv[1])
    print(json.dumps(_probe(_spec["peer"], Config(**_spec["config"]), _spec["mode"], _spec["dtype"])))
