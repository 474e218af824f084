"""``python -m benchmark``: see :mod:`benchmark.orchestration.cli`."""

import sys

from .orchestration.cli import main

if __name__ == "__main__":
    sys.exit(main())
