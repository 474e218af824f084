"""Names of the experiment trackers a grid may log to (``--log-with``), checked before
any run starts; the logging itself is :mod:`benchmark.training.tracking`."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable

TRACKERS: dict[str, str] = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow", "aim": "aim"}
"""Tracker name -> the module it needs (installed by the ``kdbench[<name>]`` extra)."""


def parse_log_with(value: str | Iterable[str] | None) -> list[str]:
    """``"tensorboard,mlflow"`` -> ``["tensorboard", "mlflow"]``; checks the names and that
    each tracker's package is installed, naming the extra that installs it."""
    if value is None:
        return []
    items = value.split(",") if isinstance(value, str) else list(value)
    names = list(dict.fromkeys(str(v).strip().lower() for v in items if str(v).strip()))
    for name in names:
        if name not in TRACKERS:
            raise ValueError(f"--log-with {name!r} is not a tracker; choose from {', '.join(TRACKERS)} "
                             "(several: comma-separated)")
        if importlib.util.find_spec(TRACKERS[name]) is None:
            raise ModuleNotFoundError(
                f"--log-with {name} needs the {TRACKERS[name]!r} package: pip install 'kdbench[{name}]'"
            )
    return names
