"""Running a probe (an importable function) in a fresh Python process, under a given environment.

A fresh process is what a probe needs when the setting it measures is fixed once per
process: the OpenMP thread settings (read when torch loads) and Accelerate's mixed
precision. The process runs :mod:`benchmark.perf.child` by path; the probe's keyword
arguments travel as JSON and its JSON-able result comes back on the last line of stdout.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

CHILD = Path(__file__).with_name("child.py")

Probe = Callable[..., dict[str, Any]]


def probe_command(probe: Probe, kwargs: Mapping[str, Any]) -> list[str]:
    """The command line that runs ``probe(**kwargs)`` in a fresh process."""
    return [sys.executable, str(CHILD), f"{probe.__module__}:{probe.__qualname__}", json.dumps(dict(kwargs))]


def probe_result(stdout: str) -> dict[str, Any]:
    """The probe's result from its process's stdout (the last line)."""
    return json.loads(stdout.strip().splitlines()[-1])


def run_probe(
    probe: Probe, kwargs: Mapping[str, Any], what: str, env: Mapping[str, str] | None = None, tail: int = 3000
) -> dict[str, Any]:
    """``probe(**kwargs)`` in a fresh process; a failure raises with the end of its stderr."""
    proc = subprocess.run(probe_command(probe, kwargs), env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{what} failed:\n{proc.stderr[-tail:]}")
    return probe_result(proc.stdout)


def start_probe(probe: Probe, kwargs: Mapping[str, Any], env: Mapping[str, str] | None = None) -> subprocess.Popen:
    """``probe(**kwargs)`` started in a fresh process that runs beside this one (read it with
    ``communicate()`` and :func:`probe_result`)."""
    return subprocess.Popen(probe_command(probe, kwargs), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
