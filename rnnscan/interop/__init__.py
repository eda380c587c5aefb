"""Weight import from torch, TensorFlow 1, Keras 3, haiku, flax and equinox (the same
numbers, as rnnscan cells), and export back to torch."""

from rnnscan.interop.jax_frameworks import from_equinox, from_flax, from_haiku
from rnnscan.interop.keras import from_keras
from rnnscan.interop.tf1 import from_tf1
from rnnscan.interop.torch import from_torch, from_torch_state_dict
from rnnscan.interop.torch_state import to_torch_state, torch_state
from rnnscan.interop.torch_export import to_torch, to_torch_state_dict

__all__ = ["from_equinox", "from_flax", "from_haiku", "from_keras", "from_tf1", "from_torch",
           "from_torch_state_dict", "to_torch", "to_torch_state", "to_torch_state_dict",
           "torch_state"]
