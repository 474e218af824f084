"""What produced a run: package versions, git commit, hardware, date, command."""

from __future__ import annotations

import datetime as _dt
import functools
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from datasets.base import DatasetBundle

from ..settings.config import stable_hash

PACKAGES = (
    "torch", "torchvision", "timm", "accelerate", "numpy", "pandas", "scikit-learn", "scipy",
    "tabulate", "pillow", "matplotlib", "scikit-posthocs", "kdbench",
)
REPO_ROOT = Path(__file__).resolve().parents[2]


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


@functools.lru_cache(maxsize=1)
def git_state() -> dict[str, Any]:
    """Commit and dirty flag of the suite's checkout, or ``unknown`` outside git.

    Dirty means a tracked file outside ``results/`` differs from the commit: the
    committed reference report under ``results/`` is output, not code."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = bool(
            subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)results"],
                cwd=REPO_ROOT, capture_output=True, text=True, timeout=10, check=True,
            ).stdout.strip()
        )
        return {"git_commit": commit, "git_dirty": dirty}
    except (OSError, subprocess.SubprocessError):
        return {"git_commit": "unknown", "git_dirty": None}


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@functools.lru_cache(maxsize=1)
def hardware() -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "machine": platform.machine(),
    }
    if torch.cuda.is_available():
        info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return info


def provenance() -> dict[str, Any]:
    return {
        "versions": versions(),
        **git_state(),
        "platform": platform.platform(),
        "hardware": hardware(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
    }


def dataset_fingerprint(bundle: DatasetBundle) -> str:
    """Hash of what identifies a dataset's contents and splits (its id, classes, the
    files or generator parameters behind it, and split sizes)."""
    return stable_hash({
        "dataset_id": bundle.dataset_id,
        "classes": bundle.classes,
        "provenance": bundle.provenance,
        "sizes": bundle.splits.sizes(),
    })
