"""`rnnscan train`: its files, resuming (also after SIGKILL), and every kind of bad input."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from rnnscan import train
from rnnscan.cli import main

REPO = Path(__file__).resolve().parents[1]
TINY = ["train", "--task", "copy", "--layers", "2", "--hidden", "16", "--batch-size", "8", "--seq-len", "9"]


def records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def curve(out: Path) -> list[tuple]:
    """What must not change when a run is interrupted: everything but the timing."""
    return [(r["step"], r["loss"], r["grad_norm"], r.get("eval_loss")) for r in records(out)]


def test_train_writes_metrics_run_json_plot_and_a_sample(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "--task", "charlm", "--hidden", "32", "--batch-size", "8", "--seq-len", "16",
            "--steps", "20", "--log-every", "5", "--eval-every", "10", "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "step 5/20  loss" in printed and "tok/s" in printed  # plain lines when not a terminal
    assert "--- sample ---\nElizabeth" in printed

    logged = records(out)
    assert [r["step"] for r in logged] == [5, 10, 15, 20]
    assert all(r["loss"] > 0 and r["tokens_per_s"] > 0 for r in logged)
    assert [r["step"] for r in logged if "eval_loss" in r] == [10, 20]
    run = json.loads((out / "run.json").read_text())
    assert run["config"]["task"] == "charlm" and run["config"]["cell"] == "lstm"
    assert run["config"]["lr"] > 0 and run["devices"] == 1 and run["backend"] == "cpu"
    assert {"jax", "optax", "orbax-checkpoint", "python"} <= set(run["versions"])
    assert (out / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "checkpoints" / "20").is_dir()


INTERRUPTIBLE = TINY + ["--steps", "60", "--checkpoint-every", "4", "--log-every", "1", "--eval-every", "30"]


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> list[tuple]:
    """The curve of a run of INTERRUPTIBLE that nothing interrupts."""
    out = tmp_path_factory.mktemp("straight")
    assert main(INTERRUPTIBLE + ["--out", str(out)]) == 0
    return curve(out)


def test_same_out_resumes_and_larger_steps_extend_the_run_exactly(straight, tmp_path, capsys):
    out = str(tmp_path / "run")
    assert main(INTERRUPTIBLE + ["--steps", "10", "--out", out]) == 0
    assert main(INTERRUPTIBLE + ["--out", out, "--log-every", "20"]) == 0
    assert "resuming" in capsys.readouterr().out
    resumed = curve(tmp_path / "run")
    assert [step for step, *_ in resumed] == list(range(1, 11)) + [20, 30, 40, 60]
    losses = {step: loss for step, loss, *_ in straight}
    assert all(loss == losses[step] for step, loss, *_ in resumed)


def latest_checkpoint(out: Path) -> int:
    steps = [int(p.name) for p in (out / "checkpoints").glob("*") if p.name.isdigit()]
    return max(steps, default=0)


def test_sigkill_at_any_moment_then_resume_gives_identical_losses(straight, tmp_path):
    out = tmp_path / "run"
    command = [sys.executable, "-m", "rnnscan", *INTERRUPTIBLE, "--out", str(out)]
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"} | {
        "PYTHONPATH": str(REPO),
        "JAX_COMPILATION_CACHE_DIR": str(tmp_path / "jax-cache"),  # compile once, not per restart
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
    }
    moments, kills = random.Random(0), 0
    for _ in range(3):
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        start = latest_checkpoint(out)
        while process.poll() is None and latest_checkpoint(out) <= start:
            time.sleep(0.01)
        time.sleep(moments.uniform(0, 0.2))  # mid-step, mid-checkpoint or mid-log line
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            kills += 1
        process.communicate()
    finish = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert finish.returncode == 0, finish.stderr
    assert kills >= 1
    assert curve(out) == straight


@pytest.mark.parametrize("argv, message", [
    (["--task", "nope"], "invalid choice: 'nope'"),
    (["--cell", "transformer"], "invalid choice: 'transformer'"),
    (["--hidden", "0"], "--hidden: must be a positive integer, got 0"),
    (["--layers", "-1"], "--layers: must be a positive integer, got -1"),
    (["--batch-size", "many"], "--batch-size: expected a positive integer"),
    (["--seq-len", "0"], "--seq-len: must be a positive integer"),
    (["--steps", "0"], "--steps: must be a positive integer"),
    (["--lr", "0"], "--lr: must be a positive finite number"),
    (["--lr", "nan"], "--lr: must be a positive finite number"),
    (["--seed", "-1"], "--seed: must be a non-negative integer"),
    (["--task", "copy", "--seq-len", "2"], "--task copy: seq_len must be at least 3"),
])
def test_bad_arguments_exit_with_status_2_and_say_why(argv, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit:
        main(["train", *argv, "--out", str(tmp_path / "run")])
    assert exit.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_a_batch_the_devices_do_not_divide_is_refused(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(train, "data_parallel", lambda: SimpleNamespace(num_devices=3))
    with pytest.raises(SystemExit) as exit:
        main(TINY + ["--out", str(tmp_path / "run")])
    assert exit.value.code == 2
    assert "--batch-size 8 must be a multiple of the number of devices, 3" in capsys.readouterr().err


def test_an_out_holding_another_configuration_is_refused_untouched(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(TINY + ["--steps", "5", "--out", str(out)]) == 0
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    with pytest.raises(SystemExit) as exit:
        main(TINY[:-1] + ["10", "--cell", "gru", "--steps", "8", "--out", str(out)])
    assert exit.value.code == 2
    err = capsys.readouterr().err
    assert "holds a run of another configuration" in err
    assert "--cell lstm there, gru here" in err and "--seq-len 9 there, 10 here" in err
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before


def test_nan_loss_stops_with_a_message_and_status_1(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(TINY + ["--lr", "1e38", "--steps", "50", "--checkpoint-every", "1", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "NaN or inf" in err and "training stopped" in err
    assert latest_checkpoint(out) < 50
    assert all(r["loss"] == r["loss"] for r in records(out))  # every record logged is a number
