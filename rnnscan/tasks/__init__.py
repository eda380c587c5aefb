"""The shipped tasks, each making its own data (nothing is downloaded).

`copy` and `adding` are synthetic long-range memory problems; `charlm` is a
character-level language model on 1.15 MB of Jane Austen shipped in the package.
Every batch is a pure function of `(seed, step)`: see `Task`.
"""

from rnnscan.tasks import adding, charlm, copy
from rnnscan.tasks.base import Batch, Task, loss_fn

TASKS = {"copy": copy.task, "adding": adding.task, "charlm": charlm.task}


def get(name: str) -> Task:
    """The task called `name`, one of `TASKS`."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; expected one of {sorted(TASKS)}")
    return TASKS[name]()


__all__ = ["TASKS", "Batch", "Task", "get", "loss_fn"]
