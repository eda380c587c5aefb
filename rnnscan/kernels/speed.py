"""Where the CPU kernels are measured faster than the scan, per instruction set.

`MEASURED[kernel][variant]` (`kernel` "lstm" or "gru") lists the rows timed
(`benchmarks/kernel_isa.py --cell lstm|gru`; figures in
`benchmarks/results/kernel_isa_*idle.md`): `(batch, time, input, hidden)` and
whether the kernel beat `lax.scan` forward and forward+backward (median of
interleaved runs), apart: `unroll` takes the values from one and the
derivatives from the other (`Plan.derivatives`). A shape is judged by its
nearest measured row (in log scale over batch, input and hidden), and only
within a factor of 2 of the measured hidden sizes: elsewhere, and on a variant
with no figures, the scan runs (a guess is not a measurement).
"""

from __future__ import annotations

import math

# Per row: (forward won, forward+backward won).
Rows = list[tuple[tuple[int, int, int, int], tuple[bool, bool]]]

# benchmarks/results/kernel_isa_idle.md: a 2-core AVX-512 Xeon, idle, avx2
# emulated (XLA:CPU and torch held to AVX2); in the comments, scan time /
# kernel time forward, forward+backward. The padded rows (lengths in [T/2, T])
# agree with their unpadded ones (avx512 1.55, 1.79; avx2 1.08, 1.36).
LSTM: dict[str, Rows] = {
    "avx512": [((16, 128, 128, 128), (True, True)),   # 1.55, 1.40
               ((32, 128, 256, 256), (True, True)),   # 1.40, 1.71
               ((64, 256, 512, 512), (True, True))],  # 1.38, 1.27
    "avx2": [((16, 128, 128, 128), (False, True)),    # 0.73, 1.28
             ((32, 128, 256, 256), (False, True)),    # 0.88, 1.31
             ((64, 256, 512, 512), (False, True))],   # 0.93, 1.05
}

# benchmarks/results/kernel_isa_gru_idle.md, the same machine and emulation.
GRU: dict[str, Rows] = {
    "avx512": [((16, 128, 128, 128), (True, True)),   # 1.09, 1.62
               ((32, 128, 256, 256), (True, True)),   # 1.79, 1.53
               ((64, 256, 512, 512), (True, True))],  # 1.44, 1.49
    "avx2": [((16, 128, 128, 128), (False, True)),    # 0.86, 1.30
             ((32, 128, 256, 256), (True, True)),     # 1.25, 1.39
             ((64, 256, 512, 512), (False, True))],   # 0.94, 1.22
}

MEASURED: dict[str, dict[str, Rows]] = {"lstm": LSTM, "gru": GRU}


def kernel_is_faster(kernel: str, isa: str, batch: int, time: int, input_size: int,
                     hidden: int, *, derivatives: bool = False) -> bool:
    """Whether the `isa` variant of `kernel` ("lstm", "gru") was measured faster
    than the scan at the measured row nearest to this shape: forward, or with
    `derivatives` forward+backward."""
    rows = MEASURED.get(kernel, {}).get(isa)
    if not rows or min(batch, time, input_size, hidden) <= 0:
        return False
    hiddens = [shape[3] for shape, _ in rows]
    if not min(hiddens) / 2 <= hidden <= 2 * max(hiddens):
        return False
    point = (batch, input_size, hidden)

    def distance(shape):
        b, _, i, h = shape
        return sum(math.log(x / y) ** 2 for x, y in zip(point, (b, i, h)))

    return min(rows, key=lambda row: distance(row[0]))[1][int(derivatives)]
