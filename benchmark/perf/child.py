"""A probe's fresh process: ``python benchmark/perf/child.py MODULE:FUNCTION JSON``.

Run by path (see :mod:`benchmark.perf.probe`), not with ``-m``: importing the
``benchmark`` package sets its default OpenMP wait policy, and that must not happen
before torch has loaded its OpenMP runtime under the environment the process was
started with. So torch is imported first; then the function is imported by name,
called with the JSON object as keyword arguments, and its result printed as JSON.
"""

from __future__ import annotations

import importlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def main(argv: Sequence[str]) -> int:
    target, kwargs = argv
    # The script's own folder is not an import root; the tree it belongs to is.
    sys.path[0] = str(REPO_ROOT)
    import torch  # noqa: F401  (first: torch's OpenMP runtime reads the environment as it loads)

    module, _, name = target.partition(":")
    probe = getattr(importlib.import_module(module), name)
    print(json.dumps(probe(**json.loads(kwargs)), default=float), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
