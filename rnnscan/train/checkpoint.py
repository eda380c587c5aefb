"""Checkpoints of a `TrainState` with orbax's `CheckpointManager`, verified on restore.

A checkpoint `directory/<step>/` holds two orbax items: `state`, the whole
`TrainState` (params, optimizer state, step, which is also the data position,
and PRNG key), and `digest`, the path, shape, dtype and sha256 of the bytes of
each of its leaves. Orbax writes both into a temporary directory and renames it
into place when complete, so a process killed at any moment leaves either a
whole checkpoint or none; the leftovers of an interrupted write are ignored.

On restore, the digest first tells a user's mistake from damage: a `like` of
another structure, shape or dtype is refused with a `ValueError` naming the
differing leaves, and nothing on disk changes. A checkpoint that then fails to
restore, whose values do not hash to its digest, or whose params are not finite
is damaged: the one before it is restored and the damaged one (only it) is set
aside as `directory/<step>.damaged`, with a warning. A run never starts over
from step 0 by itself: when every checkpoint is damaged, restore raises
`CheckpointError` unless asked to start over.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from typing import Optional

import jax
import numpy as np
import orbax.checkpoint as ocp

from rnnscan.train.state import TrainState

DAMAGED = ".damaged"
SHOWN = 12  # differing leaves named in a mismatch error


class CheckpointError(RuntimeError):
    """No checkpoint of the run restores, and starting over was not asked for."""


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
        self._options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep)
        self._manager = ocp.CheckpointManager(self.directory, options=self._options)

    def latest_step(self) -> Optional[int]:
        """The step of the latest checkpoint complete on disk (after the one being written, if any)."""
        self._manager.wait_until_finished()
        return self._manager.latest_step()

    def save(self, state: TrainState) -> None:
        """Starts writing `state` as checkpoint `state.step` (in the background).

        The state's values are copied to the host before this returns, so it
        may be donated to the next step at once.
        """
        args = ocp.args.Composite(state=ocp.args.StandardSave(state), digest=ocp.args.JsonSave(_digest(state)))
        self._manager.save(int(state.step), args=args)

    def restore(self, like: TrainState, *, fresh_if_damaged: bool = False) -> TrainState:
        """The latest checkpoint that restores intact, or `like` itself when there is none.

        Args:
          like: a state of the run's structure, shapes, dtypes and shardings
            (the freshly initialised one); the restored arrays take its
            shardings.
          fresh_if_damaged: when every checkpoint is damaged (or only damaged
            ones are left), set them aside and return `like`, starting the run
            over, instead of raising `CheckpointError`.

        Raises:
          ValueError: `like` does not match the structure, shapes or dtypes of
            the latest checkpoint whose digest reads (the differing leaves
            are named; nothing on disk changes).
          CheckpointError: no checkpoint restores and `fresh_if_damaged` is
            false; nothing on disk changes.
        """
        self._manager.wait_until_finished()
        damaged = {}  # step -> why
        for step in sorted(self._manager.all_steps(), reverse=True):
            try:
                saved = self._manager.restore(step, args=ocp.args.Composite(digest=ocp.args.JsonRestore())).digest
                specs = {path: (tuple(leaf["shape"]), leaf["dtype"]) for path, leaf in saved.items()}
            except Exception as error:  # orbax raises many types; a digest of another form too
                damaged[step] = f"its digest does not read: {_why(error)}"
                continue
            _check_matches(specs, like, f"checkpoint {step} in {self.directory}")
            try:
                state = self._restore_verified(step, like, saved)
            except Exception as error:  # orbax and tensorstore raise many types
                damaged[step] = _why(error)
                continue
            self._set_aside(damaged, f"restored checkpoint {step} instead")
            return state

        set_aside = sorted(name for name in os.listdir(self.directory) if DAMAGED in name)
        if not (damaged or set_aside):
            return like
        if not fresh_if_damaged:
            found = [f"checkpoint {step} ({why})" for step, why in damaged.items()]
            found += [f"{name}, set aside before" for name in set_aside]
            raise CheckpointError(
                f"no checkpoint in {self.directory} restores: {'; '.join(found)}. Refusing to start the "
                "run over from step 0; nothing was changed. Pass fresh_if_damaged=True to set them "
                "aside and start over."
            )
        self._set_aside(damaged, "no checkpoint restores")
        warnings.warn(f"no checkpoint in {self.directory} restores: STARTING THE RUN OVER FROM STEP 0, as "
                      "fresh_if_damaged=True asks", stacklevel=2)
        return like

    def wait(self) -> None:
        """Blocks until the checkpoint being written is on disk."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.close()

    def _restore_verified(self, step: int, like: TrainState, saved: dict) -> TrainState:
        target = jax.tree_util.tree_map(
            lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=a.sharding), like
        )
        state = self._manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target))).state
        if int(state.step) != step:
            raise ValueError(f"it holds step {int(state.step)}")
        changed = [path for path, leaf in _digest(state).items() if leaf["sha256"] != saved[path]["sha256"]]
        if changed:
            raise ValueError(f"the sha256 of {', '.join(changed)} differs from the one saved")
        for path, leaf in jax.tree_util.tree_leaves_with_path(state.params):
            if np.issubdtype(leaf.dtype, np.inexact) and not np.isfinite(np.asarray(leaf)).all():
                raise ValueError(f"params{jax.tree_util.keystr(path)} holds NaN or inf")
        return state

    def _set_aside(self, damaged: dict, then: str) -> None:
        """Moves each damaged checkpoint to `<step>.damaged` (never over another) and says so."""
        for step, why in damaged.items():
            target = os.path.join(self.directory, f"{step}{DAMAGED}")
            n = 1
            while os.path.exists(target):
                n += 1
                target = os.path.join(self.directory, f"{step}{DAMAGED}.{n}")
            if jax.process_index() == 0:
                os.rename(os.path.join(self.directory, str(step)), target)
            warnings.warn(f"checkpoint {step} in {self.directory} does not restore, damaged ({why}); "
                          f"moved it to {target}; {then}", stacklevel=3)
        if damaged:  # a new manager: the old one's list of steps still holds the moved ones
            self._manager.close()
            self._manager = ocp.CheckpointManager(self.directory, options=self._options)


