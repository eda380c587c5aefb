"""Backend tuning: the one table of layout defaults `unroll` plans with.

Every number here was measured; the measurements are in `benchmarks/results/`
(`unroll_cpu.md`, `layout_cpu*.md`, `linear_scan_cpu.md`), and
`benchmarks/scan_layout.py` and `benchmarks/linear_scan.py` re-measure them.
"""

from __future__ import annotations

import os
from typing import NamedTuple, Optional

import jax


class Tuning(NamedTuple):
    """The sequential scan's layout on one backend.

    Attributes:
      unroll: steps per scan iteration when `unroll=None`: unrolling lets XLA fuse
        consecutive steps and amortises the loop's per-step cost (a kernel launch
        on GPUs).
      time_segments: consecutive scans the time axis is split into, each with its
        own input projection, which XLA:CPU runs on another core while the
        previous segment's loop runs (in reverse mode, a segment's input
        gradients while the next one back runs). One elsewhere: the loops keep a
        GPU busy already, and each scan costs compile time.
      batch_groups: whether a step may run its rows as independent groups, each a
        chain of ops that XLA:CPU runs on its own core (`batch_groups` below).
      associative_min_time: the shortest sequence from which `method="auto"` runs
        a linear cell on the associative scan; None: never (on a CPU its ~2x work
        has no parallelism to pay for it). On GPUs an estimate, not yet measured.
    """

    unroll: int
    time_segments: int
    batch_groups: bool
    associative_min_time: Optional[int]


TABLE = {
    "cpu": Tuning(unroll=4, time_segments=4, batch_groups=True, associative_min_time=None),
    "gpu": Tuning(unroll=8, time_segments=1, batch_groups=False, associative_min_time=256),
    "tpu": Tuning(unroll=8, time_segments=1, batch_groups=False, associative_min_time=256),
}


def for_backend(backend: Optional[str] = None) -> Tuning:
    """The tuning of `backend` (default: JAX's default backend; CUDA and ROCm are "gpu")."""
    backend = backend or jax.default_backend()
    return TABLE.get("gpu" if backend in ("cuda", "rocm") else backend, TABLE["gpu"])


def cpu_cores() -> int:
    """The CPU cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def batch_groups(batch: int, row_macs: int, backend=None) -> int:
    """How many groups of rows a scan step runs its batch as.

    `row_macs` is the multiply-adds per batch row of the step's recurrent product
    (`state_size * gate_size`, `4H^2` for an LSTM). A product split over the
    cores by XLA synchronises them several times a step; groups of rows, each its
    own chain, do not. That pays for mid-sized products only: 2 groups when the
    step has 4M-24M multiply-adds, each group at least 8 rows and 2M
    multiply-adds, at most one per core and at most 2 (the number measured);
    else 1. `backend`: a name (default JAX's) or a `Tuning`.
    """
    macs = batch * row_macs
    tuned = backend if isinstance(backend, Tuning) else for_backend(backend)
    if not tuned.batch_groups or macs > 24_000_000:
        return 1
    return max(1, min(2, cpu_cores(), batch // 8, macs // 2_000_000))
