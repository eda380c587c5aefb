"""One process of tests/test_multihost.py's library run: `python -m tests.multihost_worker
OUT [COORDINATOR NUM_PROCESSES PROCESS_ID]`.

Trains a tiny GRU model with `rnnscan.train.fit` over `data_parallel()` (every
device of every process) and saves the params this process holds to OUT (.npz).
Without the last three arguments it runs alone, the reference.
"""

import sys

import jax
import numpy as np
import optax

import rnnscan as rs
from rnnscan import train

STEPS, BATCH, TIME, FEATURES, HIDDEN = 6, 8, 5, 3, 8


def batches(step):
    """The global batch of update `step + 1`: the same in every process."""
    rng = np.random.default_rng(step)
    xs = rng.normal(size=(BATCH, TIME, FEATURES)).astype(np.float32)
    return {"xs": xs, "ys": np.cumsum(xs, axis=1)[..., :1], "lengths": rng.integers(1, TIME + 1, BATCH)}


def main(out, *process):
    if process:
        coordinator, num_processes, process_id = process
        train.initialize_processes(coordinator, int(num_processes), int(process_id))
    model = train.sequence_model(rs.gru(FEATURES, HIDDEN), FEATURES, 1)
    optimizer = optax.adam(1e-2)

    def loss_fn(params, batch, key):
        ys, _ = model.apply(params, batch["xs"], lengths=batch["lengths"])
        mask = np.arange(TIME)[None, :] < batch["lengths"][:, None]
        return train.masked_mean(((ys - batch["ys"]) ** 2)[..., 0], mask)

    key = jax.random.PRNGKey(0)
    state = train.init_state(model.init(key), optimizer, key)
    state = train.fit(state, train.make_train_step(loss_fn, optimizer), batches, steps=STEPS, progress=False)
    leaves = jax.tree_util.tree_leaves(state.params)
    # This process's own copies (with several processes no one holds the global array).
    np.savez(out, devices=len(jax.devices()), processes=jax.process_count(),
             **{f"leaf{i}": np.asarray(leaf.addressable_data(0)) for i, leaf in enumerate(leaves)})


if __name__ == "__main__":
    main(*sys.argv[1:])