def _digest(state) -> dict:
    """`{path: {"shape", "dtype", "sha256"}}` of every leaf of `state`, the sha256 of its bytes."""
    return {
        jax.tree_util.keystr(path): {
            "shape": list(np.shape(leaf)),
            "dtype": str(leaf.dtype),
            "sha256": hashlib.sha256(np.ascontiguousarray(np.asarray(leaf)).tobytes()).hexdigest(),
        }
        for path, leaf in jax.tree_util.tree_leaves_with_path(state)
    }


def _check_matches(found: dict, like, where: str) -> None:
    """Raises a `ValueError` naming every leaf whose path, shape or dtype differ between `found` and `like`.

    `found` maps each path of the checkpoint to `(shape, dtype name)`.
    """
    expected = {
        jax.tree_util.keystr(path): (tuple(leaf.shape), str(leaf.dtype))
        for path, leaf in jax.tree_util.tree_leaves_with_path(like)
    }
    differ = [
        f"{path}: {_spec(found.get(path))} in the checkpoint, {_spec(expected.get(path))} in like"
        for path in list(found) + [p for p in expected if p not in found]
        if found.get(path) != expected.get(path)
    ]
    if differ:
        shown = differ[:SHOWN] + ([f"and {len(differ) - SHOWN} more"] if len(differ) > SHOWN else [])
        raise ValueError(
            f"like does not match {where}: {'; '.join(shown)}. Nothing on disk was changed; restore "
            "into a state of the model and optimizer that were saved."
        )


def _why(error: Exception) -> str:
    """The first line of an error, cut to a readable length (tensorstore's run to kilobytes)."""
    text = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
    return text if len(text) <= 300 else text[:300] + "..."


def _spec(spec: Optional[tuple]) -> str:
    return "missing" if spec is None else f"{spec[1]}{list(spec[0])}"
