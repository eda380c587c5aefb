"""The run directory of `rnnscan train --out DIR`, owned here alone:

    DIR/run.json                  {"config": the settings of the run, "command", "versions", ...}
    DIR/.lock                     held (`fcntl.flock`) by the one process writing DIR
    DIR/checkpoints/<step>/       `Checkpoints` of the whole `TrainState`
    DIR/metrics.jsonl, loss.png   `MetricsLog` and `plot_losses`

`rnnscan train` writes it (`locked`, `check_resumable`, `write_run_json`),
`load_run` reads it (`read_config`, `checkpoints_dir`). Its errors are
`RunDirError`s (`ValueError`s) whose message starts with the directory.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.metadata
import json
import os
import platform
import shlex
import sys
from pathlib import Path

import jax

import rnnscan as rs

METRICS, PLOT = "metrics.jsonl", "loss.png"
# Settings that may change when a run resumes; any other difference is another run.
RESUMABLE = ("steps", "log_every", "checkpoint_every", "eval_every", "out", "restart_if_damaged")
# Settings that a resume left without them (None) takes from the run: the schedule's end stays put.
INHERITED = ("decay_steps",)
# What `build_model` reads from the config.
MODEL_KEYS = ("task", "cell", "hidden", "layers")


class RunDirError(ValueError):
    """A run directory that cannot be used as asked; nothing in it was changed."""


def checkpoints_dir(directory: os.PathLike) -> Path:
    """`directory/checkpoints`, absolute (orbax refuses relative paths)."""
    return Path(os.path.abspath(directory)) / "checkpoints"


@contextlib.contextmanager
def locked(directory: os.PathLike):
    """Creates `directory` and holds `directory/.lock` meanwhile: a second run into it is refused."""
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise RunDirError(f"{directory} is a file, not a run directory")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        lock = open(directory / ".lock", "a")
    except OSError as error:
        raise RunDirError(f"{directory}: cannot create the run directory there ({error.strerror})") from None
    with lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunDirError(f"{directory} is in use: another rnnscan train holds its lock "
                              f"{directory / '.lock'}. Wait for that run to end, or pass another --out.") from None
        yield


def check_resumable(directory: os.PathLike, config: dict) -> None:
    """Raises `RunDirError` unless `directory` is new or holds a run of this configuration
    (differing at most in `RESUMABLE` settings). The `INHERITED` settings that
    `config` leaves `None` take the run's values."""
    directory = Path(directory)
    if not (directory / "run.json").exists():
        checkpoints = directory / "checkpoints"
        if checkpoints.exists() and any(checkpoints.iterdir()):
            raise RunDirError(f"{directory} holds checkpoints but no run.json; refusing to touch it")
        return
    try:
        previous = _config(directory / "run.json")
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise RunDirError(f"{directory}: its run.json does not read ({type(error).__name__}: {error}); "
                          "refusing to touch the run") from None
    for key in INHERITED:
        config[key] = previous.get(key) if config.get(key) is None else config[key]
    differ = [
        f"--{key.replace('_', '-')} {previous.get(key)} there, {config.get(key)} here"
        for key in sorted(set(previous) | set(config))
        if key not in RESUMABLE and previous.get(key) != config.get(key)
    ]
    if differ:
        raise RunDirError(
            f"{directory} holds a run of another configuration ({'; '.join(differ)}). "
            "Pass the same settings to resume it, or another --out for a new run."
        )


def write_run_json(directory: os.PathLike, config: dict, devices: int) -> None:
    """`directory/run.json`: the configuration and what it runs on (`devices`), written atomically."""
    versions = {"python": platform.python_version(), "rnnscan": rs.__version__}
    for name in ("jax", "jaxlib", "optax", "orbax-checkpoint", "numpy"):
        versions[name] = importlib.metadata.version(name)
    run = {
        "config": config,
        "command": sys.argv,
        "versions": versions,
        "backend": jax.default_backend(),
        "devices": devices,
        "device_kind": jax.devices()[0].device_kind,
        "processes": jax.process_count(),
    }
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / "run.json.tmp"
    tmp.write_text(json.dumps(run, indent=2) + "\n")
    os.replace(tmp, directory / "run.json")


def read_config(directory: os.PathLike) -> dict:
    """`directory/run.json`'s `"config"`, checked to hold what `build_model` reads (`MODEL_KEYS`)."""
    directory = Path(directory)
    if not directory.is_dir():
        why = "a file" if directory.exists() else "no such directory"
        raise RunDirError(f"directory {str(directory)!r} is not a run directory: {why}")
    path = directory / "run.json"
    try:
        config = _config(path)
    except FileNotFoundError:
        raise RunDirError(f"directory {str(directory)!r} is not a run directory: it has no run.json") from None
    except (OSError, ValueError, KeyError, TypeError) as error:  # unreadable, bad JSON, no "config"
        raise RunDirError(f"{path} is not a run.json of rnnscan train ({type(error).__name__}: {error})") from None
    if not all(key in config for key in MODEL_KEYS):
        raise RunDirError(f"{path} must give the run's {', '.join(MODEL_KEYS)} in its config; got {config!r}")
    bad = [f"{key}={config[key]!r}" for key in ("hidden", "layers")
           if isinstance(config[key], bool) or not isinstance(config[key], int) or config[key] < 1]
    if bad or not isinstance(config["task"], str):
        raise RunDirError(f"{path} must give a task name and positive ints hidden and layers; got "
                          f"{', '.join(bad) or 'task=' + repr(config['task'])}")
    return config


def resume_command(config: dict) -> str:
    """The `rnnscan train` command line, every setting spelled out, that resumes this run."""
    words = ["rnnscan", "train"]
    for key, value in config.items():
        if value is not False:
            words.append("--" + key.replace("_", "-"))
        if not isinstance(value, bool):
            words.append("none" if value is None else str(value))
    return shlex.join(words)


def _config(path: Path) -> dict:
    """run.json's `"config"` object; raises what reading, parsing or indexing raise."""
    config = json.loads(path.read_text())["config"]
    if not isinstance(config, dict):
        raise TypeError(f"its config is a {type(config).__name__}, not an object")
    return config
