"""Compiles the C++ kernels, one shared library per instruction set.

`pip install` runs this through `setup.py` (so does `pip install -e .`, in
place); for a development tree, `python -m rnnscan.kernels` builds them
beside the sources. Nothing here runs when rnnscan is imported or traced:
`loader` only loads what was built. This module imports nothing from rnnscan
(setup.py loads it by path, before rnnscan is importable).
"""

from __future__ import annotations

import hashlib
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple, Optional

# The kernels' sources (one C++ file each, in this folder).
SOURCES = ("lstm_cpu", "gru_cpu")
X86 = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")


class Variant(NamedTuple):
    """An instruction set the kernels are built for: the compiler `flags` that
    select its instructions, the CPU flags it `requires` (as /proc/cpuinfo
    names them: what those flags let the compiler use), its x86-64 `level`, the
    floats of one of its vectors (`lanes`, cpu_common.h's `kLanes`: unit counts
    must be a multiple), and the environment that holds XLA:CPU, torch (ATen,
    oneDNN) and rnnscan to it on a better CPU (`emulation`, for the benchmarks;
    None: not emulated)."""

    flags: tuple
    requires: frozenset
    level: str
    lanes: int
    emulation: Optional[dict] = None


# The one table of variants, best first: the build, the loader, the benchmark's
# emulation and the docs read it.
VARIANTS = {
    "avx512": Variant(("-march=x86-64-v4", "-mtune=generic"), frozenset(
        {"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl", "avx2", "fma", "bmi2"}),
        "x86-64-v4", 16),
    "avx2": Variant(("-march=x86-64-v3", "-mtune=generic"), frozenset(
        {"avx2", "fma", "bmi1", "bmi2", "f16c", "movbe", "abm"}), "x86-64-v3", 8,
        {"XLA_FLAGS": "--xla_cpu_max_isa=AVX2", "RNNSCAN_KERNEL_ISA": "avx2",
         "ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}),
    "baseline": Variant(("-march=x86-64", "-mtune=generic"), frozenset(), "baseline", 4),
} if X86 else {"baseline": Variant((), frozenset(), "baseline", 4)}
FLAGS = ["-O3", "-ffp-contract=fast", "-std=c++17", "-shared", "-fPIC", "-pthread"]


def library_name(source: str, variant: str) -> str:
    """The file a variant is built into, beside its source."""
    return f"_{source}_{variant}.so"


# The header every source includes.
COMMON = "cpu_common.h"


def source_hash(source: Path) -> str:
    """What a library is built from (its source and the common header), compiled
    into it: `loader` refuses a library whose sources have changed since (a stale
    build in a source tree)."""
    text = source.read_bytes() + source.with_name(COMMON).read_bytes()
    return hashlib.sha256(text).hexdigest()[:16]


def compile_variant(source: Path, variant: str, output: Path, include_dir: str) -> None:
    """Compiles `source` as `variant` into `output`, with `$CXX` (else `c++`)."""
    compiler = shlex.split(os.environ.get("CXX", "c++"))  # e.g. "ccache g++"
    output.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [*compiler, *FLAGS, *VARIANTS[variant].flags, f"-DRNNSCAN_ISA={variant}",
         f'-DRNNSCAN_SOURCE_HASH="{source_hash(source)}"', "-isystem", include_dir,
         str(source), "-o", str(output)],
        check=True, capture_output=True, text=True, timeout=600,
    )


# Written beside the libraries when a build failed, for `loader.info` to report.
FAILURES = "_build_failures.txt"


def build_all(target_dir: Path, source_dir: Path | None = None) -> list[str]:
    """Builds every source as every variant into `target_dir`, warning on stderr
    for each that failed (then rnnscan runs the lax.scan in its place); returns
    those failures, also written to `FAILURES` for `loader.info`."""
    source_dir = source_dir or Path(__file__).parent
    failures = []
    try:
        import jax  # the FFI headers jaxlib ships; a build requirement

        include_dir = jax.ffi.include_dir()
    except (ImportError, AttributeError) as error:
        failures.append(f"no XLA FFI headers (jax/jaxlib >= 0.10 at build time): {error}")
    for source in SOURCES if not failures else ():
        for variant in VARIANTS:
            try:
                compile_variant(source_dir / f"{source}.cc", variant,
                                target_dir / library_name(source, variant), include_dir)
            except (OSError, subprocess.SubprocessError) as error:
                detail = getattr(error, "stderr", "") or ""
                failures.append(f"{source} ({variant}): {error} {detail[-2000:]}".strip())
    if failures:  # one warning for all: rnnscan installs as pure JAX
        print(f"WARNING: rnnscan: could not build {len(failures)} of its C++ kernel libraries; "
              "rnnscan will run the lax.scan in their place. " + " | ".join(failures),
              file=sys.stderr)
    report = target_dir / FAILURES
    if failures:
        report.write_text("\n".join(failures) + "\n")
    elif report.exists():
        report.unlink()
    return failures

