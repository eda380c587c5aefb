"""Multi-host training for real: 2 processes on the loopback address, through
`rnnscan.train` and through `rnnscan train`, against one process."""

import contextlib
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rnnscan.cli import main

REPO = Path(__file__).resolve().parents[1]
TIMEOUT = 240  # seconds a group of processes may take, compiling included, on a loaded machine


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env() -> dict:
    # One CPU device per process (no forced device count), this tree first.
    return {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"} | {"PYTHONPATH": str(REPO)}


def run_all(commands: list[list[str]], cwd: Path) -> list[subprocess.CompletedProcess]:
    """Runs `commands` at once; every one is killed if the group outlasts TIMEOUT."""
    processes = []
    try:
        for command in commands:
            processes.append(subprocess.Popen(command, cwd=cwd, env=env(), stdout=subprocess.PIPE,
                                              stderr=subprocess.PIPE, text=True))
        done = []
        for process in processes:
            out, err = process.communicate(timeout=TIMEOUT)
            done.append(subprocess.CompletedProcess(process.args, process.returncode, out, err))
        return done
    finally:
        for process in processes:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            process.wait()


def test_two_processes_train_as_one(tmp_path):
    """`train.fit` over `data_parallel()` of 2 processes (`initialize_processes`): the
    replicas agree bit for bit, and they match one process to float rounding."""
    worker = [sys.executable, "-m", "tests.multihost_worker"]
    address = f"127.0.0.1:{free_port()}"
    runs = run_all([worker + [str(tmp_path / "0.npz"), address, "2", "0"],
                    worker + [str(tmp_path / "1.npz"), address, "2", "1"],
                    worker + [str(tmp_path / "alone.npz")]], cwd=REPO)
    for run in runs:
        assert run.returncode == 0, run.stderr[-3000:]
    first, second, alone = (np.load(tmp_path / f"{name}.npz") for name in ("0", "1", "alone"))
    assert (int(first["processes"]), int(first["devices"]), int(alone["devices"])) == (2, 2, 1)
    leaves = [name for name in first.files if name.startswith("leaf")]
    assert len(leaves) >= 4
    for name in leaves:
        assert np.array_equal(first[name], second[name]), name
        np.testing.assert_allclose(first[name], alone[name], rtol=1e-5, atol=1e-6, err_msg=name)


TINY = ["train", "--task", "copy", "--hidden", "16", "--batch-size", "8", "--seq-len", "9", "--log-every", "1",
        "--eval-every", "2", "--checkpoint-every", "2"]


def records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_rnnscan_train_runs_on_two_processes_and_resumes(tmp_path, capsys):
    alone = tmp_path / "alone"
    assert main(TINY + ["--steps", "6", "--out", str(alone)]) == 0
    capsys.readouterr()

    out = tmp_path / "run"
    def both(steps):
        address = f"127.0.0.1:{free_port()}"
        return run_all([[sys.executable, "-m", "rnnscan", *TINY, "--steps", str(steps), "--out", str(out),
                         "--coordinator", address, "--num-processes", "2", "--process-id", str(i)]
                        for i in (0, 1)], cwd=tmp_path)

    for steps in (4, 6):  # a run, then a second one resuming it with more --steps
        first, second = both(steps)
        assert (first.returncode, second.returncode) == (0, 0), first.stderr[-3000:] + second.stderr[-3000:]
        # Process 0 prints (gloo's C++ says on stdout that each rank connected).
        assert f"step {steps}/{steps}" in first.stdout and "step" not in second.stdout
    assert "resuming" in first.stdout and "from step 4" in first.stdout

    run = json.loads((out / "run.json").read_text())
    assert (run["processes"], run["devices"], run["config"]["steps"]) == (2, 2, 6)
    assert "coordinator" not in run["config"] and "process_id" not in run["config"]
    assert sorted(int(p.name) for p in (out / "checkpoints").iterdir() if p.name.isdigit())[-1] == 6
    logged, reference = records(out), records(alone)
    assert [r["step"] for r in logged] == [r["step"] for r in reference] == [1, 2, 3, 4, 5, 6]
    for key in ("loss", "grad_norm", "eval_loss"):
        np.testing.assert_allclose([r.get(key, 0.0) for r in logged], [r.get(key, 0.0) for r in reference],
                                   rtol=1e-5, err_msg=key)
    assert (out / "loss.png").exists()


@pytest.mark.parametrize("argv, message", [
    (["--num-processes", "2", "--process-id", "0"], "--num-processes and --process-id need --coordinator"),
    (["--coordinator", "nohost", "--num-processes", "2", "--process-id", "0"],
     "coordinator must be 'HOST:PORT' or 'auto'; got 'nohost'"),
    (["--coordinator", "127.0.0.1:1", "--num-processes", "2", "--process-id", "2"],
     "process_id must be below num_processes (2); got 2"),
])
def test_bad_process_flags_exit_with_status_2_and_say_why(argv, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit:
        main(TINY + argv + ["--out", str(tmp_path / "run")])
    assert exit.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
