"""`rnnscan train`: its files, resuming (also after SIGKILL), and every kind of bad input."""

import fcntl
import json
import os
import random
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import jax
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


def test_train_writes_metrics_run_json_plot_and_a_sample(charlm_run):
    out, printed = charlm_run  # tests/conftest.py: 4 steps, eval and checkpoint every 2
    assert "step 1/4  loss" in printed and "tok/s" in printed  # plain lines when not a terminal
    assert "--- sample ---\nElizabeth" in printed

    logged = records(out)
    assert [r["step"] for r in logged] == [1, 2, 3, 4]
    assert all(r["loss"] > 0 and r["tokens_per_s"] > 0 for r in logged)
    assert [r["step"] for r in logged if "eval_loss" in r] == [2, 4]
    run = json.loads((out / "run.json").read_text())
    assert run["config"]["task"] == "charlm" and run["config"]["cell"] == "lstm"
    assert run["config"]["lr"] > 0 and run["devices"] == 1 and run["backend"] == "cpu"
    assert {"jax", "optax", "orbax-checkpoint", "python"} <= set(run["versions"])
    assert (out / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "checkpoints" / "4").is_dir()


INTERRUPTIBLE = TINY + ["--steps", "24", "--checkpoint-every", "4", "--log-every", "1", "--eval-every", "12"]


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> list[tuple]:
    """The curve of a run of INTERRUPTIBLE that nothing interrupts."""
    out = tmp_path_factory.mktemp("straight")
    assert main(INTERRUPTIBLE + ["--out", str(out)]) == 0
    return curve(out)


def test_same_out_resumes_and_larger_steps_extend_the_run_exactly(straight, tmp_path, capsys):
    out = str(tmp_path / "run")
    assert main(INTERRUPTIBLE + ["--steps", "10", "--out", out]) == 0
    assert main(INTERRUPTIBLE + ["--out", out, "--log-every", "8"]) == 0
    assert "resuming" in capsys.readouterr().out
    resumed = curve(tmp_path / "run")
    assert [step for step, *_ in resumed] == list(range(1, 11)) + [12, 16, 24]  # 12: an eval
    losses = {step: loss for step, loss, *_ in straight}
    assert all(loss == losses[step] for step, loss, *_ in resumed)


DECAYING = TINY + ["--warmup", "2", "--decay", "cosine", "--log-every", "1", "--checkpoint-every", "4",
                   "--eval-every", "100"]


@pytest.mark.slow  # the schedule as a function of the step: tests/test_schedule.py
def test_a_decaying_run_extended_keeps_its_schedule_exactly(tmp_path):
    straight, extended = tmp_path / "straight", tmp_path / "extended"
    assert main(DECAYING + ["--steps", "12", "--decay-steps", "6", "--out", str(straight)]) == 0
    assert main(DECAYING + ["--steps", "6", "--out", str(extended)]) == 0  # decays over its 6 steps
    assert main(DECAYING + ["--steps", "12", "--out", str(extended)]) == 0  # and stays at --final-lr 0
    assert [r[:3] for r in curve(extended)] == [r[:3] for r in curve(straight)]  # (evals at each end)
    assert json.loads((extended / "run.json").read_text())["config"]["decay_steps"] == 6
    params = {step: train.load_run(straight, step=step).params for step in (4, 8, 12)}
    same = lambda a, b: all(jax.tree_util.tree_leaves(jax.tree_util.tree_map(lambda x, y: bool((x == y).all()), a, b)))
    assert not same(params[4], params[8]) and same(params[8], params[12])  # the rate is 0 from step 6 on


def latest_checkpoint(out: Path) -> int:
    steps = [int(p.name) for p in (out / "checkpoints").glob("*") if p.name.isdigit()]
    return max(steps, default=0)


@pytest.fixture(scope="module")
def jax_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("jax-cache")


def subprocess_env(jax_cache: Path) -> dict:
    return {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"} | {
        "PYTHONPATH": str(REPO),
        "JAX_COMPILATION_CACHE_DIR": str(jax_cache),  # compile once, not per process
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
    }


