"""``python -m backend``: the RegionLens command line."""

import sys

from backend.cli import main

sys.exit(main())
