"""Compiled kernels that replace XLA's loop where it is the bottleneck (`native`
builds them; one module per kernel wraps it for JAX)."""
