"""``python -m loadtest ...``: the same as ``pulse loadtest ...`` (see loadtest/cli.py)."""

import sys

from loadtest.cli import main

sys.exit(main())
