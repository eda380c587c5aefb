import sys

from rnnscan.bench.run import main

sys.exit(main())
