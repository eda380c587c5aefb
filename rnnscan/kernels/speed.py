"""Where the CPU kernels are measured faster than the scan, per kernel and
instruction set.

`MEASURED[kernel][variant]` (`kernel` "lstm" or "gru") lists the rows timed
(`benchmarks/kernel_isa.py --cell lstm|gru`; figures in
`benchmarks/results/kernel_isa_cpu*.md`): `(batch, time, input, hidden)` and
whether the kernel beat `lax.scan` both forward and forward+backward (median of
interleaved runs). A shape is judged by its nearest measured row (in log
scale over batch, input and hidden), and only within a factor of 2 of the
measured hidden sizes: elsewhere, and on a variant with no figures, the scan
runs (a guess is not a measurement).
"""

from __future__ import annotations

import math

# benchmarks/results/kernel_isa_cpu.md: a 2-core AVX-512 Xeon, avx2 emulated
# (XLA:CPU held to AVX2), ratios scan / kernel fwd, fwd+bwd. The padded row
# (lengths in [64, 128]) agreed with its unpadded one on avx512 (1.35, 1.15)
# and was even on avx2 (1.00, 1.09).
Rows = list[tuple[tuple[int, int, int, int], bool]]
LSTM: dict[str, Rows] = {
    "avx512": [((16, 128, 128, 128), False),  # 0.71, 1.29: forward loses
               ((32, 128, 256, 256), True),   # 1.32, 1.55
               ((64, 256, 512, 512), True)],  # 1.31, 1.15
    "avx2": [((16, 128, 128, 128), False),    # 0.67, 0.81
             ((32, 128, 256, 256), False),    # 0.89, 0.90
             ((64, 256, 512, 512), False)],   # 0.83, 0.92
}

# Indicative, to re-measure on an idle machine (`python benchmarks/kernel_isa.py
# --cell gru`): benchmarks/results/kernel_isa_gru_cpu_indicative.md, a shared
# 2-core AVX-512 Xeon (other jobs running), avx2 emulated. A row is won only
# where the kernel beat the scan by more than 1.2x both forward and
# forward+backward; on avx2 the 32x128x256->256 row (1.25, 1.39) is within the
# noise of that bar and left to the scan until re-measured.
GRU: dict[str, Rows] = {
    "avx512": [((16, 128, 128, 128), False),  # 1.09, 1.62: forward ties
               ((32, 128, 256, 256), True),   # 1.79, 1.53 (padded: 1.84, 1.74)
               ((64, 256, 512, 512), True)],  # 1.44, 1.49
    "avx2": [((16, 128, 128, 128), False),    # 0.86, 1.30
             ((32, 128, 256, 256), False),    # 1.25, 1.39 (padded: 1.25, 1.45)
             ((64, 256, 512, 512), False)],   # 0.94, 1.22
}

MEASURED: dict[str, dict[str, Rows]] = {"lstm": LSTM, "gru": GRU}


def kernel_is_faster(kernel: str, isa: str, batch: int, time: int, input_size: int,
                     hidden: int) -> bool:
    """Whether the `isa` variant of `kernel` ("lstm", "gru") was measured faster
    than the scan at the measured row nearest to this shape."""
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

    return min(rows, key=lambda row: distance(row[0]))[1]