@pytest.mark.slow  # 28 s; the default run keeps the kill between a checkpoint and its record
def test_sigkill_at_any_moment_then_resume_gives_identical_losses(straight, tmp_path, jax_cache):
    out = tmp_path / "run"
    command = [sys.executable, "-m", "rnnscan", *INTERRUPTIBLE, "--out", str(out)]
    env = subprocess_env(jax_cache)
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
    (["--clip-norm", "0"], "--clip-norm: must be a positive finite number or 'none', got '0'"),
    (["--clip-norm", "inf"], "--clip-norm: must be a positive finite number or 'none', got 'inf'"),
    (["--warmup", "-1"], "--warmup: must be a non-negative integer, got -1"),
    (["--decay", "step"], "--decay: invalid choice: 'step'"),
    (["--final-lr", "-1"], "--final-lr: must be a non-negative finite number, got -1"),
    (["--decay", "linear", "--lr", "0.001", "--final-lr", "0.01"],
     "--final-lr: must be at most --lr (0.001) to decay to; got 0.01"),
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


@pytest.mark.parametrize("run_json", ["{not json", "[]", '{"config": [1]}'])
def test_an_out_whose_run_json_does_not_read_is_refused_untouched(tmp_path, capsys, run_json):
    out = tmp_path / "run"
    out.mkdir()
    (out / "run.json").write_text(run_json)
    with pytest.raises(SystemExit) as exit:
        main(TINY + ["--out", str(out)])
    assert exit.value.code == 2
    assert f"--out {out}: its run.json does not read (" in capsys.readouterr().err
    assert (out / "run.json").read_text() == run_json


