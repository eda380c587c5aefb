"""Library cells, one module per family."""

from rnnscan.cells.diagonal import paragru, paralstm
from rnnscan.cells.gru import gru
from rnnscan.cells.linear_recurrent import lru, mingru, minlstm
from rnnscan.cells.lstm import LSTMState, lstm
from rnnscan.cells.multi import multi_cell
from rnnscan.cells.rnn import rnn

# The cells a command line or a run's config names (`rnnscan train --cell`).
BY_NAME = {"lstm": lstm, "gru": gru, "rnn": rnn, "mingru": mingru, "minlstm": minlstm}

__all__ = ["LSTMState", "gru", "lru", "lstm", "mingru", "minlstm", "multi_cell", "paragru",
           "paralstm", "rnn"]
