"""The benchmark harness behind `rnnscan bench`: rnnscan against torch, flax, haiku,
`jax.experimental.rnn` and a plain `lax.scan`, on the configurations of BENCHMARKS.md."""

from rnnscan.bench.configs import CONFIGS, SUITES, Config
from rnnscan.bench.run import main, run

__all__ = ["CONFIGS", "SUITES", "Config", "main", "run"]
