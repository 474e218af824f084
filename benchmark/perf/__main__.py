"""``python -m benchmark.perf``: see :mod:`benchmark.perf`."""

import sys

from .cli import main

sys.exit(main())
