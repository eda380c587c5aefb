"""The options of `rnnscan train`: the run's settings, each task's defaults
(`Task.defaults`, shown by `--help`), and where a process stands in a multi-host run."""

from __future__ import annotations

import argparse
import os

from rnnscan import cells, tasks, train
from rnnscan.arguments import clip_norm, non_negative_float, non_negative_int, positive_float, positive_int

# Where this process stands in a multi-host run: not settings of the run.
PROCESS_FLAGS = ("coordinator", "num_processes", "process_id")


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", choices=sorted(tasks.TASKS), default="charlm",
                        help="what to learn (default: charlm)")
    parser.add_argument("--cell", choices=sorted(cells.BY_NAME), help=f"the recurrent cell (default: {per_task('cell')})")
    parser.add_argument("--hidden", type=positive_int, help=f"hidden size of every layer (default: {per_task('hidden')})")
    parser.add_argument("--layers", type=positive_int, help=f"stacked layers (default: {per_task('layers')})")
    parser.add_argument("--batch-size", type=positive_int,
                        help=f"global batch size, split over devices (default: {per_task('batch_size')})")
    parser.add_argument("--seq-len", type=positive_int, help=f"steps per sequence (default: {per_task('seq_len')})")
    parser.add_argument("--steps", type=positive_int,
                        help=f"total updates; more than a finished run's extends it (default: {per_task('steps')})")
    parser.add_argument("--lr", type=positive_float, help=f"Adam's peak learning rate (default: {per_task('lr')})")
    parser.add_argument("--warmup", type=non_negative_int,
                        help=f"steps of the linear warmup from 0 to --lr (default: {per_task('warmup')})")
    parser.add_argument("--decay", choices=train.DECAYS,
                        help="the rate from --lr: constant, or down to --final-lr at --decay-steps along "
                             f"a cosine or a line; times the warmup's ramp (default: {per_task('decay')})")
    parser.add_argument("--decay-steps", type=positive_int,
                        help="the step where the decay reaches --final-lr, then stays (default: the --steps "
                             "the run starts with, so a larger --steps later extends the run exactly)")
    parser.add_argument("--final-lr", type=non_negative_float,
                        help=f"the learning rate the decay ends at (default: {per_task('final_lr')})")
    parser.add_argument("--seed", type=non_negative_int, default=0, help="seeds the params and the data (default: 0)")
    parser.add_argument("--log-every", type=positive_int, default=50, help="steps between log records (default: 50)")
    parser.add_argument("--eval-every", type=positive_int, default=250, help="steps between evaluations (default: 250)")
    parser.add_argument("--checkpoint-every", type=positive_int, default=250, help="steps between checkpoints (default: 250)")
    parser.add_argument("--out", help="run directory; the same one resumes the run (default: runs/TASK)")
    parser.add_argument("--clip-norm", type=clip_norm, default=1.0,
                        help="clip the global gradient norm to this before each update; 'none' turns "
                             "clipping off (default: %(default)s)")
    group = parser.add_argument_group(
        "multi-host", "Start the same command in every process; process 0 writes run.json, the metrics and "
        "the plot, and prints; all write the checkpoints together. --out must be a directory every process "
        "reaches. Each flag's default is the environment variable named.")
    group.add_argument("--coordinator", metavar="HOST:PORT", default=os.environ.get("RNNSCAN_COORDINATOR"),
                       help="process 0's address and a free port there; 'auto' takes the three from the "
                            "cluster's environment (SLURM, Open MPI, Cloud TPU), as jax.distributed.initialize() "
                            "does (default: $RNNSCAN_COORDINATOR, else a single process)")
    group.add_argument("--num-processes", type=positive_int, default=os.environ.get("RNNSCAN_NUM_PROCESSES"),
                       help="how many processes take part (default: $RNNSCAN_NUM_PROCESSES)")
    group.add_argument("--process-id", type=non_negative_int, default=os.environ.get("RNNSCAN_PROCESS_ID"),
                       help="this process's index, from 0 (default: $RNNSCAN_PROCESS_ID)")
    parser.add_argument("--restart-if-damaged", action="store_true",
                        help="when every checkpoint in --out is damaged, set them aside and train from "
                             "step 0 (default: refuse)")


def per_task(key: str) -> str:
    """Each task's default for the option `key`, as `--help` shows it: "charlm 256, copy 128, ..."."""
    defaults = {name: make().defaults for name, make in tasks.TASKS.items()}
    return ", ".join(f"{name} {values[key]}" for name, values in defaults.items() if key in values)
