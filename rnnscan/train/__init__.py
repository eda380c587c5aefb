"""Training on top of rnnscan: optax loops, orbax checkpoints, data parallelism.

The pieces, in the order a training script uses them::

    import optax
    import rnnscan as rs
    from rnnscan import train

    model = train.sequence_model(rs.lstm(8, 128), input_size=8, output_size=10)
    optimizer = optax.adam(1e-3)                      # any optax optimizer or schedule

    def loss_fn(params, batch, key):                  # masked per-token loss
        ys, _ = model.apply(params, batch["xs"], lengths=batch["lengths"])
        losses = optax.softmax_cross_entropy_with_integer_labels(ys, batch["labels"])
        return train.masked_mean(losses, batch["mask"])

    parallel = train.data_parallel()                  # every device; params replicated
    state = train.init_state(model.init(key), optimizer, key)
    checkpoints = train.Checkpoints("run/checkpoints")
    state = checkpoints.restore(parallel.replicate(state))   # resume if there is one
    state = train.fit(state, train.make_train_step(loss_fn, optimizer),
                      batches=lambda step: make_batch(seed, step),   # pure in step
                      steps=10_000, parallel=parallel, checkpoints=checkpoints,
                      checkpoint_every=500)
"""

import importlib

# Each public name and the module that defines it, imported on first use, so
# that the core (and `rnnscan info`/`bench`) runs without the `train` extra:
# orbax, tqdm and matplotlib load only with the pieces that need them.
_WHERE = {
    "CheckpointError": "checkpoint", "CheckpointSaveError": "checkpoint", "Checkpoints": "checkpoint",
    "Interrupted": "loop", "NonFiniteLossError": "loop", "fit": "loop", "held_signals": "loop",
    "MetricsLog": "metrics", "plot_losses": "metrics", "read_records": "metrics", "set_aside": "metrics",
    "sequence_model": "model", "step_model": "model",
    "Run": "run", "build_model": "run", "load_run": "run",
    "DataParallel": "sharding", "data_parallel": "sharding", "initialize_processes": "sharding",
    "DECAYS": "schedule", "learning_rate": "schedule",
    "TrainState": "state", "init_state": "state",
    "make_eval_step": "step", "make_train_step": "step", "masked_mean": "step",
}


EXTRA = ("orbax.checkpoint", "tqdm", "matplotlib")  # pyproject.toml's `train` extra


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'rnnscan.train' has no attribute {name!r}")
    try:
        module = importlib.import_module(f"rnnscan.train.{_WHERE[name]}")
    except ModuleNotFoundError as error:
        raise _needs_extra(error, f"rnnscan.train.{name}") from None
    return getattr(module, name)


def require_extra(what: str = "rnnscan.train") -> None:
    """Raises a `ModuleNotFoundError` that says to install the `train` extra, unless it is installed."""
    for module in EXTRA:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as error:
            raise _needs_extra(error, what) from None


def _needs_extra(error: ModuleNotFoundError, what: str) -> ModuleNotFoundError:
    if (error.name or "").split(".")[0] not in {module.split(".")[0] for module in EXTRA}:
        return error
    return ModuleNotFoundError(f"{what} needs the train extra, pip install 'rnnscan[train]' "
                               f"(no module named {error.name!r})", name=error.name)


def __dir__():
    return sorted(list(globals()) + list(_WHERE))


__all__ = [
    "DECAYS",
    "CheckpointError",
    "CheckpointSaveError",
    "Checkpoints",
    "DataParallel",
    "Interrupted",
    "MetricsLog",
    "NonFiniteLossError",
    "Run",
    "TrainState",
    "build_model",
    "data_parallel",
    "fit",
    "held_signals",
    "init_state",
    "initialize_processes",
    "learning_rate",
    "load_run",
    "make_eval_step",
    "make_train_step",
    "masked_mean",
    "plot_losses",
    "read_records",
    "require_extra",
    "set_aside",
    "sequence_model",
    "step_model",
]
