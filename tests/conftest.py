"""Fixtures shared by test modules."""

import contextlib
import io
import os
import tempfile
from pathlib import Path
from typing import NamedTuple

import jax
import pytest

# The tests compile hundreds of small programs and run each once or twice: LLVM's
# expensive optimization passes cost more than they save. They change how fast
# XLA's code runs, not what it computes (the HLO is optimized as always). Set in
# the environment too, for the `python -m rnnscan` and `python -c` subprocesses
# whose losses are compared bit for bit with this process's.
# RNNSCAN_TEST_XLA_OPTIMIZE=1 runs the tests with every optimization instead.
if os.environ.get("RNNSCAN_TEST_XLA_OPTIMIZE") != "1":
    os.environ["JAX_DISABLE_MOST_OPTIMIZATIONS"] = "1"
    jax.config.update("jax_disable_most_optimizations", True)

# `rnnscan tune`'s cache of kernel timings (`rnnscan.kernels.speed`): the tests
# read none the user wrote.
os.environ["RNNSCAN_CACHE_DIR"] = tempfile.mkdtemp(prefix="rnnscan-test-cache-")

# A small charlm run of `rnnscan train`: a record every step, an eval every
# second step and a checkpoint every second step.
CHARLM_TRAIN = ["train", "--task", "charlm", "--cell", "lstm", "--hidden", "8", "--layers", "2",
                "--batch-size", "4",
                "--seq-len", "8", "--steps", "4", "--log-every", "1", "--eval-every", "2",
                "--checkpoint-every", "2"]


class CharlmRun(NamedTuple):
    out: Path  # the run directory
    printed: str  # what `rnnscan train` printed to stdout


@pytest.fixture(scope="session")
def charlm_run(tmp_path_factory) -> CharlmRun:
    """One trained charlm run, for the tests that only read it (training one
    compiles its train, eval and sample steps: seconds on a small machine)."""
    from rnnscan.cli import main

    out = tmp_path_factory.mktemp("charlm") / "run"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(CHARLM_TRAIN + ["--out", str(out)]) == 0
    return CharlmRun(out, printed.getvalue())
