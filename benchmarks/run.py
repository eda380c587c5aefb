"""`rnnscan bench` from a checkout, recording into benchmarks/results by default.

    python benchmarks/run.py            # the quick suite
    python benchmarks/run.py --full     # every config of BENCHMARKS.md
    python benchmarks/run.py --help
"""

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from rnnscan.bench import main  # noqa: E402

if __name__ == "__main__":
    args = sys.argv[1:]
    if "--out" not in args:
        args += ["--out", os.path.join(ROOT, "benchmarks", "results")]
    sys.exit(main(args))
