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
aside as `directory/<step>.damaged`, with a warning. So is a checkpoint whose
digest disagrees with its own state's shapes (a digest damaged into another
valid one). A run never starts over from step 0 by itself: when every
checkpoint is damaged, restore raises `CheckpointError` unless asked to start
over.

A write that fails (a full disk) raises `CheckpointSaveError`, naming the last
good checkpoint; orbax's own logs of the failure are kept out of the way.
`restore_params` reads the params of a run with the same checks, changing
nothing on disk (`load_run`).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Any, Optional

import jax
import orbax.checkpoint as ocp

from rnnscan.train.digest import check_digest, check_finite, check_matches, digest, shapes, why
from rnnscan.train.state import TrainState

DAMAGED = ".damaged"


class CheckpointError(RuntimeError):
    """No checkpoint of the run restores, and starting over was not asked for."""


class CheckpointSaveError(CheckpointError):
    """A checkpoint could not be written (a full disk, ...); those before it are intact."""


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
        self._writing = None  # the step being written in the background
        self._quiet = _OrbaxFailures()  # while open: its writes fail in the background
        logging.getLogger("absl").addFilter(self._quiet)

    def latest_step(self) -> Optional[int]:
        """The step of the latest checkpoint complete on disk (after the one being written, if any)."""
        self.wait()
        return self._manager.latest_step()

    def save(self, state: TrainState) -> None:
        """Starts writing `state` as checkpoint `state.step` (in the background).

        The state's values are copied to the host before this returns, so it
        may be donated to the next step at once.

        Raises:
          CheckpointSaveError: this write, or the one before it, failed.
        """
        args = ocp.args.Composite(state=ocp.args.StandardSave(state), digest=ocp.args.JsonSave(digest(state)))
        self.wait()  # a failure of the write before is that write's, named as such
        self._writing = int(state.step)
        try:
            self._manager.save(self._writing, args=args)
        except Exception as error:  # orbax raises what the file system or tensorstore raised
            raise self._save_failed(error) from None

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
            the latest checkpoint whose digest reads, nor of its state (the
            differing leaves are named; nothing on disk changes).
          CheckpointError: no checkpoint restores and `fresh_if_damaged` is
            false; nothing on disk changes.
        """
        self.wait()
        damaged = {}  # step -> why
        with _quiet_orbax():
            for step in sorted(self._manager.all_steps(), reverse=True):
                try:
                    saved = self._manager.restore(step, args=ocp.args.Composite(digest=ocp.args.JsonRestore())).digest
                    specs = {path: (tuple(leaf["shape"]), leaf["dtype"]) for path, leaf in saved.items()}
                except Exception as error:  # orbax raises many types; a digest of another form too
                    damaged[step] = f"its digest does not read: {why(error)}"
                    continue
                try:
                    check_matches(specs, like, f"checkpoint {step} in {self.directory}")
                except ValueError:
                    # The user's mistake only if the state's own metadata differs from `like` too.
                    state_shapes = _state_shapes(Path(self.directory) / str(step))
                    if state_shapes is not None and state_shapes != shapes(like):
                        raise
                    damaged[step] = "its digest does not match its state's " + (
                        "shapes" if state_shapes is not None else "metadata, which does not read")
                    continue
                try:
                    state = self._restore_verified(step, like, saved)
                except Exception as error:  # orbax and tensorstore raise many types
                    damaged[step] = why(error)
                    continue
                self._set_aside(damaged, f"restored checkpoint {step} instead")
                return state

        set_aside = sorted(name for name in os.listdir(self.directory) if DAMAGED in name)
        if not (damaged or set_aside):
            return like
        if not fresh_if_damaged:
            found = [f"checkpoint {step} ({reason})" for step, reason in damaged.items()]
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
        """Blocks until the checkpoint being written is on disk.

        Raises:
          CheckpointSaveError: that write failed (once; then the run may go on).
        """
        try:
            self._manager.wait_until_finished()
        except Exception as error:  # orbax re-raises what its background write raised
            raise self._save_failed(error) from None
        self._writing = None

    def close(self) -> None:
        """Waits for the write under way (a failure of it is not raised again) and lets go of orbax."""
        try:
            self.wait()
        except CheckpointSaveError:
            pass  # raised already by the call that got it, or the caller is leaving on another error
        finally:
            self._manager.close()
            logging.getLogger("absl").removeFilter(self._quiet)

    def _restore_verified(self, step: int, like: TrainState, saved: dict) -> TrainState:
        target = jax.tree_util.tree_map(
            lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=a.sharding), like
        )
        state = self._manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target))).state
        if int(state.step) != step:
            raise ValueError(f"it holds step {int(state.step)}")
        check_digest(state, saved)
        check_finite(state.params)
        return state

    def _save_failed(self, error: Exception) -> CheckpointSaveError:
        """The one-line error of a failed write, naming the last good checkpoint."""
        step, self._writing = self._writing, None
        good = max(ocp.utils.checkpoint_steps(self.directory), default=None)  # finalized ones only
        return CheckpointSaveError(
            f"checkpoint {step} could not be written to {self.directory} ({_cause(error)}); "
            + ("no checkpoint was saved before it." if good is None else f"the last good checkpoint is step {good}.")
        )

    def _set_aside(self, damaged: dict, then: str) -> None:
        """Moves each damaged checkpoint to `<step>.damaged` (never over another) and says so."""
        for step, reason in damaged.items():
            target = os.path.join(self.directory, f"{step}{DAMAGED}")
            n = 1
            while os.path.exists(target):
                n += 1
                target = os.path.join(self.directory, f"{step}{DAMAGED}.{n}")
            if jax.process_index() == 0:
                os.rename(os.path.join(self.directory, str(step)), target)
            warnings.warn(f"checkpoint {step} in {self.directory} does not restore, damaged ({reason}); "
                          f"moved it to {target}; {then}", stacklevel=3)
        if damaged:  # a new manager: the old one's list of steps still holds the moved ones
            self._manager.close()
            self._manager = ocp.CheckpointManager(self.directory, options=self._options)


def restore_params(directory: os.PathLike, like, step: Optional[int] = None) -> tuple[int, Any]:
    """`(step, params)` of the latest checkpoint in `directory` whose params verify; changes nothing on disk.

    Reads only the `params` of the saved `TrainState` (so the optimizer need
    not be known), onto the default device, and checks them as `restore` does:
    against the checkpoint's digest, and for NaN and inf. A damaged checkpoint
    is passed over with a warning naming the damage (training sets it aside).

    Args:
      directory: a `Checkpoints` directory.
      like: the params' structure, shapes and dtypes (`jax.eval_shape` of the model's init).
      step: read this checkpoint, and no other; default the latest that verifies.

    Raises:
      ValueError: no checkpoint, or none of `step`; params of another
        structure, shape or dtype than `like` (the differing leaves named).
      CheckpointError: no checkpoint (or `step`'s) verifies; the damage of each is named.
    """
    directory = Path(os.path.abspath(directory))  # orbax refuses relative paths
    steps = ocp.utils.checkpoint_steps(directory) if directory.is_dir() else []  # finalized ones only
    if not steps:
        raise ValueError(f"{directory} holds no checkpoint")
    if step is not None and step not in steps:
        raise ValueError(f"step must be one of the checkpoints {sorted(steps)}; got {step!r}")
    expected, damaged = shapes(like), {}
    for candidate in [step] if step is not None else sorted(steps, reverse=True):
        found = _state_shapes(directory / str(candidate), "params")
        if found is not None and found != expected:
            differ = [f"{k}: {found.get(k, 'none')} there, {expected.get(k, 'none')} in the model"
                      for k in sorted(set(found) | set(expected)) if found.get(k) != expected.get(k)]
            raise ValueError(f"checkpoint {candidate} in {directory} does not restore: its params differ "
                             f"({'; '.join(differ)})")
        try:
            if found is None:
                raise ValueError("its state's metadata does not read")
            params = _read_params(directory / str(candidate), like)
        except Exception as error:  # orbax and tensorstore raise many types
            damaged[candidate] = why(error)
            continue
        for bad, reason in damaged.items():
            warnings.warn(f"checkpoint {bad} in {directory} is damaged ({reason}); loaded checkpoint "
                          f"{candidate} instead", stacklevel=2)
        return candidate, params
    raise CheckpointError(f"no checkpoint in {directory} verifies: "
                          + "; ".join(f"checkpoint {s} ({reason})" for s, reason in damaged.items()))


def _read_params(step_dir: Path, like) -> Any:
    """The params of the state in `step_dir`, checked against its digest and for NaN; raises if damaged."""
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    target = {"params": jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=device), like)}
    with _quiet_orbax(), contextlib.closing(ocp.JsonCheckpointHandler()) as digest_handler, \
            contextlib.closing(ocp.PyTreeCheckpointHandler()) as handler:
        saved = digest_handler.restore(step_dir / "digest")
        params = handler.restore(step_dir / "state", args=ocp.args.PyTreeRestore(
            item=target, partial_restore=True, restore_args=ocp.checkpoint_utils.construct_restore_args(target),
        ))["params"]
    check_digest(params, saved, ".params")
    check_finite(params)
    return params


def _state_shapes(step_dir: Path, part: Optional[str] = None) -> Optional[dict]:
    """`shapes` of the `TrainState` in `step_dir` (of its `part`) by orbax's metadata; None if that does not read."""
    with _quiet_orbax(), contextlib.closing(ocp.PyTreeCheckpointHandler()) as handler:
        try:
            tree = handler.metadata(step_dir / "state").tree
            return shapes(tree if part is None else tree[part])
        except Exception:  # orbax raises many types; damage is named by the read that follows
            return None


def _cause(error: BaseException) -> str:
    """`why` of the `OSError` in `error`'s chain (what the file system said), else of `error`."""
    seen = error
    while seen is not None and not isinstance(seen, OSError):
        seen = seen.__cause__ or seen.__context__
    return why(seen if seen is not None else error)


class _OrbaxFailures(logging.Filter):
    """Drops orbax's error logs with tracebacks (hundreds of lines for one full disk):
    the error that `Checkpoints` raises, or the damage it names, says it in a line."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR or not record.exc_info:
            return True
        # orbax's own logs, and asyncio's "Task exception was never retrieved" of its abandoned reads.
        tb = record.exc_info[2]
        while tb is not None and "orbax" not in tb.tb_frame.f_code.co_filename:
            tb = tb.tb_next
        return "orbax" not in record.pathname and tb is None


_LOGGERS = ("absl", "asyncio")  # orbax logs through absl; its abandoned reads' tasks through asyncio


@contextlib.contextmanager
def _quiet_orbax():
    """Reads that may fail: their damage is named by the caller, so orbax's logs of it
    are dropped, and so is what the reads a failed one leaves pending raise later,
    where Python cannot raise it (`sys.unraisablehook`: "Event loop is closed", also at
    exit). The pending ones that are garbage are collected here, not at exit."""
    quiet = _OrbaxFailures()  # its own: removing it leaves those of open `Checkpoints` in place
    for logger in _LOGGERS:
        logging.getLogger(logger).addFilter(quiet)
    if not getattr(sys.unraisablehook, "drops_orbax_leftovers", False):  # once per process: they come late
        hook = sys.unraisablehook
        sys.unraisablehook = lambda unraisable: None if _orbax_leftover(unraisable) else hook(unraisable)
        sys.unraisablehook.drops_orbax_leftovers = True
    try:
        yield
    finally:
        gc.collect()
        for logger in _LOGGERS:
            logging.getLogger(logger).removeFilter(quiet)


def _orbax_leftover(unraisable) -> bool:
    """Whether an exception that Python could not raise comes from an abandoned orbax read."""
    text = str(unraisable.exc_value)
    if text == "Event loop is closed" or "sys.meta_path is None" in text:
        return True
    code = getattr(unraisable.object, "cr_code", None)
    if code is not None and "orbax" in code.co_filename:
        return True
    tb = unraisable.exc_traceback
    while tb is not None and "orbax" not in tb.tb_frame.f_code.co_filename:
        tb = tb.tb_next
    return tb is not None
