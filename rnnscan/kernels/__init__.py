"""Compiled kernels that replace XLA's loop where it is the bottleneck: `build`
compiles them at install, `loader` picks and registers the variant for this
CPU, and one module per kernel wraps it for JAX."""

from rnnscan.kernels.loader import export_checks, info

__all__ = ["export_checks", "info"]
