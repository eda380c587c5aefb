"""The benchmark configurations of BENCHMARKS.md and the suites that group them."""

from __future__ import annotations

from typing import NamedTuple


class Config(NamedTuple):
    """One benchmark shape: `cell` over `(batch, time, input)` with `layers` layers of
    `hidden`; `padded`: the rows have lengths in `[time / 2, time]` (`peers.lengths`)."""

    name: str
    cell: str  # "lstm" | "gru"
    batch: int
    time: int
    input: int
    hidden: int
    layers: int = 1
    padded: bool = False

    @property
    def shape(self) -> str:
        layers = f" x{self.layers}" if self.layers > 1 else ""
        padded = " lengths [T/2, T]" if self.padded else ""
        return f"{self.cell} {self.batch}x{self.time}x{self.input}->{self.hidden}{layers}{padded}"

    @property
    def tokens(self) -> int:
        return self.batch * self.time


CONFIGS = {
    c.name: c
    for c in [
        Config("small", "lstm", 16, 128, 128, 128),
        # The second CPU target of issue 6, between small and medium.
        Config("mid", "lstm", 32, 128, 256, 256),
        # Issue 13's CPU rows: mid with padded rows, and a GRU of mid's shape.
        Config("mid_padded", "lstm", 32, 128, 256, 256, padded=True),
        Config("gru_mid", "gru", 32, 128, 256, 256),
        Config("medium", "lstm", 64, 256, 512, 512),
        Config("large", "lstm", 128, 512, 1024, 1024),
        Config("latency", "lstm", 1, 1024, 256, 256),
        Config("deepbench", "lstm", 128, 25, 1024, 1024),
        Config("long", "lstm", 16, 4096, 256, 256),
        Config("gru_medium", "gru", 64, 256, 512, 512),
        Config("lstm4_medium", "lstm", 64, 256, 512, 512, layers=4),
        # For tests and smoke runs of the scripts.
        Config("tiny", "lstm", 2, 8, 4, 8),
    ]
}

SUITES = {
    "quick": ("small", "mid"),
    "full": ("small", "mid", "medium", "large", "latency", "deepbench", "long", "gru_medium",
             "lstm4_medium"),
    "tiny": ("tiny",),
    # Every CPU row issue 13 names: the targets, then the medium rows reported.
    "cpu": ("small", "mid", "mid_padded", "gru_mid", "medium", "lstm4_medium", "gru_medium"),
}
