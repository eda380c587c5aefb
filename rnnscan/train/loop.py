"""`fit`: the training loop, with periodic evaluation, logging and checkpoints."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from typing import Callable, Optional, Sequence

import jax.numpy as jnp
from tqdm.auto import tqdm

from rnnscan.train.checkpoint import Checkpoints
from rnnscan.train.sharding import DataParallel, data_parallel
from rnnscan.train.state import TrainState
from rnnscan.validation import check_callable, check_positive_int


# Each signal that stops a run after the step under way (a scheduler sends
# SIGTERM before it kills a job, a closed terminal SIGHUP), and its handler
# when nothing else took it.
STOP_SIGNALS = {signal.SIGINT: signal.default_int_handler, signal.SIGTERM: signal.SIG_DFL,
                signal.SIGHUP: signal.SIG_DFL}
_held = []  # `received` of the `held_signals` entered, innermost last


class NonFiniteLossError(FloatingPointError):
    """The loss, the gradients or the params became NaN or inf; no checkpoint was written after the last good step."""


class Interrupted(KeyboardInterrupt):
    """A run stopped on SIGINT, SIGTERM or SIGHUP; `signum` is the signal (exit status `128 + signum`)."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum


def fit(
    state: TrainState,
    train_step: Callable,
    batches: Callable[[int], object],
    *,
    steps: int,
    parallel: Optional[DataParallel] = None,
    eval_step: Optional[Callable] = None,
    eval_batches: Sequence[object] = (),
    eval_every: Optional[int] = None,
    log_every: int = 100,
    checkpoints: Optional[Checkpoints] = None,
    checkpoint_every: Optional[int] = None,
    tokens_per_step: Optional[int] = None,
    on_log: Optional[Callable[[dict], None]] = None,
    progress: bool = True,
) -> TrainState:
    """Trains from `state.step` until `steps` updates are done.

    Args:
      state: where to start: a fresh `init_state(...)` or `Checkpoints.restore(...)`.
      train_step: from `make_train_step`; donates the state it is given.
      batches: `batches(s)`, the global batch (host arrays) for update `s + 1`.
        It must be a pure function of `s`: `state.step` is then the data
        position, and a resumed run sees the batches an uninterrupted one would.
      steps: the total number of updates at which to stop.
      parallel: where state and batches go; default `data_parallel()`, every
        device (a batch size that the device count divides is then required).
      eval_step, eval_batches, eval_every: `make_eval_step(...)`, the batches it
        averages over, and the interval; evaluation also runs after the last step.
      log_every: a record every this many steps and after the last one.
      checkpoints, checkpoint_every: where and how often to save; a checkpoint
        is also saved after the last step.
      tokens_per_step: tokens in one global batch, for `tokens_per_s`.
      on_log: called with each record: `{"step", "loss", "grad_norm",
        "tokens_per_s" (with tokens_per_step), "eval_loss" (at evaluations)}`.
      progress: a tqdm bar when stderr is a terminal, else one plain line per
        record on stdout (also under a terminal that reports 0 columns, where
        tqdm's bar would be empty); `False` for neither.

    The record of a step is logged before its checkpoint is saved: a run killed
    in between resumes from the checkpoint before and logs that step again, so
    a log cut back to the restored step (`MetricsLog`) loses no record. Ctrl-C,
    SIGTERM or SIGHUP (`held_signals`) stops at the end of the step under way,
    saves its checkpoint (with `checkpoints`) and raises `Interrupted`; a second
    one interrupts at once. Pending checkpoint writes are on disk before `fit`
    returns or raises.

    Returns:
      The state after `steps` updates.

    Raises:
      NonFiniteLossError: if the loss, the gradient norm or the params became
        NaN or inf. Every step is checked, on the device; the check is read at
        each record and before each checkpoint, so no non-finite state is ever
        saved, and the last good checkpoint it names is complete on disk.
      Interrupted: (a `KeyboardInterrupt`) on SIGINT, SIGTERM or SIGHUP,
        after the checkpoint of the last step.
    """
    if not isinstance(state, TrainState):
        raise TypeError(f"state must be a TrainState (train.init_state(...)); got {type(state).__name__}")
    check_callable("train_step", train_step)
    check_callable("batches", batches, "callable, batches(step) -> batch")
    check_callable("eval_step", eval_step, optional=True)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"fit: steps must be a non-negative integer, the total number of updates; got {steps!r}")
    check_positive_int("log_every", log_every)
    for name, value in (("eval_every", eval_every), ("checkpoint_every", checkpoint_every),
                        ("tokens_per_step", tokens_per_step)):
        if value is not None:
            check_positive_int(name, value)
    if eval_step is not None and not eval_batches:
        raise ValueError("fit: eval_step needs eval_batches, the batches to evaluate on")
    parallel = parallel or data_parallel()
    state = parallel.replicate(state)
    eval_batches = [parallel.shard(batch) for batch in eval_batches]
    start = int(state.step)
    bar = tqdm(total=steps, initial=start, unit="step", dynamic_ncols=True,
               disable=not (progress and _terminal_columns(sys.stderr) > 0))

    all_finite = jnp.array(True)  # on the device: no sync per step
    last_checked, last_logged, last_time = start, start, time.perf_counter()
    with held_signals() as received:
        try:
            for step in range(start + 1, steps + 1):
                state, metrics = train_step(state, parallel.shard(batches(step - 1)))
                all_finite = all_finite & metrics["finite"]
                bar.update()

                stop, last = received(), step == steps
                evaluate = eval_step is not None and (last or (eval_every and step % eval_every == 0))
                save = checkpoints is not None and (
                    stop or last or (checkpoint_every and step % checkpoint_every == 0))
                log = evaluate or last or step % log_every == 0
                if log or save:
                    _check_finite(all_finite, last_checked, step, checkpoints)
                    last_checked = step
                if log:
                    record = {"step": step, "loss": float(metrics["loss"]), "grad_norm": float(metrics["grad_norm"])}
                    if tokens_per_step:
                        record["tokens_per_s"] = (tokens_per_step * (step - last_logged)
                                                  / (time.perf_counter() - last_time))
                    if evaluate:
                        losses = [float(eval_step(state.params, batch)) for batch in eval_batches]
                        record["eval_loss"] = sum(losses) / len(losses)
                    last_logged, last_time = step, time.perf_counter()
                    if on_log is not None:
                        on_log(record)
                    if not bar.disable:
                        bar.set_postfix_str(_describe(record))
                    elif progress:
                        print(f"step {step}/{steps}  " + _describe(record), flush=True)
                if save:
                    checkpoints.save(state)
                if stop:
                    raise Interrupted(f"fit: interrupted after step {step}, by {signal.Signals(stop).name}", stop)
        finally:
            bar.close()
            if checkpoints is not None:
                checkpoints.wait()
    return state


