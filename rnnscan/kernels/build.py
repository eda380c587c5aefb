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

# The kernels' sources (one C++ file each, in this folder) and the variants
# each is built as: name -> the compiler flags that select its instructions.
SOURCES = ("lstm_cpu", "gru_cpu")
X86 = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")
VARIANTS = {
    "avx512": ["-march=x86-64-v4", "-mtune=generic"],  # AVX-512 F/BW/DQ/VL/CD
    "avx2": ["-march=x86-64-v3", "-mtune=generic"],    # AVX2, FMA, BMI2, F16C
    "baseline": ["-march=x86-64", "-mtune=generic"] if X86 else [],
} if X86 else {"baseline": []}
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
        [*compiler, *FLAGS, *VARIANTS[variant], f"-DRNNSCAN_ISA={variant}",
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

