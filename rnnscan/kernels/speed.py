"""Where the CPU kernels are measured faster than the scan, per instruction set.

`MEASURED[kernel][variant]` (`kernel` "lstm" or "gru") lists the rows timed
(`benchmarks/kernel_isa.py --cell lstm|gru`; figures in
`benchmarks/results/kernel_isa_*.md`): `(batch, time, input, hidden)` and
whether the kernel beat `lax.scan` forward and forward+backward (median of
interleaved runs), apart: `unroll` takes the values from one and the
derivatives from the other (`Plan.derivatives`).

A shape is judged by its nearest measured row (in log scale over batch, input
and hidden), and only within the measured rows: its batch, input and hidden
size each between the smallest and the largest measured. Elsewhere, and on a
variant with no figures, the scan runs (a guess is not a measurement).

`rnnscan tune` (`bench/tune.py`) times the shapes a user names on their CPU
and writes them to a cache (`cache_path`): rows of this CPU model and rnnscan
version there are read first, the same way, and answer the shapes within them;
the shipped table answers the rest.
"""

from __future__ import annotations

import functools
import json
import math
import os
from pathlib import Path

from rnnscan.kernels import loader

# Per row: (forward won, forward+backward won).
Rows = list[tuple[tuple[int, int, int, int], tuple[bool, bool]]]

# avx512: benchmarks/results/kernel_isa_idle.md, an idle 2-core AVX-512 Xeon;
# in the comments, scan time / kernel time forward, forward+backward. The
# padded rows (lengths in [T/2, T]) agree with their unpadded ones (1.55, 1.79).
# avx2: the rows the Xeon measured with AVX2 emulated (kernel_isa_idle.md),
# until the Zen 3 EPYC's idle run replaces them (a real AVX2 CPU:
# `sh benchmarks/issue24_cpu.sh` writes kernel_isa_zen3_*.md, rows of batch 1
# to 8 and DeepBench's among them). Meanwhile batches below 16 and hidden sizes
# above 512 lie outside these rows: the scan.
LSTM: dict[str, Rows] = {
    "avx512": [((16, 128, 128, 128), (True, True)),   # 1.55, 1.40
               ((32, 128, 256, 256), (True, True)),   # 1.40, 1.71
               ((64, 256, 512, 512), (True, True))],  # 1.38, 1.27
    "avx2": [((16, 128, 128, 128), (False, True)),    # 0.73, 1.28
             ((32, 128, 256, 256), (False, True)),    # 0.88, 1.31
             ((64, 256, 512, 512), (False, True))],   # 0.93, 1.05
}

# benchmarks/results/kernel_isa_gru_idle.md, the same machine and emulation.
GRU: dict[str, Rows] = {
    "avx512": [((16, 128, 128, 128), (True, True)),   # 1.09, 1.62
               ((32, 128, 256, 256), (True, True)),   # 1.79, 1.53
               ((64, 256, 512, 512), (True, True))],  # 1.44, 1.49
    "avx2": [((16, 128, 128, 128), (False, True)),    # 0.86, 1.30
             ((32, 128, 256, 256), (True, True)),     # 1.25, 1.39
             ((64, 256, 512, 512), (False, True))],   # 0.94, 1.22
}

MEASURED: dict[str, dict[str, Rows]] = {"lstm": LSTM, "gru": GRU}


def nearest(rows: Rows, batch: int, input_size: int, hidden: int):
    """`(forward won, forward+backward won)` of the row nearest this shape, or
    None when batch, input or hidden lies outside the rows' range."""
    point = (batch, input_size, hidden)
    shapes = [(b, i, h) for (b, _, i, h), _ in rows]
    if not rows or any(not min(s[k] for s in shapes) <= point[k] <= max(s[k] for s in shapes)
                       for k in range(3)):
        return None

    def distance(row):
        return sum(math.log(x / y) ** 2 for x, y in zip(point, row[0][:1] + row[0][2:]))

    return min(rows, key=distance)[1]


def kernel_is_faster(kernel: str, isa: str, batch: int, time: int, input_size: int,
                     hidden: int, *, derivatives: bool = False) -> bool:
    """Whether the `isa` variant of `kernel` ("lstm", "gru") was measured faster
    than the scan at the measured row nearest to this shape (this CPU's tuned
    rows first, then the shipped table): forward, or with `derivatives`
    forward+backward. Outside the measured rows, False."""
    if min(batch, time, input_size, hidden) <= 0:
        return False
    for rows in (tuned(kernel, isa), MEASURED.get(kernel, {}).get(isa)):
        won = nearest(rows or [], batch, input_size, hidden)
        if won is not None:
            return won[int(derivatives)]
    return False


# -- the cache `rnnscan tune` writes --------------------------------------------


def cache_path() -> Path:
    """`$RNNSCAN_CACHE_DIR/tune.json`, by default `~/.cache/rnnscan/tune.json`."""
    folder = os.environ.get("RNNSCAN_CACHE_DIR") or Path.home() / ".cache" / "rnnscan"
    return Path(folder) / "tune.json"


def cache_key() -> dict:
    """What a tuned row holds only for: this CPU model and rnnscan version."""
    from rnnscan import __version__

    return {"cpu": loader.cpu_model(), "version": __version__}


def tuned(kernel: str, isa: str) -> Rows:
    """The cache's rows of `kernel` and variant `isa` for this CPU and version."""
    path = cache_path()
    try:
        stamp = path.stat().st_mtime_ns
    except OSError:
        return []
    return [row for k, v, row in _read(str(path), stamp, **cache_key()) if (k, v) == (kernel, isa)]


@functools.lru_cache(maxsize=8)
def _read(path: str, stamp: int, cpu: str, version: str) -> tuple:
    """`((kernel, variant, row), ...)` of the cache's entries for `cpu` and
    `version` (read again when the file changes: `stamp`, its mtime). A file
    that is not the cache's JSON is ignored."""
    try:
        entries = json.loads(Path(path).read_text())["entries"]
        return tuple((e["kernel"], e["variant"], (tuple(e["shape"]), tuple(e["faster"])))
                     for e in entries if (e["cpu"], e["version"]) == (cpu, version))
    except (OSError, ValueError, KeyError, TypeError):
        return ()


def record(entries: list[dict]) -> Path:
    """Adds `entries` (each with "kernel", "variant", "shape" `(batch, time,
    input, hidden)`, "faster" `(forward, forward+backward)` and any figures) to
    the cache under this CPU and version, replacing earlier ones of the same
    key, kernel, variant and shape; returns the cache's path."""
    path = cache_path()
    try:
        old = json.loads(path.read_text())["entries"]
    except (OSError, ValueError, KeyError):
        old = []
    new = [{**cache_key(), **e, "shape": list(e["shape"]), "faster": list(e["faster"])}
           for e in entries]
    ident = lambda e: (e.get("cpu"), e.get("version"), e.get("kernel"), e.get("variant"),
                       list(e.get("shape", ())))
    kept = [e for e in old if ident(e) not in [ident(n) for n in new]]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"entries": kept + new}, indent=1))
    tmp.replace(path)  # readers see the old file or the new one
    return path
