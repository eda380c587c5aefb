"""rnnscan's C++ kernels for XLA:CPU: built on first use, registered as XLA FFI targets.

Each kernel is one C++ source in this package. The first process that needs it
compiles it with the system C++ compiler (`$CXX`, else `c++`) against the XLA FFI
headers that jaxlib ships, for this machine's CPU (`-march=native`), and keeps
the library in `$RNNSCAN_CACHE_DIR` (default `~/.cache/rnnscan`) under a name
that hashes the source, the compiler command (not its version), jaxlib's
version and the CPU's features; old builds are not removed.
Without a compiler, or with `RNNSCAN_NATIVE=0` in the environment, `loaded`
returns False and rnnscan runs the same computation as XLA ops.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shlex
import subprocess
import tempfile
import threading
import warnings
from pathlib import Path

import jax
import jaxlib

# The FFI handlers each source defines (XLA_FFI_DEFINE_HANDLER_SYMBOL).
TARGETS = {
    "lstm_cpu": ("rnnscan_lstm_forward", "rnnscan_lstm_forward_saving", "rnnscan_lstm_backward"),
}
FLAGS = ("-O3", "-march=native", "-ffp-contract=fast", "-std=c++17", "-shared", "-fPIC",
         "-pthread")


def enabled() -> bool:
    """Whether rnnscan may use its kernels: not when `RNNSCAN_NATIVE=0`. Read
    when a function is traced: jitted functions keep the choice they were traced with."""
    return os.environ.get("RNNSCAN_NATIVE", "1") != "0"


def loaded(name: str) -> bool:
    """Whether kernel `name`'s FFI targets are registered for the CPU (building
    and registering them on the first call); False when disabled or unbuildable."""
    if not enabled():
        return False
    with _lock:  # one build and registration per process, also when threads trace at once
        if name not in _loaded:
            _loaded[name] = _build_and_register(name)
        return _loaded[name]


_loaded: dict[str, bool] = {}
_lock = threading.Lock()


def _build_and_register(name: str) -> bool:
    try:
        library = ctypes.CDLL(str(_build(name)))
    except (OSError, RuntimeError, subprocess.SubprocessError) as error:
        detail = getattr(error, "stderr", b"") or b""
        warnings.warn(
            f"rnnscan: could not build its C++ kernel {name!r} ({error}; "
            f"{detail.decode(errors='replace')[-500:]}); running it as XLA ops instead",
            RuntimeWarning, stacklevel=3,
        )
        return False
    for target in TARGETS[name]:
        jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(library, target)),
                                    platform="cpu")
    return True


def _build(name: str) -> Path:
    """The compiled library of `name.cc`, from the cache or built into it."""
    source = Path(__file__).with_name(f"{name}.cc")
    compiler = shlex.split(os.environ.get("CXX", "c++"))  # e.g. "ccache g++"
    key = hashlib.sha256(b"\0".join(
        [source.read_bytes(), " ".join(compiler).encode(), jaxlib.__version__.encode(),
         " ".join(FLAGS).encode(), _cpu_features().encode()]
    )).hexdigest()[:16]
    cache = Path(os.environ.get("RNNSCAN_CACHE_DIR", Path.home() / ".cache" / "rnnscan"))
    library = cache / f"{name}-{key}.so"
    if library.exists():
        return library
    cache.mkdir(parents=True, exist_ok=True)
    # Built beside its final name and renamed, so processes building at once
    # never load a half-written file.
    with tempfile.TemporaryDirectory(dir=cache) as scratch:
        built = Path(scratch) / library.name
        subprocess.run(
            [*compiler, *FLAGS, "-isystem", jax.ffi.include_dir(), str(source), "-o", str(built)],
            check=True, capture_output=True, timeout=300,
        )
        os.replace(built, library)
    return library


def _cpu_features() -> str:
    """What `-march=native` depends on: the CPU's model and feature flags."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.machine() + platform.processor()
    wanted = ("model name", "flags", "Features", "CPU part")
    return "\n".join(sorted({line for line in lines if line.split(":")[0].strip() in wanted}))
