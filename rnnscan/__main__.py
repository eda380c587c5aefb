"""`python -m rnnscan ...`: the `rnnscan` command."""

from rnnscan.cli import main

raise SystemExit(main())
