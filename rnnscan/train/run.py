"""The model of an `rnnscan train` run (`build_model`), and a trained run opened
for use (`load_run`): its model, its trained params and its configuration.

A run directory (`rnnscan train --out DIR`, laid out by `rundir`) holds
`run.json` (`"config"`: the task, cell, sizes, ...) and orbax checkpoints of the
whole `TrainState` in `checkpoints/<step>/`. `load_run` reads only the params
from a checkpoint, by their paths in the saved tree, so the optimizer need not
be known, and checks them against the checkpoint's digest as training does
(`restore_params`).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Mapping, NamedTuple, Optional

import jax

import rnnscan as rs
from rnnscan.cell import Cell
from rnnscan.cells import BY_NAME as CELLS
from rnnscan.layers import Layer
from rnnscan.train import rundir
from rnnscan.train.checkpoint import restore_params
from rnnscan.train.model import sequence_model, step_model

if TYPE_CHECKING:
    from rnnscan.tasks import Task

def build_model(task: Task, config: Mapping) -> tuple[Layer, Cell]:
    """The model of a run of `task` with `config["cell"]`, `["hidden"]`, `["layers"]`.

    Inputs (`task.input_size` features) go through `layers` stacked cells of
    `hidden` units and a dense readout to `task.output_size` at every step.

    Returns:
      `(model, cell)`: the model over a sequence, `rnnscan.train.sequence_model`
      of an `rnnscan.stack`, which `rnnscan train` trains; and the same model one
      step at a time, `rnnscan.train.step_model` of the `rnnscan.multi_cell` of
      the same cells, for decoding (`rnnscan.sample`). Both take the same params
      and state.
    """
    if config["cell"] not in CELLS:
        raise ValueError(f"config['cell'] must be one of {sorted(CELLS)}; got {config['cell']!r}")
    sizes = [task.input_size] + [config["hidden"]] * config["layers"]
    cells = [CELLS[config["cell"]](n_in, n_out) for n_in, n_out in zip(sizes, sizes[1:])]
    return (sequence_model(rs.stack(cells), task.input_size, task.output_size),
            step_model(rs.multi_cell(cells), task.input_size, task.output_size))


class Run(NamedTuple):
    """A trained run, from `load_run`.

    Attributes:
      model: the `Layer` that was trained, `apply(params, xs (batch, time,
        task.input_size)) -> (ys (batch, time, task.output_size), state)`.
      cell: the same model one step at a time (a `Cell`: `step(params, state,
        x (batch, task.input_size)) -> (state, y (batch, task.output_size))`),
        with the same params and state: for `rnnscan.sample`.
      params: the trained params, arrays on the default device.
      step: the training step of the checkpoint they come from.
      task: the run's `rnnscan.tasks.Task` (`task.encode` makes the model's
        inputs from token ids).
      config: `run.json`'s `"config"`, the settings of `rnnscan train`.
    """

    model: Layer
    cell: Cell
    params: Any
    step: int
    task: Task
    config: dict


def load_run(directory: os.PathLike, step: Optional[int] = None) -> Run:
    """Opens the run in `directory` (`rnnscan train --out`) and its trained params.

    Args:
      directory: the run directory, holding `run.json` and `checkpoints/`.
      step: the checkpoint to load; default the latest.

    A damaged checkpoint (one whose params do not hash to its digest, do not
    read, or hold NaN) is passed over with a warning, and the one before it
    loaded; nothing on disk changes.

    Raises:
      ValueError: naming what is missing or wrong: no such directory, no or
        unreadable `run.json`, no checkpoint (or not `step`), a checkpoint that
        does not hold this model's params.
      CheckpointError: no checkpoint (or `step`'s) verifies; the damage of each is named.
    """
    from rnnscan import tasks  # rnnscan.tasks imports rnnscan.train: not at the top

    config = rundir.read_config(directory)
    task = tasks.get(config["task"])
    model, cell = build_model(task, config)
    like = jax.eval_shape(model.init, jax.random.PRNGKey(0))
    step, params = restore_params(rundir.checkpoints_dir(directory), like, step)
    return Run(model, cell, params, step, task, config)
