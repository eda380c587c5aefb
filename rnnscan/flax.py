"""rnnscan models as flax modules: `RNN` for linen, `NnxRNN` for nnx.

Each holds an rnnscan `Cell` or `Layer` as static configuration and its params as
the framework's params, drawn by the model's own `init`; calling the module runs
`rs.unroll(cell, params, xs, ...)` or `layer.apply(params, xs, ...)`. Options of
the unroll (`reverse`, `time_major`, `remat`, dropout, ...) are the model's:
`RNN(rs.layer(cell, time_major=True))`.

    model = rnnscan.flax.RNN(rs.lstm(8, 32))
    variables = model.init(jax.random.key(0), xs)   # {"params": {"rnnscan": cell params}}
    ys, state = model.apply(variables, xs, lengths=lengths)

Importing `rnnscan` does not import flax; this module does.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
from flax import nnx

from rnnscan.interop.frameworks import check_model, run


class RNN(nn.Module):
    """A linen module over an rnnscan `Cell` or `Layer`.

    Attributes:
      model: the `Cell` or `Layer`. Its params are the linen param `"rnnscan"`
        of this module, the pytree `model.init` makes.

    Call: `(xs, *, lengths=None, resets=None, initial_state=None, key=None) ->
    (ys, final_state)` with the shapes and semantics of `rs.unroll` (a Cell) or
    `Layer.apply` (a Layer): `xs` `(*batch, time, features)`, `lengths` int
    `(*batch,)`, `resets` bool `(*batch, time)`; `key` (e.g.
    `self.make_rng("dropout")`) turns a Layer's dropout on.
    """

    model: Any

    def __post_init__(self):
        check_model(self.model)
        super().__post_init__()

    @nn.compact
    def __call__(self, xs, *, lengths=None, resets=None, initial_state=None, key=None):
        params = self.param("rnnscan", self.model.init)
        return run(self.model, params, xs, lengths=lengths, resets=resets,
                   initial_state=initial_state, key=key)


class NnxRNN(nnx.Module):
    """An nnx module over an rnnscan `Cell` or `Layer`.

    `NnxRNN(model, rngs=nnx.Rngs(0))` draws the params with `model.init` and keeps
    them as `self.params`, the same pytree with an `nnx.Param` at each leaf (so
    `nnx.Optimizer(module, tx, wrt=nnx.Param)` trains them). Called as `RNN`.
    """

    def __init__(self, model, *, rngs: nnx.Rngs):
        self.model = check_model(model)
        self.params = nnx.data(jax.tree_util.tree_map(nnx.Param, model.init(rngs.params())))

    def __call__(self, xs, *, lengths=None, resets=None, initial_state=None, key=None):
        params = jax.tree_util.tree_map(lambda v: v[...], self.params,
                                        is_leaf=lambda v: isinstance(v, nnx.Variable))
        return run(self.model, params, xs, lengths=lengths, resets=resets,
                   initial_state=initial_state, key=key)
