"""The model of an `rnnscan train` run (`build_model`), from its configuration."""

from __future__ import annotations

from typing import TYPE_CHECKING, Mapping

import rnnscan as rs
from rnnscan.cell import Cell
from rnnscan.layers import Layer
from rnnscan.train.model import sequence_model, step_model

if TYPE_CHECKING:
    from rnnscan.tasks import Task

# Cells `(input_size, hidden_size)` whose outputs have `hidden_size` features, so
# they stack. (`rs.lru` outputs `input_size` features: a block for models with
# their own encoder and MLPs, not a drop-in here.)
CELLS = {"lstm": rs.lstm, "gru": rs.gru, "rnn": rs.rnn, "mingru": rs.mingru, "minlstm": rs.minlstm}


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
