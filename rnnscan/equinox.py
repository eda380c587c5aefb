"""rnnscan models as equinox modules.

    model = rnnscan.equinox.RNN(rs.lstm(8, 32), key=jax.random.key(0))
    ys, state = model(xs, lengths=lengths)

Importing `rnnscan` does not import equinox; this module does.
"""

from __future__ import annotations

from typing import Any

import equinox as eqx

from rnnscan.interop.frameworks import check_model, run


class RNN(eqx.Module):
    """An equinox module over an rnnscan `Cell` or `Layer`.

    Attributes:
      params: the model's params, the pytree `model.init(key)` makes: the
        module's arrays (`eqx.filter(module, eqx.is_array)` trains them).
      model: the `Cell` or `Layer`, a static field. Options of the unroll
        (`reverse`, `time_major`, `remat`, dropout, ...) are the model's:
        `RNN(rs.layer(cell, time_major=True), key=key)`.

    Call: `(xs, *, lengths=None, resets=None, initial_state=None, key=None) ->
    (ys, final_state)` with the shapes and semantics of `rs.unroll` (a Cell) or
    `Layer.apply` (a Layer): `xs` `(*batch, time, features)`, `lengths` int
    `(*batch,)`, `resets` bool `(*batch, time)`; `key` turns a Layer's dropout on.
    """

    params: Any
    model: Any = eqx.field(static=True)

    def __init__(self, model, *, key):
        self.model = check_model(model)
        self.params = model.init(key)

    def __call__(self, xs, *, lengths=None, resets=None, initial_state=None, key=None):
        return run(self.model, self.params, xs, lengths=lengths, resets=resets,
                   initial_state=initial_state, key=key)
