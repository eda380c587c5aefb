"""A checkpoint's digest, and the checks that tell damage from a user's mistake.

The digest of a tree is `{path: {"shape", "dtype", "sha256"}}` for each leaf,
the path as `jax.tree_util.keystr` writes it and the sha256 of the leaf's
bytes. `Checkpoints` saves the digest of the whole `TrainState` beside it; both
`Checkpoints.restore` and `restore_params` (`load_run`) check what they read
against it here.
"""

from __future__ import annotations

import hashlib
from typing import Optional

import jax
import numpy as np

SHOWN = 12  # differing leaves named in a mismatch error


def digest(tree, prefix: str = "") -> dict:
    """`{prefix + path: {"shape", "dtype", "sha256"}}` of every leaf of `tree`."""
    return {
        prefix + jax.tree_util.keystr(path): {
            "shape": list(np.shape(leaf)),
            "dtype": str(leaf.dtype),
            "sha256": hashlib.sha256(np.ascontiguousarray(np.asarray(leaf)).tobytes()).hexdigest(),
        }
        for path, leaf in jax.tree_util.tree_leaves_with_path(tree)
    }


def check_digest(tree, saved: dict, prefix: str = "") -> None:
    """Raises a `ValueError` unless every leaf of `tree` is in `saved` (a digest, whose
    paths start with `prefix`) with its shape, dtype and sha256; `saved` may hold more."""
    found = digest(tree, prefix)
    missing = [path for path in found if not isinstance(saved.get(path), dict)]
    if missing:
        raise ValueError(f"its digest has no {', '.join(missing[:SHOWN])}")
    reshaped = [path for path, leaf in found.items()
                if [saved[path].get("shape"), saved[path].get("dtype")] != [leaf["shape"], leaf["dtype"]]]
    if reshaped:
        raise ValueError(f"its digest gives {', '.join(reshaped[:SHOWN])} another shape or dtype")
    changed = [path for path, leaf in found.items() if saved[path].get("sha256") != leaf["sha256"]]
    if changed:
        raise ValueError(f"the sha256 of {', '.join(changed[:SHOWN])} differs from the one saved")


def check_finite(params, prefix: str = "params") -> None:
    """Raises a `ValueError` naming the first leaf of `params` that holds NaN or inf."""
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        if np.issubdtype(leaf.dtype, np.inexact) and not np.isfinite(np.asarray(leaf)).all():
            raise ValueError(f"{prefix}{jax.tree_util.keystr(path)} holds NaN or inf")


def shapes(tree) -> dict:
    """`{"params/core/0/w_ih": "float32[77, 64]", ...}`: the leaves of `tree` by path, with
    dicts, tuples, lists and NamedTuples alike (orbax's metadata holds dicts and lists)."""
    name = lambda k: str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k))))
    return {
        "/".join(name(k) for k in path): f"{np.dtype(leaf.dtype).name}{list(leaf.shape)}"
        for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]
    }


def check_matches(found: dict, like, where: str) -> None:
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


def why(error: BaseException) -> str:
    """The first line of an error, cut to a readable length (tensorstore's run to kilobytes)."""
    first = str(error).splitlines()[0].split(" See full TensorStore details")[0] if str(error) else ""
    text = f"{type(error).__name__}: {first}"
    return text if len(text) <= 300 else text[:300] + "..."


def _spec(spec: Optional[tuple]) -> str:
    return "missing" if spec is None else f"{spec[1]}{list(spec[0])}"
