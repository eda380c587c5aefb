"""benchmarks/gpu.sh runs end to end with TINY=1 on this machine's CPU: the
correctness check, every timed group (the harness's, linear, Newton, sequence
parallelism, the exported module) and the merged report."""

import os
import pathlib
import subprocess

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.slow  # minutes on 2 cores: every group compiles its programs
def test_gpu_script_runs_tiny_on_the_cpu(tmp_path):
    # A budget for a slow CPU: on a GPU the script fits its default 480 s.
    env = dict(os.environ, OUT=str(tmp_path), TINY="1", BUDGET="3000")
    done = subprocess.run(["bash", "benchmarks/gpu.sh"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=3600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for name in ("check.txt", "gpu.md", "gpu-groups.tar.gz"):
        assert (tmp_path / name).exists(), name
    assert "| mingru, associative |" in done.stdout and '"exported_ms"' in done.stdout
    assert "groups that did not finish" not in done.stdout