def test_an_out_that_cannot_be_created_is_named(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    with pytest.raises(SystemExit) as exit:
        main(TINY + ["--out", str(tmp_path / "file" / "run")])
    assert exit.value.code == 2
    assert f"--out {tmp_path / 'file' / 'run'}: cannot create the run directory there (Not a directory)" in capsys.readouterr().err


def test_nan_loss_stops_with_a_message_and_status_1(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(TINY + ["--lr", "1e38", "--steps", "50", "--checkpoint-every", "1", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "NaN or inf" in err and "training stopped" in err
    assert latest_checkpoint(out) < 50
    assert all(r["loss"] == r["loss"] for r in records(out))  # every record logged is a number


# `rnnscan train` in a subprocess, with `train.{cls}.{method}` wrapped to do `then` after step 8's call.
AT_STEP_8 = """
import os, signal, sys
from rnnscan import cli, train
original = train.{cls}.{method}
def wrapped(self, arg):
    original(self, arg)
    if (arg["step"] if isinstance(arg, dict) else int(arg.step)) == 8:
        {then}
train.{cls}.{method} = wrapped
sys.exit(cli.main(sys.argv[1:]))
"""
KILL = "os.kill(os.getpid(), signal.SIGKILL)"


@pytest.mark.parametrize("cls, method, then", [
    ("Checkpoints", "save", f"self.wait(); {KILL}"),  # checkpoint 8 complete on disk
    pytest.param("MetricsLog", "write", KILL, marks=pytest.mark.slow),  # record 8 written, checkpoint 8 not started
])
def test_sigkill_between_checkpoint_and_record_loses_and_repeats_no_record(straight, tmp_path, jax_cache,
                                                                          cls, method, then):
    out = tmp_path / "run"
    script = AT_STEP_8.format(cls=cls, method=method, then=then)
    killed = subprocess.run([sys.executable, "-c", script, *INTERRUPTIBLE, "--out", str(out)],
                            env=subprocess_env(jax_cache), capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert [r["step"] for r in records(out)][-1] == 8  # the record of step 8 comes before its checkpoint
    saved = latest_checkpoint(out)
    assert saved == 8 if cls == "Checkpoints" else saved < 8
    assert main(INTERRUPTIBLE + ["--out", str(out)]) == 0
    assert curve(out) == straight


def wait_at_step_17(out: Path, jax_cache: Path, tmp_path: Path) -> subprocess.Popen:
    """`rnnscan train` in a subprocess, once it waits at step 17's record for the test's signals."""
    ready = tmp_path / "at-step-17"
    script = AT_STEP_8.replace("== 8", "== 17").format(
        cls="MetricsLog", method="write", then=f"open({str(ready)!r}, 'w').close(); signal.pause()")
    process = subprocess.Popen([sys.executable, "-c", script, *INTERRUPTIBLE, "--out", str(out)],
                               env=subprocess_env(jax_cache), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not ready.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    return process


# SIGTERM in the default run; Ctrl-C and SIGHUP take the same path (-m slow runs them).
@pytest.mark.parametrize("signum", [pytest.param(signal.SIGINT, marks=pytest.mark.slow), signal.SIGTERM,
                                    pytest.param(signal.SIGHUP, marks=pytest.mark.slow)])
def test_ctrl_c_sigterm_and_sighup_save_the_step_print_one_line_to_resume_and_exit_128_plus_signum(
        straight, tmp_path, jax_cache, signum):
    out = tmp_path / "run"
    process = wait_at_step_17(out, jax_cache, tmp_path)
    process.send_signal(signum)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 128 + signum, err  # 130, 143, 129
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    # The signal came after step 17 read the flag, during its record: fit stops after step 18.
    assert err.startswith(f"rnnscan train: interrupted ({signum.name}); checkpoint 18 is saved in "
                          f"{out / 'checkpoints'}; resume with: ")
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["12", "16", "18"]
    assert [r["step"] for r in records(out)] == list(range(1, 19))

    command = shlex.split(err.split("resume with: ", 1)[1])
    assert command[:2] == ["rnnscan", "train"] and "--restart-if-damaged" not in command
    assert main(command[1:]) == 0
    assert curve(out) == straight


@pytest.mark.parametrize("apart", [0.01, pytest.param(0.05, marks=pytest.mark.slow)])
def test_a_second_signal_stops_at_once_and_says_which_checkpoint_is_saved(straight, tmp_path, jax_cache, apart):
    out = tmp_path / "run"
    process = wait_at_step_17(out, jax_cache, tmp_path)
    process.send_signal(signal.SIGINT)
    time.sleep(apart)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    # Stopped at once, or (the second signal late) after the first one's line: either way true.
    said = re.fullmatch(r"rnnscan train: interrupted (again \(SIGINT\), stopped at once|\(SIGINT\)); checkpoint "
                        r"(\d+) is saved in (.*); resume with: (.*)\n", err)
    assert said and said[3] == str(out / "checkpoints"), err
    assert apart > 0.01 or said[1].startswith("again"), err  # 10 ms: step 18 and its checkpoint take longer
    assert (out / "checkpoints" / said[2] / "commit_success.txt").is_file()  # on disk, whole
    assert main(shlex.split(said[4])[1:]) == 0
    assert curve(out) == straight


FULL_DISK_AT_STEP_8 = """
import errno, os, sys
from orbax.checkpoint._src.handlers import json_checkpoint_handler as handler
original = handler.JsonCheckpointHandler._save_fn
async def full(self, item, directory):
    if "/8.orbax-checkpoint-tmp" in str(directory):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(directory / "metadata"))
    return await original(self, item, directory)
handler.JsonCheckpointHandler._save_fn = full
from rnnscan import cli
sys.exit(cli.main(sys.argv[1:]))
"""


def test_a_full_disk_ends_in_one_line_naming_the_last_good_checkpoint_and_resume_is_exact(straight, tmp_path,
                                                                                       jax_cache):
    out = tmp_path / "run"
    full = subprocess.run([sys.executable, "-c", FULL_DISK_AT_STEP_8, *INTERRUPTIBLE, "--out", str(out)],
                          env=subprocess_env(jax_cache), capture_output=True, text=True, timeout=300)
    assert full.returncode == 1
    assert full.stderr == (f"rnnscan train: error: checkpoint 8 could not be written to {out / 'checkpoints'} "
                           f"(OSError: [Errno 28] No space left on device: '{out / 'checkpoints'}/8.orbax-checkpoint-"
                           "tmp/digest.orbax-checkpoint-tmp/metadata'); the last good checkpoint is step 4.\n")
    assert main(INTERRUPTIBLE + ["--out", str(out)]) == 0
    assert curve(out) == straight


def no_training(monkeypatch):
    """`train.fit` that returns its state at once: for what happens around training."""
    monkeypatch.setattr(train, "fit", lambda state, *args, **kwargs: state)


def test_a_second_run_into_the_same_out_is_refused_while_the_first_holds_it(monkeypatch, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import fcntl, sys, time; f = open(sys.argv[1], 'a'); "
                               "fcntl.flock(f, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(120)",
                               str(out / ".lock")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "locked\n"
        with pytest.raises(SystemExit) as exit:
            main(TINY + ["--steps", "2", "--out", str(out)])
        assert exit.value.code == 2
        assert f"--out {out} is in use: another rnnscan train holds its lock {out / '.lock'}" in capsys.readouterr().err
        assert [p.name for p in out.iterdir()] == [".lock"]  # nothing written
    finally:
        holder.kill()
        holder.wait()
    no_training(monkeypatch)
    assert main(TINY + ["--steps", "2", "--out", str(out)]) == 0  # the lock goes with its process
    with open(out / ".lock") as lock:  # and this run let go of it when it ended
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)


def test_every_checkpoint_damaged_is_refused_unless_restart_if_damaged(monkeypatch, tmp_path, capsys):
    out = tmp_path / "run"
    argv = TINY + ["--steps", "6", "--checkpoint-every", "2", "--log-every", "1", "--out", str(out)]
    assert main(argv) == 0
    for checkpoint in (out / "checkpoints").iterdir():
        shutil.rmtree(checkpoint / "state")
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    capsys.readouterr()
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "Refusing to start the run over from step 0" in err and "pass --restart-if-damaged" in err
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before

    no_training(monkeypatch)
    with pytest.warns(UserWarning) as warned:
        assert main(argv + ["--restart-if-damaged"]) == 0
    assert len(warned) == 5 and "STARTING THE RUN OVER FROM STEP 0" in str(warned[-2].message)
    assert "its metrics up to step 6 are kept in" in str(warned[-1].message)
    assert "resuming" not in capsys.readouterr().out
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["2.damaged", "4.damaged", "6.damaged"]
    assert records(out) == []  # from step 0 again, as asked; the run's history kept beside
    assert [json.loads(line)["step"] for line in (out / "metrics.jsonl.before-restart").read_text().splitlines()] \
        == list(range(1, 7))


def test_clip_norm_is_a_flag_with_its_default_in_help(monkeypatch, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "'none' turns clipping off (default: 1.0)" in " ".join(capsys.readouterr().out.split())
    no_training(monkeypatch)
    seen = []
    make_train_step = train.make_train_step
    monkeypatch.setattr(train, "make_train_step", lambda *a, **kw: seen.append(kw["clip_norm"]) or make_train_step(*a, **kw))
    assert main(TINY + ["--steps", "1", "--out", str(tmp_path / "a")]) == 0
    assert main(TINY + ["--steps", "1", "--clip-norm", "none", "--out", str(tmp_path / "b")]) == 0
    assert main(TINY + ["--steps", "1", "--clip-norm", "0.25", "--out", str(tmp_path / "c")]) == 0
    assert seen == [1.0, None, 0.25]
    assert json.loads((tmp_path / "b" / "run.json").read_text())["config"]["clip_norm"] is None


def test_every_unset_setting_takes_the_tasks_default(monkeypatch, tmp_path):
    no_training(monkeypatch)
    from rnnscan import tasks
    for name in tasks.TASKS:
        out = tmp_path / name
        assert main(["train", "--task", name, "--out", str(out)]) == 0
        config = json.loads((out / "run.json").read_text())["config"]
        assert config | tasks.get(name).defaults == config  # cell and schedule included
        assert config["decay_steps"] == config["steps"]  # the decay ends with the run


def test_info_names_the_instruction_set_and_the_kernel_variant(capsys):
    from rnnscan import kernels
    from rnnscan.cli import main
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    info = kernels.info()
    assert f"isa: {info['isa']}" in out and f"variant: {info['variant']}" in out
    assert f"why: {info['why']}" in out


def test_a_refused_no_op_rerun_rewrites_no_run_json(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(TINY + ["--steps", "4", "--out", str(out)]) == 0
    before = (out / "run.json").read_bytes(), (out / "run.json").stat().st_mtime_ns
    assert main(TINY + ["--steps", "2", "--out", str(out)]) == 0
    assert f"{out} is already trained to step 4; pass a larger --steps" in capsys.readouterr().out
    assert ((out / "run.json").read_bytes(), (out / "run.json").stat().st_mtime_ns) == before
    assert json.loads(before[0])["config"]["steps"] == 4


@pytest.mark.parametrize("command", ["train", "sample"])
def test_without_the_train_extra_train_and_sample_say_what_to_install(monkeypatch, tmp_path, capsys, command):
    for module in ("orbax", "orbax.checkpoint"):  # as if `pip install .` without [train]
        monkeypatch.setitem(sys.modules, module, None)
    argv = TINY + ["--out", str(tmp_path / "run")] if command == "train" else ["sample", "--run", str(tmp_path)]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err == (f"rnnscan {command}: error: it needs the train extra, pip install 'rnnscan[train]' "
                   "(no module named 'orbax.checkpoint')\n")
    assert not (tmp_path / "run").exists()
    monkeypatch.delitem(sys.modules, "rnnscan.train.checkpoint")  # imported anew: its orbax is missing
    with pytest.raises(ModuleNotFoundError, match=r"rnnscan.train.Checkpoints needs the train extra, "
                                                  r"pip install 'rnnscan\[train\]'") as caught:
        train.Checkpoints
    assert caught.value.name == "orbax.checkpoint"


def test_help_shows_each_tasks_defaults_and_version_prints_the_version(capsys):
    from rnnscan import tasks
    import rnnscan

    with pytest.raises(SystemExit) as exit:
        main(["train", "--help"])
    assert exit.value.code == 0
    shown = " ".join(capsys.readouterr().out.split())
    for option, key in [("--hidden", "hidden"), ("--batch-size", "batch_size"), ("--seq-len", "seq_len"),
                        ("--steps", "steps"), ("--lr", "lr")]:
        each = ", ".join(f"{name} {make().defaults[key]}" for name, make in tasks.TASKS.items())
        assert f"(default: {each})" in shown.split(f"{option} {key.upper()} ", 1)[1], option
    with pytest.raises(SystemExit) as exit:
        main(["--version"])
    assert exit.value.code == 0 and capsys.readouterr().out == f"rnnscan {rnnscan.__version__}\n"


def test_a_reader_that_closes_the_pipe_ends_rnnscan_info_quietly(jax_cache):
    read, write = os.pipe()
    os.close(read)  # `rnnscan info | head -0`: nobody reads
    try:
        info = subprocess.run([sys.executable, "-m", "rnnscan", "info"], stdout=write, stderr=subprocess.PIPE,
                              text=True, env=subprocess_env(jax_cache), cwd=REPO, timeout=120)
    finally:
        os.close(write)
    assert info.stderr == "" and info.returncode == 1


def test_the_summary_gives_eval_in_nats_and_bits_per_char_and_the_plot_its_units(charlm_run, monkeypatch, tmp_path):
    import math
    from matplotlib.figure import Figure
    from rnnscan import tasks

    last_eval = [r for r in records(charlm_run.out) if "eval_loss" in r][-1]
    nats, vocab = last_eval["eval_loss"], len(tasks.charlm.vocab())
    assert (f"eval loss {nats:.4f} nats/char ({nats / math.log(2):.4f} bits/char) at step 4 "
            f"(chance {math.log(vocab):.4f} nats/char ({math.log2(vocab):.4f} bits/char))") in charlm_run.printed
    saved = []
    monkeypatch.setattr(Figure, "savefig", lambda fig, *args, **kwargs: saved.append(fig))
    train.plot_losses(records(charlm_run.out), tmp_path / "loss.png", chance=4.0, unit="nats/char")
    assert saved[0].axes[0].get_ylabel() == "loss (nats/char)"
    assert saved[0].axes[0].get_xlabel() == "step (updates)"
