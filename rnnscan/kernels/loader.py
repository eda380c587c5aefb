"""Finds the kernel library built for this CPU, loads it and registers its XLA FFI targets.

`pip install` builds every kernel once per instruction set (`build.py`):
`avx512` (x86-64-v4), `avx2` (x86-64-v3: AVX2, FMA, BMI2) and a portable
`baseline`. At first use this module picks the best one the CPU reports
(`/proc/cpuinfo`), loads it with ctypes and registers its targets for the CPU,
suffixed with the variant's name (so tests can register several in one process).
Nothing is compiled here. `RNNSCAN_KERNEL_ISA=avx2` (or `avx512`, `baseline`,
`none`) overrides the choice, to run a lesser variant on a better CPU;
`RNNSCAN_NATIVE=0` turns the kernels off. Both are read when a function is
traced: jitted functions keep the choice they were traced with.
"""

from __future__ import annotations

import ctypes
import importlib.metadata
import os
import platform
import threading
import warnings
from pathlib import Path
from typing import NamedTuple, Optional

import jax

from rnnscan.kernels import build

class Kernel(NamedTuple):
    """A registered variant: `target(name)` is the FFI target to call; `lanes`,
    the floats of one of its vectors (unit counts must be a multiple);
    `targets`, the FFI handlers its library defines (before the suffix)."""

    variant: str
    lanes: int
    targets: tuple = ()

    def target(self, name: str) -> str:
        return f"{name}_{self.variant}"


def cpu_flags() -> set[str]:
    """The CPU's feature flags as Linux reports them (empty elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.split(":")[0].strip() in ("flags", "Features"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.split(":")[0].strip() == "model name":
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_isa() -> str:
    """The best variant this CPU can execute."""
    flags = cpu_flags()
    return next(v for v, spec in build.VARIANTS.items() if spec.requires <= flags)


def choice() -> tuple[Optional[str], str]:
    """`(variant, why)`: the variant to use here, or None and the reason."""
    if os.environ.get("RNNSCAN_NATIVE", "1") == "0":
        return None, "disabled (RNNSCAN_NATIVE=0)"
    if jax.default_backend() != "cpu":
        return None, f"not a CPU (backend {jax.default_backend()!r})"
    best = cpu_isa()
    wanted = os.environ.get("RNNSCAN_KERNEL_ISA", "").strip().lower()
    if wanted == "none":
        return None, "disabled (RNNSCAN_KERNEL_ISA=none)"
    if not wanted:
        return best, f"the best this CPU ({build.VARIANTS[best].level}) runs"
    runnable = list(build.VARIANTS)[list(build.VARIANTS).index(best):]
    if wanted not in runnable:
        raise ValueError(f"RNNSCAN_KERNEL_ISA must be one of {runnable + ['none']} on this CPU "
                         f"(its best is {best!r}); got {wanted!r}")
    return wanted, "RNNSCAN_KERNEL_ISA"


def load(source: str) -> Optional[Kernel]:
    """The registered variant of kernel `source` to use here (registering it on
    first use), or None: disabled, not a CPU, or not built at install (then
    warning once)."""
    variant, _ = choice()
    if variant is None:
        return None
    with _lock:  # one registration per variant and process, also when threads trace at once
        key = (source, variant)
        if key not in _loaded:
            _loaded[key] = _register(source, variant)
        return _loaded[key]


def library(source: str, variant: str) -> Optional[Path]:
    """The built library of `source`'s `variant`: beside this module (an install,
    or a source tree built in place), else in the installed rnnscan (tests run
    from a source tree over `pip install .`), provided it was built from this
    tree's source; None if there is none."""
    name = build.library_name(source, variant)
    here = Path(__file__).with_name(name)
    # Every rnnscan distribution found: a source tree's own egg-info (written
    # by the install) may come before the installed one.
    candidates = [here] + [Path(dist.locate_file(f"rnnscan/kernels/{name}"))
                           for dist in importlib.metadata.distributions(name="rnnscan")]
    code = Path(__file__).with_name(f"{source}.cc")
    wanted = build.source_hash(code) if code.exists() else None  # installs ship no source
    for path in candidates:
        if path.exists() and (wanted is None or _built_from(path, variant) == wanted):
            return path
    return None


def _built_from(path: Path, variant: str) -> Optional[str]:
    try:
        built = getattr(ctypes.CDLL(str(path)), f"rnnscan_source_{variant}")
    except (OSError, AttributeError):
        return None
    built.restype = ctypes.c_char_p
    return built().decode()


_loaded: dict[tuple[str, str], Optional[Kernel]] = {}
_lock = threading.Lock()


def _register(source: str, variant: str) -> Optional[Kernel]:
    path = library(source, variant)
    if path is None:
        warnings.warn(
            f"rnnscan: its C++ kernel {source!r} ({variant}) is unavailable: it is built when "
            "rnnscan is installed with a C++ compiler (in a source tree: `python -m "
            "rnnscan.kernels`, again after editing it); running the lax.scan instead",
            RuntimeWarning, stacklevel=4)
        return None
    lib = ctypes.CDLL(str(path))
    listed = getattr(lib, f"rnnscan_targets_{variant}")  # the C++ names its handlers
    listed.restype = ctypes.c_char_p
    names = tuple(listed().decode().split(","))
    for name in names:
        target = f"{name}_{variant}"
        jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(lib, target)),
                                    platform="cpu")
    lanes = getattr(lib, f"rnnscan_lanes_{variant}")()
    if lanes != build.VARIANTS[variant].lanes:  # the table and cpu_common.h disagree
        raise RuntimeError(f"rnnscan: {path} has {lanes} lanes; build.VARIANTS says "
                           f"{build.VARIANTS[variant].lanes}")
    return Kernel(variant, lanes, names)


def export_checks() -> list:
    """The `jax.export.DisabledSafetyCheck`s that `jax.export.export(...,
    disabled_checks=...)` needs for a function that may run rnnscan's kernels
    (their FFI custom calls have no compatibility guarantee: the module runs
    where the same rnnscan is installed). It registers the kernels' targets, so
    call it also in the process that deserializes and calls such a module."""
    kernels = [k for k in map(load, build.SOURCES) if k is not None]
    return [jax.export.DisabledSafetyCheck.custom_call(k.target(name))
            for k in kernels for name in k.targets]


def info() -> dict:
    """What rnnscan's kernels do here: the backend, the CPU and its instruction-set
    level, the variants built, and the one in use (None, with the reason, if none)."""
    variants = {v: all(library(s, v) is not None for s in build.SOURCES) for v in build.VARIANTS}
    try:
        variant, why = choice()
    except ValueError as error:
        variant, why = None, str(error)
    if variant is not None and not variants[variant]:
        failed = Path(__file__).with_name(build.FAILURES)
        variant, why = None, f"{variant} not built: " + (
            f"the build at install failed: {failed.read_text()[:500]}" if failed.exists()
            else "installed without building it, or a source tree without "
                 "`python -m rnnscan.kernels`")
    return {
        "backend": jax.default_backend(),
        "cpu": cpu_model(),
        "machine": platform.machine(),
        "isa": build.VARIANTS[cpu_isa()].level,
        "built": sorted(v for v, ok in variants.items() if ok),
        "variant": variant,
        "why": why,
    }
