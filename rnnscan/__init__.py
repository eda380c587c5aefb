"""rnnscan: `tf.nn.dynamic_rnn` for JAX — pure recurrent cells unrolled with `lax.scan`."""

from rnnscan import interop
from rnnscan.cell import Cell, LinearRecurrence, SplitStep
from rnnscan.cells import (LSTMState, gru, lru, lstm, mingru, minlstm, multi_cell, paragru,
                           paralstm, rnn)
from rnnscan.kernels import export_checks
from rnnscan.layers import Layer, bidirectional, layer, stack
from rnnscan.newton import Newton, NewtonInfo
from rnnscan.sampling import sample
from rnnscan.tf1_names import dynamic_rnn
from rnnscan.unroll import truncated_unroll, unroll

__version__ = "0.1.0"

__all__ = [
    "Cell", "LSTMState", "Layer", "LinearRecurrence", "Newton", "NewtonInfo", "SplitStep",
    "bidirectional", "dynamic_rnn", "export_checks", "gru", "interop", "layer", "lru", "lstm", "mingru", "minlstm",
    "multi_cell", "paragru", "paralstm", "rnn", "sample", "stack", "truncated_unroll", "unroll",
]
