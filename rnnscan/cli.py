"""The `rnnscan` command (also `python -m rnnscan`).

Each subcommand is one entry of `COMMANDS`: a name, a function that adds its
arguments to an `argparse` parser, and a function that runs it and returns the
exit status.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import math
import os
import platform
import sys
from pathlib import Path
from typing import Callable, NamedTuple

import jax
import optax

import rnnscan as rs
from rnnscan import tasks, train
from rnnscan.bench.run import add_arguments as add_bench_arguments
from rnnscan.bench.run import run_command as run_bench

# Cells `(input_size, hidden_size)` whose outputs have `hidden_size` features, so
# they stack. (`rs.lru` outputs `input_size` features: a block for models with
# their own encoder and MLPs, not a drop-in here.)
CELLS = {"lstm": rs.lstm, "gru": rs.gru, "rnn": rs.rnn, "mingru": rs.mingru, "minlstm": rs.minlstm}
# Settings that may change when a run resumes; any other difference is another run.
RESUMABLE = ("steps", "log_every", "checkpoint_every", "eval_every", "out")
WARMUP_STEPS = 100
MAX_GRAD_NORM = 1.0
EVAL_BATCHES = 4
SAMPLE_PROMPT, SAMPLE_LENGTH = "Elizabeth", 400


class Command(NamedTuple):
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


class UsageError(Exception):
    """Bad input found after parsing: reported like an argparse error (exit status 2)."""


def int_at_least(minimum: int, what: str) -> Callable[[str], int]:
    """An argparse type: an integer of at least `minimum`, called a `what` in errors."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {what}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be a {what}, got {value}")
        return value

    return parse


positive_int = int_at_least(1, "positive integer")
non_negative_int = int_at_least(0, "non-negative integer")


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive finite number, got {text}")
    return value


# -- rnnscan train -----------------------------------------------------------------


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", choices=sorted(tasks.TASKS), default="charlm",
                        help="what to learn (default: charlm)")
    parser.add_argument("--cell", choices=sorted(CELLS), default="lstm", help="the recurrent cell (default: lstm)")
    parser.add_argument("--hidden", type=positive_int, help="hidden size of every layer (default: per task)")
    parser.add_argument("--layers", type=positive_int, default=1, help="stacked layers (default: 1)")
    parser.add_argument("--batch-size", type=positive_int, help="global batch size, split over devices (default: per task)")
    parser.add_argument("--seq-len", type=positive_int, help="steps per sequence (default: per task)")
    parser.add_argument("--steps", type=positive_int, help="total updates; more than a finished run's extends it (default: per task)")
    parser.add_argument("--lr", type=positive_float, help="Adam's learning rate, after a linear warmup (default: per task)")
    parser.add_argument("--seed", type=non_negative_int, default=0, help="seeds the params and the data (default: 0)")
    parser.add_argument("--log-every", type=positive_int, default=50, help="steps between log records (default: 50)")
    parser.add_argument("--eval-every", type=positive_int, default=250, help="steps between evaluations (default: 250)")
    parser.add_argument("--checkpoint-every", type=positive_int, default=250, help="steps between checkpoints (default: 250)")
    parser.add_argument("--out", help="run directory; the same one resumes the run (default: runs/TASK)")


