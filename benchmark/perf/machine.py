"""The machine a measurement ran on: load average, cores and thread settings."""

from __future__ import annotations

import os
import platform
import statistics
from collections.abc import Sequence
from typing import Any

import torch


def machine_state() -> dict[str, Any]:
    """Load average, cores and the thread settings in effect (recorded beside every figure)."""
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    return {
        "load_1m": round(load[0], 2), "load_5m": round(load[1], 2), "load_15m": round(load[2], 2),
        "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "(default)"),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS", "(default)"),
        "torch": torch.__version__, "python": platform.python_version(), "machine": platform.machine(),
        "device": "cuda" if torch.cuda.is_available() else "cpu",
    }


def load_1m() -> float:
    """The 1-minute load average (NaN where the platform has none)."""
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else float("nan")


def median(values: Sequence[float]) -> float:
    """The median, NaN for no values."""
    return float(statistics.median(values)) if values else float("nan")
