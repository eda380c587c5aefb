"""rnnscan: `tf.nn.dynamic_rnn` for JAX — pure recurrent cells unrolled with `lax.scan`."""

from rnnscan import interop
from rnnscan.cell import Cell
from rnnscan.cells import LSTMState, gru, lstm, rnn
from rnnscan.unroll import dynamic_rnn, unroll

__version__ = "0.1.0"

__all__ = ["Cell", "LSTMState", "dynamic_rnn", "gru", "interop", "lstm", "rnn", "unroll"]
