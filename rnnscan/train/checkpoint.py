"""Checkpoints of a `TrainState` with orbax's `CheckpointManager`.

A checkpoint holds the whole state: params, optimizer state, step (which is
also the data position) and PRNG key. Orbax writes each one into a temporary
directory and renames it into place when complete, so a process killed at any
moment leaves either a whole checkpoint or none; the leftovers of an
interrupted write are ignored. A checkpoint that fails to restore anyway (a
truncated or damaged file) is set aside with a warning and the one before it
is used.
"""

from __future__ import annotations

import os
import shutil
import warnings
from typing import Optional

import jax
import orbax.checkpoint as ocp

from rnnscan.train.state import TrainState


class Checkpoints:
    """The checkpoints of one run, in `directory/<step>/`.

    Args:
      directory: where the checkpoints live; created if missing.
      max_to_keep: how many of the latest checkpoints to keep (at least 2, so
        that a damaged latest one has one to fall back to).
    """

    def __init__(self, directory: os.PathLike, max_to_keep: int = 3):
        if not isinstance(directory, (str, os.PathLike)):
            raise TypeError(f"directory must be a path; got {type(directory).__name__}")
        if isinstance(max_to_keep, bool) or not isinstance(max_to_keep, int):
            raise TypeError(f"max_to_keep must be an int; got {max_to_keep!r}")
        if max_to_keep < 2:
            raise ValueError(f"max_to_keep must be at least 2; got {max_to_keep}")
        self.directory = os.path.abspath(directory)
        self._manager = ocp.CheckpointManager(
            self.directory, options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep)
        )

    def latest_step(self) -> Optional[int]:
        return self._manager.latest_step()

    def save(self, state: TrainState) -> None:
        """Starts writing `state` as checkpoint `state.step` (in the background)."""
        self._manager.save(int(state.step), args=ocp.args.StandardSave(state))

    def restore(self, like: TrainState) -> TrainState:
        """The latest checkpoint that restores, or `like` itself when there is none.

        Args:
          like: a state of the run's structure, shapes, dtypes and shardings
            (the freshly initialised one); the restored arrays take its
            shardings.

        A checkpoint that fails to restore is moved to `directory/<step>.damaged`
        with a warning, and the one before it is tried.
        """
        self._manager.wait_until_finished()
        target = jax.tree_util.tree_map(
            lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=a.sharding), like
        )
        for step in sorted(self._manager.all_steps(), reverse=True):
            try:
                state = self._manager.restore(step, args=ocp.args.StandardRestore(target))
                if int(state.step) != step:
                    raise ValueError(f"it holds step {int(state.step)}")
                return state
            except Exception as error:  # orbax and tensorstore raise many types
                damaged = os.path.join(self.directory, f"{step}.damaged")
                warnings.warn(
                    f"checkpoint {step} in {self.directory} does not restore ({error}); "
                    f"moved it to {damaged} and trying the one before it",
                    stacklevel=2,
                )
                if jax.process_index() == 0:
                    shutil.rmtree(damaged, ignore_errors=True)
                    os.rename(os.path.join(self.directory, str(step)), damaged)
                self._manager.reload()
        return like

    def wait(self) -> None:
        """Blocks until the checkpoint being written is on disk."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.close()
