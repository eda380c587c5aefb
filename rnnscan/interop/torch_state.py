"""Initial and final states between torch's `(h_0, c_0)` layout and rnnscan's."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from rnnscan import tree
from rnnscan.cells import LSTMState
from rnnscan.validation import check_bool, check_positive_int


def torch_state(h0, c0=None, *, num_layers: int = 1, bidirectional: bool = False):
    """torch's initial state as the state of what `from_torch` returns for the module.

    Args:
      h0: `(num_layers * num_directions, batch, proj_size or hidden_size)`, torch's
        `h_0` (index `layer * num_directions + direction`).
      c0: `(num_layers * num_directions, batch, hidden_size)`, an LSTM's `c_0`;
        None for GRU and RNN.
      num_layers, bidirectional: the module's.

    Returns:
      For one layer in one direction, the cell's state (`LSTMState(h, c)` or
      `h`); else a tuple with one entry per layer, a `(fw, bw)` pair of states
      per layer when bidirectional.
    """
    check_positive_int("num_layers", num_layers)
    check_bool("bidirectional", bidirectional)
    directions = 2 if bidirectional else 1
    for name, a in (("h0", h0), ("c0", c0)):
        if a is not None and (np.ndim(a) != 3 or np.shape(a)[0] != num_layers * directions):
            raise ValueError(
                f"{name} must have shape (num_layers * num_directions, batch, size) with "
                f"num_layers * num_directions = {num_layers * directions}; got {np.shape(a)}"
            )
    if c0 is not None and np.shape(c0)[1] != np.shape(h0)[1]:
        n, batch = np.shape(h0)[:2]
        raise ValueError(f"c0 must have shape ({n}, {batch}, hidden_size), h0's batch; got "
                         f"{np.shape(c0)}")
    flat = [h0[i] if c0 is None else LSTMState(h0[i], c0[i]) for i in range(len(h0))]
    if num_layers == 1 and not bidirectional:
        return flat[0]
    per_layer = [flat[i : i + directions] for i in range(0, len(flat), directions)]
    return tuple(tuple(d) if bidirectional else d[0] for d in per_layer)


def to_torch_state(state, *, num_layers: int = 1, bidirectional: bool = False):
    """The inverse of `torch_state`: a final state as torch's `h_n` (and `c_n`).

    Returns:
      `(h_n, c_n)` for an LSTM state, else `h_n`; each `(num_layers *
      num_directions, batch, size)`.
    """
    check_positive_int("num_layers", num_layers)
    check_bool("bidirectional", bidirectional)
    if num_layers == 1 and not bidirectional:
        flat = [state]
    else:
        if not (tree.is_plain_sequence(state) and len(state) == num_layers):
            raise ValueError(f"state must be a tuple of {num_layers} entries (one per layer) "
                             f"for num_layers={num_layers}; got {type(state).__name__}")
        if bidirectional and not all(tree.is_plain_sequence(e) and len(e) == 2 for e in state):
            raise ValueError("state must be a (fw, bw) pair of states per layer for "
                             "bidirectional=True; got " + ", ".join(type(e).__name__ for e in state))
        flat = [s for entry in state for s in (entry if bidirectional else (entry,))]
    if isinstance(flat[0], LSTMState):
        return jnp.stack([s.h for s in flat]), jnp.stack([s.c for s in flat])
    return jnp.stack(flat)
