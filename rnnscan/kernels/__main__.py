"""`python -m rnnscan.kernels`: builds the kernels in place, in a source tree
(what `pip install -e .` does; again after editing a kernel's source)."""

import sys
from pathlib import Path

from rnnscan.kernels import build

here = Path(build.__file__).parent
problems = build.build_all(here)
print(f"rnnscan: built {len(build.SOURCES) * len(build.VARIANTS) - len(problems)} of "
      f"{len(build.SOURCES) * len(build.VARIANTS)} kernel libraries in {here}")
sys.exit(1 if problems else 0)
