"""The `rnnscan` command (also `python -m rnnscan`).

Each subcommand is one entry of `COMMANDS`: a name, a function that adds its
arguments to an `argparse` parser, and a function that runs it and returns the
exit status.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import signal
import sys
import warnings
from pathlib import Path
from typing import Callable, NamedTuple

import jax
import optax

import rnnscan as rs
from rnnscan import kernels, tasks
from rnnscan import train  # its modules load on first use: `info` and `bench` need no extra
from rnnscan.train import rundir
from rnnscan.arguments import non_negative_float, non_negative_int, positive_int
from rnnscan.bench.run import add_arguments as add_bench_arguments
from rnnscan.bench.run import run_command as run_bench
from rnnscan.bench import tune
from rnnscan.train.sharding import barrier
from rnnscan.train_options import PROCESS_FLAGS, add_train_arguments

EVAL_BATCHES = 4
SAMPLE_PROMPT, SAMPLE_LENGTH = "Elizabeth", 400


class Command(NamedTuple):
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    needs_train_extra: bool = False  # orbax, tqdm, matplotlib: `pip install 'rnnscan[train]'`


class UsageError(Exception):
    """Bad input found after parsing: reported like an argparse error (exit status 2)."""


# -- rnnscan train -----------------------------------------------------------------


def run_train(args: argparse.Namespace) -> int:
    """Trains a recurrent model on a task; resumes the run in --out if there is one.

    Ctrl-C, SIGTERM or SIGHUP saves a checkpoint of the step under way and
    prints the command that resumes (exit status 128 + the signal: 130, 143,
    129); a second one stops at once. A checkpoint that cannot be written (a
    full disk) stops the run with one line naming the last good checkpoint.
    """
    task = tasks.get(args.task)
    config = {key: value for key, value in vars(args).items() if key not in ("command", "run") + PROCESS_FLAGS}
    for key, value in task.defaults.items():
        config[key] = value if config[key] is None else config[key]
    config["out"] = config["out"] or os.path.join("runs", task.name)
    out = Path(config["out"])
    if args.coordinator is not None:
        try:
            train.initialize_processes(args.coordinator, args.num_processes, args.process_id)
        except ValueError as error:
            raise UsageError(f"--coordinator, --num-processes, --process-id: {error}") from None
    elif (args.num_processes, args.process_id) != (None, None):
        raise UsageError("--num-processes and --process-id need --coordinator (or $RNNSCAN_COORDINATOR)")
    parallel = train.data_parallel()
    if config["batch_size"] % parallel.num_devices:
        raise UsageError(f"--batch-size {config['batch_size']} must be a multiple of the "
                         f"number of devices, {parallel.num_devices}")
    seed, batch_size, seq_len = config["seed"], config["batch_size"], config["seq_len"]
    try:
        eval_batches = [task.batch(seed, i, batch_size, seq_len, "eval") for i in range(EVAL_BATCHES)]
    except ValueError as error:
        raise UsageError(f"--task {task.name}: {error}") from None

    if config["decay"] != "constant" and config["final_lr"] > config["lr"]:
        raise UsageError(f"--final-lr: must be at most --lr ({config['lr']}) to decay to; got {config['final_lr']}")
    try:
        # Process 0 holds the lock; every process checks the run before process 0 rewrites run.json.
        with (rundir.locked(out) if jax.process_index() == 0 else contextlib.nullcontext()), \
                train.held_signals(on_second=lambda signum: stop_at_once(signum, config)):
            rundir.check_resumable(out, config)
            config["decay_steps"] = config["decay_steps"] or config["steps"]
            barrier("rnnscan train: the run is checked")
            checkpoints = train.Checkpoints(rundir.checkpoints_dir(out))
            try:
                return train_run(task, config, parallel, eval_batches, checkpoints)
            except train.Interrupted as error:
                step = checkpoints.latest_step()
                held = f"checkpoint {step} is saved" if step is not None else "no checkpoint was saved"
                print(f"rnnscan train: interrupted ({signal.Signals(error.signum).name}); {held} in "
                      f"{checkpoints.directory}; resume with: {rundir.resume_command(config)}", file=sys.stderr)
                return 128 + error.signum
            except (train.NonFiniteLossError, train.CheckpointSaveError) as error:
                print(f"rnnscan train: error: {error}", file=sys.stderr)
                return 1
            finally:
                checkpoints.close()
    except rundir.RunDirError as error:
        raise UsageError(f"--out {error}") from None


def stop_at_once(signum: int, config: dict) -> None:
    """A second signal: says which checkpoint is complete on disk (a write under way is
    cut off, as by a kill, and never counts) and exits with status 128 + signum, now."""
    directory = rundir.checkpoints_dir(config["out"])
    steps = [int(p.name) for p in directory.glob("*") if p.name.isdigit()]  # orbax renames a whole one into place
    held = f"checkpoint {max(steps)} is saved" if steps else "no checkpoint is saved"
    print(f"rnnscan train: interrupted again ({signal.Signals(signum).name}), stopped at once; {held} in "
          f"{directory}; resume with: {rundir.resume_command(config)}", file=sys.stderr, flush=True)
    os._exit(128 + signum)  # as a kill would: no wait for orbax's threads, which resume never needs


def train_run(task: tasks.Task, config: dict, parallel: train.DataParallel, eval_batches: list,
              checkpoints: train.Checkpoints) -> int:
    """`rnnscan train` once its arguments are checked and its --out is locked."""
    out = Path(config["out"])
    seed, batch_size, seq_len = config["seed"], config["batch_size"], config["seq_len"]
    # The model over sequences, and one step at a time (`cell`) for the sample.
    model, cell = train.build_model(task, config)
    optimizer = optax.adam(train.learning_rate(
        config["lr"], warmup=config["warmup"], decay=config["decay"], decay_steps=config["decay_steps"],
        final_lr=config["final_lr"]))

    # A fresh state, replaced by the latest checkpoint if the run has one.
    init_key, train_key = jax.random.split(jax.random.PRNGKey(seed))
    state = train.init_state(model.init(init_key), optimizer, train_key)
    try:
        state = checkpoints.restore(parallel.replicate(state), fresh_if_damaged=config["restart_if_damaged"])
    except train.CheckpointError as error:
        print(f"rnnscan train: error: {error} (Here: pass --restart-if-damaged.)", file=sys.stderr)
        return 1
    except ValueError as error:  # the model's params changed shape between versions of rnnscan
        print(f"rnnscan train: error: {error}", file=sys.stderr)
        return 1
    start = int(state.step)
    primary = jax.process_index() == 0  # writes the run's files and prints
    recorded, _ = train.read_records(out / rundir.METRICS)
    # Records past the first checkpoint and no checkpoint: they were deleted, and starting
    # over would erase the run's history. (A run killed before its first checkpoint
    # restarts: its records come again, the same.)
    if not start and recorded and recorded[-1]["step"] > config["checkpoint_every"]:
        if not config["restart_if_damaged"]:
            print(f"rnnscan train: error: {out / rundir.METRICS} records the run up to step "
                  f"{recorded[-1]['step']}, but {checkpoints.directory} holds no checkpoint (deleted?). "
                  "Refusing to start the run over from step 0; nothing was changed. (Pass "
                  "--restart-if-damaged to start over; the metrics are kept beside.)", file=sys.stderr)
            return 1
        if primary:
            kept = train.set_aside(out / rundir.METRICS, ".before-restart")
            warnings.warn(f"{out} holds no checkpoint: starting over from step 0 as --restart-if-damaged "
                          f"asks; its metrics up to step {recorded[-1]['step']} are kept in {kept}", stacklevel=2)
    if primary:
        metrics = train.MetricsLog(out / rundir.METRICS, resume_step=start)
        if start >= config["steps"]:  # nothing to do: run.json keeps the settings that trained it
            print(f"{out} is already trained to step {start}; pass a larger --steps to go on")
        else:
            rundir.write_run_json(out, config, parallel.num_devices)
            if start:
                print(f"resuming {out} from step {start}")

    loss_fn = tasks.loss_fn(task, model)
    state = train.fit(
        state,
        train.make_train_step(loss_fn, optimizer, clip_norm=config["clip_norm"]),
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
        on_log=metrics.write if primary else None,
        progress=primary,
    )
    if not primary:
        return 0

    train.plot_losses(metrics.records, out / rundir.PLOT, chance=task.chance, unit=task.unit,
                      title=f"{task.name}: {config['layers']}x {config['cell']} {config['hidden']}")
    if metrics.records:
        first, last = metrics.records[0], metrics.records[-1]
        evals = [r for r in metrics.records if "eval_loss" in r]
        if evals:
            print(f"eval loss {in_units(evals[-1]['eval_loss'], task.unit)} at step {evals[-1]['step']} "
                  f"(chance {in_units(task.chance, task.unit)})")
        print(f"train loss {first['loss']:.4f} at step {first['step']} -> {last['loss']:.4f} at step "
              f"{last['step']}; wrote {out}/{rundir.METRICS}, run.json, {rundir.PLOT}")
    if task.name == "charlm":
        # On this host alone: the replicated params, copied from this process's device.
        text = tasks.charlm.sample(cell, jax.device_get(state.params), SAMPLE_PROMPT, SAMPLE_LENGTH, jax.random.PRNGKey(seed))
        print(f"--- sample ---\n{text}")
    return 0


def in_units(loss: float, unit: str) -> str:
    """`1.7200 nats/char (2.4814 bits/char)`: a loss in its unit, and in bits where it is in nats."""
    if unit.startswith("nats/"):
        return f"{loss:.4f} {unit} ({loss / math.log(2):.4f} bits/{unit[len('nats/'):]})"
    return f"{loss:.4f} ({unit})"


# -- rnnscan sample ----------------------------------------------------------------


def add_sample_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", dest="run_dir", required=True, metavar="DIR", help="a charlm run directory (rnnscan train --out)")
    parser.add_argument("--prompt", default=SAMPLE_PROMPT, help=f"the text to start from (default: {SAMPLE_PROMPT})")
    parser.add_argument("--length", type=positive_int, default=SAMPLE_LENGTH,
                        help=f"characters to generate after the prompt (default: {SAMPLE_LENGTH})")
    parser.add_argument("--temperature", type=non_negative_float, default=0.8,
                        help="divides the logits: lower is more conservative, 0 is greedy (default: 0.8)")
    parser.add_argument("--top-k", type=positive_int, help="draw from the K likeliest characters only; 1 is greedy")
    parser.add_argument("--seed", type=non_negative_int, default=0, help="seeds the draws (default: 0)")
    parser.add_argument("--step", type=non_negative_int, help="the checkpoint to load (default: the latest)")


def run_sample(args: argparse.Namespace) -> int:
    """Prints text generated by a trained charlm run: the prompt, then --length characters."""
    try:
        run = train.load_run(args.run_dir, step=args.step)
    except ValueError as error:
        raise UsageError(f"--run {args.run_dir}: {error}") from None
    except train.CheckpointError as error:  # damage, not a usage error
        print(f"rnnscan sample: error: --run {args.run_dir}: {error}", file=sys.stderr)
        return 1
    if run.task.name != "charlm":
        raise UsageError(f"--run {args.run_dir}: a {run.task.name} run; rnnscan sample needs a charlm run")
    if not args.prompt:
        raise UsageError("--prompt: must hold at least one character")
    try:
        tasks.charlm.encode(args.prompt)
    except ValueError as error:
        raise UsageError(f"--prompt: {error}") from None
    vocab_size = len(tasks.charlm.vocab())
    if args.top_k is not None and args.top_k > vocab_size:
        raise UsageError(f"--top-k: must be at most the vocabulary size, {vocab_size}; got {args.top_k}")
    print(tasks.charlm.sample(run.cell, run.params, args.prompt, args.length, jax.random.PRNGKey(args.seed),
                              temperature=args.temperature, top_k=args.top_k))
    return 0


# -- rnnscan info ------------------------------------------------------------------


def run_info(args: argparse.Namespace) -> int:
    """Prints the backend, the CPU and its instruction set, and the kernel variant in use (or why none)."""
    for key, value in kernels.info().items():
        print(f"{key}: {', '.join(value) if isinstance(value, list) else value}")
    return 0


# -- the command -------------------------------------------------------------------

COMMANDS = {
    "train": Command("train a recurrent model on a shipped task", add_train_arguments, run_train, True),
    "sample": Command("print text generated by a trained charlm run", add_sample_arguments, run_sample, True),
    "info": Command("the backend, the CPU's instruction set and the kernel variant in use",
                    lambda parser: None, run_info),
    "bench": Command("benchmark rnnscan against torch, flax, haiku and a plain scan",
                     add_bench_arguments, run_bench),
    "tune": Command("time the CPU kernel against the scan for your shapes; method='auto' follows",
                    tune.add_arguments, tune.run),
}


def main(argv=None) -> int:
    """Runs `rnnscan COMMAND ...` and returns its exit status."""
    parser = argparse.ArgumentParser(prog="rnnscan", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"rnnscan {rs.__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, command in COMMANDS.items():
        sub = subparsers.add_parser(name, help=command.help, description=command.run.__doc__)
        command.add_arguments(sub)
        sub.set_defaults(run=command.run)
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    if args.run is run_bench:
        args.argv = argv[1:]  # `--isa` restarts the benchmark with them
    if COMMANDS[args.command].needs_train_extra:
        try:
            train.require_extra("it")
        except ModuleNotFoundError as error:
            print(f"rnnscan {args.command}: error: {error}", file=sys.stderr)
            return 1
    try:
        status = args.run(args)
        sys.stdout.flush()  # a reader gone away shows here, not at exit
        return status
    except KeyboardInterrupt:  # Ctrl-C outside `rnnscan train`'s run, or a second one after its last line
        return 130
    except UsageError as error:
        subparsers.choices[args.command].error(str(error))
    except BrokenPipeError:
        # The reader closed the pipe (`rnnscan info | head -2`): stop quietly, the
        # idiom of Python's signal docs. stdout goes to /dev/null so that the
        # flush at exit does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
