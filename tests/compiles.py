"""Counting what jax compiles, by its public monitoring event (one per XLA compilation)."""

import contextlib

import jax

_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


@contextlib.contextmanager
def count_compiles():
    """Yields a list that gets the name of each function jax compiles inside the block.

    (Traces alone are not counted: `jax.eval_shape` traces on every call and
    compiles nothing.)
    """
    compiled = []

    def listener(event, duration, **kwargs):
        if event == _COMPILE_EVENT:
            compiled.append(kwargs.get("fun_name", "?"))

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield compiled
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