def run_train(args: argparse.Namespace) -> int:
    """Trains a recurrent model on a task; resumes the run in --out if there is one."""
    task = tasks.get(args.task)
    config = {key: value for key, value in vars(args).items() if key not in ("command", "run")}
    for key, value in task.defaults.items():
        config[key] = value if config[key] is None else config[key]
    config["out"] = config["out"] or os.path.join("runs", task.name)
    out = Path(config["out"])
    parallel = train.data_parallel()
    if config["batch_size"] % parallel.num_devices:
        raise UsageError(f"--batch-size {config['batch_size']} must be a multiple of the "
                         f"number of devices, {parallel.num_devices}")
    seed, batch_size, seq_len = config["seed"], config["batch_size"], config["seq_len"]
    try:
        eval_batches = [task.batch(seed, i, batch_size, seq_len, "eval") for i in range(EVAL_BATCHES)]
    except ValueError as error:
        raise UsageError(f"--task {task.name}: {error}") from None
    check_resumable(out, config)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UsageError(f"--out {out} cannot be created: {error.strerror}") from None

    # The model: inputs -> `layers` stacked cells -> a dense readout at every step.
    make_cell = CELLS[config["cell"]]
    sizes = [task.input_size] + [config["hidden"]] * config["layers"]
    core = rs.stack([make_cell(n_in, n_out) for n_in, n_out in zip(sizes, sizes[1:])])
    model = train.sequence_model(core, task.input_size, task.output_size)
    optimizer = optax.adam(optax.warmup_constant_schedule(0.0, config["lr"], WARMUP_STEPS))

    # A fresh state, replaced by the latest checkpoint if the run has one.
    init_key, train_key = jax.random.split(jax.random.PRNGKey(seed))
    state = train.init_state(model.init(init_key), optimizer, train_key)
    checkpoints = train.Checkpoints(out / "checkpoints")
    state = checkpoints.restore(parallel.replicate(state))
    start = int(state.step)
    write_run_json(out, config, parallel)
    metrics = train.MetricsLog(out / "metrics.jsonl", resume_step=start)
    if start >= config["steps"]:
        print(f"{out} is already trained to step {start}; pass a larger --steps to go on")
    elif start:
        print(f"resuming {out} from step {start}")

    loss_fn = tasks.loss_fn(task, model)
    try:
        state = train.fit(
            state,
            train.make_train_step(loss_fn, optimizer, max_grad_norm=MAX_GRAD_NORM),
            lambda step: task.batch(seed, step, batch_size, seq_len),
            steps=config["steps"],
            parallel=parallel,
            eval_step=train.make_eval_step(loss_fn),
            eval_batches=eval_batches,
            eval_every=config["eval_every"],
            log_every=config["log_every"],
            checkpoints=checkpoints,
            checkpoint_every=config["checkpoint_every"],
            tokens_per_step=batch_size * seq_len,
            on_log=metrics.write,
        )
    except train.NonFiniteLossError as error:
        print(f"rnnscan train: error: {error}", file=sys.stderr)
        return 1
    finally:
        checkpoints.close()

    train.plot_losses(metrics.records, out / "loss.png", chance=task.chance,
                      title=f"{task.name}: {config['layers']}x {config['cell']} {config['hidden']}")
    if metrics.records:
        first, last = metrics.records[0], metrics.records[-1]
        print(f"loss {first['loss']:.4f} at step {first['step']} -> {last['loss']:.4f} at step "
              f"{last['step']} (chance {task.chance:.4f}); wrote {out}/metrics.jsonl, run.json, loss.png")
    if task.name == "charlm":
        text = tasks.charlm.sample(model, state.params, SAMPLE_PROMPT, SAMPLE_LENGTH, jax.random.PRNGKey(seed))
        print(f"--- sample ---\n{text}")
    return 0


def check_resumable(out: Path, config: dict) -> None:
    """Raises `UsageError` unless `out` is new or holds a run of this configuration."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file, not a run directory")
    run_json = out / "run.json"
    if not run_json.exists():
        if (out / "checkpoints").exists() and any((out / "checkpoints").iterdir()):
            raise UsageError(f"--out {out} holds checkpoints but no run.json; refusing to touch it")
        return
    try:
        previous = json.loads(run_json.read_text())["config"]
        if not isinstance(previous, dict):
            raise TypeError("its config is not an object")
    except (ValueError, KeyError, TypeError) as error:
        raise UsageError(f"--out {out}: run.json is not valid JSON holding the run's \"config\" "
                         f"({type(error).__name__}: {error}); repair it, or pass another --out") from None
    differ = [
        f"--{key.replace('_', '-')} {previous.get(key)} there, {config.get(key)} here"
        for key in sorted(set(previous) | set(config))
        if key not in RESUMABLE and previous.get(key) != config.get(key)
    ]
    if differ:
        raise UsageError(
            f"--out {out} holds a run of another configuration ({'; '.join(differ)}). "
            "Pass the same settings to resume it, or another --out for a new run."
        )


def write_run_json(out: Path, config: dict, parallel: train.DataParallel) -> None:
    """`out/run.json`: the configuration and what it ran on, written atomically."""
    versions = {"python": platform.python_version(), "rnnscan": rs.__version__}
    for name in ("jax", "jaxlib", "optax", "orbax-checkpoint", "numpy"):
        versions[name] = importlib.metadata.version(name)
    run = {
        "config": config,
        "command": sys.argv,
        "versions": versions,
        "backend": jax.default_backend(),
        "devices": parallel.num_devices,
        "device_kind": jax.devices()[0].device_kind,
        "processes": jax.process_count(),
    }
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "run.json.tmp"
    tmp.write_text(json.dumps(run, indent=2) + "\n")
    os.replace(tmp, out / "run.json")


# -- the command -------------------------------------------------------------------

COMMANDS = {
    "train": Command("train a recurrent model on a shipped task", add_train_arguments, run_train),
    "bench": Command("benchmark rnnscan against torch, flax, haiku and a plain scan",
                     add_bench_arguments, run_bench),
}


def main(argv=None) -> int:
    """Runs `rnnscan COMMAND ...` and returns its exit status."""
    parser = argparse.ArgumentParser(prog="rnnscan", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, command in COMMANDS.items():
        sub = subparsers.add_parser(name, help=command.help, description=command.run.__doc__)
        command.add_arguments(sub)
        sub.set_defaults(run=command.run)
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except UsageError as error:
        subparsers.choices[args.command].error(str(error))