@contextlib.contextmanager
def held_signals(on_second: Optional[Callable[[int], None]] = None):
    """Holds SIGINT, SIGTERM and SIGHUP meanwhile; yields `received()`, the first that came (or None).

    The first raises nothing: the caller stops where it is safe to. A second
    calls `on_second(signum)` if given, then raises `Interrupted` at once.
    Only in the main thread, and only a signal whose handler is Python's default
    (a program's own handler is left alone). Nested, the outer one holds
    (`rnnscan train` holds them from locking its run to closing it; `fit` inside).
    """
    if _held:
        yield _held[-1]
        return
    came = []

    def hold(signum, frame):
        if not came:
            came.append(signum)
            return
        if on_second is not None:
            on_second(signum)
        raise Interrupted(f"interrupted again, by {signal.Signals(signum).name}", signum)

    held = []
    if threading.current_thread() is threading.main_thread():
        held = [(s, default) for s, default in STOP_SIGNALS.items() if signal.getsignal(s) is default]
    for signum, _ in held:
        signal.signal(signum, hold)
    _held.append(lambda: came[0] if came else None)
    try:
        yield _held[-1]
    finally:
        _held.pop()
        for signum, default in held:
            signal.signal(signum, default)


def _terminal_columns(stream) -> int:
    """The columns of the terminal `stream` writes to; 0 when it is not one, or says 0 (`script`
    run from a non-terminal: a pty of no size)."""
    try:
        return os.get_terminal_size(stream.fileno()).columns if stream.isatty() else 0
    except (OSError, ValueError, AttributeError):  # no file descriptor: a captured stream
        return 0


def _check_finite(all_finite, last_checked: int, step: int, checkpoints: Optional[Checkpoints]) -> None:
    if bool(all_finite):
        return
    where = f"at step {step}" if last_checked == step - 1 else f"between steps {last_checked + 1} and {step}"
    good = checkpoints.latest_step() if checkpoints is not None else None
    raise NonFiniteLossError(
        f"the loss or the gradients became NaN or inf {where}; training stopped. "
        + ("No checkpoint was saved." if good is None else f"The last good checkpoint is step {good}.")
        + " Try a lower learning rate or stronger gradient clipping."
    )


def _describe(record: dict) -> str:
    parts = [f"loss {record['loss']:.4f}"]
    if "eval_loss" in record:
        parts.append(f"eval {record['eval_loss']:.4f}")
    if "tokens_per_s" in record:
        parts.append(f"{record['tokens_per_s']:,.0f} tok/s")
    return "  ".join(parts)
